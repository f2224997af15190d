//! Process attributes the kernel shows in /proc: memory policy, personality, scheduler.
mod common;
use common::*;

#[test]
fn memory_policy_personality_and_scheduler_are_applied() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("procattr");
    let id = e.id("procattr");
    let mut c = e.config();
    c["linux"]["memoryPolicy"] = serde_json::json!({"mode": "MPOL_BIND", "nodes": "0"});
    c["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
    c["process"]["scheduler"] = serde_json::json!({"policy": "SCHED_BATCH", "nice": 3});
    c["process"]["args"] = serde_json::json!(["sh", "-c", "head -1 /proc/self/numa_maps; cat /proc/self/personality; grep '^policy' /proc/self/sched; cut -d' ' -f19 /proc/self/stat"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let out = e.ok(&["run", "--bundle", &b, &id]);
    let l: Vec<&str> = out.lines().collect();
    assert!(l.first().is_some_and(|x| x.contains("bind:0")), "{out}");
    assert_eq!(l.get(1).copied(), Some("00000008"), "{out}");
    assert!(
        l.get(2).is_some_and(|x| x.trim_end().ends_with(" 3")),
        "SCHED_BATCH is policy 3: {out}"
    );
    assert_eq!(l.get(3).copied(), Some("3"), "nice: {out}");
}

#[test]
fn bad_memory_policy_nodes_are_refused_before_anything_exists() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("procattrbad");
    let id = e.id("procattrbad");
    let mut c = e.config();
    c["linux"]["memoryPolicy"] = serde_json::json!({"mode": "MPOL_BIND", "nodes": "3-1"});
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["create", "--bundle", &b, &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("memoryPolicy.nodes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!e.root.join(&id).exists());
}

/// Issue 16 item 5: SCHED_DEADLINE with runtime > deadline (or deadline > period) is refused
/// before anything exists, naming the fields, instead of sched_setattr's bare EINVAL from a
/// half-made container.
#[test]
fn sched_deadline_runtime_above_deadline_is_refused_naming_the_fields() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("deadline");
    let b = e.bundle().display().to_string();
    for (i, (runtime, deadline, period, want)) in [
        (
            2_000_000u64,
            1_000_000u64,
            10_000_000u64,
            "runtime 2000000 is greater than deadline 1000000",
        ),
        (
            1_000_000,
            20_000_000,
            10_000_000,
            "deadline 20000000 is greater than period 10000000",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let id = e.id(&format!("deadline{i}"));
        let mut c = e.config();
        c["process"]["scheduler"] = serde_json::json!({
            "policy": "SCHED_DEADLINE", "runtime": runtime, "deadline": deadline, "period": period
        });
        e.write_config(&c);
        let o = e.husk(&["create", "--bundle", &b, &id]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "create succeeded");
        assert!(
            err.contains("process.scheduler") && err.contains(want),
            "{err}"
        );
        assert!(!err.contains("sched_setattr"), "{err}");
        // refused before anything was created: no state, no cgroup
        assert!(!e.root.join(&id).exists());
        assert!(
            !std::path::Path::new("/sys/fs/cgroup/pids")
                .join(&id)
                .exists(),
            "cgroup left"
        );
    }
}
