//! The container side of `create`: runs in the cloned child, from namespace entry to execve.
//! Every failure is sent to the parent over the sync channel with what failed, then the child exits.
use super::channel::{Channel, ToChild, ToParent};
use crate::capabilities::CapPlan;
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, NsPlan};
use crate::rootfs;
use crate::sys;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Everything the init needs, prepared by the parent before clone (the child then inherits it).
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a NsPlan,
    /// Namespace files to join, opened before clone.
    pub join_fds: Vec<(LinuxNamespaceType, OwnedFd)>,
    pub caps: Option<CapPlan>,
    /// The console socket (connected) when process.terminal is true.
    pub console: Option<OwnedFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Number of fds from 3 up that are handed to the container.
    pub preserve_fds: i32,
    /// Extra fds the init keeps open until exec (they are close-on-exec), e.g. the log file.
    pub keep_fds: Vec<RawFd>,
    pub args: Vec<CString>,
    /// The container's environment (LISTEN_FDS etc. already added).
    pub env: Vec<String>,
    pub seccomp: Option<&'a dyn super::SeccompInstall>,
    pub intermediate: bool,
    /// Idmapped mount trees prepared before clone.
    pub idmapped: crate::idmap::Prepared,
    /// The container's cgroup membership files (v1 `tasks`, cgroup2 `cgroup.procs`), opened
    /// for writing; the child writes "0" to each before anything else.
    pub cgroup_join: Vec<OwnedFd>,
}

/// Entry point of the cloned child. Never returns.
pub fn child_main(cfg: InitConfig<'_>, chan: Channel) -> ! {
    let err = match child(cfg, &chan) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&ToParent::Error(err.to_string()));
    // SAFETY: _exit skips atexit handlers and destructors that belong to the parent's copy.
    unsafe { libc::_exit(1) }
}

fn expect_go(chan: &Channel) -> Result<()> {
    match chan.recv::<ToChild>()? {
        Some(ToChild::Go) => Ok(()),
        other => Err(Error::container(format!(
            "sync: expected Go, got {other:?}"
        ))),
    }
}

fn child(mut cfg: InitConfig<'_>, chan: &Channel) -> Result<std::convert::Infallible> {
    let t = crate::logging::phase("init: cgroup join");
    join_cgroups(std::mem::take(&mut cfg.cgroup_join))?;
    t.done();
    let t = crate::logging::phase("init: wait for parent (maps, netdevs)");
    expect_go(chan)?;
    t.done();
    let _ns = crate::logging::phase("init: join namespaces, intermediate");
    let joins = std::mem::take(&mut cfg.join_fds);
    for (t, fd) in &joins {
        namespaces::join(*t, fd)?;
    }
    drop(joins);
    if cfg.intermediate {
        if cfg.plan.is_new(LinuxNamespaceType::User) {
            namespaces::unshare(libc::CLONE_NEWUSER)?;
            chan.send(&ToParent::NeedIdMaps)?;
            match chan.recv::<ToChild>()? {
                Some(ToChild::IdMapsDone) => {}
                other => {
                    return Err(Error::container(format!(
                        "sync: expected IdMapsDone, got {other:?}"
                    )))
                }
            }
        }
        namespaces::unshare(cfg.plan.clone_flags() & !libc::CLONE_NEWUSER)?;
        // SAFETY: this process is single-threaded (a fresh clone of the single-threaded runtime).
        let pid = unsafe { sys::clone_fork(0) }.ctx(|| "fork container init".into())?;
        if pid > 0 {
            chan.send(&ToParent::InitPid(pid))?;
            // SAFETY: the intermediate's work is done; exit without running destructors.
            unsafe { libc::_exit(0) }
        }
    }
    drop(_ns);
    init(&cfg, chan)
}

fn init(cfg: &InitConfig<'_>, chan: &Channel) -> Result<std::convert::Infallible> {
    let setup = crate::logging::phase("init: set-up until ready");
    let ns = crate::logging::phase("init: namespaces, session, keyring");
    let spec = cfg.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process: missing"))?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux: missing"))?;
    let in_userns = cfg.plan.has(LinuxNamespaceType::User);

    if cfg.plan.is_new(LinuxNamespaceType::User) {
        // Become root of the new user namespace when 0 is mapped, so set-up runs as its root.
        let maps_zero = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            m.iter().flatten().any(|x| x.container_id() == 0)
        };
        if maps_zero(linux.gid_mappings()) {
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                .ctx(|| "setresgid 0 in user namespace".into())?;
        }
        if maps_zero(linux.uid_mappings()) {
            nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                .ctx(|| "setresuid 0 in user namespace".into())?;
        }
    } else if cfg.plan.is_joined(LinuxNamespaceType::User) {
        // A joined user namespace (a pod's): its root, when the namespace maps 0, so the set-up
        // (mounts, files in the rootfs) is done with ids the namespace knows (else mkdir in a
        // file system of the namespace fails with EOVERFLOW). EINVAL: 0 is not mapped there.
        match nix::unistd::setresgid(0.into(), 0.into(), 0.into()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e).ctx(|| "setresgid 0 in the joined user namespace".into()),
        }
        match nix::unistd::setresuid(0.into(), 0.into(), 0.into()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e).ctx(|| "setresuid 0 in the joined user namespace".into()),
        }
    }
    if cfg.plan.is_new(LinuxNamespaceType::Cgroup) {
        namespaces::unshare(libc::CLONE_NEWCGROUP)?;
    }
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if cfg.plan.is_new(LinuxNamespaceType::Time) {
        namespaces::unshare(namespaces::CLONE_NEWTIME)?;
        if let Some(offsets) = linux.time_offsets() {
            let mut s = String::new();
            for (clock, off) in offsets {
                s.push_str(&format!(
                    "{clock} {} {}\n",
                    off.secs().unwrap_or(0),
                    off.nanosecs().unwrap_or(0)
                ));
            }
            std::fs::write("/proc/self/timens_offsets", s)
                .ctx(|| "write /proc/self/timens_offsets".into())?;
        }
    } else if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(Error::config(
            "linux.timeOffsets: given without a new time namespace",
        ));
    }
    if !cfg.no_new_keyring {
        join_session_keyring(cfg.id)?;
    }
    ns.done();
    let t = crate::logging::phase("init: close fds");
    close_other_fds(cfg, chan)?;
    t.done();

    let ctx = rootfs::RootfsCtx {
        spec,
        rootfs: cfg.rootfs,
        bundle: cfg.bundle,
        in_userns,
        new_cgroupns: cfg.plan.is_new(LinuxNamespaceType::Cgroup),
        shared_mountns: !cfg.plan.has(LinuxNamespaceType::Mount),
        idmapped: &cfg.idmapped,
    };
    let t = crate::logging::phase("init: mounts");
    rootfs::prepare(&ctx)?;
    t.done();

    let hooks = spec.hooks().as_ref();
    let need_state = hooks.is_some_and(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
        ]
        .iter()
        .any(|l| l.as_ref().is_some_and(|v| !v.is_empty()))
    });
    let mut state_json = String::new();
    if need_state {
        let _t = crate::logging::phase("init: hooks (parent's, createContainer)");
        chan.send(&ToParent::RunHooks)?;
        match chan.recv::<ToChild>()? {
            Some(ToChild::HooksDone { state }) => state_json = state,
            other => {
                return Err(Error::container(format!(
                    "sync: expected HooksDone, got {other:?}"
                )))
            }
        }
        crate::hooks::run_all(
            "createContainer",
            hooks.map_or(&None, |h| h.create_container()),
            &state_json,
        )?;
    }

    let t = crate::logging::phase("init: pivot_root");
    rootfs::switch_root(
        cfg.rootfs,
        cfg.no_pivot,
        !cfg.plan.has(LinuxNamespaceType::Mount),
    )?;
    rootfs::apply_root_propagation(spec)?;
    t.done();
    let finish = crate::logging::phase("init: console, hostname, sysctl, masked/ro paths, rlimits");

    if let Some(sock) = &cfg.console {
        let pty = crate::tty::open_pty()?;
        if let Some(size) = process.console_size() {
            crate::tty::set_winsize(
                pty.master.as_raw_fd(),
                size.height() as u16,
                size.width() as u16,
            )?;
        }
        rootfs::bind_console(&pty.slave_path)?;
        crate::tty::send_fd(
            sock.as_raw_fd(),
            pty.master.as_raw_fd(),
            &pty.slave_path.to_string_lossy(),
        )?;
        drop(pty.master);
        crate::tty::make_controlling(&pty.slave)?;
    }
    if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("sethostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        // SAFETY: setdomainname with a buffer and its length.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::sys(
                format!("setdomainname {d:?}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        rootfs::apply_sysctls(sysctl)?;
    }
    if let Some(p) = linux.masked_paths() {
        rootfs::mask_paths(p)?;
    }
    if let Some(p) = linux.readonly_paths() {
        rootfs::readonly_paths(p)?;
    }
    // The cwd is created if missing, as runc does; we are inside the new root here.
    std::fs::create_dir_all(process.cwd())
        .ctx(|| format!("create process.cwd {}", process.cwd().display()))?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs::readonly_root()?;
    }
    apply_rlimits(process)?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).ctx(|| {
            format!("set process.oomScoreAdj {adj} (lowering it needs CAP_SYS_RESOURCE)")
        })?;
    }

    finish.done();
    let env_path = cfg.env.iter().find_map(|e| e.strip_prefix("PATH="));
    let exe = find_executable(&cfg.args[0], env_path)?;

    for fd in 3..3 + cfg.preserve_fds {
        sys::clear_cloexec(fd).ctx(|| format!("preserve fd {fd}"))?;
    }

    let nnp = process.no_new_privileges().unwrap_or(false);
    let can_late_seccomp = nnp
        || cfg.caps.as_ref().map_or(process.user().uid() == 0, |c| {
            c.effective.contains(&caps::Capability::CAP_SYS_ADMIN)
        });
    if let Some(f) = cfg.seccomp.filter(|_| !can_late_seccomp) {
        let _t = crate::logging::phase("init: seccomp load");
        install_seccomp(f, chan)?;
    }

    let creds = crate::logging::phase("init: process attributes, user, capabilities");
    if let Some(p) = linux.personality() {
        crate::procattr::apply_personality(p)?;
    }
    if let Some(p) = linux.memory_policy() {
        crate::procattr::apply_memory_policy(p)?;
    }
    crate::procattr::apply(process)?;
    set_user_and_caps(cfg.caps.as_ref(), process)?;
    if nnp {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).ctx(|| "prctl PR_SET_NO_NEW_PRIVS".into())?;
    }
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    nix::unistd::chdir(process.cwd())
        .ctx(|| format!("chdir to process.cwd {}", process.cwd().display()))?;
    check_cwd_inside()?;
    creds.done();

    // Block until `start`: read one byte from a pipe that only `start` writes to.
    // A NOTIFY filter goes in before Ready: the parent must hand its fd to the agent.
    if let Some(f) = cfg.seccomp.filter(|f| can_late_seccomp && f.uses_notify()) {
        let _t = crate::logging::phase("init: seccomp load (notify)");
        install_seccomp(f, chan)?;
    }
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe for start".into())?;
    // Held until execve closes it: `start` waits for that EOF before running poststart hooks.
    let (exec_r, exec_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe for exec".into())?;
    drop(exec_r);
    if crate::state::rootless() {
        // The credential changes above made us non-dumpable; `start`, run by the same
        // unprivileged user, must be able to open our start pipe through /proc/PID/fd.
        sys::prctl(libc::PR_SET_DUMPABLE, 1, 0).ctx(|| "prctl PR_SET_DUMPABLE".into())?;
    }
    setup.done();
    chan.send(&ToParent::Ready {
        start_fd: w.as_raw_fd(),
        exec_fd: exec_w.as_raw_fd(),
    })?;
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&r, &mut b) {
            Ok(1) => break,
            Ok(_) => return Err(Error::container("start pipe closed before start")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    "read start pipe",
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
    }
    drop((r, w));

    if need_state {
        let _t = crate::logging::phase("init: hooks (startContainer)");
        crate::hooks::run_all(
            "startContainer",
            hooks.map_or(&None, |h| h.start_container()),
            &state_json,
        )?;
    }
    let env: Vec<CString> = cfg
        .env
        .iter()
        .map(|e| {
            CString::new(e.as_bytes())
                .map_err(|_| Error::config(format!("process.env {e:?}: contains NUL")))
        })
        .collect::<Result<_>>()?;
    sys::reset_signals();
    // Nothing is logged from here on: the filter may deny the log write.
    if let Some(f) = cfg.seccomp.filter(|f| can_late_seccomp && !f.uses_notify()) {
        f.install()?;
    }
    let e = nix::unistd::execve(&exe, &cfg.args, &env);
    drop(exec_w);
    e.ctx(|| format!("exec {:?}", exe)).map(|n| match n {})
}

/// Join the container's cgroups: "0" written to each membership file means "this process".
pub(crate) fn join_cgroups(fds: Vec<OwnedFd>) -> Result<()> {
    for fd in fds {
        match nix::unistd::write(&fd, b"0") {
            Ok(_) => {}
            Err(e) => {
                let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .unwrap_or_default();
                return Err(Error::sys(
                    format!("join cgroup {}", path.display()),
                    std::io::Error::from_raw_os_error(e as i32),
                ));
            }
        }
    }
    Ok(())
}

/// Install the filter; a NOTIFY listener fd goes to the parent, which hands it to the agent.
pub(crate) fn install_seccomp(f: &dyn super::SeccompInstall, chan: &Channel) -> Result<()> {
    if let Some(fd) = f.install()? {
        chan.send(&ToParent::SeccompFd)?;
        chan.send_fd(std::os::fd::AsFd::as_fd(&fd))?;
        match chan.recv::<ToChild>()? {
            Some(ToChild::SeccompDone) => {}
            other => {
                return Err(Error::container(format!(
                    "sync: expected SeccompDone, got {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// runc's semantics for process.args[0]: a path with '/' is used as is, a bare name is searched in
/// the container's PATH.
pub(crate) fn find_executable(arg0: &CString, path: Option<&str>) -> Result<CString> {
    let name = arg0.to_string_lossy().to_string();
    let is_exec = |p: &Path| {
        std::fs::metadata(p).map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if name.contains('/') {
        return match is_exec(Path::new(&name)) {
            Ok(true) => Ok(arg0.clone()),
            Ok(false) => Err(Error::config(format!(
                "exec: {name:?}: permission denied (not an executable file)"
            ))),
            Err(e) => Err(Error::config(format!("exec: {name:?}: stat {name}: {e}"))),
        };
    }
    for dir in path.unwrap_or("").split(':').filter(|d| !d.is_empty()) {
        let cand = PathBuf::from(dir).join(&name);
        if let Ok(true) = is_exec(&cand) {
            return CString::new(cand.to_string_lossy().as_bytes())
                .map_err(|_| Error::config("path contains NUL"));
        }
    }
    Err(Error::config(format!(
        "exec: {name:?}: executable file not found in $PATH"
    )))
}

/// Close every fd the container must not inherit: all but stdio, the preserved range, and the
/// few the init itself still needs (they are close-on-exec). Done before any path inside the
/// container is resolved, so no host directory fd can serve as a way out (CVE-2024-21626 class).
fn close_other_fds(cfg: &InitConfig<'_>, chan: &Channel) -> Result<()> {
    let mut keep: Vec<RawFd> = cfg.keep_fds.clone();
    keep.push(chan.raw());
    keep.extend(cfg.idmapped.iter().map(|p| p.tree.as_raw_fd()));
    if let Some(c) = &cfg.console {
        keep.push(c.as_raw_fd());
    }
    close_fds_except(3 + cfg.preserve_fds, &keep)
}

/// Close every fd from `first` up except `keep` (which are made close-on-exec). Reads the fd
/// table from /proc, so call it while /proc is still the host's.
pub(crate) fn close_fds_except(first: RawFd, keep: &[RawFd]) -> Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .ctx(|| "read /proc/self/fd".into())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: closing an fd number we do not otherwise own; nothing in this process uses it.
            unsafe { libc::close(fd) };
        }
    }
    for fd in keep {
        sys::set_cloexec(*fd).ctx(|| format!("set close-on-exec on fd {fd}"))?;
    }
    Ok(())
}

/// After chdir: the cwd must be reachable from the container's root.
pub(crate) fn check_cwd_inside() -> Result<()> {
    let cwd = std::env::current_dir().ctx(|| "getcwd".into())?;
    if !cwd.is_absolute() || cwd.to_string_lossy().starts_with("(unreachable)") {
        return Err(Error::config(format!(
            "process.cwd resolves outside the container root ({})",
            cwd.display()
        )));
    }
    Ok(())
}

pub(crate) fn set_user_and_caps(
    caps: Option<&CapPlan>,
    process: &oci_spec::runtime::Process,
) -> Result<()> {
    let user = process.user();
    if let Some(c) = caps {
        c.apply_bounding()?;
    }
    sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).ctx(|| "prctl PR_SET_KEEPCAPS".into())?;
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| (*g).into())
        .collect();
    let setgroups_denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    if !setgroups_denied {
        nix::unistd::setgroups(&gids)
            .ctx(|| format!("setgroups {gids:?} (process.user.additionalGids)"))?;
    } else if !gids.is_empty() {
        return Err(Error::config(
            "process.user.additionalGids: setgroups is denied in this user namespace",
        ));
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setresgid {gid} (process.user.gid)"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setresuid {uid} (process.user.uid)"))?;
    sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0).ctx(|| "prctl PR_SET_KEEPCAPS".into())?;
    if let Some(c) = caps {
        c.apply_sets()?;
    }
    Ok(())
}

fn join_session_keyring(id: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let name = CString::new(format!("_ses.{id}"))
        .map_err(|_| Error::config("container id contains NUL"))?;
    // SAFETY: keyctl with a valid C string that lives for the call.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels without keys, or a seccomp'd/rootless caller: runc ignores these too.
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EACCES) | Some(libc::EPERM)
        ) {
            return Err(Error::sys("keyctl join session keyring", e));
        }
    }
    Ok(())
}

/// process.rlimits, naming the limit that the kernel refused.
pub(crate) fn apply_rlimits(process: &oci_spec::runtime::Process) -> Result<()> {
    for rl in process.rlimits().iter().flatten() {
        let res = rlimit_resource(rl.typ());
        // SAFETY: setrlimit with a valid resource and a struct that lives for the call.
        let r = unsafe {
            libc::setrlimit(
                res,
                &libc::rlimit {
                    rlim_cur: rl.soft(),
                    rlim_max: rl.hard(),
                },
            )
        };
        if r != 0 {
            return Err(Error::sys(
                format!(
                    "setrlimit {:?} soft={} hard={}",
                    rl.typ(),
                    rl.soft(),
                    rl.hard()
                ),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn rlimit_resource(t: oci_spec::runtime::PosixRlimitType) -> libc::__rlimit_resource_t {
    use oci_spec::runtime::PosixRlimitType as T;
    (match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}
