//! Container lifecycle operations (create, start, state, kill, delete), independent of the CLI.
use crate::capabilities::CapPlan;
use crate::cgroups::{CgroupManager, CgroupOptions, CgroupState, Host};
use crate::error::{Context, Error, Result};
use crate::namespaces::NsPlan;
use crate::process::{self, init::InitConfig};
use crate::spec;
use crate::state::{ContainerState, Locked, Root, Status};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxNamespaceType;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `create` (and `run`), as runc's flags give them.
#[derive(Debug, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    /// An already-connected console socket (used by `run` for its own terminal).
    pub console_fd: Option<OwnedFd>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    pub systemd_cgroup: bool,
    /// Fds the runtime itself uses until exec (e.g. the log file).
    pub keep_fds: Vec<i32>,
}

pub fn cgroup_manager(st: &ContainerState) -> Option<CgroupManager> {
    st.cgroup
        .as_ref()
        .and_then(|v| serde_json::from_value::<CgroupState>(v.clone()).ok())
        .map(CgroupManager::load)
}

/// Whether the container's freezer says it is frozen.
pub fn is_paused(st: &ContainerState) -> bool {
    cgroup_manager(st).is_some_and(|m| m.is_frozen().unwrap_or(false))
}

/// Undoes a half-made container unless `commit` is called: kills what was cloned, removes the
/// cgroups and the state directory.
struct CreateGuard<'a> {
    locked: &'a Locked,
    cgroup: Option<CgroupManager>,
    /// Mounts made in the runtime's mount namespace (a container without its own).
    host_mounts: Option<crate::hostmounts::HostMounts>,
    pids: Vec<i32>,
    done: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for pid in &self.pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for pid in &self.pids {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid), None);
        }
        if let Some(hm) = &self.host_mounts {
            if let Err(e) = hm.unmount_all() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Some(cg) = &mut self.cgroup {
            if let Ok(procs) = cg.procs() {
                for p in procs {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Err(e) = self.locked.remove() {
            tracing::warn!("cleanup after failed create: {e}");
        }
    }
}

struct ParentSide<'g, 'l> {
    guard: &'g mut CreateGuard<'l>,
    st: &'g mut ContainerState,
}

impl process::Parent for ParentSide<'_, '_> {
    fn placed(&mut self, pid: i32) -> Result<()> {
        // The process joins its cgroups itself (InitConfig::cgroup_join); only track it here.
        self.guard.pids.push(pid);
        Ok(())
    }
    fn init_pid(&mut self, pid: i32) {
        if !self.guard.pids.contains(&pid) {
            self.guard.pids.push(pid);
        }
        self.st.pid = pid;
    }
    fn namespaces_ready(&mut self, init_pid: i32) -> Result<()> {
        if let Some(devs) = self
            .st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.net_devices().as_ref())
        {
            crate::netdev::move_in(devs, init_pid)?;
        }
        Ok(())
    }
    fn seccomp_fd(&mut self, fd: OwnedFd, init_pid: i32) -> Result<()> {
        self.st.pid = init_pid;
        let json = self.st.hook_json(Status::Creating);
        crate::seccomp_glue::forward_to_listener(&self.st.config, &fd, init_pid, &json)
    }
    fn run_hooks(&mut self, init_pid: i32) -> Result<String> {
        self.st.pid = init_pid;
        let json = self.st.hook_json(Status::Creating);
        let hooks = self.st.config.hooks().clone();
        let _t = crate::logging::phase("hooks: prestart, createRuntime");
        if let Some(h) = &hooks {
            crate::hooks::run_all("prestart", h.prestart(), &json)?;
            crate::hooks::run_all("createRuntime", h.create_runtime(), &json)?;
        }
        Ok(json)
    }
}

/// `create`: build the container up to the point where only exec is left.
pub fn create(root: &Root, mut opts: CreateOpts) -> Result<ContainerState> {
    let _total = crate::logging::phase("create");
    crate::state::validate_id(&opts.id)?;
    let config = crate::logging::phase("config");
    let bundle = spec::load_bundle(&opts.bundle)?;
    let plan = NsPlan::from_spec(&bundle.spec)?;
    config.done();
    let process = bundle
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process: missing"))?;
    if process.terminal().unwrap_or(false)
        && opts.console_socket.is_none()
        && opts.console_fd.is_none()
    {
        return Err(Error::config(
            "process.terminal is true but no --console-socket was given",
        ));
    }
    if !process.terminal().unwrap_or(false) && opts.console_socket.is_some() {
        return Err(Error::config(
            "--console-socket given but process.terminal is false",
        ));
    }
    let linux = bundle
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux: missing"))?;
    let filter = match linux.seccomp() {
        Some(s) => {
            let _t = crate::logging::phase("seccomp compile");
            Some(crate::seccomp_glue::compile(s, &root.path)?)
        }
        None => None,
    };
    let prep = crate::logging::phase("prepare");
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| {
            CString::new(a.as_bytes())
                .map_err(|_| Error::config(format!("process.args {a:?}: contains NUL")))
        })
        .collect::<Result<_>>()?;
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let mut preserve = opts.preserve_fds;
    if let Some(n) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n > 0)
    {
        env.retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
        env.push(format!("LISTEN_FDS={n}"));
        env.push("LISTEN_PID=1".to_string());
        preserve += n;
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            home_of(&bundle.rootfs, process.user().uid())
        ));
    }
    let caps = process.capabilities().as_ref().map(CapPlan::new);
    let join_fds = plan.open_joins()?;
    let idmapped = crate::idmap::prepare(&bundle.spec, &bundle.dir)?;
    let console = match (&opts.console_socket, opts.console_fd.take()) {
        (_, Some(fd)) => Some(fd),
        (Some(p), None) => Some(crate::tty::connect_console_socket(p)?),
        (None, None) => None,
    };

    // Without a mount namespace the mounts go to the runtime's: note what is there already.
    let host_mounts = if plan.has(LinuxNamespaceType::Mount) {
        None
    } else {
        Some(crate::hostmounts::HostMounts::begin(&bundle.rootfs)?)
    };

    prep.done();

    let locked = root.create(&opts.id)?;
    let mut st = ContainerState {
        id: opts.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: chrono::Utc::now(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        started: false,
        start_fd: -1,
        exec_fd: -1,
        owner: String::new(),
        cgroup: None,
        config: bundle.spec.clone(),
        own_pidns: plan.is_new(LinuxNamespaceType::Pid),
        host_mounts: host_mounts.clone(),
        abandoned: false,
    };
    let mut guard = CreateGuard {
        locked: &locked,
        cgroup: None,
        host_mounts,
        pids: Vec::new(),
        done: false,
    };
    let cgroups = crate::logging::phase("cgroups");
    let host = Host::detect()?;
    let mut cg = CgroupManager::new(
        &host,
        &CgroupOptions {
            cgroups_path: linux.cgroups_path().as_deref(),
            id: &opts.id,
            systemd: opts.systemd_cgroup,
        },
    )?;
    if let Some(r) = linux.resources() {
        cg.validate(r)?;
    }
    // Saved before the first mkdir, naming every directory this create may make: a create
    // killed half-way through the cgroups leaves a state `delete --force` removes them by
    // (without it the directories made so far were known to nobody).
    st.cgroup = Some(
        serde_json::to_value(planned_cgroups(cg.save()))
            .map_err(|e| Error::container(format!("serialize cgroup state: {e}")))?,
    );
    locked.save_renaming(&st)?;
    st.cgroup = None;
    match cg.create() {
        Ok(()) => {
            st.cgroup = Some(
                serde_json::to_value(cg.save())
                    .map_err(|e| Error::container(format!("serialize cgroup state: {e}")))?,
            );
            guard.cgroup = Some(cg.clone());
            if let Some(r) = linux.resources() {
                cg.apply(r)?;
            }
        }
        // Rootless without a delegated cgroup: like runc, run without cgroups as long as no
        // limit was asked for.
        Err(e) if crate::state::rootless() && !asks_for_limits(linux.resources().as_ref()) => {
            tracing::debug!("rootless: running without cgroups: {e}");
        }
        Err(e) => return Err(e.into()),
    }
    cgroups.done();
    // Saved before clone: a create killed half-way leaves a state `delete --force` can clean.
    locked.save_renaming(&st)?;

    // The init joins its cgroups itself, first thing after clone: a single-threaded process
    // writing "0" to v1 `tasks` avoids the slow path the kernel takes when another process moves
    // it (about 12 ms per hierarchy attach here). The cgroup2 directory (pure v2, or the unified
    // mount of a hybrid host) takes it at clone time (clone3 CLONE_INTO_CGROUP).
    let join = crate::logging::phase("cgroup join fds");
    let (cgroup_join, cg2) = match &guard.cgroup {
        Some(cg) => {
            let cg2 = cg.unified_path().map(open_cgroup2).transpose()?;
            // not the cgroup2 `cgroup.procs`: the init is cloned into that directory
            (cg.join_fds(cg2.is_none())?, cg2)
        }
        None => (Vec::new(), None),
    };
    join.done();
    let cfg = InitConfig {
        id: &opts.id,
        spec: &bundle.spec,
        bundle: &bundle.dir,
        rootfs: &bundle.rootfs,
        plan: &plan,
        join_fds,
        caps,
        console,
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserve_fds: preserve,
        keep_fds: opts.keep_fds.clone(),
        args,
        env,
        seccomp: filter.as_ref().map(|f| f as &dyn process::SeccompInstall),
        intermediate: plan.needs_intermediate(),
        idmapped,
        cgroup_join,
    };
    let (pid, start_fd, exec_fd) = {
        let mut side = ParentSide {
            guard: &mut guard,
            st: &mut st,
        };
        process::spawn(cfg, &mut side, cg2.as_ref().map(std::os::fd::AsFd::as_fd))?
    };
    drop(cg2);
    let save = crate::logging::phase("state save");
    st.pid = pid;
    st.pid_start =
        crate::sys::proc_start_time(pid).ctx(|| format!("read start time of init pid {pid}"))?;
    st.start_fd = start_fd;
    st.exec_fd = exec_fd;
    if let Some(hm) = &mut st.host_mounts {
        hm.made = hm.current()?;
    }
    locked.save_renaming(&st)?;
    if let Some(p) = &opts.pid_file {
        crate::state::write_atomic(p, pid.to_string().as_bytes())?;
    }
    guard.done = true;
    save.done();
    Ok(st)
}

/// A cgroup2 directory to clone a process into (clone3 CLONE_INTO_CGROUP).
pub(crate) fn open_cgroup2(p: &Path) -> Result<std::os::fd::OwnedFd> {
    crate::sys::open(p, libc::O_PATH | libc::O_DIRECTORY)
        .ctx(|| format!("open cgroup2 dir {}", p.display()))
}

/// The cgroup record of a container whose directories are about to be made: every leaf and every
/// missing ancestor counted as created (parents before children), so `destroy` removes what
/// exists of them (missing ones are skipped, parents only when empty).
fn planned_cgroups(mut st: CgroupState) -> CgroupState {
    let leaves = st.v1.values().chain(st.unified.iter());
    let mut planned: Vec<PathBuf> = Vec::new();
    for leaf in leaves {
        let missing: Vec<&Path> = leaf.ancestors().take_while(|a| !a.exists()).collect();
        for d in missing.into_iter().rev() {
            if !planned.iter().any(|p| p == d) {
                planned.push(d.to_path_buf());
            }
        }
    }
    st.created.extend(planned);
    st
}

/// Whether `resources` asks for any limit (device rules alone are not a limit).
fn asks_for_limits(r: Option<&oci_spec::runtime::LinuxResources>) -> bool {
    let Some(r) = r else { return false };
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|h| !h.is_empty())
}

fn home_of(rootfs: &Path, uid: u32) -> String {
    std::fs::read_to_string(rootfs.join("etc/passwd"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".to_string())
}

/// `start`: let a created container's init exec the user process, then run poststart hooks.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let locked = root.lock(id)?;
    let mut st = locked.load()?;
    match st.status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::container(format!(
                "cannot start a container that has stopped: {id}"
            )))
        }
        s => {
            return Err(Error::container(format!(
                "cannot start an already {s} container {id}"
            )))
        }
    }
    // Open the exec pipe before letting the init go, so its EOF tells us the exec happened.
    let exec_path = format!("/proc/{}/fd/{}", st.pid, st.exec_fd);
    let exec_pipe = crate::sys::open(Path::new(&exec_path), libc::O_RDONLY)
        .ctx(|| format!("open exec pipe {exec_path}"))?;
    let path = format!("/proc/{}/fd/{}", st.pid, st.start_fd);
    let f = crate::sys::open(Path::new(&path), libc::O_WRONLY)
        .ctx(|| format!("open start pipe {path}"))?;
    let exec_wait = crate::logging::phase("exec wait");
    nix::unistd::write(&f, &[0u8]).ctx(|| format!("write start pipe {path}"))?;
    drop(f);
    st.started = true;
    locked.save(&st)?;
    // startContainer hooks run, then execve closes the pipe (or the init dies): EOF either way.
    let mut b = [0u8; 1];
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&exec_pipe, &mut b) {}
    drop(exec_pipe);
    exec_wait.done();
    if let Some(h) = st.config.hooks() {
        let _t = crate::logging::phase("hooks: poststart");
        crate::hooks::run_all_warn("poststart", h.poststart(), &st.hook_json(Status::Running));
    }
    Ok(())
}

/// `state`: the runtime-spec state JSON.
pub fn state(root: &Root, id: &str) -> Result<ContainerState> {
    root.peek(id)
}

/// Parse a signal given as a name (KILL, SIGKILL, kill) or a number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::container(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::container(format!("unknown signal {s:?}")))
}

/// `kill`: signal the init, or with `all` every process in the container's cgroup.
pub fn kill(root: &Root, id: &str, sig: Signal, all: bool) -> Result<()> {
    let locked = root.lock(id)?;
    let st = locked.load()?;
    let status = st.status();
    if status == Status::Stopped && !all {
        return Err(Error::container(format!("container {id} is not running")));
    }
    if all {
        return signal_all(&st, sig);
    }
    // No init recorded (a create killed before its init was ready): kill(2) of pid 0 would
    // signal our own process group.
    if st.pid <= 0 {
        return Err(Error::container(format!(
            "container {id} is not running (its create did not finish)"
        )));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), sig)
        .ctx(|| format!("kill {} {sig}", st.pid))
}

fn signal_all(st: &ContainerState, sig: Signal) -> Result<()> {
    let Some(cg) = cgroup_manager(st) else {
        return Ok(());
    };
    let paused = cg.is_frozen().unwrap_or(false);
    for p in cg.procs()? {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
    // A frozen process only acts on SIGKILL once thawed.
    if paused && sig == Signal::SIGKILL {
        cg.thaw()?;
    }
    Ok(())
}

/// Wait until the container's processes are gone (or zombies), for at most `limit`.
fn wait_gone(st: &ContainerState, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        // pid 0: state saved before any init existed (a restore killed before CRIU forked)
        let init_gone = st.pid <= 0 || st.status() == Status::Stopped;
        let cg_empty = cgroup_manager(st).is_none_or(|cg| {
            cg.procs().map_or(true, |p| {
                p.iter()
                    .all(|pid| matches!(crate::sys::proc_stat(*pid), Ok(('Z', _)) | Err(_)))
            })
        });
        if init_gone && cg_empty {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `delete`: remove a stopped (or created) container; `force` kills a running one first.
/// `delete --force` of an ID that does not exist succeeds, as with runc and crun: podman and
/// containerd call it after a checkpoint or a failed create already removed the container.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let locked = match root.lock(id) {
        Ok(l) => l,
        Err(Error::NotFound(_)) if force => {
            tracing::debug!("delete --force: container {id} does not exist");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let st = match locked.load() {
        Ok(st) => st,
        Err(e) if force => {
            // A create that died before writing its state: nothing but the directory to remove.
            tracing::warn!("removing container {id} without state: {e}");
            return locked.remove();
        }
        Err(e) => return Err(e),
    };
    let status = st.status();
    match status {
        Status::Stopped | Status::Creating => {}
        Status::Created | Status::Running | Status::Paused if force => {}
        s => {
            return Err(Error::container(format!(
                "cannot delete container {id} that is not stopped: {s} (use --force)"
            )))
        }
    }
    // Network devices go back to the host while the container's netns still exists.
    if status != Status::Stopped {
        if let Some(devs) = st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.net_devices().as_ref())
        {
            if let Err(e) = crate::netdev::move_out(devs, st.pid) {
                tracing::warn!("delete {id}: moving network devices back: {e}");
            }
        }
    }
    if status != Status::Stopped || !st.own_pidns {
        // Kill the init (and, without a pid namespace of its own, everything in its cgroup).
        if status != Status::Stopped && st.pid > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), Signal::SIGKILL);
        }
        signal_all(&st, Signal::SIGKILL)?;
    }
    if !wait_gone(&st, Duration::from_secs(10)) {
        return Err(Error::container(format!(
            "container {id}: processes did not exit after SIGKILL"
        )));
    }
    // A container without a mount namespace: its mounts are in ours (and the state is kept
    // when one cannot be removed, so delete can be tried again).
    if let Some(hm) = &st.host_mounts {
        hm.unmount_all()?;
    }
    if let Some(mut cg) = cgroup_manager(&st) {
        cg.destroy()?;
    }
    if let Some(h) = st.config.hooks() {
        crate::hooks::run_all_warn("poststop", h.poststop(), &st.hook_json(Status::Stopped));
    }
    locked.remove()
}
