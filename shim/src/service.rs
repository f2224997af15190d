//! The shim v2 Task service: one container (init + execs) per shim.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::{Options, ProcessDetails};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::{ProcessInfo, Status};

use crate::mainloop::Wake;
use crate::reaper::{Owner, Reaper};
use crate::runtime::{
    CreateOpts, CriuFlags, ProcStdio, RestoreOpts, Runtime, RuntimeConfig, RuntimeError,
};
use crate::stdio::{self, ConsoleSocket, ProcIo, StdioPaths};

/// How long an exit waits for the process's output to be copied out. Only reached when a
/// process outside the container's pid namespace keeps the streams open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

type TtResult<T> = ttrpc::Result<T>;

fn status_err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// The annotation of an Update that asks to reopen the container's CRI log (husk-cri sends it
/// for kubelet's ReopenContainerLog, after the file was renamed).
pub const REOPEN_LOG_ANNOTATION: &str = "io.husk.cri.reopen-log";

/// Maps a failed `<runtime> kill` as containerd's runc shim does (`checkKillError` in
/// pkg/process/utils.go): a process that is gone is NotFound ("process already finished"), which
/// containerd's CRI plugin ignores when stopping a container.
fn kill_err(e: RuntimeError) -> ttrpc::Error {
    let msg = match &e {
        RuntimeError::Failed { msg, .. } => msg.to_ascii_lowercase(),
        _ => return status_err(Code::UNKNOWN, format!("unknown error after kill: {e}")),
    };
    if msg.contains("process already finished")
        || msg.contains("container not running")
        || msg.contains("is not running")
        || msg.contains("no such process")
    {
        status_err(Code::NOT_FOUND, format!("process already finished: {e}"))
    } else if msg.contains("does not exist") {
        status_err(Code::NOT_FOUND, format!("no such container: {e}"))
    } else {
        status_err(Code::UNKNOWN, format!("unknown error after kill: {e}"))
    }
}

fn runtime_err(e: RuntimeError) -> ttrpc::Error {
    if e.is_not_found() {
        status_err(Code::NOT_FOUND, e.to_string())
    } else {
        status_err(Code::UNKNOWN, e.to_string())
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PState {
    Created,
    Running,
    Paused,
    Stopped,
}

impl PState {
    fn proto(self) -> Status {
        match self {
            PState::Created => Status::CREATED,
            PState::Running => Status::RUNNING,
            PState::Paused => Status::PAUSED,
            PState::Stopped => Status::STOPPED,
        }
    }
}

struct Proc {
    pid: i32,
    state: PState,
    exit_status: u32,
    exited_at: Option<Timestamp>,
    paths: StdioPaths,
    io: Option<Arc<ProcIo>>,
    /// The OCI process spec (exec only), kept until Start.
    spec: Vec<u8>,
    /// Start is in progress: its exit is reported only after TaskStart/TaskExecStarted.
    starting: bool,
}

impl Proc {
    /// Reaped: its exit status is known (the state turns Stopped once its output drained and
    /// TaskExit was published).
    fn exited(&self) -> bool {
        self.state == PState::Stopped || self.exited_at.is_some()
    }

    fn new(paths: StdioPaths) -> Proc {
        Proc {
            pid: 0,
            state: PState::Created,
            exit_status: 0,
            exited_at: None,
            paths,
            io: None,
            spec: Vec::new(),
            starting: false,
        }
    }
}

/// A task created from a checkpoint: as containerd's runc shim does, Create only records it and
/// Start runs `<runtime> restore`.
#[derive(Clone)]
struct PendingRestore {
    /// The CRIU image directory (containerd unpacked the checkpoint there).
    image: PathBuf,
    /// CRIU's work directory: the runc option `CriuWorkPath`, else the bundle's `work`.
    work: Option<PathBuf>,
    no_pivot: bool,
}

struct Container {
    id: String,
    bundle: PathBuf,
    runtime: Arc<Runtime>,
    rootfs_mounted: bool,
    /// The container has no pid namespace of its own: kill what is left when init exits.
    kill_all_on_exit: bool,
    /// Set once `<runtime> delete` succeeded. Taken by the exit handler, which deletes the
    /// runtime's container right after init exits (overlapping containerd's Wait → Delete round
    /// trip), and by Delete, which waits for that and only deletes if it did not happen.
    runtime_deleted: Arc<Mutex<bool>>,
    init: Proc,
    execs: HashMap<String, Proc>,
    /// Set from a Create with a checkpoint until Start restored it.
    restore: Option<PendingRestore>,
}

#[derive(Default)]
struct State {
    container: Option<Container>,
    exec_seq: u64,
    /// Create is in progress: an init exit waits until TaskCreate was published.
    creating: bool,
}

pub struct Service {
    namespace: String,
    publisher: Option<crate::publish::Publisher>,
    reaper: Arc<Reaper>,
    wake: Arc<Wake>,
    state: Mutex<State>,
    cond: Condvar,
}

impl Service {
    pub fn new(
        namespace: String,
        publisher: Option<crate::publish::Publisher>,
        reaper: Arc<Reaper>,
        wake: Arc<Wake>,
    ) -> Service {
        Service {
            namespace,
            publisher,
            reaper,
            wake,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish<M: Message>(&self, topic: &str, event: M) {
        let Some(p) = &self.publisher else { return };
        let t = std::time::Instant::now();
        let r = p.publish(topic, &self.namespace, &event);
        tracing::debug!("published {topic} in {:?}", t.elapsed());
        if let Err(e) = r {
            tracing::warn!("publish {topic}: {e}");
        }
    }

    /// Handles the exit of a container process (called from the reaper, off the main loop).
    pub fn on_exit(&self, container_id: &str, owner: Owner, pid: i32, code: i32) {
        let (io, runtime, kill_all, deleted) = {
            let mut st = self.lock();
            let (c, p) = loop {
                if st.creating {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                let Some(c) = &st.container else { return };
                let p = match &owner {
                    Owner::Init => Some(&c.init),
                    Owner::Exec(id) => c.execs.get(id),
                };
                let Some(p) = p else { return };
                if !p.starting {
                    break (c, p);
                }
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            };
            if p.pid != pid {
                return;
            }
            let found = (
                p.io.clone(),
                c.runtime.clone(),
                owner == Owner::Init && c.kill_all_on_exit,
                c.runtime_deleted.clone(),
            );
            // Recorded at once (as the runc shim's SetExited): from here on Kill answers
            // NotFound, State says stopped, Delete waits for the exit to be published.
            if let Some(p) = st.container.as_mut().and_then(|c| c.proc_mut(&owner)) {
                p.exit_status = code as u32;
                p.exited_at = Some(now());
            }
            found
        };
        // Taken before Wait can return, so that a Delete arriving meanwhile waits for it.
        let eager = if owner == Owner::Init {
            Some(deleted.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            None
        };
        if kill_all {
            if let Err(e) = runtime.kill(container_id, libc::SIGKILL as u32, true) {
                tracing::debug!("kill --all after init exit: {e}");
            }
        }
        if let Some(io) = &io {
            io.drain(DRAIN_TIMEOUT);
        }
        let exited_at = {
            let st = self.lock();
            st.container
                .as_ref()
                .and_then(|c| c.proc_ref(&owner))
                .filter(|p| p.pid == pid)
                .and_then(|p| p.exited_at.clone())
                .unwrap_or_else(now)
        };
        let id = match &owner {
            Owner::Init => container_id.to_string(),
            Owner::Exec(e) => e.clone(),
        };
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: container_id.to_string(),
                id,
                pid: pid as u32,
                exit_status: code as u32,
                exited_at: MessageField::some(exited_at.clone()),
                ..Default::default()
            },
        );
        let mut st = self.lock();
        if let Some(p) = st.container.as_mut().and_then(|c| c.proc_mut(&owner)) {
            if p.pid == pid {
                p.state = PState::Stopped;
                p.exit_status = code as u32;
                p.exited_at = Some(exited_at);
            }
        }
        self.cond.notify_all();
        drop(st);
        if let Some(mut done) = eager {
            match runtime.delete(container_id, false) {
                Ok(()) => *done = true,
                Err(e) if e.is_not_found() => *done = true,
                // Left to Delete (e.g. processes outside the pid namespace still dying).
                Err(e) => tracing::debug!("delete after init exit: {e}"),
            }
        }
    }

    fn spawn_exit(self: &Arc<Self>, container_id: String, owner: Owner, pid: i32, code: i32) {
        let svc = self.clone();
        let r = std::thread::Builder::new()
            .name("exit".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                svc.on_exit(&container_id, owner, pid, code);
                crate::server::release_heap();
            });
        if let Err(e) = r {
            tracing::error!("spawn exit thread: {e}");
        }
    }

    fn container_id_checked<'a>(st: &'a mut State, id: &str) -> TtResult<&'a mut Container> {
        match st.container.as_mut() {
            Some(c) if c.init_id() == id || id.is_empty() => Ok(c),
            _ => Err(status_err(
                Code::NOT_FOUND,
                format!("container {id} not found"),
            )),
        }
    }

    /// Launches a process through the runtime. Returns its pid, its stdio and its exit status
    /// if it already exited before the pid file was read.
    fn launch(
        self: &Arc<Self>,
        container_id: &str,
        owner: Owner,
        paths: &StdioPaths,
        run: impl FnOnce(Option<&Path>, ProcStdio) -> Result<(), RuntimeError>,
        pid_file: &Path,
    ) -> TtResult<(i32, Arc<ProcIo>, Option<i32>)> {
        let ioerr = |e: stdio::IoError| status_err(Code::UNKNOWN, e.to_string());
        let guard = self.reaper.launch();
        let io = if paths.terminal {
            let sock = ConsoleSocket::new().map_err(ioerr)?;
            let null = ProcStdio {
                stdin: None,
                stdout: None,
                stderr: None,
            };
            run(Some(sock.path()), null).map_err(runtime_err)?;
            let master = sock.receive().map_err(ioerr)?;
            stdio::setup_console(&self.wake, master, paths).map_err(ioerr)?
        } else {
            let (pstdio, io) = stdio::setup_pipes(&self.wake, paths, &self.namespace, container_id)
                .map_err(ioerr)?;
            run(None, pstdio).map_err(runtime_err)?;
            io
        };
        let text = fs::read_to_string(pid_file).map_err(|e| {
            status_err(
                Code::UNKNOWN,
                format!("read pid file {}: {e}", pid_file.display()),
            )
        })?;
        let pid: i32 = text.trim().parse().map_err(|e| {
            status_err(
                Code::UNKNOWN,
                format!("parse pid file {}: {e}", pid_file.display()),
            )
        })?;
        let early = self.reaper.watch(pid, owner);
        drop(guard);
        Ok((pid, Arc::new(io), early))
    }

    fn create_impl(
        self: &Arc<Self>,
        req: api::CreateTaskRequest,
    ) -> TtResult<api::CreateTaskResponse> {
        if !req.parent_checkpoint.is_empty() {
            return Err(status_err(
                Code::UNIMPLEMENTED,
                format!(
                    "create {}: parent_checkpoint {:?}: restore from a parent (pre-dump) checkpoint is not supported (the dirty-page tracking it needs is not available)",
                    req.id, req.parent_checkpoint
                ),
            ));
        }
        if !req.checkpoint.is_empty() && !Path::new(&req.checkpoint).is_dir() {
            return Err(status_err(
                Code::INVALID_ARGUMENT,
                format!(
                    "create {}: checkpoint {}: not a directory of CRIU images",
                    req.id, req.checkpoint
                ),
            ));
        }
        {
            let mut st = self.lock();
            if st.container.is_some() || st.creating {
                return Err(status_err(
                    Code::ALREADY_EXISTS,
                    format!("this shim already runs a container (asked for {})", req.id),
                ));
            }
            st.creating = true;
        }
        let r = self.create_locked(req);
        self.lock().creating = false;
        self.cond.notify_all();
        r
    }

    /// Create, with `State::creating` set.
    fn create_locked(
        self: &Arc<Self>,
        req: api::CreateTaskRequest,
    ) -> TtResult<api::CreateTaskResponse> {
        let opts = match req.options.as_ref() {
            Some(any) if !any.value.is_empty() => {
                Options::parse_from_bytes(&any.value).map_err(|e| {
                    status_err(
                        Code::INVALID_ARGUMENT,
                        format!("create options ({}): {e}", any.type_url),
                    )
                })?
            }
            _ => Options::default(),
        };
        let bundle = PathBuf::from(&req.bundle);
        let cfg = RuntimeConfig::resolve(&opts.binary_name, &opts.root, &self.namespace);
        cfg.save(&bundle)
            .map_err(|e| status_err(Code::UNKNOWN, e.to_string()))?;
        let runtime = Arc::new(Runtime::new(cfg, &bundle, Some(self.reaper.clone())));

        let rootfs = bundle.join("rootfs");
        let mut mounted = false;
        if !req.rootfs.is_empty() {
            fs::create_dir_all(&rootfs).map_err(|e| {
                status_err(Code::UNKNOWN, format!("mkdir {}: {e}", rootfs.display()))
            })?;
            for m in &req.rootfs {
                if let Err(e) = crate::mount::mount_one(&m.type_, &m.source, &m.options, &rootfs) {
                    if mounted {
                        unmount_rootfs(&rootfs);
                    }
                    return Err(status_err(Code::UNKNOWN, e.to_string()));
                }
                mounted = true;
            }
        }

        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let pid_file = bundle.join("init.pid");
        let restore = (!req.checkpoint.is_empty()).then(|| PendingRestore {
            image: PathBuf::from(&req.checkpoint),
            work: if !opts.criu_work_path.is_empty() {
                Some(PathBuf::from(&opts.criu_work_path))
            } else {
                // containerd's per-task work directory (a link in the bundle), removed with it
                Some(bundle.join("work")).filter(|w| w.is_dir())
            },
            no_pivot: opts.no_pivot_root,
        });
        let (pid, io, early) = if restore.is_some() {
            // Nothing runs before Start (the pid stays 0 until the restore).
            (0, None, None)
        } else {
            let create_opts = CreateOpts {
                pid_file: &pid_file,
                console_socket: None,
                no_pivot: opts.no_pivot_root,
                no_new_keyring: opts.no_new_keyring,
            };
            let rt = runtime.clone();
            let launched = self.launch(
                &req.id,
                Owner::Init,
                &paths,
                |console, pstdio| {
                    let o = CreateOpts {
                        console_socket: console,
                        ..create_opts
                    };
                    rt.create(&req.id, &bundle, &o, pstdio)
                },
                &pid_file,
            );
            match launched {
                Ok((pid, io, early)) => (pid, Some(io), early),
                Err(e) => {
                    let _ = runtime.delete(&req.id, true);
                    if mounted {
                        unmount_rootfs(&rootfs);
                    }
                    return Err(e);
                }
            }
        };
        let kill_all_on_exit = !has_own_pid_namespace(&bundle);
        {
            let mut st = self.lock();
            let mut init = Proc::new(paths.clone());
            init.pid = pid;
            init.io = io;
            st.container = Some(Container {
                id: req.id.clone(),
                bundle: bundle.clone(),
                runtime,
                rootfs_mounted: mounted,
                kill_all_on_exit,
                runtime_deleted: Arc::new(Mutex::new(false)),
                init,
                execs: HashMap::new(),
                restore,
            });
        }
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        if pid > 0 {
            crate::oom::watch(pid, &self.wake);
        }
        if let Some(code) = early {
            self.spawn_exit(req.id.clone(), Owner::Init, pid, code);
        }
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start_impl(self: &Arc<Self>, req: api::StartRequest) -> TtResult<api::StartResponse> {
        if req.exec_id.is_empty() {
            let (runtime, pid, restore) = {
                let mut st = self.lock();
                let c = Self::container_id_checked(&mut st, &req.id)?;
                if c.init.state != PState::Created || c.init.starting {
                    return Err(status_err(
                        Code::FAILED_PRECONDITION,
                        format!("container {} is not in created state", req.id),
                    ));
                }
                c.init.starting = true;
                (c.runtime.clone(), c.init.pid, c.restore.clone())
            };
            if let Some(r) = restore {
                let res = self.start_restore(&req.id, &runtime, &r);
                self.done_starting(&Owner::Init);
                return res;
            }
            let started = runtime.start(&req.id);
            {
                let mut st = self.lock();
                if let Some(c) = st.container.as_mut() {
                    if started.is_ok() && c.init.state == PState::Created {
                        c.init.state = PState::Running;
                    }
                }
            }
            if let Err(e) = started {
                self.done_starting(&Owner::Init);
                return Err(runtime_err(e));
            }
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            );
            self.done_starting(&Owner::Init);
            return Ok(api::StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }

        let (runtime, bundle, paths, spec, seq) = {
            let mut st = self.lock();
            st.exec_seq += 1;
            let seq = st.exec_seq;
            let c = Self::container_id_checked(&mut st, &req.id)?;
            let p = c.execs.get(&req.exec_id).ok_or_else(|| {
                status_err(Code::NOT_FOUND, format!("exec {} not found", req.exec_id))
            })?;
            if p.state != PState::Created || p.starting {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} already started", req.exec_id),
                ));
            }
            let spec = p.spec.clone();
            let paths = p.paths.clone();
            if let Some(p) = c.execs.get_mut(&req.exec_id) {
                p.starting = true;
            }
            (c.runtime.clone(), c.bundle.clone(), paths, spec, seq)
        };
        let owner = Owner::Exec(req.exec_id.clone());
        let spec_file = bundle.join(format!(".exec-{seq}.json"));
        let pid_file = bundle.join(format!(".exec-{seq}.pid"));
        if let Err(e) = fs::write(&spec_file, &spec) {
            self.done_starting(&owner);
            return Err(status_err(
                Code::UNKNOWN,
                format!("write {}: {e}", spec_file.display()),
            ));
        }
        let launched = self.launch(
            &req.id,
            Owner::Exec(req.exec_id.clone()),
            &paths,
            |console, pstdio| runtime.exec(&req.id, &spec_file, &pid_file, console, pstdio),
            &pid_file,
        );
        let _ = fs::remove_file(&spec_file);
        let _ = fs::remove_file(&pid_file);
        let (pid, io, early) = match launched {
            Ok(v) => v,
            Err(e) => {
                self.done_starting(&owner);
                return Err(e);
            }
        };
        {
            let mut st = self.lock();
            if let Some(p) = st
                .container
                .as_mut()
                .and_then(|c| c.execs.get_mut(&req.exec_id))
            {
                p.pid = pid;
                p.io = Some(io);
                p.state = PState::Running;
            }
        }
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        self.done_starting(&owner);
        if let Some(code) = early {
            self.spawn_exit(req.id.clone(), Owner::Exec(req.exec_id.clone()), pid, code);
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// Start of a task created from a checkpoint: `<runtime> restore --detach` with fresh stdio
    /// (as for create), then the restored init is watched like a created one. Called with
    /// `init.starting` set (its exit is reported only after TaskStart).
    fn start_restore(
        self: &Arc<Self>,
        id: &str,
        runtime: &Arc<Runtime>,
        r: &PendingRestore,
    ) -> TtResult<api::StartResponse> {
        let (bundle, paths) = {
            let mut st = self.lock();
            let c = Self::container_id_checked(&mut st, id)?;
            (c.bundle.clone(), c.init.paths.clone())
        };
        let criu = CriuFlags::load(&r.image)
            .map_err(|e| status_err(Code::INVALID_ARGUMENT, format!("restore {id}: {e}")))?;
        let pid_file = bundle.join("init.pid");
        let (pid, io, early) = self.launch(
            id,
            Owner::Init,
            &paths,
            |console, pstdio| {
                let o = RestoreOpts {
                    image_path: &r.image,
                    work_path: r.work.as_deref(),
                    pid_file: &pid_file,
                    console_socket: console,
                    no_pivot: r.no_pivot,
                    criu: &criu,
                };
                runtime.restore(id, &bundle, &o, pstdio)
            },
            &pid_file,
        )?;
        {
            let mut st = self.lock();
            if let Some(c) = st.container.as_mut() {
                c.init.pid = pid;
                c.init.io = Some(io);
                c.restore = None;
                if c.init.state == PState::Created {
                    c.init.state = PState::Running;
                }
            }
        }
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            TaskStart {
                container_id: id.to_string(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        crate::oom::watch(pid, &self.wake);
        if let Some(code) = early {
            self.spawn_exit(id.to_string(), Owner::Init, pid, code);
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn delete_impl(&self, req: api::DeleteRequest) -> TtResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let p = {
                let mut st = self.lock();
                loop {
                    let c = Self::container_id_checked(&mut st, &req.id)?;
                    let Some(p) = c.execs.get(&req.exec_id) else {
                        return Err(status_err(
                            Code::NOT_FOUND,
                            format!("exec {} not found", req.exec_id),
                        ));
                    };
                    // Starting, or exited and its exit not published yet: wait for that.
                    if p.starting || (p.exited() && p.state != PState::Stopped) {
                        st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    if p.state == PState::Running || p.state == PState::Paused {
                        return Err(status_err(
                            Code::FAILED_PRECONDITION,
                            format!("cannot delete running exec {}", req.exec_id),
                        ));
                    }
                    break c.execs.remove(&req.exec_id);
                }
            };
            let Some(p) = p else {
                return Err(status_err(Code::NOT_FOUND, "exec vanished"));
            };
            if p.pid > 0 {
                self.reaper.unwatch(p.pid);
            }
            return Ok(api::DeleteResponse {
                pid: p.pid as u32,
                exit_status: p.exit_status,
                exited_at: MessageField::from_option(p.exited_at),
                ..Default::default()
            });
        }

        let (runtime, state, rootfs, mounted, io, deleted) = {
            let mut st = self.lock();
            loop {
                let c = Self::container_id_checked(&mut st, &req.id)?;
                // Starting, or exited and its exit not published yet: wait for that.
                if !(c.init.starting || (c.init.exited() && c.init.state != PState::Stopped)) {
                    break;
                }
                st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let c = Self::container_id_checked(&mut st, &req.id)?;
            if c.init.state == PState::Running || c.init.state == PState::Paused {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("cannot delete running container {}", req.id),
                ));
            }
            (
                c.runtime.clone(),
                c.init.state,
                c.bundle.join("rootfs"),
                c.rootfs_mounted,
                c.init.io.clone(),
                c.runtime_deleted.clone(),
            )
        };
        {
            let mut done = deleted.lock().unwrap_or_else(|e| e.into_inner());
            if !*done {
                if let Err(e) = runtime.delete(&req.id, state == PState::Created) {
                    if !e.is_not_found() {
                        return Err(runtime_err(e));
                    }
                }
                *done = true;
            }
        }
        if let Some(io) = io {
            io.drain(DRAIN_TIMEOUT);
        }
        if mounted {
            unmount_rootfs(&rootfs);
        }
        let c = {
            let mut st = self.lock();
            let c = st.container.take();
            self.cond.notify_all();
            c
        };
        let Some(c) = c else {
            return Err(status_err(Code::NOT_FOUND, "container vanished"));
        };
        self.reaper.unwatch(c.init.pid);
        let _ = fs::remove_file(c.bundle.join("init.pid"));
        let exited_at = c.init.exited_at.clone().unwrap_or_else(now);
        let exit_status = if c.init.state == PState::Stopped {
            c.init.exit_status
        } else {
            128 + libc::SIGKILL as u32
        };
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                pid: c.init.pid as u32,
                exit_status,
                exited_at: MessageField::some(exited_at.clone()),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse {
            pid: c.init.pid as u32,
            exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }
}

impl Container {
    fn init_id(&self) -> &str {
        &self.id
    }

    fn proc_ref(&self, owner: &Owner) -> Option<&Proc> {
        match owner {
            Owner::Init => Some(&self.init),
            Owner::Exec(id) => self.execs.get(id),
        }
    }

    fn proc_mut(&mut self, owner: &Owner) -> Option<&mut Proc> {
        match owner {
            Owner::Init => Some(&mut self.init),
            Owner::Exec(id) => self.execs.get_mut(id),
        }
    }

    fn proc(&self, exec_id: &str) -> TtResult<&Proc> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            self.execs
                .get(exec_id)
                .ok_or_else(|| status_err(Code::NOT_FOUND, format!("exec {exec_id} not found")))
        }
    }
}

/// Unmounts the container's root filesystem (lazily if it is still busy).
pub fn unmount_rootfs(rootfs: &Path) {
    use nix::mount::{umount2, MntFlags};
    for _ in 0..16 {
        match umount2(rootfs, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(nix::errno::Errno::EBUSY) => {
                if let Err(e) = umount2(rootfs, MntFlags::MNT_DETACH) {
                    tracing::warn!("umount2 {} (detach): {e}", rootfs.display());
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("umount2 {}: {e}", rootfs.display());
                return;
            }
        }
    }
}

/// Whether config.json gives the container a new pid namespace (no `path`).
fn has_own_pid_namespace(bundle: &Path) -> bool {
    /// The part of config.json read here (serde skips the rest).
    #[derive(serde::Deserialize)]
    struct Config {
        linux: Option<Linux>,
    }
    #[derive(serde::Deserialize)]
    struct Linux {
        namespaces: Option<Vec<Namespace>>,
    }
    #[derive(serde::Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        typ: Option<String>,
        path: Option<String>,
    }
    let Ok(data) = fs::read(bundle.join("config.json")) else {
        return true;
    };
    let Ok(config) = serde_json::from_slice::<Config>(&data) else {
        return true;
    };
    let Some(nss) = config.linux.and_then(|l| l.namespaces) else {
        return false;
    };
    nss.iter()
        .any(|ns| ns.typ.as_deref() == Some("pid") && ns.path.as_deref().is_none_or(str::is_empty))
}

/// The ttrpc Task service wrapper (the generated trait takes `&self`; the service needs `Arc`).
pub struct TaskService(pub Arc<Service>);

impl TaskService {
    fn svc(&self) -> &Arc<Service> {
        &self.0
    }
}

/// The Task API methods (dispatched by `server`).
impl TaskService {
    pub fn state(&self, req: api::StateRequest) -> TtResult<api::StateResponse> {
        let mut st = self.svc().lock();
        let c = Service::container_id_checked(&mut st, &req.id)?;
        let p = c.proc(&req.exec_id)?;
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: p.pid as u32,
            // stopped as soon as it was reaped, as the runc shim reports it
            status: if p.exited() {
                Status::STOPPED.into()
            } else {
                p.state.proto().into()
            },
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.paths.terminal,
            exit_status: p.exit_status,
            exited_at: MessageField::from_option(p.exited_at.clone()),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub fn create(&self, req: api::CreateTaskRequest) -> TtResult<api::CreateTaskResponse> {
        tracing::debug!("create {} bundle {}", req.id, req.bundle);
        self.svc().create_impl(req)
    }

    pub fn start(&self, req: api::StartRequest) -> TtResult<api::StartResponse> {
        self.svc().start_impl(req)
    }

    pub fn delete(&self, req: api::DeleteRequest) -> TtResult<api::DeleteResponse> {
        self.svc().delete_impl(req)
    }

    pub fn pids(&self, req: api::PidsRequest) -> TtResult<api::PidsResponse> {
        let (runtime, execs) = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            let execs: HashMap<i32, String> = c
                .execs
                .iter()
                .filter(|(_, p)| p.pid > 0)
                .map(|(id, p)| (p.pid, id.clone()))
                .collect();
            (c.runtime.clone(), execs)
        };
        let pids = runtime.ps(&req.id).map_err(runtime_err)?;
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut info = ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            };
            if let Some(exec_id) = execs.get(&pid) {
                let d = ProcessDetails {
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                if let Ok(value) = d.write_to_bytes() {
                    info.info = MessageField::some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value,
                        ..Default::default()
                    });
                }
            }
            processes.push(info);
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub fn pause(&self, req: api::PauseRequest) -> TtResult<Empty> {
        let runtime = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            if c.init.state != PState::Running {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is not running", req.id),
                ));
            }
            c.runtime.clone()
        };
        runtime.pause(&req.id).map_err(runtime_err)?;
        if let Some(c) = self.svc().lock().container.as_mut() {
            if c.init.state == PState::Running {
                c.init.state = PState::Paused;
            }
        }
        self.svc().publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn resume(&self, req: api::ResumeRequest) -> TtResult<Empty> {
        let runtime = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            if c.init.state != PState::Paused {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is not paused", req.id),
                ));
            }
            c.runtime.clone()
        };
        runtime.resume(&req.id).map_err(runtime_err)?;
        if let Some(c) = self.svc().lock().container.as_mut() {
            if c.init.state == PState::Paused {
                c.init.state = PState::Running;
            }
        }
        self.svc().publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    /// `<runtime> checkpoint --image-path <path> [...] ID`, with containerd's runc
    /// `CheckpointOptions` (`containerd.runc.v1.CheckpointOptions`) mapped to runc's flags as the
    /// runc shim does: the image goes to `options.image_path` or else the request's path, and the
    /// container keeps running unless `options.exit` is set.
    pub fn checkpoint(&self, req: api::CheckpointTaskRequest) -> TtResult<Empty> {
        use containerd_shim_protos::shim::oci::CheckpointOptions;
        let runtime = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            if !matches!(c.init.state, PState::Running | PState::Paused) {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is not running", req.id),
                ));
            }
            c.runtime.clone()
        };
        let opts = match req.options.as_ref() {
            Some(any) if !any.value.is_empty() => {
                if !any
                    .type_url
                    .ends_with("containerd.runc.v1.CheckpointOptions")
                {
                    return Err(status_err(
                        Code::INVALID_ARGUMENT,
                        format!("checkpoint options of type {:?}: expected containerd.runc.v1.CheckpointOptions", any.type_url),
                    ));
                }
                CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                    status_err(Code::INVALID_ARGUMENT, format!("checkpoint options: {e}"))
                })?
            }
            _ => CheckpointOptions::new(),
        };
        let image = if opts.image_path.is_empty() {
            req.path.clone()
        } else {
            opts.image_path.clone()
        };
        if image.is_empty() {
            return Err(status_err(
                Code::INVALID_ARGUMENT,
                "checkpoint: no image path (neither the request's path nor options.image_path)",
            ));
        }
        let criu = CriuFlags {
            tcp_established: opts.open_tcp,
            ext_unix_sk: opts.external_unix_sockets,
            shell_job: opts.terminal,
            file_locks: opts.file_locks,
            empty_ns: opts.empty_namespaces.clone(),
            manage_cgroups_mode: opts.cgroups_mode.clone(),
        };
        let mut cmd = std::process::Command::new(&runtime.cfg.binary);
        cmd.arg("--root")
            .arg(&runtime.cfg.root)
            .args(["checkpoint", "--image-path", &image]);
        if !opts.work_path.is_empty() {
            cmd.args(["--work-path", &opts.work_path]);
        }
        if !opts.exit {
            cmd.arg("--leave-running");
        }
        cmd.args(criu.args());
        cmd.arg(&req.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let binary = runtime.cfg.binary.display().to_string();
        let reaper = self.svc().reaper.clone();
        let mut child = reaper
            .spawn(&mut cmd)
            .map_err(|e| status_err(Code::UNKNOWN, format!("start {binary} checkpoint: {e}")))?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let code = reaper.wait_command(child.id());
        if code != 0 {
            return Err(status_err(
                Code::UNKNOWN,
                format!(
                    "{binary} checkpoint {} failed (exit status {code}): {}",
                    req.id,
                    err.trim()
                ),
            ));
        }
        // A restore needs the same CRIU options; containerd does not pass them to Create.
        criu.save(Path::new(&image)).map_err(|e| {
            status_err(
                Code::UNKNOWN,
                format!(
                    "checkpoint {}: image written, but recording its CRIU options failed: {e}",
                    req.id
                ),
            )
        })?;
        Ok(Empty::new())
    }

    /// Kill, answering as containerd's runc shim (pkg/process init/exec `kill`) does for a
    /// process that already exited, is exiting or never started: NotFound "process already
    /// finished" for a finished one (also when the runtime says it is not running),
    /// FailedPrecondition "process not created" for an exec that was never started. A Kill
    /// arriving while Start runs waits for it (the runc shim holds the process lock).
    pub fn kill(&self, req: api::KillRequest) -> TtResult<Empty> {
        let init = req.exec_id.is_empty();
        let (runtime, target, exited) = {
            let svc = self.svc();
            let mut st = svc.lock();
            loop {
                let c = Service::container_id_checked(&mut st, &req.id)?;
                let p = c.proc(&req.exec_id)?;
                if !init && p.starting {
                    st = svc.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                break (c.runtime.clone(), p.pid, p.exited());
            }
        };
        if !init && target <= 0 {
            return Err(status_err(
                Code::FAILED_PRECONDITION,
                format!("exec {}: process not created", req.exec_id),
            ));
        }
        if exited && !(init && req.all) {
            return Err(status_err(Code::NOT_FOUND, "process already finished"));
        }
        if init {
            return runtime
                .kill(&req.id, req.signal, req.all)
                .map(|_| Empty::new())
                .map_err(kill_err);
        }
        let sig = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|e| {
            status_err(
                Code::INVALID_ARGUMENT,
                format!("signal {}: {e}", req.signal),
            )
        })?;
        // Only while the reaper still watches it: a reaped pid may have been reused.
        match self.svc().reaper.signal(target, sig) {
            Ok(true) => Ok(Empty::new()),
            Ok(false) | Err(nix::errno::Errno::ESRCH) => {
                Err(status_err(Code::NOT_FOUND, "process already finished"))
            }
            Err(e) => Err(status_err(
                Code::UNKNOWN,
                format!("exec {}: kill({target}, {sig}): {e}", req.exec_id),
            )),
        }
    }

    pub fn exec(&self, req: api::ExecProcessRequest) -> TtResult<Empty> {
        {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            if c.init.exited() {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is stopped", req.id),
                ));
            }
            if c.restore.is_some() {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "container {} is created from a checkpoint and not restored (started) yet: cannot exec in it",
                        req.id
                    ),
                ));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(status_err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            let mut p = Proc::new(StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            });
            p.spec = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            c.execs.insert(req.exec_id.clone(), p);
        }
        self.svc().publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn resize_pty(&self, req: api::ResizePtyRequest) -> TtResult<Empty> {
        let io = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            c.proc(&req.exec_id)?.io.clone()
        };
        let Some(io) = io else {
            return Err(status_err(
                Code::FAILED_PRECONDITION,
                "process has no terminal yet",
            ));
        };
        io.resize(req.width, req.height)
            .map_err(|e| status_err(Code::FAILED_PRECONDITION, e.to_string()))?;
        Ok(Empty::new())
    }

    pub fn close_io(&self, req: api::CloseIORequest) -> TtResult<Empty> {
        let io = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            c.proc(&req.exec_id)?.io.clone()
        };
        if req.stdin {
            if let Some(io) = io {
                io.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    /// Update: new resources (`<runtime> update`), and/or with the annotation
    /// [`REOPEN_LOG_ANNOTATION`] = "1" the container's CRI log files reopened (every process of
    /// the container that writes a `crilog://` log; kubelet renamed the file to rotate it).
    pub fn update(&self, req: api::UpdateTaskRequest) -> TtResult<Empty> {
        let reopen = match req
            .annotations
            .get(REOPEN_LOG_ANNOTATION)
            .map(String::as_str)
        {
            None => false,
            Some("1") => true,
            Some(other) => {
                return Err(status_err(
                    Code::INVALID_ARGUMENT,
                    format!("update: annotation {REOPEN_LOG_ANNOTATION}={other:?}: expected \"1\""),
                ))
            }
        };
        let (runtime, logs) = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            let mut logs: Vec<Arc<crate::crilog::CriLog>> = Vec::new();
            let procs = std::iter::once(&c.init).chain(c.execs.values());
            for log in procs.filter_map(|p| p.io.as_ref().and_then(|io| io.crilog())) {
                if !logs.iter().any(|l| Arc::ptr_eq(l, log)) {
                    logs.push(log.clone());
                }
            }
            (c.runtime.clone(), logs)
        };
        if !reopen && req.resources.is_none() {
            return Err(status_err(Code::INVALID_ARGUMENT, "update: no resources"));
        }
        if reopen {
            if logs.is_empty() {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "reopen log of container {}: it has no crilog:// stdio",
                        req.id
                    ),
                ));
            }
            for log in &logs {
                log.reopen()
                    .map_err(|e| status_err(Code::UNKNOWN, format!("reopen log: {e}")))?;
            }
            tracing::debug!("reopened {} CRI log file(s) of {}", logs.len(), req.id);
        }
        if let Some(res) = req.resources.as_ref() {
            runtime.update(&req.id, &res.value).map_err(runtime_err)?;
        }
        Ok(Empty::new())
    }

    pub fn wait(&self, req: api::WaitRequest) -> TtResult<api::WaitResponse> {
        let svc = self.svc();
        let mut st = svc.lock();
        loop {
            let c = Service::container_id_checked(&mut st, &req.id)?;
            let p = c.proc(&req.exec_id)?;
            if p.state == PState::Stopped {
                return Ok(api::WaitResponse {
                    exit_status: p.exit_status,
                    exited_at: MessageField::from_option(p.exited_at.clone()),
                    ..Default::default()
                });
            }
            st = svc.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn stats(&self, req: api::StatsRequest) -> TtResult<api::StatsResponse> {
        let pid = {
            let mut st = self.svc().lock();
            let c = Service::container_id_checked(&mut st, &req.id)?;
            if c.init.exited() {
                return Err(status_err(Code::NOT_FOUND, "container is stopped"));
            }
            if c.init.pid <= 0 {
                return Err(status_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} has no process yet (not restored)", req.id),
                ));
            }
            c.init.pid
        };
        let stats = crate::metrics::collect(pid as u32)
            .map_err(|e| status_err(Code::UNKNOWN, format!("stats: {e}")))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    pub fn connect(&self, req: api::ConnectRequest) -> TtResult<api::ConnectResponse> {
        let st = self.svc().lock();
        let task_pid = match &st.container {
            Some(c) if c.init_id() == req.id || req.id.is_empty() => c.init.pid as u32,
            _ => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    pub fn shutdown(&self, _req: api::ShutdownRequest) -> TtResult<Empty> {
        // The shim exits once this answer is written (see `server`), if no container is left.
        Ok(Empty::new())
    }
}

impl Service {
    fn done_starting(&self, owner: &Owner) {
        let mut st = self.lock();
        if let Some(c) = st.container.as_mut() {
            let p = match owner {
                Owner::Init => Some(&mut c.init),
                Owner::Exec(id) => c.execs.get_mut(id),
            };
            if let Some(p) = p {
                p.starting = false;
            }
        }
        self.cond.notify_all();
    }

    /// After a Shutdown was answered: exit when the container is gone.
    pub fn shutdown_if_idle(&self) {
        if self.lock().container.is_none() {
            self.wake.shutdown();
        }
    }
}

/// Publishes TaskOOM (called by the main loop when the memory cgroup reports an OOM kill).
pub fn publish_oom(svc: &Service, container_id: &str) {
    svc.publish(
        topics::TASK_OOM_EVENT_TOPIC,
        TaskOOM {
            container_id: container_id.to_string(),
            ..Default::default()
        },
    );
}

/// Dispatches reaped exits to the service.
pub fn dispatch_exits(svc: &Arc<Service>, container_id: &str, exits: Vec<(Owner, i32, i32)>) {
    for (owner, pid, code) in exits {
        svc.spawn_exit(container_id.to_string(), owner, pid, code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(msg: &str) -> RuntimeError {
        RuntimeError::Failed {
            binary: "husk".into(),
            action: "kill".into(),
            msg: msg.into(),
        }
    }

    fn code(e: ttrpc::Error) -> (Code, String) {
        match e {
            ttrpc::Error::RpcStatus(s) => (s.code.enum_value_or(Code::UNKNOWN), s.message),
            other => panic!("not a status: {other}"),
        }
    }

    #[test]
    fn kill_errors_map_as_the_runc_shims() {
        // husk's and runc's words for a container whose init is gone: NotFound
        for msg in [
            "container c1 is not running",
            "container not running",
            "kill 42 SIGKILL: ESRCH: No such process",
        ] {
            let (c, m) = code(kill_err(failed(msg)));
            assert_eq!(c, Code::NOT_FOUND, "{msg}");
            assert!(m.starts_with("process already finished: "), "{m}");
            assert!(m.contains(msg), "the cause is kept: {m}");
        }
        let (c, m) = code(kill_err(failed("container \"c1\" does not exist")));
        assert_eq!(c, Code::NOT_FOUND);
        assert!(m.starts_with("no such container: "), "{m}");
        let (c, m) = code(kill_err(failed("cgroup.procs: permission denied")));
        assert_eq!(c, Code::UNKNOWN);
        assert!(m.starts_with("unknown error after kill: "), "{m}");
    }
}
