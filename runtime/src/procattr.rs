//! Process attributes beyond ids and capabilities: personality, scheduler, I/O priority, and the
//! LSM labels (which behave as runc's when the LSM is disabled: nothing to apply).
use crate::error::{Error, Result};
use oci_spec::runtime::{
    IOPriorityClass, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Process, Scheduler,
};

/// linux.personality: the execution domain (LINUX or LINUX32). Flags are not defined by the spec
/// beyond names; any given is refused clearly.
pub fn apply_personality(p: &LinuxPersonality) -> Result<()> {
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::Unsupported(format!(
            "linux.personality.flags {:?}: no personality flags are supported",
            p.flags()
        )));
    }
    let persona: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality(2) takes an integer.
    if unsafe { libc::personality(persona) } == -1 {
        return Err(Error::sys(
            format!("personality {:?}", p.domain()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// process.scheduler through sched_setattr(2).
pub fn apply_scheduler(s: &Scheduler) -> Result<()> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => {
            return Err(Error::Unsupported(
                "process.scheduler.policy SCHED_ISO: not implemented by Linux".into(),
            ))
        }
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy,
        sched_flags: flags,
        sched_nice: s.nice().unwrap_or(0),
        sched_priority: s.priority().unwrap_or(0) as u32,
        sched_runtime: s.runtime().unwrap_or(0),
        sched_deadline: s.deadline().unwrap_or(0),
        sched_period: s.period().unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: sched_setattr on ourselves (pid 0) with a correctly sized struct that lives for the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(Error::sys(
            format!("sched_setattr {:?}", s.policy()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// process.ioPriority through ioprio_set(2).
pub fn apply_io_priority(class: IOPriorityClass, prio: i64) -> Result<()> {
    let c: i64 = match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&prio) {
        return Err(Error::config(format!(
            "process.ioPriority.priority {prio}: must be 0..7"
        )));
    }
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: integer-only syscall on ourselves.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (c << 13) | prio,
        )
    };
    if r != 0 {
        return Err(Error::sys(
            format!("ioprio_set {class:?} {prio}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Everything in this module that applies to one process, in the init and in exec alike.
pub fn apply(process: &Process) -> Result<()> {
    if let Some(s) = process.scheduler() {
        apply_scheduler(s)?;
    }
    if let Some(io) = process.io_priority() {
        apply_io_priority(io.class(), io.priority())?;
    }
    // apparmorProfile / selinuxLabel: like runc, nothing to apply while the LSM is disabled.
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && std::path::Path::new("/sys/kernel/security/apparmor").exists()
    {
        return Err(Error::Unsupported("process.apparmorProfile: AppArmor is enabled on this host but husk does not apply profiles yet".into()));
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && std::path::Path::new("/sys/fs/selinux/enforce").exists()
    {
        return Err(Error::Unsupported("process.selinuxLabel: SELinux is enabled on this host but husk does not apply labels yet".into()));
    }
    Ok(())
}

/// Parse a node list like "0-3,5" into a bitmask (up to 1024 nodes).
pub fn parse_nodes(s: &str) -> Result<Vec<libc::c_ulong>> {
    let bits = libc::c_ulong::BITS as usize;
    let mut mask = vec![0 as libc::c_ulong; 1024 / bits];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let bad = || {
            Error::config(format!(
                "linux.memoryPolicy.nodes {s:?}: expected a list like \"0-3,5\""
            ))
        };
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b >= 1024 {
            return Err(bad());
        }
        for n in a..=b {
            mask[n / bits] |= 1 << (n % bits);
        }
    }
    Ok(mask)
}

/// linux.memoryPolicy through set_mempolicy(2).
pub fn apply_memory_policy(p: &oci_spec::runtime::LinuxMemoryPolicy) -> Result<()> {
    use oci_spec::runtime::{MemoryPolicyFlagType as F, MemoryPolicyModeType as M};
    let mut mode: libc::c_int = match p.mode() {
        M::MpolDefault => 0,
        M::MpolPreferred => 1,
        M::MpolBind => 2,
        M::MpolInterleave => 3,
        M::MpolLocal => 4,
        M::MpolPreferredMany => 5,
        M::MpolWeightedInterleave => 6,
    };
    for f in p.flags().iter().flatten() {
        mode |= match f {
            F::MpolFStaticNodes => 1 << 15,
            F::MpolFRelativeNodes => 1 << 14,
            F::MpolFNumaBalancing => 1 << 13,
        };
    }
    let nodes = p.nodes().clone().unwrap_or_default();
    let mask = parse_nodes(&nodes)?;
    let (ptr, max) = if matches!(p.mode(), M::MpolDefault | M::MpolLocal) {
        if !nodes.trim().is_empty() {
            return Err(Error::config(format!(
                "linux.memoryPolicy: {:?} takes no nodes",
                p.mode()
            )));
        }
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), mask.len() * libc::c_ulong::BITS as usize)
    };
    // SAFETY: set_mempolicy with a node mask buffer of `max` bits that lives for the call.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, max as libc::c_ulong) };
    if r != 0 {
        return Err(Error::sys(
            format!("set_mempolicy {:?} nodes {nodes:?}", p.mode()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn node_lists() {
        let m = parse_nodes("0-2,5").unwrap();
        assert_eq!(m[0], 0b100111);
        assert!(parse_nodes("3-1").is_err());
        assert!(parse_nodes("x").is_err());
        assert!(parse_nodes("2000").is_err());
    }
}
