//! Differential test against runc's engine: the same profile is built the way runc
//! 1.1 does it with libseccomp (seccomp_init(default), arches added, rules added with
//! seccomp_rule_add_array after resolving names, rules equal to the default skipped,
//! repeated arg indexes split into separate rules), exported with seccomp_export_bpf,
//! and runc's -ENOSYS stub applied on top. Both programs are then evaluated over every
//! syscall number of x86_64, x86 and x32 (plus a foreign arch) and, for syscalls with
//! argument rules, over argument values around every constant in the profile. Every
//! verdict must agree.
//!
//! Needs libseccomp (libseccomp-dev is in the project's package list).
//! Run: cargo test -p husk --test seccomp_vs_libseccomp -- --nocapture

#![cfg(target_arch = "x86_64")]

mod seccomp_support;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;

use husk::seccomp::{self, CompiledFilter};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use seccomp_support::*;

#[repr(C)]
#[derive(Clone, Copy)]
struct ScmpArgCmp {
    arg: u32,
    op: u32,
    datum_a: u64,
    datum_b: u64,
}

#[link(name = "seccomp")]
extern "C" {
    fn seccomp_init(def_action: u32) -> *mut libc::c_void;
    fn seccomp_release(ctx: *mut libc::c_void);
    fn seccomp_arch_add(ctx: *mut libc::c_void, arch_token: u32) -> libc::c_int;
    fn seccomp_syscall_resolve_name(name: *const libc::c_char) -> libc::c_int;
    fn seccomp_syscall_resolve_name_arch(arch: u32, name: *const libc::c_char) -> libc::c_int;
    fn seccomp_rule_add_array(
        ctx: *mut libc::c_void,
        action: u32,
        syscall: libc::c_int,
        arg_cnt: libc::c_uint,
        args: *const ScmpArgCmp,
    ) -> libc::c_int;
    fn seccomp_export_bpf(ctx: *const libc::c_void, fd: libc::c_int) -> libc::c_int;
}

const AUDIT_X86_64: u32 = 0xC000_003E;
const AUDIT_I386: u32 = 0x4000_0003;
const AUDIT_AARCH64: u32 = 0xC000_00B7;
const SCMP_ARCH_X32: u32 = 0x4000_003E;
const X32_BIT: u32 = 0x4000_0000;
const ERRNO_ENOSYS: u32 = 0x0005_0000 | 38;

fn action_value(a: LinuxSeccompAction, errno: Option<u32>) -> u32 {
    match a {
        LinuxSeccompAction::ScmpActErrno => 0x0005_0000 | errno.unwrap_or(1),
        LinuxSeccompAction::ScmpActTrace => 0x7ff0_0000 | errno.unwrap_or(1),
        other => other.as_u32(None),
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("cstring")
}

/// The reference: runc's filter for `p`, as BPF instructions, plus the per-arch largest
/// syscall numbers for runc's -ENOSYS stub.
struct Reference {
    prog: Vec<libc::sock_filter>,
    stub: Vec<(
        u32,  /*audit arch*/
        bool, /*x32*/
        u32,  /*max nr*/
    )>,
}

fn runc_reference(p: &LinuxSeccomp) -> Reference {
    let default = action_value(p.default_action(), p.default_errno_ret());
    let arch_tokens: Vec<u32> = p
        .architectures()
        .iter()
        .flatten()
        .map(|a| *a as u32)
        .collect();
    // SAFETY: FFI calls into libseccomp with valid pointers; the context is released.
    unsafe {
        let ctx = seccomp_init(default);
        assert!(!ctx.is_null(), "seccomp_init");
        for t in &arch_tokens {
            let r = seccomp_arch_add(ctx, *t);
            assert!(r == 0 || r == -libc::EEXIST, "seccomp_arch_add {t:#x}: {r}");
        }
        for sc in p.syscalls().iter().flatten() {
            let action = action_value(sc.action(), sc.errno_ret());
            if action == default {
                continue;
            }
            let args: Vec<ScmpArgCmp> = sc
                .args()
                .iter()
                .flatten()
                .map(|a| ScmpArgCmp {
                    arg: a.index() as u32,
                    op: a.op() as u32,
                    datum_a: a.value(),
                    datum_b: a.value_two().unwrap_or(0),
                })
                .collect();
            let mut counts = [0; 6];
            for a in &args {
                counts[a.arg as usize] += 1;
            }
            for name in sc.names() {
                let n = cstr(name);
                let nr = seccomp_syscall_resolve_name(n.as_ptr());
                if nr == -1 {
                    continue; // unknown to libseccomp: runc skips it
                }
                if counts.iter().any(|&c| c > 1) {
                    for a in &args {
                        let r = seccomp_rule_add_array(ctx, action, nr, 1, a);
                        assert_eq!(r, 0, "rule {name}");
                    }
                } else {
                    let r =
                        seccomp_rule_add_array(ctx, action, nr, args.len() as u32, args.as_ptr());
                    assert_eq!(r, 0, "rule {name}");
                }
            }
        }
        let (mut rd, wr) = std::os::unix::net::UnixStream::pair().expect("pair");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            rd.read_to_end(&mut buf).expect("read bpf");
            buf
        });
        assert_eq!(seccomp_export_bpf(ctx, wr.as_raw_fd()), 0, "export");
        drop(wr);
        seccomp_release(ctx);
        let bytes = reader.join().expect("reader");
        let prog = bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();

        // runc's -ENOSYS stub (libcontainer/seccomp/patchbpf)
        let mut stub = Vec::new();
        let permissive = matches!(
            p.default_action(),
            LinuxSeccompAction::ScmpActAllow
                | LinuxSeccompAction::ScmpActLog
                | LinuxSeccompAction::ScmpActTrace
        );
        if !permissive && default != ERRNO_ENOSYS {
            let mut tokens = vec![AUDIT_X86_64];
            tokens.extend(arch_tokens.iter().copied());
            tokens.sort();
            tokens.dedup();
            for t in tokens {
                let mut max = 0i32;
                for sc in p.syscalls().iter().flatten() {
                    for name in sc.names() {
                        let n = cstr(name);
                        max = max.max(seccomp_syscall_resolve_name_arch(t, n.as_ptr()));
                    }
                }
                if max > 0 {
                    let (audit, x32) = match t {
                        AUDIT_X86_64 => (AUDIT_X86_64, false),
                        SCMP_ARCH_X32 => (AUDIT_X86_64, true),
                        AUDIT_I386 => (AUDIT_I386, false),
                        other => (other, false),
                    };
                    stub.push((audit, x32, max as u32));
                }
            }
        }
        Reference { prog, stub }
    }
}

/// Classic-BPF interpreter for what libseccomp emits.
fn run_bpf(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let src = if i.code & 0x08 != 0 { x } else { i.k };
        match i.code {
            0x20 => {
                let o = i.k as usize;
                a = u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
            }
            0x00 => a = i.k,
            0x01 => x = i.k,
            0x06 => return i.k,
            0x16 => return a,
            0x07 => x = a,
            0x87 => a = x,
            0x54 | 0x5c => a &= src,
            0x05 => pc += i.k as usize,
            0x15 | 0x1d => pc += if a == src { i.jt } else { i.jf } as usize,
            0x25 | 0x2d => pc += if a > src { i.jt } else { i.jf } as usize,
            0x35 | 0x3d => pc += if a >= src { i.jt } else { i.jf } as usize,
            0x45 | 0x4d => pc += if a & src != 0 { i.jt } else { i.jf } as usize,
            other => panic!("libseccomp emitted opcode {other:#x} this test does not know"),
        }
    }
}

fn reference_verdict(r: &Reference, nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    for (audit, x32, max) in &r.stub {
        if *audit == arch {
            let is_x32 = arch == AUDIT_X86_64 && nr & X32_BIT != 0;
            if is_x32 == *x32 && nr > *max {
                return ERRNO_ENOSYS;
            }
        }
    }
    run_bpf(&r.prog, nr, arch, args)
}

/// Argument values around every constant the profile uses.
fn probe_values(p: &LinuxSeccomp) -> Vec<u64> {
    // 0..=24 covers every socketcall(2)/ipc(2) call number.
    let mut v: BTreeSet<u64> = (0..=24).chain([0xffff_ffff, 1 << 32, u64::MAX]).collect();
    for sc in p.syscalls().iter().flatten() {
        for a in sc.args().iter().flatten() {
            for c in [a.value(), a.value_two().unwrap_or(0)] {
                for d in [
                    c,
                    c.wrapping_sub(1),
                    c.wrapping_add(1),
                    c | (1 << 32),
                    c & 0xffff_ffff,
                    !c,
                    c ^ 0x100,
                ] {
                    v.insert(d);
                }
            }
        }
    }
    v.into_iter().collect()
}

fn compare(p: &LinuxSeccomp, label: &str) {
    let ours: CompiledFilter = seccomp::compile(p).expect("compile");
    let reference = runc_reference(p);
    let values = probe_values(p);
    // Syscalls whose verdict depends on arguments: those with argument rules, plus the
    // x86 multiplexers libseccomp adds rules for.
    let mut arg_syscalls: BTreeSet<String> = p
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.args().as_ref().is_some_and(|a| !a.is_empty()))
        .flat_map(|s| s.names().iter().cloned())
        .collect();
    arg_syscalls.insert("socketcall".into());
    arg_syscalls.insert("ipc".into());
    let mut arg_nrs: Vec<(u32, u32)> = Vec::new(); // (arch, nr)
    for name in &arg_syscalls {
        let n = cstr(name);
        for (token, audit) in [
            (AUDIT_X86_64, AUDIT_X86_64),
            (AUDIT_I386, AUDIT_I386),
            (SCMP_ARCH_X32, AUDIT_X86_64),
        ] {
            // SAFETY: FFI with a valid C string.
            let nr = unsafe { seccomp_syscall_resolve_name_arch(token, n.as_ptr()) };
            if nr >= 0 {
                arg_nrs.push((audit, nr as u32));
            }
        }
    }

    let mut checked = 0u64;
    let mut mismatches = Vec::new();
    let mut check = |nr: u32, arch: u32, args: [u64; 6]| {
        let o = ours.evaluate(nr, arch, args).expect("our program runs");
        let r = reference_verdict(&reference, nr, arch, args);
        checked += 1;
        if o != r && mismatches.len() < 20 {
            mismatches.push(format!(
                "arch {arch:#x} nr {nr:#x} args {args:x?}: husk {o:#x}, runc/libseccomp {r:#x}"
            ));
        }
    };
    for nr in 0..600u32 {
        check(nr, AUDIT_X86_64, [0; 6]);
        check(nr, AUDIT_I386, [0; 6]);
        check(nr | X32_BIT, AUDIT_X86_64, [0; 6]);
        check(nr, AUDIT_AARCH64, [0; 6]);
    }
    for (arch, nr) in &arg_nrs {
        for idx in 0..6 {
            for v in &values {
                let mut args = [0u64; 6];
                args[idx] = *v;
                check(*nr, *arch, args);
            }
        }
        // pairs on the first two args for AND rules
        for v0 in &values {
            for v1 in &values {
                check(*nr, *arch, [*v0, *v1, 0, 0, 0, 0]);
            }
        }
    }
    println!(
        "{label}: {checked} verdicts compared, husk {} insns vs libseccomp {} insns (+runc stub)",
        ours.program().len(),
        reference.prog.len()
    );
    assert!(mismatches.is_empty(), "{label}:\n{}", mismatches.join("\n"));
}

#[test]
fn docker_default_matches_runc() {
    compare(&fixture("docker-default.json"), "docker-default");
}

#[test]
fn containerd_default_matches_runc() {
    compare(&fixture("containerd-default.json"), "containerd-default");
}

#[test]
fn operators_and_actions_match_runc() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":13,
        "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
        "syscalls":[
        {"names":["read","write","exit_group","socketcall","_llseek"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getpid"],"action":"SCMP_ACT_TRAP"},
        {"names":["getppid"],"action":"SCMP_ACT_KILL_PROCESS"},
        {"names":["gettid"],"action":"SCMP_ACT_KILL"},
        {"names":["getuid"],"action":"SCMP_ACT_LOG"},
        {"names":["geteuid"],"action":"SCMP_ACT_TRACE","errnoRet":5},
        {"names":["getgid"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
        {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
        {"names":["getpriority"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":4294967301,"op":"SCMP_CMP_NE"}]},
        {"names":["sched_get_priority_max"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967296,"op":"SCMP_CMP_GT"}]},
        {"names":["sched_get_priority_min"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1000,"op":"SCMP_CMP_GE"}]},
        {"names":["getsid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967297,"op":"SCMP_CMP_LT"}]},
        {"names":["getpgid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":5,"op":"SCMP_CMP_LE"}]},
        {"names":["close"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1095216660480,"valueTwo":4294967296,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["ioprio_get"],"action":"SCMP_ACT_ERRNO","errnoRet":9,"args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":7,"op":"SCMP_CMP_GE"}]},
        {"names":["sched_getscheduler"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":11,"op":"SCMP_CMP_EQ"},{"index":0,"value":22,"op":"SCMP_CMP_EQ"}]},
        {"names":["dup3"],"action":"SCMP_ACT_ERRNO","errnoRet":13}
        ]}"#,
    );
    compare(&p, "operators+actions");
    let mut allow_default = p.clone();
    allow_default.set_default_action(LinuxSeccompAction::ScmpActAllow);
    allow_default.set_default_errno_ret(None);
    compare(&allow_default, "operators+actions, default allow");
    let mut trace_default = p.clone();
    trace_default.set_default_action(LinuxSeccompAction::ScmpActTrace);
    trace_default.set_default_errno_ret(Some(3));
    compare(&trace_default, "operators+actions, default trace");
    let mut kill_default = p.clone();
    kill_default.set_default_action(LinuxSeccompAction::ScmpActKillProcess);
    kill_default.set_default_errno_ret(None);
    compare(&kill_default, "operators+actions, default kill_process");
}

#[test]
fn duplicate_and_mixed_rules_match_runc() {
    // The first unconditional action wins; an unconditional rule shadows conditional
    // ones in either order (libseccomp's database rules, inherited by runc).
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
        "syscalls":[
        {"names":["exit_group"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":5},
        {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":7,"args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["getppid"],"action":"SCMP_ACT_ALLOW"},
        {"names":["gettid"],"action":"SCMP_ACT_ALLOW"},
        {"names":["gettid"],"action":"SCMP_ACT_ERRNO","errnoRet":7,"args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["umask"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["umask"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]}
        ]}"#,
    );
    compare(&p, "duplicates");
    // Same arguments, different actions: libseccomp says EEXIST and runc fails; so do we.
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["umask"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]},
        {"names":["umask"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let e = seccomp::compile(&p).expect_err("conflict").to_string();
    assert!(e.contains("\"umask\"") && e.contains("syscalls[1]"), "{e}");
}

/// Installs a raw BPF program on the calling thread (child side of the timing test).
fn install_raw(prog: &[libc::sock_filter]) -> bool {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) copies the program `fprog` points to.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                1u64,
                0u64,
                &fprog as *const libc::sock_fprog,
            ) == 0
    }
}

/// Nanoseconds per call of a few cheap syscalls with `prog` installed (None: no filter),
/// measured in a forked child and reported over a pipe.
fn time_syscalls(prog: Option<&[libc::sock_filter]>) -> Vec<f64> {
    const N: u64 = 100_000;
    const CALLS: [libc::c_long; 3] = [libc::SYS_getppid, libc::SYS_geteuid, libc::SYS_read];
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    // SAFETY: the child only makes raw syscalls and reads the clock, then _exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            if let Some(p) = prog {
                if !install_raw(p) {
                    libc::_exit(1);
                }
            }
            let mut out = [0u64; 3];
            for (i, nr) in CALLS.iter().enumerate() {
                let mut t0: libc::timespec = std::mem::zeroed();
                let mut t1: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
                for _ in 0..N {
                    // read(-1, NULL, 0): EBADF, no side effect
                    libc::syscall(*nr, -1i64, 0u64, 0u64);
                }
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1);
                out[i] = ((t1.tv_sec - t0.tv_sec) as u64 * 1_000_000_000)
                    .wrapping_add(t1.tv_nsec as u64)
                    .wrapping_sub(t0.tv_nsec as u64);
            }
            libc::write(w.as_raw_fd(), out.as_ptr().cast(), 24);
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut buf = Vec::new();
            std::fs::File::from(r)
                .read_to_end(&mut buf)
                .expect("read timings");
            let st = wait(child);
            assert!(
                matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "{st:?}"
            );
            buf.chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) as f64 / N as f64)
                .collect()
        }
    }
}

/// Informational: per-syscall cost of the Docker profile as husk builds it (binary
/// search) and as libseccomp builds it for runc (linear), on this machine. Nothing is
/// asserted about speed.
#[test]
fn timing_syscall_cost_under_docker_profile() {
    let p = fixture("docker-default.json");
    let t = std::time::Instant::now();
    let ours = seccomp::compile(&p).expect("compile");
    let t_ours = t.elapsed();
    let t = std::time::Instant::now();
    let reference = runc_reference(&p);
    let t_ref = t.elapsed();
    println!(
        "compile docker-default once: husk {t_ours:?}, libseccomp as runc builds it (rules, export, -ENOSYS maxima) {t_ref:?}"
    );
    // Best of five rounds, interleaved, to damp the noise of a shared machine.
    let min = |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> {
        a.iter().zip(&b).map(|(x, y)| x.min(*y)).collect()
    };
    let (mut none, mut husk, mut libseccomp) =
        (vec![f64::MAX; 3], vec![f64::MAX; 3], vec![f64::MAX; 3]);
    for _ in 0..5 {
        none = min(none, time_syscalls(None));
        husk = min(husk, time_syscalls(Some(ours.program())));
        libseccomp = min(libseccomp, time_syscalls(Some(&reference.prog)));
    }
    println!(
        "ns/syscall [getppid, geteuid, read]: no filter {none:.0?}, husk {husk:.0?}, \
         libseccomp (runc, without its stub) {libseccomp:.0?}"
    );
}

#[test]
fn x86_socketcall_and_ipc_multiplexing_match_runc() {
    // Without socketcall/ipc allowed outright, libseccomp also allows the multiplexed
    // forms of the socket and SysV IPC syscalls on x86.
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
        "syscalls":[
        {"names":["exit_group","read","write"],"action":"SCMP_ACT_ALLOW"},
        {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":40,"op":"SCMP_CMP_NE"}]},
        {"names":["connect","recv","accept4","sendmmsg","semop","semtimedop","shmget"],"action":"SCMP_ACT_ALLOW"},
        {"names":["send"],"action":"SCMP_ACT_ERRNO","errnoRet":5},
        {"names":["msgget"],"action":"SCMP_ACT_KILL_PROCESS"},
        {"names":["ipc"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":99,"op":"SCMP_CMP_EQ"}]}
        ]}"#,
    );
    compare(&p, "x86 multiplexing");
}
