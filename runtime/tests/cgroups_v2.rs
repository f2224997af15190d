//! The cgroup v2 code paths against a real cgroup2 hierarchy: /sys/fs/cgroup on a pure v2 host, or
//! the unified mount of a hybrid host (seen as a v2-only host). Runs as root.
//!
//! What runs depends on the controllers the hierarchy offers (a hybrid host's unified mount may only
//! have hugetlb): a limit whose controller is missing must fail with an error naming it.

use husk::cgroups::{CgroupManager, CgroupOptions, Host, Mode, OomEvent};
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

/// The tests share the hierarchy root's cgroup.subtree_control: one at a time, and each puts it back.
static ROOT: Mutex<()> = Mutex::new(());

fn v2_host() -> Host {
    assert!(nix::unistd::geteuid().is_root(), "these tests need root");
    let h = Host::detect().expect("detect cgroup hierarchies");
    match h.mode() {
        Mode::V2 => h,
        Mode::Hybrid => Host {
            v1: BTreeMap::new(),
            unified: h.unified.clone(),
            own: h.own.clone(),
        },
        Mode::V1 => panic!("these tests need a cgroup2 mount (pure v2 or hybrid host)"),
    }
}

fn name(tag: &str) -> String {
    format!("husk-cgtest2-{}-{tag}", std::process::id())
}

struct Cg {
    m: CgroupManager,
    root_ctl: PathBuf,
    root_ctl_before: String,
    _lock: MutexGuard<'static, ()>,
}

impl Cg {
    fn new(tag: &str) -> Cg {
        let lock = ROOT.lock().unwrap_or_else(|e| e.into_inner());
        let h = v2_host();
        let root = h.unified.clone().unwrap().mountpoint;
        let root_ctl = root.join("cgroup.subtree_control");
        let root_ctl_before = std::fs::read_to_string(&root_ctl).unwrap();
        let n = name(tag);
        let mut m = CgroupManager::new(
            &h,
            &CgroupOptions {
                cgroups_path: Some(Path::new(&format!("/{n}"))),
                id: &n,
                systemd: false,
            },
        )
        .unwrap();
        let mut g = Cg {
            m: m.clone(),
            root_ctl,
            root_ctl_before,
            _lock: lock,
        };
        let res = m.create();
        g.m = m;
        res.unwrap();
        g
    }
    fn dir(&self) -> PathBuf {
        self.m.unified_path().unwrap().to_path_buf()
    }
    fn has(&self, ctrl: &str) -> bool {
        rd(&self.dir(), "cgroup.controllers")
            .split_whitespace()
            .any(|c| c == ctrl)
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
        // controllers this test enabled on the hierarchy root go off again
        let before: Vec<&str> = self.root_ctl_before.split_whitespace().collect();
        let now = std::fs::read_to_string(&self.root_ctl).unwrap_or_default();
        for c in now.split_whitespace() {
            if !before.contains(&c) {
                let _ = std::fs::write(&self.root_ctl, format!("-{c}"));
            }
        }
    }
}

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
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    fn finish(mut self) -> (Option<i32>, Option<i32>, String, String) {
        drop(self.child.stdin.take());
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).unwrap();
        }
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        let st = self.child.wait().unwrap();
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

fn proc_state(pid: i32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[test]
fn v2_freeze_and_thaw_stop_and_resume_a_process() {
    let cg = Cg::new("freeze");
    let mut p = Proc::spawn("while :; do :; done");
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    assert_eq!(cg.m.procs().unwrap(), vec![p.pid()]);
    cg.m.freeze().unwrap();
    assert!(cg.m.is_frozen().unwrap());
    assert!(rd(&cg.dir(), "cgroup.events").contains("frozen 1"));
    // a busy loop that is frozen is not running
    assert_ne!(proc_state(p.pid()), 'R');
    cg.m.thaw().unwrap();
    assert!(!cg.m.is_frozen().unwrap());
    assert_eq!(proc_state(p.pid()), 'R');
}

fn dev_rules(extra_allow: bool) -> LinuxResources {
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap()];
    if extra_allow {
        // /dev/kmsg (char 1:11), read only
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1i64)
                .minor(11i64)
                .access("r")
                .build()
                .unwrap(),
        );
    }
    LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .unwrap()
}

const DEV_SCRIPT: &str = ": < /dev/null && echo null-ok; : < /dev/kmsg && echo kmsg-read; \
                          : >> /dev/kmsg && echo kmsg-write; true";

#[test]
fn v2_device_rules_are_enforced_by_the_ebpf_program() {
    let cg = Cg::new("dev");
    cg.m.apply(&dev_rules(false)).unwrap();
    let mut p = Proc::spawn(DEV_SCRIPT);
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    let (_, _, out, err) = p.finish();
    assert!(
        out.contains("null-ok"),
        "default devices stay usable: {out:?} {err:?}"
    );
    assert!(
        !out.contains("kmsg-read") && !out.contains("kmsg-write"),
        "{out:?}"
    );
    assert!(err.contains("Operation not permitted"), "{err:?}");

    // update: the new program replaces the old one (reads allowed, writes still denied)
    cg.m.update(&dev_rules(true)).unwrap();
    let mut p = Proc::spawn(DEV_SCRIPT);
    cg.m.add_task(p.pid()).unwrap();
    p.go();
    let (_, _, out, err) = p.finish();
    assert!(
        out.contains("null-ok") && out.contains("kmsg-read"),
        "{out:?} {err:?}"
    );
    assert!(!out.contains("kmsg-write"), "{out:?}");
}

#[test]
fn v2_hugetlb_limit_or_clear_error() {
    let cg = Cg::new("huge");
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(8 * 1024 * 1024i64)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let res = cg.m.apply(&r);
    if cg.has("hugetlb") {
        res.unwrap();
        assert_eq!(rd(&cg.dir(), "hugetlb.2MB.max"), "8388608");
        let s = cg.m.stats().unwrap();
        assert_eq!(s.hugetlb["2MB"].max, 8 * 1024 * 1024);
    } else {
        let e = res.unwrap_err().to_string();
        assert!(e.contains("hugetlb.2MB.max"), "{e}");
    }
}

#[test]
fn v2_memory_and_pids_limits_or_clear_errors() {
    let cg = Cg::new("mem");
    // memory: OOM kill past the limit, seen by the watcher
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32 * 1024 * 1024i64)
                .swap(32 * 1024 * 1024i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    if cg.has("memory") {
        cg.m.apply(&r).unwrap();
        assert_eq!(rd(&cg.dir(), "memory.max"), "33554432");
        let mut w = cg.m.oom_watcher().unwrap();
        let mut p = Proc::spawn("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived");
        cg.m.add_task(p.pid()).unwrap();
        p.go();
        let (_, sig, out, _) = p.finish();
        assert_eq!(sig, Some(9), "{out:?}");
        assert!(matches!(w.wait().unwrap(), OomEvent::Oom { count } if count >= 1));
    } else {
        let e = cg.m.apply(&r).unwrap_err().to_string();
        assert!(e.contains("memory"), "{e}");
        let e = cg.m.oom_watcher().unwrap_err().to_string();
        assert!(e.contains("memory.events"), "{e}");
    }
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(1).build().unwrap())
        .build()
        .unwrap();
    if cg.has("pids") {
        cg.m.apply(&r).unwrap();
        let mut p = Proc::spawn("(exit 0) && echo forked");
        cg.m.add_task(p.pid()).unwrap();
        p.go();
        let (_, _, out, err) = p.finish();
        assert!(
            !out.contains("forked") && err.contains("can't fork"),
            "{out:?} {err:?}"
        );
    } else {
        let e = cg.m.apply(&r).unwrap_err().to_string();
        assert!(e.contains("pids.max") && e.contains("\"1\""), "{e}");
    }
}

#[test]
fn v2_destroy_leaves_nothing() {
    let dir;
    {
        let cg = Cg::new("destroy");
        dir = cg.dir();
        let mut p = Proc::spawn("true");
        cg.m.add_task(p.pid()).unwrap();
        p.go();
        p.finish();
        std::fs::create_dir(dir.join("nested")).unwrap();
        assert!(dir.is_dir());
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
