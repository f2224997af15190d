//! Process creation: the parent side of clone (this module), the container side (`init`), and the
//! channel between them. See docs/ARCHITECTURE.md for the sequence.
pub mod channel;
pub mod init;

use crate::error::{Context, Error, Result};
use channel::{ToChild, ToParent};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};

/// A seccomp filter ready to install in the init (compiled before clone).
pub trait SeccompInstall {
    /// Install the filter; returns the user-notification listener fd when the profile uses NOTIFY.
    fn install(&self) -> Result<Option<std::os::fd::OwnedFd>>;
    fn uses_notify(&self) -> bool;
}

/// Callbacks from the parent's side of the set-up conversation.
pub trait Parent {
    /// A process of the container exists (intermediate or init): put it in the cgroups.
    fn placed(&mut self, pid: i32) -> Result<()>;
    /// The init pid is known (it may be killed on failure).
    fn init_pid(&mut self, pid: i32);
    /// The init's namespaces exist: move network devices in.
    fn namespaces_ready(&mut self, init_pid: i32) -> Result<()>;
    /// Mounts are done: run prestart + createRuntime hooks; returns the state JSON for the
    /// container-side hooks.
    fn run_hooks(&mut self, init_pid: i32) -> Result<String>;
    /// The init installed a filter with NOTIFY: give its listener fd to the seccomp agent.
    fn seccomp_fd(&mut self, fd: std::os::fd::OwnedFd, init_pid: i32) -> Result<()>;
}

/// Fork (clone with `flags`) a process that starts life in the cgroup2 directory `into_cgroup`
/// (clone3 CLONE_INTO_CGROUP). Kernels without it get a plain clone, and the child then joins
/// that cgroup by writing "0" to its `cgroup.procs`: the fd is added to `join` (the membership
/// files the child writes to itself, `init::join_cgroups`), which must not hold it already.
///
/// Such a write is what CLONE_INTO_CGROUP saves: the kernel takes cgroup_threadgroup_rwsem for
/// writing to move a whole thread group into a cgroup2 directory, and that waits for an RCU
/// grace period, about 10 ms here, even when the process is already in that cgroup (issue 18).
///
/// # Safety
/// As `sys::clone_fork`: the caller must be single-threaded.
pub(crate) unsafe fn fork_into_cgroup(
    flags: libc::c_int,
    into_cgroup: Option<std::os::fd::BorrowedFd<'_>>,
    join: &mut Vec<std::os::fd::OwnedFd>,
) -> std::io::Result<libc::pid_t> {
    let Some(cg) = into_cgroup else {
        // SAFETY: single-threaded, per this function's contract.
        return unsafe { crate::sys::clone_fork(flags) };
    };
    // SAFETY: as above.
    match unsafe { crate::sys::clone3_into_cgroup(flags, cg) } {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL)
            ) =>
        {
            tracing::debug!("clone3 CLONE_INTO_CGROUP unavailable ({e}), using clone");
            join.push(crate::sys::openat(
                cg,
                std::path::Path::new("cgroup.procs"),
                libc::O_WRONLY,
                0,
            )?);
            // SAFETY: as above.
            unsafe { crate::sys::clone_fork(flags) }
        }
        r => r,
    }
}

/// Clone the container's init and drive its set-up until it is ready to exec.
/// Returns (init pid, the fd numbers of its start pipe and its exec pipe).
///
/// With `into_cgroup` (a cgroup2 directory), the first process is cloned straight into it
/// ([`fork_into_cgroup`]); `cfg.cgroup_join` then holds only the v1 membership files.
pub fn spawn(
    cfg: init::InitConfig<'_>,
    parent: &mut dyn Parent,
    into_cgroup: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<(i32, i32, i32)> {
    let (ours, theirs) = channel::pair()?;
    let flags = if cfg.intermediate {
        0
    } else {
        cfg.plan.clone_flags()
    };
    let cfg_intermediate = cfg.intermediate;
    let new_user = cfg.plan.is_new(LinuxNamespaceType::User);
    let spec = cfg.spec;
    let clone_t = crate::logging::phase("clone");
    let mut cfg = cfg;
    // SAFETY: the runtime is single-threaded (no thread is ever started before this point).
    let first = unsafe { fork_into_cgroup(flags, into_cgroup, &mut cfg.cgroup_join) }
        .ctx(|| format!("clone container init (flags {flags:#x})"))?;
    if first == 0 {
        drop(ours);
        init::child_main(cfg, theirs);
    }
    clone_t.done();
    drop(theirs);
    drop(cfg);
    let linux = spec.linux().as_ref();
    let maps = |pid: i32| -> Result<()> {
        let _t = crate::logging::phase("id maps");
        if crate::state::rootless() {
            // Without CAP_SETGID on the host the kernel only takes a gid_map once setgroups(2)
            // is denied in the new namespace.
            let p = format!("/proc/{pid}/setgroups");
            std::fs::write(&p, "deny").ctx(|| format!("write {p}"))?;
        }
        write_id_map(
            pid,
            "uid_map",
            linux.and_then(|l| l.uid_mappings().as_ref()),
        )?;
        write_id_map(
            pid,
            "gid_map",
            linux.and_then(|l| l.gid_mappings().as_ref()),
        )
    };
    parent.placed(first)?;
    let mut init_pid = first;
    parent.init_pid(first);
    if new_user && flags & libc::CLONE_NEWUSER != 0 {
        maps(first)?;
    }
    if flags != 0 || !cfg_intermediate {
        parent.namespaces_ready(first)?;
    }
    // From Go to Ready: the init's own set-up (it logs its phases itself), and the parent's
    // work it asks for (id maps, hooks, seccomp agent).
    let _setup = crate::logging::phase("wait for the init's set-up");
    ours.send(&ToChild::Go)?;
    loop {
        match ours.recv::<ToParent>()? {
            Some(ToParent::NeedIdMaps) => {
                maps(first)?;
                ours.send(&ToChild::IdMapsDone)?;
            }
            Some(ToParent::InitPid(pid)) => {
                init_pid = pid;
                parent.init_pid(pid);
                parent.namespaces_ready(pid)?;
                // Reap the intermediate, which exits right after reporting.
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(first), None);
            }
            Some(ToParent::RunHooks) => {
                let state = parent.run_hooks(init_pid)?;
                ours.send(&ToChild::HooksDone { state })?;
            }
            Some(ToParent::SeccompFd) => {
                let fd = ours.recv_fd()?;
                parent.seccomp_fd(fd, init_pid)?;
                ours.send(&ToChild::SeccompDone)?;
            }
            Some(ToParent::Ready { start_fd, exec_fd }) => {
                return Ok((init_pid, start_fd, exec_fd))
            }
            Some(ToParent::Error(msg)) => return Err(Error::Init(msg)),
            None => {
                return Err(Error::Init(format!(
                    "init (pid {init_pid}) exited during set-up without reporting an error"
                )))
            }
        }
    }
}

/// Write /proc/PID/{uid,gid}_map from the spec's mappings (as root, directly).
fn write_id_map(pid: i32, file: &str, maps: Option<&Vec<LinuxIdMapping>>) -> Result<()> {
    let Some(maps) = maps else { return Ok(()) };
    let mut s = String::new();
    for m in maps {
        s.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, s.as_bytes())
        .ctx(|| format!("write {path} ({})", s.trim().replace('\n', ", ")))
}
