//! cgroups on the real host (root, cgroup v1 or hybrid): limits are enforced by the kernel, files hold
//! the configured values, freeze really stops a process, destroy leaves nothing behind.
//!
//! Every cgroup name carries the test process's pid; a guard kills the processes and destroys the
//! cgroups even when an assertion fails.

use husk::cgroups::{CgroupManager, CgroupOptions, CgroupState, Host, Mode, OomEvent};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxWeightDeviceBuilder,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const MIB: i64 = 1024 * 1024;

fn host() -> Host {
    let h = Host::detect().expect("detect cgroup hierarchies");
    assert!(
        matches!(h.mode(), Mode::V1 | Mode::Hybrid),
        "these tests need a cgroup v1 or hybrid host (found {:?})",
        h.mode()
    );
    assert!(nix::unistd::geteuid().is_root(), "these tests need root");
    h
}

fn name(tag: &str) -> String {
    format!("husk-cgtest-{}-{tag}", std::process::id())
}

/// Kills what is left in the cgroups and destroys them, also on panic.
struct Cg {
    m: CgroupManager,
}

impl Cg {
    fn new(path: Option<&str>, id: &str) -> Cg {
        let mut m = CgroupManager::new(
            &host(),
            &CgroupOptions {
                cgroups_path: path.map(Path::new),
                id,
                systemd: false,
            },
        )
        .expect("cgroup manager");
        // guard first, so a failing create still cleans up what it made
        let mut g = Cg { m: m.clone() };
        let res = m.create();
        g.m = m;
        res.expect("create cgroups");
        g
    }
    fn abs(tag: &str) -> Cg {
        let n = name(tag);
        Cg::new(Some(&format!("/{n}")), &n)
    }
    fn dir(&self, ctrl: &str) -> PathBuf {
        self.m.v1_paths()[ctrl].clone()
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = self.m.thaw();
        for _ in 0..100 {
            let procs = self.m.procs().unwrap_or_default();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if let Err(e) = self.m.destroy() {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A busybox shell that waits for a line on stdin before running `script`, so it can be put into the
/// cgroup first.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(script: &str) -> Proc {
        let child = Command::new("/bin/busybox")
            .args(["sh", "-c", &format!("read go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /bin/busybox (busybox-static)");
        Proc { child }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("release child");
        stdin.flush().expect("flush");
    }
    /// Wait for exit: (exit code, signal, stdout, stderr).
    fn finish(mut self) -> (Option<i32>, Option<i32>, String, String) {
        drop(self.child.stdin.take());
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).expect("read stdout");
        }
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).expect("read stderr");
        }
        let st = self.child.wait().expect("wait child");
        (st.code(), st.signal(), out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rd(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

fn mem(limit: i64, swap: Option<i64>) -> LinuxResources {
    let mut b = LinuxMemoryBuilder::default().limit(limit);
    if let Some(s) = swap {
        b = b.swap(s);
    }
    LinuxResourcesBuilder::default()
        .memory(b.build().unwrap())
        .build()
        .unwrap()
}

fn has_memsw(cg: &Cg) -> bool {
    cg.dir("memory")
        .join("memory.memsw.limit_in_bytes")
        .exists()
}

/// A shell that stores `bytes` bytes in a variable.
fn alloc_script(bytes: u64) -> String {
    format!("x=$(head -c {bytes} /dev/zero | tr '\\0' a); echo survived ${{#x}}")
}

#[test]
fn memory_limit_oom_kills_past_the_limit() {
    let cg = Cg::abs("oom");
    let swap = has_memsw(&cg).then_some(32 * MIB);
    cg.m.apply(&mem(32 * MIB, swap)).unwrap();
    assert_eq!(
        rd(&cg.dir("memory"), "memory.limit_in_bytes"),
        (32 * MIB).to_string()
    );
    let mut watcher = cg.m.oom_watcher().unwrap();

    let mut p = Proc::spawn(&alloc_script(100_000_000));
    cg.m.add_task(p.pid()).unwrap();
    assert!(cg.m.procs().unwrap().contains(&p.pid()));
    p.go();
    let (code, sig, out, _) = p.finish();
    assert_eq!(
        sig,
        Some(9),
        "expected SIGKILL, got code {code:?}, stdout {out:?}"
    );
    assert!(!out.contains("survived"));

    // the eventfd was signalled by the OOM kill (readable now, so wait() does not block)
    let mut pfd = [nix::poll::PollFd::new(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(watcher.as_raw_fd()) },
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(30_000u16)).unwrap();
    assert_eq!(n, 1, "no OOM notification");
    match watcher.wait().unwrap() {
        OomEvent::Oom { count } => assert!(count >= 1),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(watcher.try_wait().unwrap(), None);
    let stats = cg.m.stats().unwrap();
    assert_eq!(stats.memory.usage.limit, 32 * 1024 * 1024);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["memory"]["usage"]["limit"], 32 * 1024 * 1024);
}

#[test]
fn memory_limit_lets_small_allocations_live() {
    let cg = Cg::abs("nooom");
    cg.m.apply(&mem(64 * MIB, None)).unwrap();
    let mut p = Proc::spawn(&alloc_script(8_000_000));
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    let (code, sig, out, err) = p.finish();
    assert_eq!((code, sig), (Some(0), None), "stderr {err:?}");
    assert!(out.contains("survived 8000000"), "{out:?}");
}

#[test]
fn pids_limit_makes_fork_fail() {
    let cg = Cg::abs("pids");
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(1).build().unwrap())
        .build()
        .unwrap();
    cg.m.apply(&r).unwrap();
    assert_eq!(rd(&cg.dir("pids"), "pids.max"), "1");
    let mut p = Proc::spawn("(exit 0) && echo forked");
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    let (code, _, out, err) = p.finish();
    assert!(!out.contains("forked"), "{out:?}");
    assert!(err.contains("can't fork"), "stderr {err:?}");
    assert_ne!(code, Some(0));

    // same script, room for the fork
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(4).build().unwrap())
        .build()
        .unwrap();
    cg.m.update(&r).unwrap();
    let mut p = Proc::spawn("(exit 0) && echo forked");
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    let (code, _, out, _) = p.finish();
    assert_eq!(code, Some(0));
    assert!(out.contains("forked"));
    let s = cg.m.stats().unwrap();
    assert_eq!(s.pids.limit, 4);
}

#[test]
fn resource_files_hold_configured_values() {
    let cg = Cg::abs("files");
    let swap = has_memsw(&cg);
    // A blkio weight file exists only with an I/O scheduler that offers weights (CFQ's
    // blkio.weight on old kernels, BFQ's blkio.bfq.weight): without one, the weight must be
    // refused naming the file (checked below), and the other resources are checked here.
    let blkio_root = Path::new("/sys/fs/cgroup/blkio");
    let has_weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .any(|f| blkio_root.join(f).exists());
    let mut memb = LinuxMemoryBuilder::default()
        .limit(64 * MIB)
        .reservation(32 * MIB)
        .swappiness(10u64)
        .disable_oom_killer(false);
    if swap {
        memb = memb.swap(128 * MIB);
    }
    let r = LinuxResourcesBuilder::default()
        .memory(memb.build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(20_000i64)
                .period(100_000u64)
                .burst(5_000u64)
                .realtime_period(1_000_000u64)
                .realtime_runtime(10_000i64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(77).build().unwrap())
        .block_io(if has_weight {
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .build()
                .unwrap()
        } else {
            LinuxBlockIoBuilder::default().build().unwrap()
        })
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap()])
        .build()
        .unwrap();
    cg.m.apply(&r).unwrap();
    let m = cg.dir("memory");
    assert_eq!(rd(&m, "memory.limit_in_bytes"), (64 * MIB).to_string());
    assert_eq!(rd(&m, "memory.soft_limit_in_bytes"), (32 * MIB).to_string());
    assert_eq!(rd(&m, "memory.swappiness"), "10");
    if swap {
        assert_eq!(
            rd(&m, "memory.memsw.limit_in_bytes"),
            (128 * MIB).to_string()
        );
    }
    let c = cg.dir("cpu");
    assert_eq!(rd(&c, "cpu.shares"), "512");
    assert_eq!(rd(&c, "cpu.cfs_quota_us"), "20000");
    assert_eq!(rd(&c, "cpu.cfs_period_us"), "100000");
    assert_eq!(rd(&c, "cpu.cfs_burst_us"), "5000");
    assert_eq!(rd(&c, "cpu.rt_period_us"), "1000000");
    assert_eq!(rd(&c, "cpu.rt_runtime_us"), "10000");
    let cs = cg.dir("cpuset");
    assert_eq!(rd(&cs, "cpuset.cpus"), "0");
    assert_eq!(rd(&cs, "cpuset.mems"), "0");
    assert_eq!(rd(&cg.dir("pids"), "pids.max"), "77");
    let b = cg.dir("blkio");
    if has_weight {
        let wfile = if b.join("blkio.weight").exists() {
            "blkio.weight"
        } else {
            "blkio.bfq.weight"
        };
        assert!(rd(&b, wfile).contains("500"), "{}", rd(&b, wfile));
    } else {
        let w = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let e =
            cg.m.apply(&w)
                .expect_err("a blkio weight without a weight file")
                .to_string();
        assert!(
            e.contains("blkio.bfq.weight") && e.contains("does not exist"),
            "{e}"
        );
    }
    // deny all, then the default allow list
    let list = rd(&cg.dir("devices"), "devices.list");
    assert!(!list.contains("a *:* rwm"), "{list}");
    assert!(
        list.contains("c 1:3 rwm") && list.contains("c 136:* rwm"),
        "{list}"
    );

    // a process can join (cpuset cpus/mems were initialized) and ps sees it
    let p = Proc::spawn("true");
    cg.m.add_task(p.pid()).unwrap();
    assert!(cg.m.procs().unwrap().contains(&p.pid()));
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid())).unwrap();
    assert!(own.contains(&format!("cpuset:/{}", name("files"))), "{own}");
    let s = cg.m.stats().unwrap();
    assert_eq!(s.cpuset.cpus, vec![0]);
    assert_eq!(s.memory.usage.limit, 64 * 1024 * 1024);
}

#[test]
fn limits_that_cannot_be_applied_are_errors() {
    let cg = Cg::abs("unsup");
    let cases: Vec<(LinuxResources, &str)> = vec![
        (
            LinuxResourcesBuilder::default()
                .network(
                    LinuxNetworkBuilder::default()
                        .class_id(0x100001u32)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "net_cls",
        ),
        (
            LinuxResourcesBuilder::default()
                .block_io(
                    LinuxBlockIoBuilder::default()
                        .leaf_weight(300u16)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "blkio.leaf_weight",
        ),
        (
            LinuxResourcesBuilder::default()
                .cpu(LinuxCpuBuilder::default().shares(1u64).build().unwrap())
                .build()
                .unwrap(),
            "cpu.shares",
        ),
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .use_hierarchy(false)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "memory.use_hierarchy",
        ),
        (
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .swappiness(101u64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "swappiness",
        ),
        (
            LinuxResourcesBuilder::default()
                .unified(HashMap::from([(
                    "memory.high".to_string(),
                    "1000000".to_string(),
                )]))
                .build()
                .unwrap(),
            "memory",
        ),
        (
            LinuxResourcesBuilder::default()
                .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                    .page_size("3MB")
                    .limit(2 * MIB)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
            "hugetlb.3MB",
        ),
        (
            // device 1:3 is /dev/null, a char device: the block layer has no such device
            LinuxResourcesBuilder::default()
                .block_io(
                    LinuxBlockIoBuilder::default()
                        .weight_device(vec![LinuxWeightDeviceBuilder::default()
                            .major(1)
                            .minor(3)
                            .weight(200u16)
                            .build()
                            .unwrap()])
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            "1:3 200",
        ),
    ];
    for (r, want) in cases {
        match cg.m.apply(&r) {
            Ok(()) => panic!("applying {r:?} succeeded, expected an error naming {want:?}"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(want), "expected {want:?} in: {e}");
            }
        }
    }
}

/// linux.resources.memory.kernel / kernelTCP: accepted and ignored, as runc and crun do (Linux
/// 6.x does not enforce kmem limits); they used to be refused. The kmem files keep their value.
#[test]
fn kernel_memory_limits_are_accepted_and_ignored() {
    let cg = Cg::abs("kmem");
    let d = cg.dir("memory");
    let before = (
        rd(&d, "memory.kmem.limit_in_bytes"),
        rd(&d, "memory.kmem.tcp.limit_in_bytes"),
    );
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .kernel(16 * MIB)
                .kernel_tcp(8 * MIB)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.m.validate(&r).expect("validate accepts kernel memory");
    cg.m.apply(&r).expect("apply accepts kernel memory");
    assert_eq!(
        rd(&d, "memory.limit_in_bytes").trim(),
        (64 * MIB).to_string()
    );
    let after = (
        rd(&d, "memory.kmem.limit_in_bytes"),
        rd(&d, "memory.kmem.tcp.limit_in_bytes"),
    );
    assert_eq!(before, after);
}

#[test]
fn validate_refuses_before_anything_is_created() {
    let n = name("validate");
    let m = CgroupManager::new(
        &host(),
        &CgroupOptions {
            cgroups_path: Some(Path::new(&format!("/{n}"))),
            id: &n,
            systemd: false,
        },
    )
    .unwrap();
    let cases: Vec<(LinuxResources, &str)> = vec![
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
            "net_cls",
        ),
        (
            LinuxResourcesBuilder::default()
                .rdma(HashMap::from([(
                    "mlx4_0".to_string(),
                    oci_spec::runtime::LinuxRdma::default(),
                )]))
                .build()
                .unwrap(),
            "rdma",
        ),
        (mem(64 * MIB, Some(32 * MIB)), "lower than the memory limit"),
        (
            LinuxResourcesBuilder::default()
                .devices(vec![LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .access("rwx")
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
            "devices[0].access",
        ),
    ];
    for (r, want) in cases {
        let e = m.validate(&r).unwrap_err().to_string();
        assert!(e.contains(want), "expected {want:?} in {e}");
    }
    for d in m.dirs() {
        assert!(
            !d.exists(),
            "{} exists though nothing was created",
            d.display()
        );
    }
    // a config this host can apply passes
    m.validate(&mem(64 * MIB, None)).unwrap();
}

#[test]
fn memory_update_raises_and_lowers_with_swap() {
    let cg = Cg::abs("upd");
    if !has_memsw(&cg) {
        // no swap accounting: memory only, and a swap request is an error naming the file
        cg.m.apply(&mem(64 * MIB, None)).unwrap();
        let e = cg.m.update(&mem(64 * MIB, Some(128 * MIB))).unwrap_err();
        assert!(e.to_string().contains("memsw"), "{e}");
        return;
    }
    let m = cg.dir("memory");
    cg.m.apply(&mem(64 * MIB, Some(64 * MIB))).unwrap();
    // raising both: memsw has to move first
    cg.m.update(&mem(256 * MIB, Some(512 * MIB))).unwrap();
    assert_eq!(rd(&m, "memory.limit_in_bytes"), (256 * MIB).to_string());
    assert_eq!(
        rd(&m, "memory.memsw.limit_in_bytes"),
        (512 * MIB).to_string()
    );
    // lowering both: the limit has to move first
    cg.m.update(&mem(32 * MIB, Some(32 * MIB))).unwrap();
    assert_eq!(rd(&m, "memory.limit_in_bytes"), (32 * MIB).to_string());
    assert_eq!(
        rd(&m, "memory.memsw.limit_in_bytes"),
        (32 * MIB).to_string()
    );
    // unlimited memory, swap not given: both unlimited
    cg.m.update(&mem(-1, None)).unwrap();
    assert_eq!(
        rd(&m, "memory.limit_in_bytes"),
        rd(&m, "memory.memsw.limit_in_bytes")
    );
    // swap below memory is refused
    let e = cg.m.update(&mem(64 * MIB, Some(32 * MIB))).unwrap_err();
    assert!(e.to_string().contains("lower than the memory limit"), "{e}");
}

fn proc_state(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) S ..." — comm may contain spaces, so look after the last ')'
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

#[test]
fn freeze_and_thaw_stop_and_resume_a_process() {
    let cg = Cg::abs("freeze");
    let mut p = Proc::spawn("while :; do :; done");
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    assert!(!cg.m.is_frozen().unwrap());
    cg.m.freeze().unwrap();
    assert!(cg.m.is_frozen().unwrap());
    assert_eq!(rd(&cg.dir("freezer"), "freezer.state"), "FROZEN");
    // a frozen task sleeps uninterruptibly in the freezer (on a loaded machine the task may be
    // seen a moment later than freezer.state says FROZEN)
    let t0 = std::time::Instant::now();
    while proc_state(p.pid()) != 'D' && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(proc_state(p.pid()), 'D');
    cg.m.thaw().unwrap();
    assert!(!cg.m.is_frozen().unwrap());
    // and wakes up once thawed (the scheduler may need a moment on a loaded machine)
    let t0 = std::time::Instant::now();
    while proc_state(p.pid()) == 'D' && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_ne!(proc_state(p.pid()), 'D');
    // frozen processes can still be killed and reaped after a thaw (what delete does)
    cg.m.freeze().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    cg.m.thaw().unwrap();
    let (_, sig, _, _) = p.finish();
    assert_eq!(sig, Some(9));
}

/// Every directory of a manager, plus the parents it created.
fn all_dirs(m: &CgroupManager) -> Vec<PathBuf> {
    let mut v = m.dirs();
    v.extend(m.save().created);
    v
}

#[test]
fn destroy_leaves_nothing_for_absolute_relative_and_default_paths() {
    let h = host();
    let own_mem = {
        let s = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        s.lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .unwrap_or_default()
    };
    let n = name("paths");
    let cases: Vec<(Option<String>, String)> = vec![
        (Some(format!("/{n}-abs/inner/c")), format!("{n}-a")),
        (Some(format!("{n}-rel/c")), format!("{n}-r")),
        (None, format!("{n}-def")),
    ];
    for (path, id) in cases {
        let mut cg = Cg::new(path.as_deref(), &id);
        let dirs = all_dirs(&cg.m);
        for d in &dirs {
            assert!(d.is_dir(), "{} missing after create", d.display());
        }
        let mem_dir = cg.dir("memory");
        match &path {
            Some(p) if p.starts_with('/') => {
                assert_eq!(mem_dir, h.v1["memory"].mountpoint.join(&p[1..]));
            }
            other => {
                // relative (and default) paths nest under our own memory cgroup
                let rel = other.clone().unwrap_or(id.clone());
                let want = h.v1["memory"]
                    .mountpoint
                    .join(own_mem.trim_start_matches('/'))
                    .join(&rel);
                assert_eq!(mem_dir, want);
            }
        }
        // a process that ran and exited, and a sub-cgroup the container made itself
        let mut p = Proc::spawn("true");
        cg.m.add_task(p.pid()).unwrap();
        p.go();
        p.finish();
        std::fs::create_dir(cg.dir("pids").join("nested")).unwrap();

        // later command: reopen from state.json and destroy
        let json = serde_json::to_string(&cg.m.save()).unwrap();
        let st: CgroupState = serde_json::from_str(&json).unwrap();
        let mut again = CgroupManager::load(st);
        again.destroy().unwrap();
        for d in &dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        // our own cgroups are untouched
        assert!(h.v1["memory"]
            .mountpoint
            .join(own_mem.trim_start_matches('/'))
            .is_dir());
        cg.m = again;
    }
}

#[test]
fn pre_existing_parent_is_kept() {
    let parent = name("keep");
    let h = host();
    let pdir = h.v1["pids"].mountpoint.join(&parent);
    std::fs::create_dir(&pdir).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(pdir.clone());
    let leaf_dir;
    {
        let mut cg = Cg::new(Some(&format!("/{parent}/c")), "c");
        leaf_dir = cg.dir("pids");
        cg.m.destroy().unwrap();
    }
    assert!(!leaf_dir.exists());
    assert!(pdir.is_dir(), "parent created by someone else must stay");
}

#[test]
fn hugetlb_limit_goes_to_the_unified_mount_on_hybrid() {
    let h = host();
    let Some(u) = h.unified.clone() else {
        // pure v1 host: only a mounted v1 hugetlb controller can take the limit
        assert!(
            h.v1.contains_key("hugetlb") || {
                let cg = Cg::abs("huge");
                let r = LinuxResourcesBuilder::default()
                    .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                        .page_size("2MB")
                        .limit(4 * MIB)
                        .build()
                        .unwrap()])
                    .build()
                    .unwrap();
                cg.m.apply(&r).unwrap_err().to_string().contains("hugetlb")
            }
        );
        return;
    };
    let root_ctl = u.mountpoint.join("cgroup.subtree_control");
    let before = std::fs::read_to_string(&root_ctl).unwrap();
    let available = std::fs::read_to_string(u.mountpoint.join("cgroup.controllers")).unwrap();
    let cg = Cg::abs("huge");
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4 * MIB)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let res = cg.m.apply(&r);
    if available.split_whitespace().any(|c| c == "hugetlb") {
        res.unwrap();
        let leaf = cg.m.unified_path().unwrap().to_path_buf();
        assert_eq!(rd(&leaf, "hugetlb.2MB.max"), (4 * MIB).to_string());
        // processes join the unified cgroup too
        let p = Proc::spawn("true");
        cg.m.add_task(p.pid()).unwrap();
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid())).unwrap();
        assert!(own.contains(&format!("0::/{}", name("huge"))), "{own}");
        drop(p);
        drop(cg);
        // leave the host as we found it
        if !before.split_whitespace().any(|c| c == "hugetlb") {
            let _ = std::fs::write(&root_ctl, "-hugetlb");
        }
    } else {
        let e = res.unwrap_err().to_string();
        assert!(e.contains("hugetlb"), "{e}");
    }
}
