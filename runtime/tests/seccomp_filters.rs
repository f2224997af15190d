//! Real seccomp filters installed in forked children (root, this kernel): the Docker and
//! containerd default profiles, every action and every argument operator.
//!
//! Run: cargo test -p husk --test seccomp_filters

mod seccomp_support;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use husk::seccomp::{self, NotifyResponse};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use seccomp_support::*;

const KEYCTL_GET_KEYRING_ID: u64 = 0;
const KEY_SPEC_SESSION_KEYRING: u64 = (-3i64) as u64;
const SYS_CACHESTAT: libc::c_long = 451;

fn exited(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child did not exit normally: {other:?}"),
    }
}

/// The checks a container under a default profile must see; returns 0 or the number of
/// the first failed check.
fn default_profile_checks() -> i32 {
    let (r, e) = sys(
        libc::SYS_unshare,
        [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
    );
    if r != -1 || e != libc::EPERM {
        return 1;
    }
    let (r, e) = sys(
        libc::SYS_keyctl,
        [KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0, 0, 0],
    );
    if r != -1 || e != libc::EPERM {
        return 2;
    }
    // clone3 is answered with ENOSYS so that libc falls back to clone.
    let (r, e) = sys(libc::SYS_clone3, [0, 0, 0, 0, 0, 0]);
    if r != -1 || e != libc::ENOSYS {
        return 3;
    }
    // clone with a namespace flag is refused, plain work is allowed.
    let (r, e) = sys(libc::SYS_clone, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]);
    if r != -1 || e != libc::EPERM {
        return 4;
    }
    // personality: the query form is allowed, other personas are refused.
    let (r, _) = sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]);
    if r < 0 {
        return 5;
    }
    let (r, e) = sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]);
    if r != -1 || e != libc::EPERM {
        return 6;
    }
    let (r, _) = sys(libc::SYS_getpid, [0; 6]);
    if r <= 0 {
        return 7;
    }
    // runc's -ENOSYS stub: a syscall newer than every one the profile names.
    let (r, e) = sys(SYS_CACHESTAT, [0; 6]);
    if r != -1 || e != libc::ENOSYS {
        return 8;
    }
    0
}

#[test]
fn unfiltered_baseline_allows_unshare() {
    let f = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    let st = run_child(&f, true, || {
        let (r, _) = sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
        );
        if r == 0 {
            0
        } else {
            1
        }
    });
    assert_eq!(
        exited(st),
        0,
        "root can unshare(CLONE_NEWUTS) without a filter"
    );
}

#[test]
fn docker_default_profile() {
    let f = seccomp::compile(&fixture("docker-default.json")).expect("compile docker profile");
    assert_eq!(exited(run_child(&f, true, default_profile_checks)), 0);
    let (st, out) = run_busybox(&f, true, &["sh", "-c", "echo hi; ls /"]);
    assert_eq!(exited(st), 0, "busybox output: {out}");
    assert!(
        out.starts_with("hi\n") && out.contains("bin"),
        "output: {out}"
    );
    // busybox's own unshare applet fails the same way.
    let (st, out) = run_busybox(&f, true, &["unshare", "-u", "true"]);
    assert_ne!(exited(st), 0, "unshare must fail under the profile: {out}");
    assert!(out.contains("Operation not permitted"), "output: {out}");
}

#[test]
fn containerd_default_profile() {
    let f =
        seccomp::compile(&fixture("containerd-default.json")).expect("compile containerd profile");
    assert_eq!(exited(run_child(&f, true, default_profile_checks)), 0);
    let (st, out) = run_busybox(&f, true, &["sh", "-c", "echo hi; ls /"]);
    assert_eq!(exited(st), 0, "busybox output: {out}");
    assert!(
        out.starts_with("hi\n") && out.contains("bin"),
        "output: {out}"
    );
}

#[test]
fn without_no_new_privs_as_root() {
    // Installing without no_new_privs needs CAP_SYS_ADMIN, which root has.
    let f = seccomp::compile(&fixture("docker-default.json")).expect("compile");
    assert_eq!(exited(run_child(&f, false, default_profile_checks)), 0);
    let (st, out) = run_busybox(&f, false, &["sh", "-c", "echo hi"]);
    assert_eq!(exited(st), 0, "{out}");
    assert_eq!(out, "hi\n");
}

#[test]
fn flags_are_accepted() {
    let mut p = fixture("docker-default.json");
    p.set_flags(Some(
        serde_json::from_str(
            r#"["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]"#,
        )
        .expect("flags"),
    ));
    let f = seccomp::compile(&p).expect("compile");
    assert_eq!(
        f.flags(),
        (libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) as u32
    );
    assert_eq!(exited(run_child(&f, true, default_profile_checks)), 0);
}

#[test]
fn errno_rule_returns_errno_ret() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
            {"names":["getpgrp"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    let st = run_child(&f, true, || {
        let (r, e) = sys(libc::SYS_getppid, [0; 6]);
        if r != -1 || e != libc::ENOSYS {
            return 1;
        }
        // no errnoRet: EPERM, as runc
        let (r, e) = sys(libc::SYS_getpgrp, [0; 6]);
        if r != -1 || e != libc::EPERM {
            return 2;
        }
        let (r, _) = sys(libc::SYS_getpid, [0; 6]);
        if r <= 0 {
            return 3;
        }
        0
    });
    assert_eq!(exited(st), 0);
}

#[test]
fn kill_actions_kill_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
    ] {
        let f = compiled(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],"action":"{action}"}}]}}"#
        ));
        let st = run_child(&f, true, || {
            sys(libc::SYS_getppid, [0; 6]);
            99
        });
        match st {
            WaitStatus::Signaled(_, Signal::SIGSYS, _) => {}
            other => panic!("{action}: expected death by SIGSYS, got {other:?}"),
        }
    }
}

static TRAP_SYSCALL: AtomicI32 = AtomicI32::new(-1);
static TRAP_CODE: AtomicI32 = AtomicI32::new(-1);
static TRAP_ARCH: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; for SIGSYS the union holds
    // { void *call_addr; int syscall; unsigned arch } right after the 16-byte header.
    unsafe {
        TRAP_CODE.store((*info).si_code, Ordering::SeqCst);
        let base = info as *const u8;
        let nr = std::ptr::read_unaligned(base.add(24) as *const i32);
        let arch = std::ptr::read_unaligned(base.add(28) as *const u32);
        TRAP_SYSCALL.store(nr, Ordering::SeqCst);
        TRAP_ARCH.store(arch, Ordering::SeqCst);
    }
}

#[test]
fn trap_delivers_sigsys() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_TRAP"}]}"#,
    );
    let st = run_child(&f, true, || {
        // SAFETY: installing a handler in the child with a zeroed, then filled sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
                return 1;
            }
        }
        sys(libc::SYS_getppid, [0; 6]);
        const SYS_SECCOMP: i32 = 1;
        if TRAP_CODE.load(Ordering::SeqCst) != SYS_SECCOMP {
            return 2;
        }
        if TRAP_SYSCALL.load(Ordering::SeqCst) != libc::SYS_getppid as i32 {
            return 3;
        }
        if TRAP_ARCH.load(Ordering::SeqCst) != 0xC000_003E {
            return 4;
        }
        0
    });
    assert_eq!(exited(st), 0);
    // Without a handler, SIGSYS terminates the process.
    let st = run_child(&f, true, || {
        sys(libc::SYS_getppid, [0; 6]);
        99
    });
    assert!(
        matches!(st, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "{st:?}"
    );
}

#[test]
fn log_allows() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_LOG"}]}"#,
    );
    let parent = std::process::id() as i64;
    let st = run_child(&f, true, || {
        let (r, _) = sys(libc::SYS_getppid, [0; 6]);
        if r == parent {
            0
        } else {
            1
        }
    });
    assert_eq!(exited(st), 0);
    // LOG as the default action allows everything not listed.
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["getpgrp"],"action":"SCMP_ACT_ERRNO","errnoRet":5}]}"#,
    );
    let st = run_child(&f, true, || {
        let (r, _) = sys(libc::SYS_getppid, [0; 6]);
        let (r2, e2) = sys(libc::SYS_getpgrp, [0; 6]);
        if r == parent && r2 == -1 && e2 == libc::EIO {
            0
        } else {
            1
        }
    });
    assert_eq!(exited(st), 0);
}

#[test]
fn default_errno_with_allow_list() {
    // Everything not listed fails with EACCES; the child needs exit_group to leave.
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":13,"syscalls":[
            {"names":["exit_group","exit","getppid","getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let st = run_child(&f, true, || {
        let (r, _) = sys(libc::SYS_getppid, [0; 6]);
        if r <= 0 {
            return 1;
        }
        let (r, e) = sys(libc::SYS_getuid, [0; 6]);
        if r != -1 || e != libc::EACCES {
            return 2;
        }
        // unshare (272) is above the largest listed syscall (exit_group, 231): runc's
        // -ENOSYS stub answers it, not the default action.
        let (r, e) = sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
        );
        if r != -1 || e != libc::ENOSYS {
            return 3;
        }
        0
    });
    assert_eq!(exited(st), 0);
}

#[test]
fn argument_operators() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":101,
         "args":[{"index":0,"value":57005,"op":"SCMP_CMP_EQ"}]},
        {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":102,
         "args":[{"index":0,"value":0,"op":"SCMP_CMP_NE"}]},
        {"names":["sched_get_priority_max"],"action":"SCMP_ACT_ERRNO","errnoRet":103,
         "args":[{"index":0,"value":1000,"op":"SCMP_CMP_GT"}]},
        {"names":["sched_get_priority_min"],"action":"SCMP_ACT_ERRNO","errnoRet":104,
         "args":[{"index":0,"value":1000,"op":"SCMP_CMP_GE"}]},
        {"names":["getsid"],"action":"SCMP_ACT_ERRNO","errnoRet":105,
         "args":[{"index":0,"value":5,"op":"SCMP_CMP_LT"}]},
        {"names":["getpgid"],"action":"SCMP_ACT_ERRNO","errnoRet":106,
         "args":[{"index":0,"value":5,"op":"SCMP_CMP_LE"}]},
        {"names":["close"],"action":"SCMP_ACT_ERRNO","errnoRet":107,
         "args":[{"index":0,"value":65280,"valueTwo":4608,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["dup"],"action":"SCMP_ACT_ERRNO","errnoRet":108,
         "args":[{"index":0,"value":4294967299,"op":"SCMP_CMP_EQ"}]},
        {"names":["ioprio_get"],"action":"SCMP_ACT_ERRNO","errnoRet":109,
         "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":77777,"op":"SCMP_CMP_EQ"}]},
        {"names":["sched_getscheduler"],"action":"SCMP_ACT_ERRNO","errnoRet":110,
         "args":[{"index":0,"value":11111,"op":"SCMP_CMP_EQ"},{"index":0,"value":22222,"op":"SCMP_CMP_EQ"}]}
        ]}"#,
    );
    let st = run_child(&f, true, || {
        let e = |nr: libc::c_long, a0: u64, a1: u64| sys(nr, [a0, a1, 0, 0, 0, 0]).1;
        let checks: [(bool, i32); 20] = [
            // EQ
            (e(libc::SYS_personality, 57005, 0) == 101, 1),
            (e(libc::SYS_personality, 0xffff_ffff, 0) != 101, 2),
            // NE
            (e(libc::SYS_getpriority, 1, 0) == 102, 3),
            (e(libc::SYS_getpriority, 0, 0) != 102, 4),
            // GT
            (e(libc::SYS_sched_get_priority_max, 1001, 0) == 103, 5),
            (e(libc::SYS_sched_get_priority_max, 1000, 0) != 103, 6),
            // GE
            (e(libc::SYS_sched_get_priority_min, 1000, 0) == 104, 7),
            (e(libc::SYS_sched_get_priority_min, 999, 0) != 104, 8),
            // LT
            (e(libc::SYS_getsid, 4, 0) == 105, 9),
            (e(libc::SYS_getsid, 5, 0) != 105, 10),
            // LE
            (e(libc::SYS_getpgid, 5, 0) == 106, 11),
            (e(libc::SYS_getpgid, 6, 0) != 106, 12),
            // MASKED_EQ: (fd & 0xff00) == 0x1200
            (e(libc::SYS_close, 0x12ab, 0) == 107, 13),
            (e(libc::SYS_close, 0x13ab, 0) != 107, 14),
            // EQ on all 64 bits: 0x1_0000_0003 matches, 3 does not
            (e(libc::SYS_dup, 0x1_0000_0003, 0) == 108, 15),
            (e(libc::SYS_dup, 3, 0) != 108, 16),
            // two different indexes: AND
            (e(libc::SYS_ioprio_get, 1, 77777) == 109, 17),
            (e(libc::SYS_ioprio_get, 1, 77778) != 109, 18),
            // the same index twice: OR (runc)
            (
                e(libc::SYS_sched_getscheduler, 11111, 0) == 110
                    && e(libc::SYS_sched_getscheduler, 22222, 0) == 110,
                19,
            ),
            (e(libc::SYS_sched_getscheduler, 33333, 0) != 110, 20),
        ];
        for (ok, code) in checks {
            if !ok {
                return code;
            }
        }
        0
    });
    assert_eq!(exited(st), 0, "exit code = number of the failed check");
}

#[test]
fn notify_reaches_listener_and_supervisor_answers() {
    use std::os::unix::net::UnixListener;

    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir
        .path()
        .join(format!("agent-{}.sock", std::process::id()));
    let profile_json = format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"{}","listenerMetadata":"meta-{}",
            "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls":[{{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}}]}}"#,
        sock_path.display(),
        std::process::id()
    );
    let p = profile(&profile_json);
    let f = seccomp::compile(&p).expect("compile");
    assert!(f.uses_notify());
    // TSYNC with a listener needs TSYNC_ESRCH; WAIT_KILLABLE_RECV goes with the listener.
    assert_eq!(
        f.flags(),
        (libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH
            | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
            | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) as u32
    );
    let listener = UnixListener::bind(&sock_path).expect("bind agent socket");

    // The seccomp agent: receives the state and the fd, answers one notification.
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let (fd, n) = seccomp::recv_fd_with(conn.as_fd(), &mut buf).expect("recv state + fd");
        let state: serde_json::Value = serde_json::from_slice(&buf[..n]).expect("state JSON");
        let notif = seccomp::recv_notification(fd.as_fd()).expect("notification");
        seccomp::respond(
            fd.as_fd(),
            NotifyResponse {
                id: notif.id,
                val: 4242,
                error: 0,
                continue_syscall: false,
            },
        )
        .expect("respond");
        (state, notif)
    });

    let (parent_sock, child_sock) = socketpair();
    let child_raw = child_sock.as_raw_fd();
    // SAFETY: the child only makes raw syscalls and the non-allocating send_fd.
    let pid = match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(EXIT_NNP_FAILED);
            }
            let fd = match f.install() {
                Ok(Some(fd)) => fd,
                _ => libc::_exit(EXIT_INSTALL_FAILED),
            };
            let sock = std::os::fd::BorrowedFd::borrow_raw(child_raw);
            if seccomp::send_fd(sock, fd.as_fd()).is_err() {
                libc::_exit(2);
            }
            let (r, _) = sys(libc::SYS_getppid, [0; 6]);
            libc::_exit(if r == 4242 { 0 } else { 3 });
        },
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(child_sock);
    let fd = seccomp::recv_fd(parent_sock.as_fd()).expect("listener fd from child");
    let mut state = oci_spec::runtime::State::default();
    state.set_version("1.2.0".to_string());
    state.set_id("seccomp-notify-test".to_string());
    state.set_status(oci_spec::runtime::ContainerState::Creating);
    state.set_pid(Some(pid.as_raw()));
    seccomp::send_to_listener(
        p.listener_path().as_deref().expect("listenerPath"),
        p.listener_metadata().as_deref(),
        fd.as_fd(),
        pid.as_raw(),
        &state,
    )
    .expect("send to listener");
    drop(fd);
    assert_eq!(exited(wait(pid)), 0, "child saw the agent's answer");
    let (state_json, notif) = agent.join().expect("agent thread");
    assert_eq!(state_json["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(state_json["pid"], pid.as_raw());
    assert_eq!(
        state_json["metadata"],
        format!("meta-{}", std::process::id())
    );
    assert_eq!(state_json["ociVersion"], "1.2.0");
    assert_eq!(state_json["state"]["id"], "seccomp-notify-test");
    assert_eq!(state_json["state"]["status"], "creating");
    assert_eq!(notif.nr, libc::SYS_getppid as i32);
    assert_eq!(notif.pid, pid.as_raw() as u32);
}

#[test]
fn unknown_names_are_skipped_and_bad_values_are_errors() {
    // A name this kernel does not know is skipped (runc), the rest still applies.
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["no_such_syscall_xyz","getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":7}]}"#,
    );
    let st = run_child(&f, true, || {
        let (r, e) = sys(libc::SYS_getppid, [0; 6]);
        if r == -1 && e == libc::E2BIG {
            0
        } else {
            1
        }
    });
    assert_eq!(exited(st), 0);

    let v: serde_json::Value = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_BOGUS"}]}"#,
    )
    .expect("json");
    let e = seccomp::parse_seccomp(&v)
        .expect_err("unknown action")
        .to_string();
    assert!(
        e.contains("syscalls[0]") && e.contains("keyctl") && e.contains("SCMP_ACT_BOGUS"),
        "{e}"
    );
    let v: serde_json::Value = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":0,"value":1,"op":"SCMP_CMP_SIMILAR"}]}]}"#,
    )
    .expect("json");
    let e = seccomp::parse_seccomp(&v)
        .expect_err("unknown operator")
        .to_string();
    assert!(
        e.contains("args[0].op") && e.contains("SCMP_CMP_SIMILAR"),
        "{e}"
    );
    // NOTIFY on write would deadlock the runtime: refused, naming the syscall.
    let e = seccomp::compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","syscalls":[{"names":["write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    ))
    .expect_err("notify on write")
    .to_string();
    assert!(e.contains("\"write\""), "{e}");
}

/// An i386 syscall through `int 0x80` (the kernel's ia32 emulation).
#[cfg(target_arch = "x86_64")]
fn sys32(nr: u32, a0: u32, a1: u32) -> i32 {
    let ret: i32;
    // SAFETY: int 0x80 with the i386 calling convention; rbx (reserved by LLVM) is saved
    // and restored around the call.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {a0:e}",
            "int 0x80",
            "pop rbx",
            a0 = in(reg) a0,
            inlateout("eax") nr as i32 => ret,
            in("ecx") a1,
        );
    }
    ret
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x86_and_x32_syscalls_are_filtered_by_their_own_numbers() {
    const I386_GETPID: u32 = 20;
    const I386_UNSHARE: u32 = 310;
    const I386_KEYCTL: u32 = 288;
    const X32_BIT: libc::c_long = 0x4000_0000;
    let f = seccomp::compile(&fixture("docker-default.json")).expect("compile");
    let st = run_child(&f, true, || {
        if sys32(I386_GETPID, 0, 0) <= 0 {
            return 1;
        }
        if sys32(I386_UNSHARE, libc::CLONE_NEWUTS as u32, 0) != -libc::EPERM {
            return 2;
        }
        if sys32(I386_KEYCTL, 0, 0) != -libc::EPERM {
            return 3;
        }
        // x32 numbers: unshare is refused by the filter whether or not the kernel
        // supports x32; getpid passes the filter (the kernel may then say ENOSYS).
        let (r, e) = sys(
            X32_BIT | libc::SYS_unshare,
            [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0],
        );
        if r != -1 || e != libc::EPERM {
            return 4;
        }
        let (_, e) = sys(X32_BIT | libc::SYS_getpid, [0; 6]);
        if e == libc::EPERM {
            return 5;
        }
        0
    });
    assert_eq!(exited(st), 0);

    // An ABI the profile does not list is a bad architecture: the thread is killed
    // (libseccomp's default bad-arch action, which runc keeps).
    let f = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"]}"#);
    let st = run_child(&f, true, || {
        sys32(I386_GETPID, 0, 0);
        99
    });
    assert!(
        matches!(st, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "{st:?}"
    );
    let st = run_child(&f, true, || {
        sys(X32_BIT | libc::SYS_getpid, [0; 6]);
        99
    });
    assert!(
        matches!(st, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "{st:?}"
    );
}
