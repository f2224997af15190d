//! Linux namespaces: which ones a container gets new, which it joins by path, and the order in
//! which they are entered.
use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

pub const CLONE_NEWTIME: libc::c_int = 0x80;

pub fn clone_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => CLONE_NEWTIME,
    }
}

pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The namespaces of one container: new ones (by type) and joined ones (type + path).
#[derive(Debug, Clone, Default)]
pub struct NsPlan {
    pub new: Vec<LinuxNamespaceType>,
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

/// Order in which joined namespaces are entered: user first (it grants the rights for the rest),
/// mount last (paths of the others are resolved in the runtime's mount namespace).
const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

impl NsPlan {
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let mut plan = NsPlan::default();
        let list = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in list {
            let t = ns.typ();
            if plan.has(t) {
                return Err(Error::config(format!(
                    "linux.namespaces: {} listed twice",
                    proc_name(t)
                )));
            }
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    if !p.is_absolute() {
                        return Err(Error::config(format!(
                            "linux.namespaces: {} path {p:?} must be absolute",
                            proc_name(t)
                        )));
                    }
                    plan.join.push((t, p.clone()));
                }
                _ => plan.new.push(t),
            }
        }
        plan.join
            .sort_by_key(|(t, _)| JOIN_ORDER.iter().position(|o| o == t).unwrap_or(usize::MAX));
        Ok(plan)
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.is_new(t) || self.is_joined(t)
    }
    pub fn is_new(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(&t)
    }
    pub fn is_joined(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(j, _)| *j == t)
    }

    /// clone(2) flags for the new namespaces, leaving out those that must be created later
    /// (cgroup: after the process is in its cgroups; time: its offsets are written first).
    pub fn clone_flags(&self) -> libc::c_int {
        self.new
            .iter()
            .filter(|t| !matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time))
            .fold(0, |acc, t| acc | clone_flag(*t))
    }

    /// True when the init cannot simply be cloned with the new namespaces: a user or pid namespace
    /// is joined by path (must be entered before the init is forked), or a new user namespace must
    /// own namespaces that are joined (the joins must happen before it is created).
    pub fn needs_intermediate(&self) -> bool {
        self.is_joined(LinuxNamespaceType::User)
            || self.is_joined(LinuxNamespaceType::Pid)
            || (self.is_new(LinuxNamespaceType::User) && !self.join.is_empty())
    }

    /// Open every namespace file to join, before anything changes (paths resolve in the runtime's
    /// mount namespace). Errors name the namespace and path.
    pub fn open_joins(&self) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
        self.join
            .iter()
            .map(|(t, p)| {
                let fd = crate::sys::open(p, libc::O_RDONLY)
                    .ctx(|| format!("open {} namespace {}", proc_name(*t), p.display()))?;
                Ok((*t, fd))
            })
            .collect()
    }
}

/// setns(2) into one namespace, naming it in the error.
pub fn join(t: LinuxNamespaceType, fd: &OwnedFd) -> Result<()> {
    let flags = nix::sched::CloneFlags::from_bits_retain(clone_flag(t));
    nix::sched::setns(fd.as_fd(), flags).ctx(|| format!("setns {} namespace", proc_name(t)))
}

/// unshare(2) the given namespace flags.
pub fn unshare(flags: libc::c_int) -> Result<()> {
    if flags == 0 {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags))
        .ctx(|| format!("unshare namespaces {flags:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ns: serde_json::Value) -> NsPlan {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "linux": {"namespaces": ns}
        }))
        .unwrap();
        NsPlan::from_spec(&spec).unwrap()
    }

    #[test]
    fn fast_path_when_nothing_joined() {
        let p = plan(
            serde_json::json!([{"type":"pid"},{"type":"mount"},{"type":"cgroup"},{"type":"user"}]),
        );
        assert!(!p.needs_intermediate());
        assert_eq!(
            p.clone_flags(),
            libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUSER
        );
    }

    #[test]
    fn joined_pid_needs_intermediate_and_joins_are_ordered() {
        let p = plan(
            serde_json::json!([{"type":"mount","path":"/proc/1/ns/mnt"},{"type":"pid","path":"/proc/1/ns/pid"},{"type":"network","path":"/x"}]),
        );
        assert!(p.needs_intermediate());
        let order: Vec<_> = p.join.iter().map(|(t, _)| proc_name(*t)).collect();
        assert_eq!(order, ["net", "pid", "mnt"]);
    }

    #[test]
    fn duplicate_type_is_refused() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0", "linux": {"namespaces": [{"type":"pid"},{"type":"pid"}]}
        }))
        .unwrap();
        assert!(NsPlan::from_spec(&spec).is_err());
    }
}
