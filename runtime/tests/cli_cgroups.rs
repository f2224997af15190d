//! husk's cgroup commands end to end, on this (v1) host: limits enforced by the kernel, update,
//! pause/resume, ps, events (stats and OOM), and no cgroup left after delete.
mod common;
use common::*;

fn require_root() {
    assert!(
        is_root(),
        "cgroup tests need root: run the tests as root (CI does)"
    );
}

#[test]
fn memory_limit_oom_kills_and_update_raises_it() {
    require_root();
    let mut e = Env::new("mem");
    let id = e.id("mem");
    let mut c = e.config();
    c["linux"]["resources"]["memory"] =
        serde_json::json!({"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024});
    c["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    e.write_config(&c);
    e.run_detached(&id);
    // Watch for OOM events from the start.
    let events = std::process::Command::new(HUSK)
        .args([
            "--root",
            &e.root.display().to_string(),
            "events",
            "--interval",
            "1s",
            &id,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events");
    // A shell holding 64 MB in a variable past a 32 MiB limit is OOM-killed.
    let alloc = [
        "exec",
        &id,
        "sh",
        "-c",
        "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ];
    let o = e.husk(&alloc);
    assert_eq!(
        o.status.code(),
        Some(137),
        "allocation past the limit: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    // update raises the limit; the same allocation now survives.
    e.ok(&["update", "--memory", "128m", "--memory-swap", "128m", &id]);
    let dir = cgroup_dir(e.pid(&id), "memory");
    let limit = std::fs::read_to_string(dir.join("memory.limit_in_bytes")).expect("read limit");
    assert_eq!(limit.trim(), (128u64 << 20).to_string());
    // --kernel-memory / --kernel-memory-tcp: accepted and ignored with a warning, as runc and
    // crun (current kernels have no separate kernel memory limit); the memory limit stays.
    let o = e.husk(&[
        "update",
        "--kernel-memory",
        "64m",
        "--kernel-memory-tcp",
        "8m",
        &id,
    ]);
    assert!(
        o.status.success(),
        "update --kernel-memory: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ignored"),
        "a warning: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let limit = std::fs::read_to_string(dir.join("memory.limit_in_bytes")).expect("read limit");
    assert_eq!(limit.trim(), (128u64 << 20).to_string());
    let o = e.husk(&alloc);
    assert!(o.status.success(), "after update: {:?}", o.status);
    assert!(String::from_utf8_lossy(&o.stdout).contains("survived"));
    // events reported the OOM.
    e.ok(&["delete", "--force", &id]);
    let out = events.wait_with_output().expect("events output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains("\"type\":\"oom\"")),
        "no oom event in: {text}"
    );
    assert!(
        text.lines().any(|l| l.contains("\"type\":\"stats\"")),
        "no stats event in: {text}"
    );
    assert!(
        !dir.exists(),
        "memory cgroup left after delete: {}",
        dir.display()
    );
}

#[test]
fn pids_limit_makes_fork_fail() {
    require_root();
    let mut e = Env::new("pids");
    let id = e.id("pids");
    let mut c = e.config();
    c["linux"]["resources"]["pids"] = serde_json::json!({"limit": 4});
    c["process"]["args"] =
        serde_json::json!(["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["run", "--bundle", &b, &id]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "fork past pids.max: {out:?}"
    );
}

#[test]
fn pause_resume_freezes_processes() {
    require_root();
    let mut e = Env::new("pause");
    let id = e.id("pause");
    e.sh("while :; do :; done");
    e.run_detached(&id);
    let pid = e.pid(&id);
    e.ok(&["pause", &id]);
    assert_eq!(e.status(&id), "paused");
    let state = |pid: i32| husk::sys::proc_stat(pid).map(|(s, _)| s).unwrap_or('?');
    // A frozen task sleeps in the freezer (D on v1).
    assert!(
        wait_until(|| state(pid) == 'D'),
        "paused busy loop is in state {}",
        state(pid)
    );
    let before = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let utime = |s: &str| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(11))
            .map(String::from)
    };
    assert_eq!(
        utime(&before),
        utime(&after),
        "CPU time advanced while paused"
    );
    let e2 = e.husk(&["exec", &id, "true"]);
    assert!(
        !e2.status.success(),
        "exec into a paused container must fail"
    );
    e.ok(&["resume", &id]);
    assert_eq!(e.status(&id), "running");
    assert!(
        wait_until(|| state(pid) == 'R'),
        "resumed loop is in state {}",
        state(pid)
    );
}

#[test]
fn ps_and_stats_list_the_containers_processes() {
    require_root();
    let mut e = Env::new("ps");
    let id = e.id("ps");
    e.sh("sleep 1000 & sleep 1000");
    e.run_detached(&id);
    let pid = e.pid(&id);
    assert!(wait_until(|| {
        let v: Vec<i32> =
            serde_json::from_str(&e.ok(&["ps", "--format", "json", &id])).unwrap_or_default();
        v.len() == 2 && v.contains(&pid)
    }));
    let table = e.ok(&["ps", &id]);
    assert!(
        table.lines().next().unwrap_or("").contains("PID"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    let v: serde_json::Value =
        serde_json::from_str(e.ok(&["events", "--stats", &id]).trim()).expect("stats json");
    assert_eq!(v["type"], "stats");
    assert_eq!(v["data"]["pids"]["current"], 2);
    assert!(
        v["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    assert!(v["data"]["cpu"]["usage"]["total"].as_u64().is_some(), "{v}");
}

#[test]
fn no_cgroup_left_for_absolute_relative_and_default_paths() {
    require_root();
    let mut e = Env::new("cgpaths");
    for (name, path) in [
        ("abs", Some(format!("/husk-it-abs-{}", std::process::id()))),
        ("rel", Some(format!("husk-it-rel-{}", std::process::id()))),
        ("def", None),
    ] {
        let id = e.id(name);
        let mut c = e.config();
        c["process"]["args"] = serde_json::json!(["sleep", "1000"]);
        match &path {
            Some(p) => c["linux"]["cgroupsPath"] = serde_json::json!(p),
            None => {
                if let Some(o) = c["linux"].as_object_mut() {
                    o.remove("cgroupsPath");
                }
            }
        }
        e.write_config(&c);
        e.run_detached(&id);
        let dirs: Vec<_> = ["memory", "pids", "cpu", "freezer"]
            .iter()
            .map(|ctl| cgroup_dir(e.pid(&id), ctl))
            .collect();
        for d in &dirs {
            assert!(d.is_dir(), "{name}: {} missing while running", d.display());
        }
        e.ok(&["delete", "--force", &id]);
        for d in &dirs {
            assert!(!d.exists(), "{name}: {} left after delete", d.display());
        }
    }
}

/// Issue 16 item 3: a config with linux.resources.memory.kernel and kernelTCP runs (with a
/// warning naming them), as with runc and crun; husk used to refuse it.
#[test]
fn kernel_memory_in_config_runs_with_a_warning() {
    require_root();
    let mut e = Env::new("kmem");
    let id = e.id("kmem");
    let mut c = e.config();
    c["linux"]["resources"]["memory"] = serde_json::json!({
        "limit": 64 * 1024 * 1024, "kernel": 16 * 1024 * 1024, "kernelTCP": 8 * 1024 * 1024
    });
    c["process"]["args"] = serde_json::json!(["echo", "kmem-ok"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["run", "--bundle", &b, &id]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "husk run: {err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "kmem-ok");
    assert!(
        err.contains("kernel/kernelTCP") && err.contains("ignored"),
        "warning: {err}"
    );
}
