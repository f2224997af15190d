//! husk-cri's side of the shim v2 protocol: it starts one `containerd-shim-husk-v2` per
//! container exactly as containerd does (`shim -namespace NS -id ID -address ADDR start`, in the
//! bundle directory, with TTRPC_ADDRESS naming where events go), talks the same ttrpc Task API,
//! and receives the shim's events (TaskExit, TaskOOM, ...) on its own ttrpc Events service.
//!
//! The ttrpc calls are blocking (ttrpc's sync client); the CRI handlers run them on tokio's
//! blocking pool.

use containerd_shim_protos::api;
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::{self, context};
use containerd_shim_protos::{create_events, Events, TaskClient};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shim {id}: `{bin}` failed ({status}): {stderr}")]
    Start {
        id: String,
        bin: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("shim {id}: {method}: {source}")]
    Rpc {
        id: String,
        method: &'static str,
        source: ttrpc::Error,
    },
    #[error("events socket {path}: {source}")]
    Events { path: PathBuf, source: ttrpc::Error },
}

/// How shims are started.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// containerd-shim-husk-v2
    pub shim_bin: PathBuf,
    /// The OCI runtime the shim runs (HUSK_RUNTIME); None: the shim's default.
    pub runtime: Option<PathBuf>,
    /// husk-cri's own socket: shims derive their socket name from it (as from containerd's).
    pub address: PathBuf,
    /// The unix socket of husk-cri's Events service (the shim's TTRPC_ADDRESS).
    pub events: PathBuf,
}

/// What a task's process gets.
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// One running shim and its task client.
pub struct Shim {
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    /// `unix://...` of the shim's ttrpc socket
    pub address: String,
    task: TaskClient,
}

/// A short deadline for calls that only talk to the shim, a long one for those that run husk.
const QUICK: Duration = Duration::from_secs(10);
const SLOW: Duration = Duration::from_secs(60);

fn ctx(timeout: Duration) -> context::Context {
    context::with_timeout(timeout.as_nanos() as i64)
}

fn shim_command(cfg: &ShimConfig, ns: &str, id: &str, bundle: &Path, action: &str) -> Command {
    let mut cmd = Command::new(&cfg.shim_bin);
    cmd.args(["-namespace", ns, "-id", id, "-address"])
        .arg(&cfg.address)
        .arg(action)
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", &cfg.events)
        .stdin(Stdio::null());
    if let Some(rt) = &cfg.runtime {
        cmd.env("HUSK_RUNTIME", rt);
    }
    cmd
}

/// Runs `shim ... ACTION` to completion; its trimmed stdout.
fn run_action(
    cfg: &ShimConfig,
    ns: &str,
    id: &str,
    bundle: &Path,
    action: &str,
) -> Result<String, ShimError> {
    let out = shim_command(cfg, ns, id, bundle, action)
        .output()
        .map_err(|source| ShimError::Io {
            what: "run shim",
            path: cfg.shim_bin.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ShimError::Start {
            id: id.to_string(),
            bin: cfg.shim_bin.clone(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Shim {
    /// Starts the shim for container `id` (its bundle must hold config.json) and connects.
    pub fn start(cfg: &ShimConfig, ns: &str, id: &str, bundle: &Path) -> Result<Shim, ShimError> {
        let address = run_action(cfg, ns, id, bundle, "start")?;
        if address.is_empty() {
            return Err(ShimError::Start {
                id: id.to_string(),
                bin: cfg.shim_bin.clone(),
                status: "exit 0".into(),
                stderr: "no address printed".into(),
            });
        }
        Shim::attach(ns, id, bundle, address)
    }

    /// A client for the shim serving on `address`.
    fn attach(ns: &str, id: &str, bundle: &Path, address: String) -> Result<Shim, ShimError> {
        // ttrpc's sync Client::connect leaks its socket when connect(2) fails (a raw fd and `?`
        // in ttrpc 0.10), and connecting to a shim that just exited fails: one fd of husk-cri
        // per `Shim::cleanup` after a racing exit (hack/soak.sh saw it). Connect with std, which
        // closes the socket on error, and hand the connected fd to ttrpc.
        let client = match address.strip_prefix("unix://") {
            Some(path) => {
                use std::os::unix::io::IntoRawFd;
                let stream =
                    std::os::unix::net::UnixStream::connect(path).map_err(|e| ShimError::Rpc {
                        id: id.to_string(),
                        method: "connect",
                        source: ttrpc::Error::Socket(format!("connect {path}: {e}")),
                    })?;
                ttrpc::Client::new(stream.into_raw_fd())
            }
            None => ttrpc::Client::connect(&address),
        }
        .map_err(|source| ShimError::Rpc {
            id: id.to_string(),
            method: "connect",
            source,
        })?;
        Ok(Shim {
            namespace: ns.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            address,
            task: TaskClient::new(client),
        })
    }

    /// Connects to a shim that is already running (started by an earlier husk-cri) through the
    /// `address` file it wrote in its bundle.
    pub fn connect(ns: &str, id: &str, bundle: &Path) -> Result<Shim, ShimError> {
        let file = bundle.join("address");
        let address = std::fs::read_to_string(&file)
            .map_err(|source| ShimError::Io {
                what: "read the shim address",
                path: file,
                source,
            })?
            .trim()
            .to_string();
        Shim::attach(ns, id, bundle, address)
    }

    fn rpc<T>(&self, method: &'static str, r: ttrpc::Result<T>) -> Result<T, ShimError> {
        r.map_err(|source| ShimError::Rpc {
            id: self.id.clone(),
            method,
            source,
        })
    }

    /// Create: the shim mounts `rootfs` (overlay layers) on bundle/rootfs and runs `husk create`.
    pub fn create(&self, io: &TaskIo, rootfs: Vec<api::Mount>) -> Result<u32, ShimError> {
        let req = api::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            rootfs,
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            ..Default::default()
        };
        let r = self.rpc("Create", self.task.create(ctx(SLOW), &req))?;
        Ok(r.pid)
    }

    pub fn start_task(&self, exec_id: &str) -> Result<u32, ShimError> {
        let req = api::StartRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self.rpc("Start", self.task.start(ctx(SLOW), &req))?.pid)
    }

    /// Blocks until the process exits; its exit status.
    pub fn wait(&self, exec_id: &str) -> Result<u32, ShimError> {
        let req = api::WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self
            .rpc("Wait", self.task.wait(context::with_timeout(0), &req))?
            .exit_status)
    }

    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let req = api::KillRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.rpc("Kill", self.task.kill(ctx(QUICK), &req))?;
        Ok(())
    }

    pub fn state(&self, exec_id: &str) -> Result<api::StateResponse, ShimError> {
        let req = api::StateRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.rpc("State", self.task.state(ctx(QUICK), &req))
    }

    /// Delete the (stopped) task: `husk delete`, rootfs unmounted; its exit status.
    pub fn delete(&self, exec_id: &str) -> Result<u32, ShimError> {
        let req = api::DeleteRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self
            .rpc("Delete", self.task.delete(ctx(SLOW), &req))?
            .exit_status)
    }

    /// Like [`Shim::wait`], but gives up after `timeout` (None: the process still runs).
    pub fn wait_for(&self, exec_id: &str, timeout: Duration) -> Result<Option<u32>, ShimError> {
        let req = api::WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        match self
            .task
            .wait(ctx(timeout.max(Duration::from_millis(1))), &req)
        {
            Ok(r) => Ok(Some(r.exit_status)),
            // ttrpc's sync client reports its own deadline as "... Receiver timeout: ...".
            Err(ttrpc::Error::Others(m)) if m.contains("timeout") => Ok(None),
            Err(source) => Err(ShimError::Rpc {
                id: self.id.clone(),
                method: "Wait",
                source,
            }),
        }
    }

    /// Exec: adds process `exec_id` (`process` is its runtime-spec `process` JSON) with the
    /// given stdio; it runs on [`Shim::start_task`].
    pub fn exec(
        &self,
        exec_id: &str,
        process: &serde_json::Value,
        io: &TaskIo,
    ) -> Result<(), ShimError> {
        let mut spec = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process.to_string().into_bytes();
        let req = api::ExecProcessRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            spec: containerd_shim_protos::protobuf::MessageField::some(spec),
            ..Default::default()
        };
        self.rpc("Exec", self.task.exec(ctx(QUICK), &req))?;
        Ok(())
    }

    /// CloseIO: closes the stdin of process `exec_id` ("" = the container's init).
    pub fn close_io(&self, exec_id: &str) -> Result<(), ShimError> {
        let req = api::CloseIORequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..Default::default()
        };
        self.rpc("CloseIO", self.task.close_io(ctx(QUICK), &req))?;
        Ok(())
    }

    /// ResizePty: the terminal size of process `exec_id` ("" = the container's init).
    pub fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ShimError> {
        let req = api::ResizePtyRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        self.rpc("ResizePty", self.task.resize_pty(ctx(QUICK), &req))?;
        Ok(())
    }

    /// Update: new cgroup resources (runtime-spec `linux.resources` JSON) and/or annotations
    /// (`io.husk.cri.reopen-log` asks the shim to reopen the container's CRI log file).
    pub fn update(
        &self,
        resources: Option<&serde_json::Value>,
        annotations: &[(&str, &str)],
    ) -> Result<(), ShimError> {
        let mut req = api::UpdateTaskRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        if let Some(r) = resources {
            let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
            any.type_url =
                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
            any.value = r.to_string().into_bytes();
            req.resources = containerd_shim_protos::protobuf::MessageField::some(any);
        }
        for (k, v) in annotations {
            req.annotations.insert(k.to_string(), v.to_string());
        }
        self.rpc("Update", self.task.update(ctx(SLOW), &req))?;
        Ok(())
    }

    /// Checkpoint: CRIU images of the running task into `image_path` (`husk checkpoint
    /// --leave-running`, CRIU's work files and logs in `work_path`); the container goes on.
    /// Past `timeout` the call answers an error (the shim finishes or fails on its own).
    pub fn checkpoint(
        &self,
        image_path: &Path,
        work_path: &Path,
        timeout: Duration,
    ) -> Result<(), ShimError> {
        use containerd_shim_protos::shim::oci::CheckpointOptions;
        let opts = CheckpointOptions {
            exit: false,
            image_path: image_path.display().to_string(),
            work_path: work_path.display().to_string(),
            ..Default::default()
        };
        let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.runc.v1.CheckpointOptions".into();
        any.value = opts.write_to_bytes().map_err(|e| ShimError::Rpc {
            id: self.id.clone(),
            method: "Checkpoint",
            source: ttrpc::Error::Others(format!("encode CheckpointOptions: {e}")),
        })?;
        let req = api::CheckpointTaskRequest {
            id: self.id.clone(),
            path: image_path.display().to_string(),
            options: containerd_shim_protos::protobuf::MessageField::some(any),
            ..Default::default()
        };
        self.rpc("Checkpoint", self.task.checkpoint(ctx(timeout), &req))?;
        Ok(())
    }

    /// Ask the shim to exit (once its task is deleted) and wait for its socket to go away.
    pub fn shutdown(&self) -> Result<(), ShimError> {
        let req = api::ShutdownRequest {
            id: self.id.clone(),
            now: false,
            ..Default::default()
        };
        // The shim may close the connection while answering: that is an exit, not an error.
        match self.task.shutdown(ctx(QUICK), &req) {
            Ok(_) => {}
            Err(ttrpc::Error::Socket(_))
            | Err(ttrpc::Error::LocalClosed)
            | Err(ttrpc::Error::RemoteClosed)
            | Err(ttrpc::Error::Eof) => {}
            Err(e) => {
                return Err(ShimError::Rpc {
                    id: self.id.clone(),
                    method: "Shutdown",
                    source: e,
                })
            }
        }
        let path = self.address.trim_start_matches("unix://").to_string();
        for _ in 0..200 {
            if !Path::new(&path).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Ends whatever a shim left of container `id`. A shim that still answers (one whose task
    /// ended while no husk-cri was there to delete it, say) is asked to kill, delete and shut
    /// down, so its process exits; then `shim delete` in the bundle kills and deletes what is
    /// left (a shim that died).
    pub fn cleanup(cfg: &ShimConfig, ns: &str, id: &str, bundle: &Path) -> Result<(), ShimError> {
        if let Ok(shim) = Shim::connect(ns, id, bundle) {
            let _ = shim.kill("", libc::SIGKILL as u32, true);
            let _ = shim.wait_for("", Duration::from_secs(2));
            // Shutdown even when Delete fails: a task an earlier (killed) husk-cri deleted
            // already answers NotFound, and its shim would otherwise serve on for ever.
            if let Err(e) = shim.delete("") {
                tracing::debug!("shim {id}: {e}");
            }
            if let Err(e) = shim.shutdown() {
                tracing::debug!("shim {id}: {e}");
            }
        }
        run_action(cfg, ns, id, bundle, "delete").map(|_| ())
    }
}

/// husk's state root of shim namespace `ns` (`/run/husk/<ns>`), once no container is left in it:
/// removed with husk's compiled-seccomp cache (only a cache: husk recompiles, and a cache write
/// that races this removal is logged, never fatal).
pub fn remove_runtime_root(ns: &str) {
    let root = Path::new("/run/husk").join(ns);
    let Ok(rd) = std::fs::read_dir(&root) else {
        return;
    };
    if rd
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() != ".seccomp-cache")
    {
        return;
    }
    let _ = std::fs::remove_dir_all(root.join(".seccomp-cache"));
    let _ = std::fs::remove_dir(&root);
}

/// One event a shim published.
#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
}

impl Event {
    /// The TaskExit payload, for topic /tasks/exit.
    pub fn task_exit(&self) -> Option<TaskExit> {
        (self.topic == "/tasks/exit")
            .then(|| TaskExit::parse_from_bytes(&self.value).ok())
            .flatten()
    }
}

struct Forwarder {
    tx: Mutex<mpsc::Sender<Event>>,
}

impl Events for Forwarder {
    fn forward(
        &self,
        _ctx: &ttrpc::TtrpcContext,
        req: ForwardRequest,
    ) -> ttrpc::Result<api::Empty> {
        if let Some(env) = req.envelope.into_option() {
            let (type_url, value) = env
                .event
                .into_option()
                .map(|a| (a.type_url, a.value))
                .unwrap_or_default();
            let ev = Event {
                namespace: env.namespace,
                topic: env.topic,
                type_url,
                value,
            };
            tracing::debug!(topic = %ev.topic, "shim event");
            if let Ok(tx) = self.tx.lock() {
                let _ = tx.send(ev);
            }
        }
        Ok(api::Empty::new())
    }
}

/// husk-cri's Events service: shims forward their events here.
pub struct EventServer {
    server: Option<ttrpc::Server>,
    path: PathBuf,
}

impl EventServer {
    /// Serves on `path` (a stale socket file is replaced); events arrive on the receiver.
    pub fn start(path: &Path) -> Result<(EventServer, mpsc::Receiver<Event>), ShimError> {
        let _ = std::fs::remove_file(path);
        let (tx, rx) = mpsc::channel();
        let svc = create_events(Arc::new(Forwarder { tx: Mutex::new(tx) }));
        let addr = format!("unix://{}", path.display());
        let mut server = ttrpc::Server::new()
            .bind(&addr)
            .map_err(|source| ShimError::Events {
                path: path.to_path_buf(),
                source,
            })?
            .register_service(svc);
        server.start().map_err(|source| ShimError::Events {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((
            EventServer {
                server: Some(server),
                path: path.to_path_buf(),
            },
            rx,
        ))
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
