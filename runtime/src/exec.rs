//! `husk exec`: a new process in a running container. It joins every namespace of the init (user
//! first), its cgroups, and gets the process settings a container process gets: rlimits, user and
//! capabilities, NNP, seccomp (installed last), with no host fd leaking in.
use crate::capabilities::CapPlan;
use crate::container;
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, proc_name};
use crate::process::channel::{self, Channel, ToChild, ToParent};
use crate::process::init;
use crate::state::{Root, Status};
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Debug, Default)]
pub struct ExecOpts {
    pub id: String,
    /// A runtime-spec Process JSON file; otherwise the container's process with `args` etc.
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub process_label: Option<String>,
    pub apparmor: Option<String>,
    pub keep_fds: Vec<i32>,
}

/// The Process to run: from --process, or the container's own with the command-line overrides.
fn build_process(opts: &ExecOpts, base: &Process) -> Result<Process> {
    let mut p: Process = match &opts.process_file {
        Some(f) => {
            let data = std::fs::read(f).ctx(|| format!("read --process {}", f.display()))?;
            serde_json::from_slice(&data)
                .map_err(|e| Error::config(format!("--process {}: {e}", f.display())))?
        }
        None => {
            if opts.args.is_empty() {
                return Err(Error::config(
                    "exec: no command given (pass CMD ARGS... or --process FILE)",
                ));
            }
            let mut p = base.clone();
            p.set_args(Some(opts.args.clone()));
            p.set_terminal(Some(opts.tty));
            p
        }
    };
    if opts.process_file.is_some() && opts.tty {
        p.set_terminal(Some(true));
    }
    if let Some(c) = &opts.cwd {
        p.set_cwd(c.clone());
    }
    if !opts.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for e in &opts.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(u) = &opts.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .map_err(|_| Error::config(format!("--user {u:?}: expected UID[:GID]")))?;
        p.user_mut().set_uid(uid);
        if let Some(g) = gid {
            let gid: u32 = g
                .parse()
                .map_err(|_| Error::config(format!("--user {u:?}: expected UID[:GID]")))?;
            p.user_mut().set_gid(gid);
        }
    }
    if !opts.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(opts.additional_gids.clone()));
    }
    if !opts.caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_default();
        for name in &opts.caps {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map_err(|_| Error::config(format!("--cap {name:?}: unknown capability")))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            c.set_bounding(add(c.bounding()));
            c.set_effective(add(c.effective()));
            c.set_permitted(add(c.permitted()));
        }
        p.set_capabilities(Some(c));
    }
    if opts.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    // As runc: the labels are recorded on the process and applied only where the LSM is enabled.
    if let Some(a) = &opts.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &opts.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    crate::spec::validate_process(&p)?;
    Ok(p)
}

/// Run the exec; returns the exit code (0 with --detach).
pub fn exec(root: &Root, opts: ExecOpts) -> Result<i32> {
    let t = crate::logging::phase("exec: load state");
    let st = container::state(root, &opts.id)?;
    t.done();
    match st.status() {
        Status::Running | Status::Created => {}
        Status::Paused if opts.ignore_paused => {}
        Status::Paused => {
            return Err(Error::container(format!(
                "cannot exec in a paused container {} (use --ignore-paused)",
                opts.id
            )))
        }
        s => {
            return Err(Error::container(format!(
                "cannot exec in a {s} container {}",
                opts.id
            )))
        }
    }
    let base = st.config.process().clone().unwrap_or_default();
    let process = build_process(&opts, &base)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.detach && opts.console_socket.is_none() {
        return Err(Error::config("exec --tty --detach needs --console-socket"));
    }
    let linux = st.config.linux().clone().unwrap_or_default();
    let filter = match linux.seccomp() {
        Some(s) => {
            let _t = crate::logging::phase("seccomp compile");
            Some(crate::seccomp_glue::compile(s, &root.path)?)
        }
        None => None,
    };
    let caps = process.capabilities().as_ref().map(CapPlan::new);
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| {
            CString::new(a.as_bytes())
                .map_err(|_| Error::config(format!("args {a:?}: contains NUL")))
        })
        .collect::<Result<_>>()?;
    let env: Vec<CString> = process
        .env()
        .iter()
        .flatten()
        .map(|e| {
            CString::new(e.as_bytes())
                .map_err(|_| Error::config(format!("env {e:?}: contains NUL")))
        })
        .collect::<Result<_>>()?;
    let joins = open_namespaces(st.pid)?;
    // A container without a mount namespace shares ours: its processes are chrooted into the
    // rootfs instead (see hostmounts); so is this one, into the init's root.
    let chroot = match &st.host_mounts {
        Some(_) => {
            let p = format!("/proc/{}/root", st.pid);
            Some(
                crate::sys::open(std::path::Path::new(&p), libc::O_PATH | libc::O_DIRECTORY)
                    .ctx(|| format!("open {p}"))?,
            )
        }
        None => None,
    };
    if crate::sys::proc_start_time(st.pid).ok() != Some(st.pid_start) {
        return Err(Error::container(format!(
            "container {} is not running",
            opts.id
        )));
    }

    let mut our_console: Option<OwnedFd> = None;
    let console: Option<OwnedFd> = if terminal {
        match &opts.console_socket {
            Some(p) => Some(crate::tty::connect_console_socket(p)?),
            None => {
                let (a, b) = std::os::unix::net::UnixStream::pair()
                    .ctx(|| "socketpair for the terminal".into())?;
                our_console = Some(OwnedFd::from(a));
                Some(OwnedFd::from(b))
            }
        }
    } else {
        None
    };
    let fg = if opts.detach {
        None
    } else {
        Some(crate::run::Foreground::prepare()?)
    };

    // The process joins the container's v1 cgroups itself and is cloned into its cgroup2
    // directory (see container::create).
    let (mut cgroup_join, cg2) = match container::cgroup_manager(&st) {
        Some(cg) => {
            let cg2 = cg.unified_path().map(container::open_cgroup2).transpose()?;
            (cg.join_fds(cg2.is_none())?, cg2)
        }
        None => (Vec::new(), None),
    };
    let (ours, theirs) = channel::pair()?;
    let until_exec = crate::logging::phase("exec: fork, join namespaces and cgroups, until exec");
    // SAFETY: the runtime is single-threaded.
    let inter = unsafe {
        crate::process::fork_into_cgroup(
            0,
            cg2.as_ref().map(std::os::fd::AsFd::as_fd),
            &mut cgroup_join,
        )
    }
    .ctx(|| "fork exec process".into())?;
    drop(cg2);
    if inter == 0 {
        drop(ours);
        let child = ExecChild {
            cgroup_join,
            joins,
            chroot,
            console,
            process: &process,
            caps: caps.as_ref(),
            args,
            env,
            filter: filter.as_ref(),
            preserve_fds: opts.preserve_fds,
            keep_fds: opts.keep_fds.clone(),
        };
        child.main(theirs);
    }
    drop(theirs);
    drop(joins);
    drop(console);
    let cleanup = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    };
    ours.send(&ToChild::Go)?;
    let pid = match ours.recv::<ToParent>()? {
        Some(ToParent::InitPid(p)) => p,
        Some(ToParent::Error(m)) => {
            cleanup(inter);
            return Err(Error::Init(m));
        }
        other => {
            cleanup(inter);
            return Err(Error::container(format!("exec: unexpected {other:?}")));
        }
    };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(inter), None);
    // The process reports an error, or closes the channel by exec'ing (close-on-exec); with a
    // NOTIFY filter it first hands over the listener fd for the seccomp agent.
    loop {
        match ours.recv::<ToParent>()? {
            Some(ToParent::Error(m)) => {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                return Err(Error::Init(m));
            }
            Some(ToParent::SeccompFd) => {
                let fd = ours.recv_fd()?;
                let mut s = st.clone();
                s.pid = pid;
                crate::seccomp_glue::forward_to_listener(
                    &st.config,
                    &fd,
                    pid,
                    &s.hook_json(Status::Running),
                )?;
                ours.send(&ToChild::SeccompDone)?;
            }
            _ => break,
        }
    }
    until_exec.done();
    if let Some(p) = &opts.pid_file {
        crate::state::write_atomic(p, pid.to_string().as_bytes())?;
    }
    let master = match &our_console {
        Some(sock) => Some(crate::tty::recv_fd(sock.as_raw_fd())?.0),
        None => None,
    };
    match fg {
        None => Ok(0),
        Some(fg) => fg.wait(pid, master),
    }
}

/// The namespaces of the container's init that differ from ours, user first.
fn open_namespaces(pid: i32) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    use LinuxNamespaceType as T;
    let order = [
        T::User,
        T::Ipc,
        T::Uts,
        T::Network,
        T::Pid,
        T::Cgroup,
        T::Time,
        T::Mount,
    ];
    let mut out = Vec::new();
    for t in order {
        let name = proc_name(t);
        let theirs = format!("/proc/{pid}/ns/{name}");
        let (Ok(a), Ok(b)) = (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{name}")),
        ) else {
            continue;
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let fd = crate::sys::open(std::path::Path::new(&theirs), libc::O_RDONLY)
            .ctx(|| format!("open {theirs}"))?;
        out.push((t, fd));
    }
    Ok(out)
}

struct ExecChild<'a> {
    cgroup_join: Vec<OwnedFd>,
    joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// The init's root, to chroot into when the container shares our mount namespace.
    chroot: Option<OwnedFd>,
    console: Option<OwnedFd>,
    process: &'a Process,
    caps: Option<&'a CapPlan>,
    args: Vec<CString>,
    env: Vec<CString>,
    filter: Option<&'a crate::seccomp_glue::Filter>,
    preserve_fds: i32,
    keep_fds: Vec<i32>,
}

impl ExecChild<'_> {
    fn main(self, chan: Channel) -> ! {
        let err = match self.run(&chan) {
            Ok(n) => match n {},
            Err(e) => e,
        };
        let _ = chan.send(&ToParent::Error(err.to_string()));
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(1) }
    }

    fn run(mut self, chan: &Channel) -> Result<std::convert::Infallible> {
        // Nothing in the container may inspect or ptrace us before exec.
        crate::sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).ctx(|| "prctl PR_SET_DUMPABLE".into())?;
        init::join_cgroups(std::mem::take(&mut self.cgroup_join))?;
        match chan.recv::<ToChild>()? {
            Some(ToChild::Go) => {}
            other => {
                return Err(Error::container(format!(
                    "sync: expected Go, got {other:?}"
                )))
            }
        }
        // Close what the process must not inherit while /proc is still the host's.
        let mut keep = self.keep_fds.clone();
        keep.push(chan.raw());
        if let Some(c) = &self.console {
            keep.push(c.as_raw_fd());
        }
        keep.extend(self.joins.iter().map(|(_, fd)| fd.as_raw_fd()));
        keep.extend(self.chroot.iter().map(|fd| fd.as_raw_fd()));
        init::close_fds_except(3 + self.preserve_fds, &keep)?;
        for (t, fd) in &self.joins {
            namespaces::join(*t, fd)?;
        }
        if let Some(root) = self.chroot.take() {
            nix::unistd::fchdir(root.as_fd()).ctx(|| "fchdir to the container's root".into())?;
            nix::unistd::chroot(".").ctx(|| "chroot to the container's root".into())?;
            nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
        }
        // The pid namespace applies to children: fork the process that execs.
        // SAFETY: single-threaded.
        let pid = unsafe { crate::sys::clone_fork(0) }
            .ctx(|| "fork into the container's pid namespace".into())?;
        if pid > 0 {
            chan.send(&ToParent::InitPid(pid))?;
            // SAFETY: the intermediate is done.
            unsafe { libc::_exit(0) }
        }
        drop(self.joins);
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        if let Some(sock) = &self.console {
            let pty = crate::tty::open_pty()?;
            if let Some(size) = self.process.console_size() {
                crate::tty::set_winsize(
                    pty.master.as_raw_fd(),
                    size.height() as u16,
                    size.width() as u16,
                )?;
            }
            crate::tty::send_fd(
                sock.as_raw_fd(),
                pty.master.as_raw_fd(),
                &pty.slave_path.to_string_lossy(),
            )?;
            drop(pty.master);
            crate::tty::make_controlling(&pty.slave)?;
        }
        init::apply_rlimits(self.process)?;
        let path = self
            .process
            .env()
            .iter()
            .flatten()
            .find_map(|e| e.strip_prefix("PATH=").map(String::from));
        let exe = init::find_executable(&self.args[0], path.as_deref())?;
        for fd in 3..3 + self.preserve_fds {
            crate::sys::clear_cloexec(fd).ctx(|| format!("preserve fd {fd}"))?;
        }
        let nnp = self.process.no_new_privileges().unwrap_or(false);
        let late = nnp
            || self.caps.map_or(self.process.user().uid() == 0, |c| {
                c.effective.contains(&caps::Capability::CAP_SYS_ADMIN)
            });
        if let Some(f) = self.filter.filter(|_| !late) {
            init::install_seccomp(f, chan)?;
        }
        crate::procattr::apply(self.process)?;
        init::set_user_and_caps(self.caps, self.process)?;
        if nnp {
            crate::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
                .ctx(|| "prctl PR_SET_NO_NEW_PRIVS".into())?;
        }
        if let Some(m) = self.process.user().umask() {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
        }
        nix::unistd::chdir(self.process.cwd())
            .ctx(|| format!("chdir to cwd {}", self.process.cwd().display()))?;
        init::check_cwd_inside()?;
        crate::sys::reset_signals();
        if let Some(f) = self.filter.filter(|_| late) {
            init::install_seccomp(f, chan)?;
        }
        let e = nix::unistd::execve(&exe, &self.args, &self.env);
        e.ctx(|| format!("exec {exe:?}")).map(|n| match n {})
    }
}
