//! Process attributes the kernel shows in /proc: memory policy, personality, scheduler.
mod common;
use common::*;

#[test]
fn memory_policy_personality_and_scheduler_are_applied() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
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
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
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
