//! Unit tests against a fake cgroup2 tree in a temp dir (plain files standing in for the kernel's):
//! they check which files get which values, placement, state round-trips and destroy bookkeeping.

use super::*;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
};
use std::collections::HashMap;
use std::fs;

const LEAF_FILES: &[(&str, &str)] = &[
    (
        "cgroup.controllers",
        "cpu io memory pids cpuset hugetlb rdma",
    ),
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", ""),
    ("cgroup.freeze", "0"),
    ("cgroup.events", "populated 0\nfrozen 0"),
    ("cpu.weight", "100"),
    ("cpu.max", "max 100000"),
    ("cpu.max.burst", "0"),
    ("cpu.idle", "0"),
    ("cpuset.cpus", ""),
    ("cpuset.mems", ""),
    ("memory.max", "max"),
    ("memory.low", "0"),
    ("memory.swap.max", "max"),
    ("memory.current", "4096"),
    ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1"),
    ("memory.stat", "anon 1024\nfile 2048"),
    ("memory.high", "max"),
    ("pids.max", "max"),
    ("pids.current", "2"),
    ("io.weight", "default 100"),
    ("io.max", ""),
    (
        "io.stat",
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0",
    ),
    ("hugetlb.2MB.max", "max"),
    ("hugetlb.2MB.rsvd.max", "max"),
    ("rdma.max", ""),
    (
        "cpu.stat",
        "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 5\nnr_throttled 1\nthrottled_usec 7",
    ),
];

struct Fake {
    tmp: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpu io memory pids cpuset hugetlb rdma",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::write(root.join("cgroup.procs"), "1\n").unwrap();
        Fake { tmp }
    }
    fn host(&self) -> Host {
        Host::v2_at(self.tmp.path(), "/")
    }
    /// What the kernel does on mkdir: populate the interface files.
    fn populate(&self, dir: &Path) {
        for (f, v) in LEAF_FILES {
            fs::write(dir.join(f), v).unwrap();
        }
    }
    fn manager(&self, path: Option<&str>, id: &str) -> CgroupManager {
        let p = path.map(Path::new);
        let mut m = CgroupManager::new(
            &self.host(),
            &CgroupOptions {
                cgroups_path: p,
                id,
                systemd: false,
            },
        )
        .unwrap();
        m.create().unwrap();
        let leaf = m.unified_path().unwrap().to_path_buf();
        self.populate(&leaf);
        m
    }
}

fn rd(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn v2_placement_and_create_records_dirs() {
    let f = Fake::new();
    let m = f.manager(Some("/husk-test/a/c1"), "c1");
    let root = f.tmp.path();
    assert_eq!(m.mode(), Mode::V2);
    assert_eq!(m.unified_path().unwrap(), root.join("husk-test/a/c1"));
    assert_eq!(m.clone_into_cgroup_dir(), m.unified_path());
    let st = m.save();
    assert_eq!(
        st.created,
        vec![
            root.join("husk-test"),
            root.join("husk-test/a"),
            root.join("husk-test/a/c1")
        ]
    );
    // the root offered all its controllers to its children
    assert!(rd(&root.join("cgroup.subtree_control")).starts_with('+'));

    // relative and default paths go below the caller's cgroup
    let host = Host::v2_at(root, "/user/me");
    fs::create_dir_all(root.join("user/me")).unwrap();
    let rel = CgroupManager::new(
        &host,
        &CgroupOptions {
            cgroups_path: Some(Path::new("x/y")),
            id: "c2",
            systemd: false,
        },
    )
    .unwrap();
    assert_eq!(rel.unified_path().unwrap(), root.join("user/me/x/y"));
    let def = CgroupManager::new(
        &host,
        &CgroupOptions {
            cgroups_path: None,
            id: "c3",
            systemd: false,
        },
    )
    .unwrap();
    assert_eq!(def.unified_path().unwrap(), root.join("user/me/c3"));
}

#[test]
fn state_round_trips_through_json() {
    let f = Fake::new();
    let m = f.manager(Some("/rt"), "rt");
    let json = serde_json::to_string(&m.save()).unwrap();
    assert!(json.contains("\"mode\":\"v2\""), "{json}");
    let back: CgroupState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m.save());
    let m2 = CgroupManager::load(back);
    assert_eq!(m2.unified_path(), m.unified_path());
}

#[test]
fn v2_apply_writes_translated_values() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(100 * 1024 * 1024)
                .swap(300 * 1024 * 1024)
                .reservation(50 * 1024 * 1024)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .burst(1000u64)
                .cpus("0-1")
                .mems("0")
                .idle(0i64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(42).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .weight_device(vec![LinuxWeightDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .weight(1000u16)
                    .build()
                    .unwrap()])
                .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .rate(1_000_000u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4 * 1024 * 1024i64)
            .build()
            .unwrap()])
        .unified(HashMap::from([(
            "memory.high".to_string(),
            "90000000".to_string(),
        )]))
        .build()
        .unwrap();
    m.apply(&r).unwrap();
    assert_eq!(rd(&d.join("memory.max")), "104857600");
    assert_eq!(rd(&d.join("memory.swap.max")), "209715200");
    assert_eq!(rd(&d.join("memory.low")), "52428800");
    assert_eq!(rd(&d.join("cpu.weight")), "100");
    assert_eq!(rd(&d.join("cpu.max")), "50000 100000");
    assert_eq!(rd(&d.join("cpu.max.burst")), "1000");
    assert_eq!(rd(&d.join("cpuset.cpus")), "0-1");
    assert_eq!(rd(&d.join("pids.max")), "42");
    // last write wins in a plain file: the device weight, converted
    assert_eq!(rd(&d.join("io.weight")), "8:0 10000");
    assert_eq!(rd(&d.join("io.max")), "8:0 rbps=1000000");
    assert_eq!(rd(&d.join("hugetlb.2MB.max")), "4194304");
    assert_eq!(rd(&d.join("hugetlb.2MB.rsvd.max")), "4194304");
    assert_eq!(rd(&d.join("memory.high")), "90000000");
}

#[test]
fn v2_unlimited_values_and_quota_only() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    let r = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(-1i64).build().unwrap())
        .cpu(LinuxCpuBuilder::default().quota(-1i64).build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
        .build()
        .unwrap();
    fs::write(d.join("memory.swap.max"), "0").unwrap();
    m.apply(&r).unwrap();
    assert_eq!(rd(&d.join("memory.max")), "max");
    assert_eq!(rd(&d.join("memory.swap.max")), "max");
    assert_eq!(rd(&d.join("cpu.max")), "max");
    assert_eq!(rd(&d.join("pids.max")), "max");
}

#[test]
fn v2_unsupported_and_missing_are_errors() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    let cases: Vec<(LinuxResources, &str)> = vec![
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .swappiness(10u64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "swappiness",
        ),
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .disable_oom_killer(true)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "disableOOMKiller",
        ),
        (
            LinuxResourcesBuilder::default()
                .cpu(
                    LinuxCpuBuilder::default()
                        .realtime_runtime(1000i64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "realtime",
        ),
        (
            LinuxResourcesBuilder::default()
                .network(
                    LinuxNetworkBuilder::default()
                        .class_id(7u32)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "network",
        ),
        (
            LinuxResourcesBuilder::default()
                .block_io(
                    LinuxBlockIoBuilder::default()
                        .leaf_weight(100u16)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "leafWeight",
        ),
        (
            LinuxResourcesBuilder::default()
                .unified(HashMap::from([("misc.max".to_string(), "x 1".to_string())]))
                .build()
                .unwrap(),
            "misc.max",
        ),
        (
            LinuxResourcesBuilder::default()
                .unified(HashMap::from([("../escape".to_string(), "1".to_string())]))
                .build()
                .unwrap(),
            "unified",
        ),
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(100i64)
                        .swap(50i64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "lower than the memory limit",
        ),
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(100i64)
                        .check_before_update(true)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "below the current usage 4096",
        ),
    ];
    for (r, want) in cases {
        let e = m.apply(&r).unwrap_err().to_string();
        assert!(e.contains(want), "expected {want:?} in {e}");
        // the checks that need no kernel catch these before anything is created (the unified key
        // naming a controller this cgroup lacks and checkBeforeUpdate need the kernel's answer)
        if !matches!(want, "misc.max" | "below the current usage 4096") {
            let e = m.validate(&r).unwrap_err().to_string();
            assert!(e.contains(want), "validate: expected {want:?} in {e}");
        }
    }
    // device rules on v2 are an eBPF program attached to the directory: a plain directory is no
    // cgroup, and the error says which bpf step failed on which path
    let r = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err().to_string();
    assert!(
        e.contains("bpf(BPF_PROG_") && e.contains(&d.display().to_string()),
        "{e}"
    );
    // a controller file the kernel didn't create: error names the file and value
    fs::remove_file(d.join("pids.max")).unwrap();
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(5).build().unwrap())
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err().to_string();
    assert!(e.contains("pids.max") && e.contains("\"5\""), "{e}");
}

/// linux.resources.memory.kernel / kernelTCP are accepted and ignored (runc and crun warn);
/// they used to be refused ("linux.resources.memory.kernel/kernelTCP ... no separate limit").
#[test]
fn kernel_memory_is_accepted_and_ignored() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1i64 << 30)
                .kernel(1 << 20)
                .kernel_tcp(1 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    m.validate(&r).unwrap();
    m.apply(&r).unwrap();
    // the memory limit still applies; nothing was written for the kernel limits
    assert_eq!(rd(&d.join("memory.max")), (1u64 << 30).to_string());
    let kmem: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("kmem"))
        .collect();
    assert!(kmem.is_empty(), "{kmem:?}");
}

#[test]
fn v2_freeze_procs_stats() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    // the kernel reports the state in cgroup.events; here we play the kernel
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    m.freeze().unwrap();
    assert_eq!(rd(&d.join("cgroup.freeze")), "1");
    assert!(m.is_frozen().unwrap());
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    m.thaw().unwrap();
    assert_eq!(rd(&d.join("cgroup.freeze")), "0");
    assert!(!m.is_frozen().unwrap());

    fs::write(d.join("cgroup.procs"), "10\n11\n").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/cgroup.procs"), "12\n").unwrap();
    assert_eq!(m.procs().unwrap(), vec![10, 11, 12]);

    let s = m.stats().unwrap();
    assert_eq!(s.cpu.usage.total, 10_000);
    assert_eq!(s.cpu.usage.user, 6_000);
    assert_eq!(s.cpu.throttling.throttled_periods, 1);
    assert_eq!(s.memory.usage.usage, 4096);
    assert_eq!(s.memory.usage.failcnt, 3);
    assert_eq!(s.memory.cache, 2048);
    assert_eq!(s.pids.current, 2);
    assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["memory"]["usage"]["usage"], 4096);
    assert_eq!(json["cpu"]["throttling"]["throttledPeriods"], 1);
    assert_eq!(json["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
    assert!(json["network_interfaces"].is_null());
    fs::remove_dir_all(d.join("sub")).unwrap();
}

#[test]
fn v2_oom_watcher_counts_kills() {
    let f = Fake::new();
    let m = f.manager(Some("/c"), "c");
    let d = m.unified_path().unwrap().to_path_buf();
    let mut w = m.oom_watcher().unwrap();
    // a kill happens after the watcher started: inotify wakes it, the counter says how many
    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 3",
    )
    .unwrap();
    assert_eq!(w.wait().unwrap(), OomEvent::Oom { count: 2 });
    assert_eq!(w.try_wait().unwrap(), None);
    // memory.events also changes for other events: readable, but no OOM
    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 5\nmax 4\noom 2\noom_kill 3",
    )
    .unwrap();
    assert_eq!(w.try_wait().unwrap(), None);
    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 5\nmax 4\noom 3\noom_kill 4",
    )
    .unwrap();
    assert_eq!(w.try_wait().unwrap(), Some(OomEvent::Oom { count: 1 }));
    fs::remove_file(d.join("memory.events")).unwrap();
    assert_eq!(w.try_wait().unwrap(), Some(OomEvent::CgroupRemoved));
    fs::write(d.join("memory.events"), "oom_kill 4").unwrap();
}

#[test]
fn destroy_removes_exactly_what_was_created() {
    let f = Fake::new();
    let root = f.tmp.path();
    fs::create_dir(root.join("shared")).unwrap();
    let mut m = f.manager(Some("/shared/new/c1"), "c1");
    let leaf = m.unified_path().unwrap().to_path_buf();
    // fake tree: kernel files are plain files, remove them as the kernel would on rmdir
    for (f, _) in LEAF_FILES {
        fs::remove_file(leaf.join(f)).unwrap();
    }
    // a sub-cgroup the container made itself goes too
    fs::create_dir(leaf.join("inner")).unwrap();
    m.destroy().unwrap();
    assert!(!root.join("shared/new").exists());
    assert!(
        root.join("shared").exists(),
        "pre-existing parent must stay"
    );
    assert!(m.save().created.is_empty());
    // destroying again is a no-op
    m.destroy().unwrap();
}

#[test]
fn destroy_keeps_parent_used_by_another_container() {
    let f = Fake::new();
    let root = f.tmp.path();
    let mut a = f.manager(Some("/pod/a"), "a");
    let b = f.manager(Some("/pod/b"), "b");
    for (f, _) in LEAF_FILES {
        fs::remove_file(a.unified_path().unwrap().join(f)).unwrap();
    }
    a.destroy().unwrap();
    assert!(!root.join("pod/a").exists());
    assert!(root.join("pod/b").exists());
    assert_eq!(b.save().created, vec![root.join("pod/b")]);
}

#[test]
fn systemd_driver_is_a_clear_error() {
    let f = Fake::new();
    let e = CgroupManager::new(
        &f.host(),
        &CgroupOptions {
            cgroups_path: Some(Path::new("machine.slice:husk:c1")),
            id: "c1",
            systemd: true,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("husk-c1.scope") && e.contains("systemd"), "{e}");
    let e = CgroupManager::new(
        &f.host(),
        &CgroupOptions {
            cgroups_path: Some(Path::new("/not/systemd")),
            id: "c1",
            systemd: true,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("slice:prefix:name"), "{e}");
}

#[test]
fn failed_create_removes_what_it_made() {
    // fake v1 host: cpu and memory hierarchies in a temp dir; in memory, a file sits where a
    // directory has to go, so create fails after the cpu directories were made
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display().to_string();
    fs::create_dir_all(tmp.path().join("cpu")).unwrap();
    fs::create_dir_all(tmp.path().join("memory")).unwrap();
    fs::write(tmp.path().join("memory/x"), "not a directory").unwrap();
    let mi = format!(
        "32 31 0:29 / {t}/cpu rw - cgroup cgroup rw,cpu\n33 31 0:30 / {t}/memory rw - cgroup cgroup rw,memory"
    );
    let host = Host::from_texts(&mi, "2:memory:/\n1:cpu:/").unwrap();
    assert_eq!(host.mode(), Mode::V1);
    let mut m = CgroupManager::new(
        &host,
        &CgroupOptions {
            cgroups_path: Some(Path::new("/x/y")),
            id: "y",
            systemd: false,
        },
    )
    .unwrap();
    let e = m.create().unwrap_err().to_string();
    assert!(e.contains("memory/x/y"), "{e}");
    assert!(!tmp.path().join("cpu/x").exists(), "cpu/x left behind");
    assert!(m.save().created.is_empty());
}

#[test]
fn failed_destroy_keeps_its_record_for_a_retry() {
    let f = Fake::new();
    let mut m = f.manager(Some("/p/c"), "c");
    let leaf = m.unified_path().unwrap().to_path_buf();
    // the fake interface files make the leaf "busy": rmdir fails, as with live processes
    let e = m.destroy().unwrap_err().to_string();
    assert!(
        e.contains("removing directory") && e.contains("/p/c"),
        "{e}"
    );
    assert_eq!(m.save().created, vec![f.tmp.path().join("p"), leaf.clone()]);
    for (name, _) in LEAF_FILES {
        fs::remove_file(leaf.join(name)).unwrap();
    }
    m.destroy().unwrap();
    assert!(!f.tmp.path().join("p").exists());
}
