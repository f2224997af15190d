//! runtime-spec `linux.seccomp` -> one classic-BPF program, with runc's semantics.
//!
//! Layout of the generated program:
//! ```text
//!   ld arch
//!   jeq AUDIT_ARCH_<a> -> section_a        (one per kernel arch the filter covers)
//!   ret KILL_THREAD                        (bad arch, libseccomp's default)
//! section_a:
//!   ld nr
//!   [x86_64 only] jset X32_SYSCALL_BIT -> x32 section (or bad arch)
//!   [ENOSYS stub] jgt <largest nr named in the profile> -> ret ERRNO(ENOSYS)
//!   binary search on nr down to groups of <= LEAF syscalls, each group:
//!     jeq nr_i -> ret action_i | arg block_i   ...   ret default
//! ```
//! Semantics follow runc + libseccomp:
//! - the native arch is always covered; listed arches are added to it; arches the
//!   running kernel can never report (e.g. ARM on x86_64) cannot match and are skipped;
//! - a rule whose action equals the default action is dropped (runc skips it);
//! - names unknown on an arch are skipped for that arch with a debug log;
//! - if a rule's args use one index more than once, each arg becomes a rule of its own
//!   (OR); otherwise the args form one rule (AND);
//! - an unconditional rule for a syscall overrides its conditional rules, and the first
//!   unconditional action of a syscall wins (libseccomp); two conditional rules with the
//!   same arguments and different actions are an error (libseccomp's EEXIST, which runc
//!   reports); otherwise conditional rules are tried in profile order;
//! - on x86 (i386), a rule for a socket or SysV IPC syscall is also added for
//!   socketcall(2)/ipc(2) with `a0 == <call>` (libseccomp's multiplexing);
//! - argument comparisons are unsigned 64-bit on 64-bit ABIs and on the low 32 bits for
//!   32-bit ABIs (x86, x32), as libseccomp does; MASKED_EQ is `(arg & value) == valueTwo`;
//! - runc's -ENOSYS stub: unless the default action is ALLOW/LOG/TRACE or its errno is
//!   already ENOSYS, a syscall number above the largest one the profile names (per arch) returns
//!   ENOSYS, so that programs fall back from syscalls newer than the profile.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use tracing::debug;

use super::bpf::{self, Asm, Insn, Label};
use super::{syscall_tables, CompiledFilter, SeccompError};

pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Linear-search group size at the leaves of the binary search.
const LEAF: usize = 8;

/// i386 socketcall(2) and ipc(2) numbers (linux/net.h, linux/ipc.h).
const X86_SOCKETCALL: u32 = 102;
const X86_IPC: u32 = 117;
const X86_MULTIPLEXED: &[(&str, u32, u64)] = &[
    ("socket", X86_SOCKETCALL, 1),
    ("bind", X86_SOCKETCALL, 2),
    ("connect", X86_SOCKETCALL, 3),
    ("listen", X86_SOCKETCALL, 4),
    ("accept", X86_SOCKETCALL, 5),
    ("getsockname", X86_SOCKETCALL, 6),
    ("getpeername", X86_SOCKETCALL, 7),
    ("socketpair", X86_SOCKETCALL, 8),
    ("send", X86_SOCKETCALL, 9),
    ("recv", X86_SOCKETCALL, 10),
    ("sendto", X86_SOCKETCALL, 11),
    ("recvfrom", X86_SOCKETCALL, 12),
    ("shutdown", X86_SOCKETCALL, 13),
    ("setsockopt", X86_SOCKETCALL, 14),
    ("getsockopt", X86_SOCKETCALL, 15),
    ("sendmsg", X86_SOCKETCALL, 16),
    ("recvmsg", X86_SOCKETCALL, 17),
    ("accept4", X86_SOCKETCALL, 18),
    ("recvmmsg", X86_SOCKETCALL, 19),
    ("sendmmsg", X86_SOCKETCALL, 20),
    ("semop", X86_IPC, 1),
    ("semget", X86_IPC, 2),
    ("semctl", X86_IPC, 3),
    ("semtimedop", X86_IPC, 4),
    ("msgsnd", X86_IPC, 11),
    ("msgrcv", X86_IPC, 12),
    ("msgget", X86_IPC, 13),
    ("msgctl", X86_IPC, 14),
    ("shmat", X86_IPC, 21),
    ("shmdt", X86_IPC, 22),
    ("shmget", X86_IPC, 23),
    ("shmctl", X86_IPC, 24),
];

/// On x86 a socket or SysV IPC syscall can also be made through socketcall(2)/ipc(2);
/// libseccomp then adds `socketcall|ipc(a0 == call)` with the rule's action (the
/// rule's own argument checks cannot apply there and are dropped). Returns that
/// (multiplexer nr, call number).
/// The rules of a syscall reached through an x86 multiplexer (socketcall, ipc), as libseccomp
/// builds them: argument 0 becomes the call number, the conditions on arguments 1 to 5 stay
/// (they apply to the multiplexer's own arguments, as in libseccomp), a condition on argument 0
/// is replaced.
fn multiplexed_rules(rules: &[Vec<Cond>], call: u64) -> Vec<Vec<Cond>> {
    let on_call = Cond {
        index: 0,
        op: LinuxSeccompOperator::ScmpCmpEq,
        value: call,
        value_two: 0,
    };
    if rules.is_empty() {
        return vec![vec![on_call]];
    }
    let mut out: Vec<Vec<Cond>> = Vec::with_capacity(rules.len());
    for conds in rules {
        let mut v = vec![on_call];
        v.extend(conds.iter().filter(|c| c.index != 0).copied());
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn x86_multiplexed(name: &str) -> Option<(u32, u64)> {
    X86_MULTIPLEXED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, nr, call)| (*nr, *call))
}

/// A syscall ABI with its own number table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Abi {
    X86_64,
    X32,
    X86,
    Aarch64,
}

impl Abi {
    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Abi::X86_64 => syscall_tables::X86_64,
            Abi::X32 => syscall_tables::X32,
            Abi::X86 => syscall_tables::X86,
            Abi::Aarch64 => syscall_tables::AARCH64,
        }
    }

    pub(crate) fn resolve(self, name: &str) -> Option<u32> {
        let t = self.table();
        t.binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| t[i].1)
    }

    fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => AUDIT_ARCH_X86_64,
            Abi::X86 => AUDIT_ARCH_I386,
            Abi::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// Arguments are compared on 64 bits only for 64-bit ABIs (libseccomp's arch size).
    fn args_64(self) -> bool {
        matches!(self, Abi::X86_64 | Abi::Aarch64)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::X32 => "x32",
            Abi::X86 => "x86",
            Abi::Aarch64 => "aarch64",
        }
    }
}

/// The ABI of the running kernel/binary.
pub(crate) fn native_abi() -> Result<Abi, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(Abi::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(Abi::Aarch64)
    } else {
        Err(SeccompError::UnsupportedNativeArch(std::env::consts::ARCH))
    }
}

/// Maps a spec architecture to an ABI that the running kernel can report, or None if
/// it can never match here.
fn abi_for(arch: Arch, native: Abi) -> Option<Abi> {
    let abi = match arch {
        Arch::ScmpArchNative => native,
        Arch::ScmpArchX86_64 => Abi::X86_64,
        Arch::ScmpArchX86 => Abi::X86,
        Arch::ScmpArchX32 => Abi::X32,
        Arch::ScmpArchAarch64 => Abi::Aarch64,
        _ => return None,
    };
    let reachable = match native {
        Abi::X86_64 => matches!(abi, Abi::X86_64 | Abi::X86 | Abi::X32),
        Abi::Aarch64 => abi == Abi::Aarch64,
        Abi::X86 | Abi::X32 => false,
    };
    reachable.then_some(abi)
}

fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &dyn Fn() -> String,
) -> Result<u32, SeccompError> {
    let data = |errno: Option<u32>| -> Result<u32, SeccompError> {
        let e = errno.unwrap_or(libc::EPERM as u32);
        if e > 0xffff {
            return Err(SeccompError::Invalid(format!(
                "{}: errnoRet {e} does not fit in 16 bits",
                what()
            )));
        }
        Ok(e)
    };
    // runc ignores errnoRet on actions that carry no errno.
    let needs_no_errno = |name: &str| -> Result<(), SeccompError> {
        if let Some(e) = errno_ret {
            debug!("seccomp: {}: errnoRet {e} ignored for {name}", what());
        }
        Ok(())
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            needs_no_errno("SCMP_ACT_KILL")?;
            RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => {
            needs_no_errno("SCMP_ACT_KILL_PROCESS")?;
            RET_KILL_PROCESS
        }
        LinuxSeccompAction::ScmpActTrap => {
            needs_no_errno("SCMP_ACT_TRAP")?;
            RET_TRAP
        }
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(errno_ret)?,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(errno_ret)?,
        LinuxSeccompAction::ScmpActNotify => {
            needs_no_errno("SCMP_ACT_NOTIFY")?;
            RET_USER_NOTIF
        }
        LinuxSeccompAction::ScmpActLog => {
            needs_no_errno("SCMP_ACT_LOG")?;
            RET_LOG
        }
        LinuxSeccompAction::ScmpActAllow => {
            needs_no_errno("SCMP_ACT_ALLOW")?;
            RET_ALLOW
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond {
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

/// Everything the profile says about one syscall number on one ABI.
#[derive(Default, Debug)]
struct SyscallRules {
    unconditional: Option<u32>,
    conditional: Vec<Rule>,
}

/// Compiles `linux.seccomp` into a loadable filter. May allocate freely: call it before
/// cloning the container's init.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    let native = native_abi()?;

    // Architectures: the native one always, then the listed ones.
    let mut abis = vec![native];
    for arch in seccomp.architectures().iter().flatten() {
        match abi_for(*arch, native) {
            Some(abi) if !abis.contains(&abi) => abis.push(abi),
            Some(_) => {}
            None => debug!(arch = %arch, native = native.name(),
                "seccomp: architecture cannot occur on this kernel, skipped"),
        }
    }
    abis.sort();

    let default_action = seccomp.default_action();
    if default_action == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::Invalid(
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action".into(),
        ));
    }
    let default = action_value(default_action, seccomp.default_errno_ret(), &|| {
        "linux.seccomp.defaultAction".to_string()
    })?;

    // Flags.
    let mut flags: u32 = 0;
    let mut wait_killable = false;
    for f in seccomp.flags().iter().flatten() {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC as u32
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                flags |= libc::SECCOMP_FILTER_FLAG_LOG as u32
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => wait_killable = true,
        }
    }

    // Rules per ABI, keyed by syscall number.
    let mut per_abi: BTreeMap<Abi, BTreeMap<u32, SyscallRules>> = BTreeMap::new();
    let mut max_nr: BTreeMap<Abi, u32> = BTreeMap::new();
    let mut uses_notify = false;
    let syscalls = seccomp.syscalls().as_deref().unwrap_or(&[]);
    for (i, sc) in syscalls.iter().enumerate() {
        let what = || format!("linux.seccomp.syscalls[{i}] (names {:?})", sc.names());
        let action = action_value(sc.action(), sc.errno_ret(), &what)?;
        if sc.names().is_empty() {
            return Err(SeccompError::Invalid(format!(
                "{}: no syscall names",
                what()
            )));
        }
        if sc.action() == LinuxSeccompAction::ScmpActNotify {
            if let Some(w) = sc.names().iter().find(|n| n.as_str() == "write") {
                return Err(SeccompError::Invalid(format!(
                    "{}: SCMP_ACT_NOTIFY cannot be used for {w:?} (the runtime needs it)",
                    what()
                )));
            }
        }
        let args = sc.args().as_deref().unwrap_or(&[]);
        let mut conds = Vec::with_capacity(args.len());
        let mut seen = [0u8; 6];
        for (j, a) in args.iter().enumerate() {
            if a.index() >= 6 {
                return Err(SeccompError::Invalid(format!(
                    "{}: args[{j}].index {} is out of range (0..=5)",
                    what(),
                    a.index()
                )));
            }
            seen[a.index()] += 1;
            conds.push(Cond {
                index: a.index() as u32,
                op: a.op(),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        // One rule with every condition (AND), or, when an index repeats, one rule per
        // condition (OR) as runc does.
        let rules: Vec<Vec<Cond>> = if conds.is_empty() {
            vec![]
        } else if seen.iter().any(|&c| c > 1) {
            conds.iter().map(|c| vec![*c]).collect()
        } else {
            vec![conds]
        };

        for abi in &abis {
            for name in sc.names() {
                let nr = abi.resolve(name);
                let mux = if *abi == Abi::X86 {
                    x86_multiplexed(name)
                } else {
                    None
                };
                // runc takes the stub's bound from libseccomp's name resolution, which
                // gives the multiplexed x86 socket/IPC names pseudo (negative) numbers.
                if let (Some(nr), None) = (nr, mux) {
                    let m = max_nr.entry(*abi).or_insert(0);
                    *m = (*m).max(nr);
                }
                if action == default {
                    // runc drops rules that repeat the default action.
                    continue;
                }
                if nr.is_none() && mux.is_none() {
                    debug!(syscall = %name, arch = abi.name(),
                        "seccomp: syscall unknown on this architecture, skipped");
                    continue;
                }
                if action == RET_USER_NOTIF {
                    uses_notify = true;
                }
                let table = per_abi.entry(*abi).or_default();
                if let Some(nr) = nr {
                    add_rules(table.entry(nr).or_default(), name, action, &rules, &what)?;
                }
                if let Some((mux_nr, call)) = mux {
                    let via = multiplexed_rules(&rules, call);
                    add_rules(table.entry(mux_nr).or_default(), name, action, &via, &what)?;
                }
            }
        }
    }

    if uses_notify {
        if seccomp.listener_path().is_none() {
            return Err(SeccompError::Invalid(
                "linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used".into(),
            ));
        }
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC as u32 != 0 {
            // TSYNC and NEW_LISTENER are only allowed together with TSYNC_ESRCH.
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH as u32;
        }
        if wait_killable {
            flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV as u32;
        }
    } else if wait_killable {
        debug!("seccomp: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored: no SCMP_ACT_NOTIFY rule");
    }

    // runc counts TRACE as permissive too: a tracer is expected to handle new syscalls.
    let enosys_stub = !(matches!(
        default_action,
        LinuxSeccompAction::ScmpActAllow
            | LinuxSeccompAction::ScmpActLog
            | LinuxSeccompAction::ScmpActTrace
    ) || default == RET_ERRNO | libc::ENOSYS as u32);

    let program = generate(&abis, &per_abi, &max_nr, default, enosys_stub)?;
    Ok(CompiledFilter {
        program,
        flags,
        uses_notify,
    })
}

/// Adds one profile rule (`rules` empty: unconditional) for one syscall number.
fn add_rules(
    entry: &mut SyscallRules,
    name: &str,
    action: u32,
    rules: &[Vec<Cond>],
    what: &dyn Fn() -> String,
) -> Result<(), SeccompError> {
    if rules.is_empty() {
        match entry.unconditional {
            // libseccomp keeps the first unconditional action of a syscall.
            Some(prev) if prev != action => debug!(syscall = %name,
                "seccomp: second unconditional action {action:#x} ignored, keeping {prev:#x}"),
            Some(_) => {}
            None => entry.unconditional = Some(action),
        }
        return Ok(());
    }
    for conds in rules {
        if let Some(prev) = entry
            .conditional
            .iter()
            .find(|r| r.conds == *conds && r.action != action)
        {
            // libseccomp refuses this (EEXIST) and so does runc.
            return Err(SeccompError::Invalid(format!(
                "{}: syscall {name:?} already has a rule with the same arguments and another action ({:#x} vs {action:#x})",
                what(),
                prev.action
            )));
        }
        let r = Rule {
            conds: conds.clone(),
            action,
        };
        if !entry.conditional.contains(&r) {
            entry.conditional.push(r);
        }
    }
    Ok(())
}

fn generate(
    abis: &[Abi],
    per_abi: &BTreeMap<Abi, BTreeMap<u32, SyscallRules>>,
    max_nr: &BTreeMap<Abi, u32>,
    default: u32,
    enosys_stub: bool,
) -> Result<Vec<Insn>, SeccompError> {
    let mut a = Asm::new();
    let bad_arch = a.label();
    let enosys = a.label();

    // Kernel architectures covered, each with the ABIs that share it.
    let mut kernel_arches: Vec<u32> = abis.iter().map(|x| x.audit_arch()).collect();
    kernel_arches.dedup();
    let sections: Vec<(u32, Label)> = kernel_arches.iter().map(|k| (*k, a.label())).collect();

    a.load(4); // seccomp_data.arch
    for (arch, l) in &sections {
        a.jump(bpf::JEQ_K, *arch, Some(*l), None);
    }
    a.ret(RET_KILL_THREAD);

    let empty = BTreeMap::new();
    for (arch, l) in &sections {
        a.bind(*l);
        a.load(0); // seccomp_data.nr
        let abi_section = |a: &mut Asm, abi: Abi| -> Result<(), SeccompError> {
            if enosys_stub {
                if let Some(max) = max_nr.get(&abi) {
                    a.jump(bpf::JGT_K, *max, Some(enosys), None);
                }
            }
            let rules = per_abi.get(&abi).unwrap_or(&empty);
            let entries: Vec<(u32, &SyscallRules)> = rules.iter().map(|(k, v)| (*k, v)).collect();
            tree(a, &entries, abi, default);
            Ok(())
        };
        if *arch == AUDIT_ARCH_X86_64 {
            let has64 = abis.contains(&Abi::X86_64);
            let has32 = abis.contains(&Abi::X32);
            let x32 = a.label();
            a.jump(
                bpf::JSET_K,
                X32_SYSCALL_BIT,
                Some(if has32 { x32 } else { bad_arch }),
                None,
            );
            if has64 {
                abi_section(&mut a, Abi::X86_64)?;
            } else {
                a.ja(bad_arch);
            }
            a.bind(x32);
            if has32 {
                abi_section(&mut a, Abi::X32)?;
            }
        } else {
            let abi = abis
                .iter()
                .find(|x| x.audit_arch() == *arch)
                .copied()
                .ok_or_else(|| SeccompError::Internal(format!("no ABI for arch {arch:#x}")))?;
            abi_section(&mut a, abi)?;
        }
    }
    a.bind(enosys);
    a.ret(RET_ERRNO | libc::ENOSYS as u32);
    a.bind(bad_arch);
    a.ret(RET_KILL_THREAD);
    a.assemble()
}

/// Binary search on the syscall number, linear groups at the leaves.
fn tree(a: &mut Asm, entries: &[(u32, &SyscallRules)], abi: Abi, default: u32) {
    if entries.len() <= LEAF {
        group(a, entries, abi, default);
        return;
    }
    let mid = entries.len() / 2;
    let right = a.label();
    a.jump(bpf::JGE_K, entries[mid].0, Some(right), None);
    tree(a, &entries[..mid], abi, default);
    a.bind(right);
    tree(a, &entries[mid..], abi, default);
}

fn group(a: &mut Asm, entries: &[(u32, &SyscallRules)], abi: Abi, default: u32) {
    let mut rets: Vec<(u32, Label)> = Vec::new();
    let mut blocks: Vec<(Label, &SyscallRules)> = Vec::new();
    for (nr, rules) in entries {
        let target = match rules.unconditional {
            Some(action) => match rets.iter().find(|(x, _)| *x == action) {
                Some((_, l)) => *l,
                None => {
                    let l = a.label();
                    rets.push((action, l));
                    l
                }
            },
            None => {
                let l = a.label();
                blocks.push((l, rules));
                l
            }
        };
        a.jump(bpf::JEQ_K, *nr, Some(target), None);
    }
    a.ret(default);
    for (action, l) in rets {
        a.bind(l);
        a.ret(action);
    }
    for (l, rules) in blocks {
        a.bind(l);
        for rule in &rules.conditional {
            let next = a.label();
            for c in &rule.conds {
                cond(a, c, abi.args_64(), next);
            }
            a.ret(rule.action);
            a.bind(next);
        }
        a.ret(default);
    }
}

/// Emits the test of one argument condition: falls through when it holds, jumps to
/// `fail` when it does not.
fn cond(a: &mut Asm, c: &Cond, is64: bool, fail: Label) {
    use LinuxSeccompOperator as Op;
    let lo_off = 16 + 8 * c.index; // little-endian: low word first
    let hi_off = lo_off + 4;
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let pass = a.label();
    match c.op {
        Op::ScmpCmpEq => {
            if is64 {
                a.load(hi_off);
                a.jump(bpf::JEQ_K, hi(c.value), None, Some(fail));
            }
            a.load(lo_off);
            a.jump(bpf::JEQ_K, lo(c.value), None, Some(fail));
        }
        Op::ScmpCmpNe => {
            if is64 {
                a.load(hi_off);
                a.jump(bpf::JEQ_K, hi(c.value), None, Some(pass));
            }
            a.load(lo_off);
            a.jump(bpf::JEQ_K, lo(c.value), Some(fail), None);
        }
        Op::ScmpCmpMaskedEq => {
            // value is the mask, valueTwo the expected result (libseccomp's order).
            if is64 {
                a.load(hi_off);
                a.stmt(bpf::ALU_AND_K, hi(c.value));
                a.jump(bpf::JEQ_K, hi(c.value_two), None, Some(fail));
            }
            a.load(lo_off);
            a.stmt(bpf::ALU_AND_K, lo(c.value));
            a.jump(bpf::JEQ_K, lo(c.value_two), None, Some(fail));
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            if is64 {
                a.load(hi_off);
                a.jump(bpf::JGT_K, hi(c.value), Some(pass), None);
                a.jump(bpf::JEQ_K, hi(c.value), None, Some(fail));
            }
            a.load(lo_off);
            let code = if c.op == Op::ScmpCmpGt {
                bpf::JGT_K
            } else {
                bpf::JGE_K
            };
            a.jump(code, lo(c.value), None, Some(fail));
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            if is64 {
                a.load(hi_off);
                a.jump(bpf::JGT_K, hi(c.value), Some(fail), None);
                a.jump(bpf::JEQ_K, hi(c.value), None, Some(pass));
            }
            a.load(lo_off);
            // LT fails when lo >= v, LE fails when lo > v.
            let code = if c.op == Op::ScmpCmpLt {
                bpf::JGE_K
            } else {
                bpf::JGT_K
            };
            a.jump(code, lo(c.value), Some(fail), None);
        }
    }
    a.bind(pass);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::bpf::interpret;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    fn run(f: &CompiledFilter, name: &str, args: [u64; 6]) -> u32 {
        let nr = Abi::X86_64.resolve(name).unwrap();
        interpret(&f.program, nr, AUDIT_ARCH_X86_64, args).unwrap()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn operators_64bit() {
        let big = 0x1_0000_0005u64;
        let p = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {{"names":["dup"],"action":"SCMP_ACT_ERRNO","errnoRet":10,"args":[{{"index":0,"value":{big},"op":"SCMP_CMP_EQ"}}]}},
            {{"names":["dup2"],"action":"SCMP_ACT_ERRNO","errnoRet":11,"args":[{{"index":1,"value":{big},"op":"SCMP_CMP_NE"}}]}},
            {{"names":["dup3"],"action":"SCMP_ACT_ERRNO","errnoRet":12,"args":[{{"index":2,"value":{big},"op":"SCMP_CMP_LT"}}]}},
            {{"names":["close"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{{"index":0,"value":{big},"op":"SCMP_CMP_LE"}}]}},
            {{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":14,"args":[{{"index":5,"value":{big},"op":"SCMP_CMP_GT"}}]}},
            {{"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":15,"args":[{{"index":3,"value":{big},"op":"SCMP_CMP_GE"}}]}},
            {{"names":["open"],"action":"SCMP_ACT_ERRNO","errnoRet":16,"args":[{{"index":0,"value":4294967300,"valueTwo":4294967296,"op":"SCMP_CMP_MASKED_EQ"}}]}}
            ]}}"#
        ));
        let f = compile(&p).unwrap();
        let e = |n: u32| RET_ERRNO | n;
        let at = |i: usize, v: u64| {
            let mut a = [0u64; 6];
            a[i] = v;
            a
        };
        assert_eq!(run(&f, "dup", at(0, big)), e(10));
        assert_eq!(run(&f, "dup", at(0, 5)), RET_ALLOW);
        assert_eq!(run(&f, "dup2", at(1, big)), RET_ALLOW);
        assert_eq!(run(&f, "dup2", at(1, 5)), e(11));
        assert_eq!(run(&f, "dup3", at(2, big - 1)), e(12));
        assert_eq!(run(&f, "dup3", at(2, 0xffff_ffff)), e(12));
        assert_eq!(run(&f, "dup3", at(2, big)), RET_ALLOW);
        assert_eq!(run(&f, "close", at(0, big)), e(13));
        assert_eq!(run(&f, "close", at(0, big + 1)), RET_ALLOW);
        assert_eq!(run(&f, "read", at(5, big + 1)), e(14));
        assert_eq!(run(&f, "read", at(5, 0x2_0000_0000)), e(14));
        assert_eq!(run(&f, "read", at(5, big)), RET_ALLOW);
        assert_eq!(run(&f, "write", at(3, big)), e(15));
        assert_eq!(run(&f, "write", at(3, 6)), RET_ALLOW);
        // mask 0x1_0000_0004, expect 0x1_0000_0000
        assert_eq!(run(&f, "open", at(0, 0x1_0000_0001)), e(16));
        assert_eq!(run(&f, "open", at(0, 0x1_0000_0004)), RET_ALLOW);
        assert_eq!(run(&f, "open", at(0, 1)), RET_ALLOW);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn arches_enosys_and_badarch() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_ARM"],
            "syscalls":[{"names":["getpid","socketcall"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let f = compile(&p).unwrap();
        let getpid64 = Abi::X86_64.resolve("getpid").unwrap();
        let getpid32 = Abi::X86.resolve("getpid").unwrap();
        let sc32 = Abi::X86.resolve("socketcall").unwrap();
        let i = |nr, arch| interpret(&f.program, nr, arch, [0; 6]).unwrap();
        assert_eq!(i(getpid64, AUDIT_ARCH_X86_64), RET_ALLOW);
        assert_eq!(i(getpid32, AUDIT_ARCH_I386), RET_ALLOW);
        assert_eq!(i(sc32, AUDIT_ARCH_I386), RET_ALLOW);
        // below the largest named nr: default; above: ENOSYS
        assert_eq!(i(getpid64 - 1, AUDIT_ARCH_X86_64), RET_ERRNO | 1);
        assert_eq!(i(getpid64 + 1, AUDIT_ARCH_X86_64), RET_ERRNO | 38);
        // x32 not listed: bad arch
        assert_eq!(i(X32_SYSCALL_BIT | 39, AUDIT_ARCH_X86_64), RET_KILL_THREAD);
        assert_eq!(i(1, AUDIT_ARCH_AARCH64), RET_KILL_THREAD);
    }

    /// containers-common's profile (podman, CRI-O) refuses socket(AF_NETLINK, *, NETLINK_AUDIT)
    /// and allows every other socket; with the x86 ABI listed the rules also go through
    /// socketcall, where they must not collide (runc and crun load this profile).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn containers_common_socket_rules_load_with_x86() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[
            {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[{"index":0,"value":16,"op":"SCMP_CMP_EQ"},{"index":2,"value":9,"op":"SCMP_CMP_EQ"}]},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":9,"op":"SCMP_CMP_NE"}]},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":16,"op":"SCMP_CMP_NE"}]},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":9,"op":"SCMP_CMP_NE"}]}
            ]}"#,
        );
        let f = compile(&p).unwrap();
        assert_eq!(run(&f, "socket", [16, 3, 9, 0, 0, 0]), RET_ERRNO | 22);
        assert_eq!(run(&f, "socket", [16, 3, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&f, "socket", [2, 1, 9, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&f, "socket", [2, 1, 0, 0, 0, 0]), RET_ALLOW);
        let sc32 = Abi::X86.resolve("socketcall").unwrap();
        let i32 = |args| interpret(&f.program, sc32, AUDIT_ARCH_I386, args).unwrap();
        // socketcall(SYS_SOCKET = 1, args*): reached; other calls keep the default.
        assert_eq!(i32([1, 0x1000, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(i32([3, 0x1000, 0, 0, 0, 0]), RET_ERRNO | 38);
    }

    #[test]
    fn errors_name_the_field() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(&p).unwrap_err().to_string();
        assert!(
            e.contains("syscalls[0]") && e.contains("getpid") && e.contains("index 7"),
            "{e}"
        );
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(compile(&p)
            .unwrap_err()
            .to_string()
            .contains("defaultAction"));
    }
}
