//! All containers of this husk-cri: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers, UpdateContainerResources,
//! ReopenContainerLog, the shims' exit and OOM events, and reloading after a restart.
//!
//! Locking: each container has one mutex over its record and its shim handle, held only for
//! short bookkeeping, never across a shim call that waits for a process. Long calls (Stop's
//! grace period, ExecSync) work on a cloned `Arc<Shim>`.

use super::record::{Record, RunState, UNKNOWN_EXIT_CODE};
use super::spec::{self, ImageRef, SandboxRef};
use super::{io_err, ContainerError};
use crate::events::{event, EventHub};
use crate::image::ImageStore;
use crate::sandbox::userns::IdmappedLayers;
use crate::sandbox::{now_ns, SandboxInfo, Sandboxes, SHIM_NAMESPACE};
use crate::shim::{Event, Shim, ShimConfig, TaskIo};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The annotation that asks the shim to reopen a container's CRI log (ReopenContainerLog).
pub const REOPEN_LOG_ANNOTATION: &str = "io.husk.cri.reopen-log";
/// How long StopContainer waits for a SIGKILLed container to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Inner {
    pub record: Record,
    /// The shim while the task exists.
    pub shim: Option<Arc<Shim>>,
}

pub(crate) struct Container {
    inner: Mutex<Inner>,
}

impl Container {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

use crate::records::lock;

pub struct Containers {
    shim: ShimConfig,
    /// `<state>/containers`: one bundle per container.
    dir: PathBuf,
    /// `<root>/snapshots`: one writable layer per container.
    snapshots: PathBuf,
    /// `<state>/exec`: FIFOs of ExecSync calls in progress.
    pub(crate) exec_dir: PathBuf,
    images: Arc<ImageStore>,
    sandboxes: Arc<Sandboxes>,
    events: EventHub,
    by_id: Mutex<HashMap<String, Arc<Container>>>,
    /// name key → id, reserved from CreateContainer to RemoveContainer.
    names: Mutex<HashMap<String, String>>,
    /// husk-cri's write side (opened read-write) of the stdin FIFO of each container created
    /// with stdin, from StartContainer on: the shim's stdin copier must find a writer (a FIFO
    /// without one reads as EOF), and attach sessions write through copies of it.
    stdin_writers: Mutex<HashMap<String, std::fs::File>>,
}

/// containerd's container name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
fn name_key(c: &cri::ContainerMetadata, pod: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, pod.name, pod.namespace, pod.uid, c.attempt
    )
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<(), ContainerError> {
    crate::records::write_json(path, v).map_err(|(what, path, source)| ContainerError::Io {
        what,
        path,
        source,
    })
}

/// What `output.log` (the output of a container without a CRI log path, which attach reads)
/// may grow to before the shim rotates it to `output.log.1`: kubelet's default
/// containerLogMaxSize. Logs at a CRI log path are kubelet's to rotate (ReopenContainerLog).
const OUTPUT_LOG_MAX: u64 = 10 << 20;

/// The shim's `crilog://` stdio URI for a log file (`?` and `%` of the path escaped); `capped`:
/// the shim rotates it at [`OUTPUT_LOG_MAX`].
fn crilog_uri(path: &Path, capped: bool) -> String {
    let p = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3F");
    if capped {
        format!("crilog://{p}?max-size={OUTPUT_LOG_MAX}")
    } else {
        format!("crilog://{p}")
    }
}

/// Removes a directory tree that must hold no mount (checked first: a leftover rootfs mount is
/// unmounted, never recursed into).
fn remove_tree(path: &Path) -> Result<(), ContainerError> {
    let rootfs = path.join("rootfs");
    if is_mountpoint(&rootfs) {
        umount(&rootfs)?;
    }
    // Idmapped binds of the shared image layers a start cut short left (same file system:
    // no st_dev tells them apart). They go first, or removing the tree would empty the layers.
    let idmapped = path.join("idmapped");
    crate::sandbox::userns::release_dir(&idmapped);
    if idmapped.exists() {
        return Err(io_err("remove", &idmapped)(std::io::Error::other(
            "idmapped layer mounts are still attached",
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::symlink_metadata(p),
        p.parent().map(std::fs::symlink_metadata),
    ) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

pub(crate) fn umount(p: &Path) -> Result<(), ContainerError> {
    nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| io_err("umount", p)(e.into()))
}

impl Containers {
    pub fn new(
        shim: ShimConfig,
        root: &Path,
        state_dir: &Path,
        images: Arc<ImageStore>,
        sandboxes: Arc<Sandboxes>,
        events: EventHub,
    ) -> Result<Containers, ContainerError> {
        let dir = state_dir.join("containers");
        let snapshots = root.join("snapshots");
        let exec_dir = state_dir.join("exec");
        for d in [&dir, &snapshots, &exec_dir] {
            std::fs::create_dir_all(d).map_err(io_err("mkdir", d))?;
        }
        // Writable layers (setuid programs a container wrote) and bundles (the rootfs mounts)
        // are root's only (CVE-2021-41103). The bundles' directory is searchable so the runtime
        // can set up a container of a pod with its own user namespace as the pod's root: that
        // bundle alone is 0711, and everything in its rootfs is owned by the pod's unprivileged
        // host ids (idmapped layers), none by host root.
        for (d, mode) in [(&dir, 0o711), (&snapshots, 0o700)] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", d))?;
        }
        let c = Containers {
            shim,
            dir,
            snapshots,
            exec_dir,
            images,
            sandboxes,
            events,
            by_id: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            stdin_writers: Mutex::new(HashMap::new()),
        };
        c.reload()?;
        Ok(c)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The stdin FIFO of a container created with `stdin` (Attach writes to it).
    pub(crate) fn stdin_fifo(&self, id: &str) -> PathBuf {
        self.bundle(id).join("stdin")
    }

    /// The CRI log the shim writes the container's output to: its log path, else (no log
    /// directory or path, e.g. a crictl or critest container) `output.log` in its bundle, so
    /// that Attach can still follow the output; that one is not rotated and goes with the
    /// bundle at RemoveContainer.
    pub(crate) fn output_log(&self, r: &Record) -> PathBuf {
        if r.log_path.is_empty() {
            self.bundle(&r.id).join("output.log")
        } else {
            PathBuf::from(&r.log_path)
        }
    }

    /// A copy of the writer of container `id`'s stdin FIFO (None: no stdin, or closed).
    pub(crate) fn stdin_writer(&self, id: &str) -> Option<std::fs::File> {
        lock(&self.stdin_writers)
            .get(id)
            .and_then(|f| f.try_clone().ok())
    }

    /// Opens husk-cri's writer of container `id`'s stdin FIFO (at start, and again after a
    /// restart). Read-write: opening never blocks and the FIFO always has this writer.
    fn open_stdin_writer(&self, id: &str) -> Result<(), ContainerError> {
        let fifo = self.stdin_fifo(id);
        let w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .map_err(io_err("open stdin fifo", &fifo))?;
        lock(&self.stdin_writers).insert(id.to_string(), w);
        Ok(())
    }

    /// Drops husk-cri's writer of container `id`'s stdin (`stdin_once`, removal): once the
    /// copies are closed too, the container reads EOF.
    pub(crate) fn close_stdin_writer(&self, id: &str) {
        lock(&self.stdin_writers).remove(id);
        // Remembered: a restarted husk-cri does not open a writer to a closed stdin again.
        if let Ok((_, c)) = self.find_exact(id) {
            let mut g = c.lock();
            if g.record.config.stdin && !g.record.stdin_closed {
                g.record.stdin_closed = true;
                let _ = self.save(&g.record);
            }
        }
    }

    fn save(&self, r: &Record) -> Result<(), ContainerError> {
        write_json(&self.bundle(&r.id).join("container.json"), r)
    }

    /// A full id or a unique prefix of one (as containerd accepts).
    pub(crate) fn find(&self, id: &str) -> Result<(String, Arc<Container>), ContainerError> {
        crate::records::find(&lock(&self.by_id), id).map_err(|l| match l {
            crate::records::Lookup::NotFound => ContainerError::NotFound(id.to_string()),
            crate::records::Lookup::Ambiguous => ContainerError::Ambiguous(id.to_string()),
        })
    }

    fn all(&self) -> Vec<Arc<Container>> {
        lock(&self.by_id).values().cloned().collect()
    }

    fn publish(&self, r: &Record, kind: cri::ContainerEventType) {
        let sandbox = self
            .sandboxes
            .status(&r.sandbox_id, false)
            .ok()
            .and_then(|s| s.status);
        self.events
            .send(event(&r.id, kind, sandbox, vec![r.status()]));
    }

    /// CreateContainer (blocking): record, spec and writable layer; no process yet.
    pub fn create(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String, ContainerError> {
        let meta = config.metadata.clone().ok_or_else(|| {
            ContainerError::Invalid("CreateContainer: config.metadata is missing".into())
        })?;
        if meta.name.is_empty() {
            return Err(ContainerError::Invalid(
                "CreateContainer: config.metadata.name is empty".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                ContainerError::Invalid("CreateContainer: config.image is empty".into())
            })?;
        let mut sandbox = self.sandboxes.info(sandbox_id)?;
        if !sandbox.ready {
            return Err(ContainerError::Precondition(format!(
                "CreateContainer: pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        // kubelet passes the sandbox config again; the one it ran with is authoritative, but
        // a log directory given only here is honoured.
        if let Some(sc) = sandbox_config {
            if sandbox.config.log_directory.is_empty() {
                sandbox.config.log_directory = sc.log_directory;
            }
        }
        let pod_meta = sandbox.config.metadata.clone().unwrap_or_default();
        let key = name_key(&meta, &pod_meta);
        let id = crate::sandbox::new_id()?;
        {
            let mut names = lock(&self.names);
            if let Some(other) = names.get(&key) {
                return Err(ContainerError::NameReserved {
                    name: key,
                    id: other.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let r = self.create_reserved(&id, config, &sandbox, &image_name);
        if r.is_err() {
            lock(&self.names).remove(&key);
            let _ = remove_tree(&self.bundle(&id));
            let _ = remove_tree(&self.snapshots.join(&id));
            if let Err(e) = self.images.release_layers(&id) {
                tracing::warn!("container {id}: release its image layers: {e}");
            }
        }
        r.map(|_| id)
    }

    fn create_reserved(
        &self,
        id: &str,
        config: cri::ContainerConfig,
        sandbox: &SandboxInfo,
        image_name: &str,
    ) -> Result<(), ContainerError> {
        let image = self
            .images
            .status(image_name)
            .map_err(|source| ContainerError::Image {
                image: image_name.to_string(),
                source,
            })?
            .ok_or_else(|| ContainerError::ImageNotFound(image_name.to_string()))?;
        // Held for this container until RemoveContainer, even if the image is removed.
        let layers = self
            .images
            .hold_image_layers(id, &image.id)
            .map_err(|source| ContainerError::Image {
                image: image_name.to_string(),
                source,
            })?;
        let target_pid = self.target_pid(&config)?;
        let mut built = spec::build(
            id,
            &config,
            &SandboxRef {
                id: &sandbox.id,
                config: &sandbox.config,
                pid: sandbox.pid,
                namespaces: &sandbox.namespaces,
                cgroup_parent: &sandbox.cgroup_parent,
                files_dir: &sandbox.files_dir,
                target_pid,
            },
            &ImageRef {
                name: image_name,
                config: &image.config,
                layers: &layers,
            },
        )?;
        let bundle = self.bundle(id);
        {
            use std::os::unix::fs::DirBuilderExt;
            // In a pod's own user namespace the runtime sets the container up as the pod's
            // root (an unprivileged uid on the host): it must reach the rootfs and volumes in
            // the bundle, so others may search it (its records are 0600).
            std::fs::DirBuilder::new()
                .mode(if sandbox.userns.is_some() {
                    0o711
                } else {
                    0o700
                })
                .create(&bundle)
                .map_err(io_err("mkdir", &bundle))?;
        }
        let snapshot = self.snapshots.join(id);
        for d in [snapshot.join("upper"), snapshot.join("work")] {
            std::fs::create_dir_all(&d).map_err(io_err("mkdir", &d))?;
        }
        // The image's volumes, as containerd: a directory of the container's own each
        // (`<bundle>/volumes/<n>`, gone with the bundle), holding a copy of the image's content
        // at that path resolved inside the rootfs only, bound over it (container/volumes.rs).
        let volumes =
            super::volumes::prepare(&bundle.join("volumes"), &layers, &built.image_volumes)?;
        if let Some((_, maps)) = &sandbox.userns {
            // In the pod's own user namespace its root owns what is the container's own: the
            // top of the writable layer (the overlay's root directory) and the volume copies.
            let mut own = vec![snapshot.join("upper")];
            own.extend(volumes.iter().map(|(_, p)| p.clone()));
            for p in own {
                crate::sandbox::userns::shift_tree(&p, maps).map_err(|source| {
                    ContainerError::UserNamespace {
                        id: id.to_string(),
                        source,
                    }
                })?;
            }
        }
        spec::add_image_volumes(&mut built.spec, &volumes);
        let log_path = if sandbox.config.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            let p = Path::new(&sandbox.config.log_directory).join(&config.log_path);
            if config.log_path.split('/').any(|c| c == "..") {
                return Err(ContainerError::Invalid(format!(
                    "CreateContainer: log_path {:?} leaves the pod's log directory",
                    config.log_path
                )));
            }
            p.display().to_string()
        };
        let cgroups_path = built.spec["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        write_json(&bundle.join("config.json"), &built.spec)?;
        let user = Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(built.user.uid),
                gid: i64::from(built.user.gid),
                supplemental_groups: built
                    .user
                    .additional_gids
                    .iter()
                    .map(|g| i64::from(*g))
                    .collect(),
            }),
        });
        let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
        let record = Record {
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            image_id: image.id.clone(),
            image_name: image_name.to_string(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            state: RunState::Created,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            log_path,
            cgroups_path,
            stop_signal: built.stop_signal.clone(),
            snapshot,
            layers,
            mounts: built.mounts.clone(),
            user,
            resources,
            oom_killed: false,
            stdin_closed: false,
            config,
        };
        crate::failpoint::hit("container-after-snapshot");
        self.save(&record)?;
        tracing::info!("container {id} created in sandbox {}", sandbox.id);
        self.publish(&record, cri::ContainerEventType::ContainerCreatedEvent);
        lock(&self.by_id).insert(
            id.to_string(),
            Arc::new(Container {
                inner: Mutex::new(Inner { record, shim: None }),
            }),
        );
        Ok(())
    }

    /// The pid of the container a TARGET pid namespace option names.
    fn target_pid(&self, config: &cri::ContainerConfig) -> Result<Option<u32>, ContainerError> {
        let ns = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let Some(ns) = ns else { return Ok(None) };
        if ns.pid != cri::NamespaceMode::Target as i32 {
            return Ok(None);
        }
        let (tid, c) = self.find(&ns.target_id).map_err(|_| {
            ContainerError::NotFound(format!(
                "{} (target_id of the TARGET pid namespace)",
                ns.target_id
            ))
        })?;
        let r = &c.lock().record;
        if r.state != RunState::Running || r.pid == 0 {
            return Err(ContainerError::Precondition(format!(
                "CreateContainer: target container {tid} of the TARGET pid namespace is not running"
            )));
        }
        Ok(Some(r.pid))
    }

    /// The layers a container's rootfs stacks, lowest first: those held at CreateContainer
    /// (the image may be removed since).
    fn layers_of(&self, r: &Record) -> Result<Vec<PathBuf>, ContainerError> {
        Ok(if r.layers.is_empty() {
            self.images
                .layer_dirs(&r.image_id)
                .map_err(|source| ContainerError::Image {
                    image: r.image_name.clone(),
                    source,
                })?
        } else {
            r.layers.clone()
        })
    }

    /// The rootfs mount the shim makes: the overlay of `layers` (lowest first) and the
    /// container's writable layer.
    fn overlay(&self, r: &Record, layers: &[PathBuf]) -> containerd_shim_protos::api::Mount {
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        containerd_shim_protos::api::Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lower.join(":")),
                format!("upperdir={}", r.snapshot.join("upper").display()),
                format!("workdir={}", r.snapshot.join("work").display()),
            ],
            ..Default::default()
        }
    }

    /// StartContainer (blocking): a shim for the container, its task created and started.
    pub fn start(self: &Arc<Self>, id: &str) -> Result<(), ContainerError> {
        let (id, c) = self.find(id)?;
        let record = {
            let mut g = c.lock();
            if g.record.state != RunState::Created {
                return Err(ContainerError::Precondition(format!(
                    "StartContainer: container {id} is {:?}, not created",
                    g.record.cri_state()
                )));
            }
            g.record.state = RunState::Starting;
            g.record.clone()
        };
        let sandbox = self.sandboxes.info(&record.sandbox_id);
        let started = match sandbox {
            Ok(sb) if sb.ready && sb.pid != 0 => self.start_task(&record, &sb),
            Ok(sb) => Err(ContainerError::Precondition(format!(
                "StartContainer: pod sandbox {} is not ready",
                sb.id
            ))),
            Err(e) => Err(e.into()),
        };
        match started {
            Ok((shim, pid)) => {
                crate::failpoint::hit("container-start-after-task-start");
                let exited_already = {
                    let mut g = c.lock();
                    if g.record.state == RunState::Exited {
                        // It exited before we got here: the exit event is recorded already.
                        true
                    } else {
                        g.record.pid = pid;
                        g.record.started_at = now_ns();
                        g.record.state = RunState::Running;
                        g.shim = Some(shim.clone());
                        let _ = self.save(&g.record);
                        false
                    }
                };
                if exited_already {
                    self.finish_task(&id, shim);
                } else {
                    self.watch(id.clone(), shim);
                }
                tracing::info!("container {id} started, pid {pid}");
                let r = c.lock().record.clone();
                self.publish(&r, cri::ContainerEventType::ContainerStartedEvent);
                Ok(())
            }
            Err(e) => {
                let mut g = c.lock();
                g.record.reason = "StartError".into();
                g.record.message = e.to_string();
                g.record.set_exited(128, now_ns());
                let _ = self.save(&g.record);
                self.publish(&g.record, cri::ContainerEventType::ContainerStoppedEvent);
                Err(e)
            }
        }
    }

    fn start_task(&self, r: &Record, sb: &SandboxInfo) -> Result<(Arc<Shim>, u32), ContainerError> {
        let bundle = self.bundle(&r.id);
        let shim_err = |source| ContainerError::Shim {
            id: r.id.clone(),
            source: Box::new(source),
        };
        if !r.log_path.is_empty() {
            if let Some(dir) = Path::new(&r.log_path).parent() {
                if !dir.is_dir() {
                    return Err(ContainerError::Precondition(format!(
                        "StartContainer: log directory {} does not exist",
                        dir.display()
                    )));
                }
            }
        }
        let layers = self.layers_of(r)?;
        // In a pod's own user namespace the shared layers are seen through idmapped mounts
        // (sandbox/userns.rs), until the overlay is mounted: it keeps its own clones of them.
        let mut idmapped = match &sb.userns {
            Some((pin, _)) => Some(
                IdmappedLayers::attach(&r.snapshot.join("idmapped"), &layers, pin).map_err(
                    |source| ContainerError::UserNamespace {
                        id: r.id.clone(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let rootfs = self.overlay(r, idmapped.as_ref().map_or(&layers, |l| &l.paths));
        let log = crilog_uri(&self.output_log(r), r.log_path.is_empty());
        // A container created with stdin reads it from a FIFO in its bundle that Attach writes
        // to (the shim opens it without waiting for a writer).
        let stdin = if r.config.stdin {
            let fifo = self.stdin_fifo(&r.id);
            match nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err("mkfifo", &fifo)(e.into())),
            }
            self.open_stdin_writer(&r.id)?;
            // Held: the shim keeps a writer of its own, so the container's stdin outlives a
            // restart of husk-cri (it ends with CloseIO: stdin_once, removal).
            format!(
                "heldfifo://{}",
                fifo.display().to_string().replace('%', "%25")
            )
        } else {
            String::new()
        };
        let io = TaskIo {
            stdin,
            stdout: log.clone(),
            stderr: if r.config.tty { String::new() } else { log },
            terminal: r.config.tty,
        };
        let shim = match Shim::start(&self.shim, SHIM_NAMESPACE, &r.id, &bundle) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &r.id, &bundle);
                return Err(shim_err(e));
            }
        };
        let created = shim.create(&io, vec![rootfs]);
        if let Some(l) = idmapped.as_mut() {
            l.release();
        }
        let run = created.and_then(|_| {
            crate::failpoint::hit("container-start-after-task-create");
            shim.start_task("")
        });
        match run {
            Ok(pid) => Ok((shim, pid)),
            Err(e) => {
                self.finish_task(&r.id, shim);
                Err(shim_err(e))
            }
        }
    }

    /// Deletes a stopped (or never started) task and ends its shim; `shim delete` cleans up
    /// when the shim does not answer.
    fn finish_task(&self, id: &str, shim: Arc<Shim>) {
        let _ = shim.kill("", libc::SIGKILL as u32, true);
        let done = shim
            .wait_for("", KILL_WAIT)
            .and_then(|_| shim.delete(""))
            .and_then(|_| {
                crate::failpoint::hit("container-finish-after-task-delete");
                shim.shutdown()
            });
        if let Err(e) = done {
            tracing::warn!("container {id}: {e}; cleaning up with `shim delete`");
            if let Err(e) = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, &self.bundle(id)) {
                tracing::warn!("container {id}: shim delete: {e}");
            }
        }
        let _ = std::fs::remove_file(self.bundle(id).join("address"));
    }

    /// A shim's event: TaskExit of a container's init records its exit and ends the task;
    /// TaskOOM marks the container OOM-killed.
    pub fn on_event(self: &Arc<Self>, ev: &Event) {
        if ev.namespace != SHIM_NAMESPACE {
            return;
        }
        if ev.topic == "/tasks/oom" {
            use containerd_shim_protos::protobuf::Message;
            if let Ok(oom) =
                containerd_shim_protos::events::task::TaskOOM::parse_from_bytes(&ev.value)
            {
                if let Ok((_, c)) = self.find_exact(&oom.container_id) {
                    let mut g = c.lock();
                    g.record.oom_killed = true;
                    let _ = self.save(&g.record);
                }
            }
            return;
        }
        let Some(exit) = ev.task_exit() else { return };
        // Exec processes (ExecSync) are waited for by their caller.
        if exit.id != exit.container_id {
            return;
        }
        let Ok((id, c)) = self.find_exact(&exit.container_id) else {
            return;
        };
        let at = exit
            .exited_at
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ns);
        let shim = {
            let mut g = c.lock();
            // Created: no task of it runs; the exit is that of a task deleted when a start
            // cut short by a crash was undone (reload), which leaves the container created.
            if matches!(g.record.state, RunState::Exited | RunState::Created) {
                return;
            }
            g.record.set_exited(exit.exit_status as i32, at);
            let _ = self.save(&g.record);
            tracing::info!("container {id} exited with {}", exit.exit_status);
            self.publish(&g.record, cri::ContainerEventType::ContainerStoppedEvent);
            g.shim.take()
        };
        if let Some(shim) = shim {
            let this = self.clone();
            let _ = std::thread::Builder::new()
                .name("task-delete".into())
                .spawn(move || this.finish_task(&id, shim));
        }
    }

    /// Watches a running container's task through its shim: the exit is normally recorded from
    /// the TaskExit event first; when the shim itself dies (killed, crashed), its connection
    /// ends the wait with an error and the container is recorded exited with code 255, reason
    /// "Error" (as containerd 1.6's CRI: its task Wait fails, the exit is `unknownExitCode`
    /// and a non-zero code reads "Error"; "Unknown" is for what a restart finds), and `shim
    /// delete` cleans up.
    fn watch(self: &Arc<Self>, id: String, shim: Arc<Shim>) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("task-watch".into())
            .stack_size(128 << 10)
            .spawn(move || {
                let r = shim.wait("");
                drop(shim);
                let Ok((_, c)) = this.find_exact(&id) else {
                    return;
                };
                match r {
                    Ok(code) => this.exited(&id, &c, code),
                    Err(e) => {
                        if c.lock().record.state != RunState::Running {
                            return;
                        }
                        tracing::warn!("container {id}: lost its shim ({e}): exited, 255");
                        this.exited(&id, &c, UNKNOWN_EXIT_CODE as u32);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("container task watcher: {e}");
        }
    }

    /// Starts a watcher for every running container (after a reload).
    pub fn watch_running(self: &Arc<Self>) {
        for c in self.all() {
            let (id, shim) = {
                let g = c.lock();
                (g.record.id.clone(), g.shim.clone())
            };
            if let Some(shim) = shim {
                self.watch(id, shim);
            }
        }
    }

    fn find_exact(&self, id: &str) -> Result<(String, Arc<Container>), ContainerError> {
        lock(&self.by_id)
            .get(id)
            .cloned()
            .map(|c| (id.to_string(), c))
            .ok_or_else(|| ContainerError::NotFound(id.to_string()))
    }

    /// StopContainer (blocking): the stop signal, `timeout` seconds of grace, then SIGKILL.
    /// Stopping a stopped, never started or unknown container succeeds (CRI: idempotent).
    pub fn stop(&self, id: &str, timeout: i64) -> Result<(), ContainerError> {
        let (id, c) = match self.find(id) {
            Ok(x) => x,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (shim, signal) = {
            let g = c.lock();
            match (&g.shim, g.record.state) {
                (Some(s), RunState::Running) => (s.clone(), g.record.stop_signal.clone()),
                _ => return Ok(()),
            }
        };
        if timeout > 0 {
            let sig = parse_signal(&signal).unwrap_or(libc::SIGTERM);
            match shim.kill("", sig as u32, false) {
                Ok(()) => {
                    let grace = Duration::from_secs(timeout as u64);
                    if let Ok(Some(code)) = shim.wait_for("", grace) {
                        self.exited(&id, &c, code);
                        return Ok(());
                    }
                }
                // Already gone: the wait below sees the exit.
                Err(e) => tracing::debug!("container {id}: stop signal: {e}"),
            }
        }
        if let Err(e) = shim.kill("", libc::SIGKILL as u32, true) {
            tracing::debug!("container {id}: SIGKILL: {e}");
        }
        match shim.wait_for("", KILL_WAIT) {
            Ok(Some(code)) => {
                self.exited(&id, &c, code);
                Ok(())
            }
            Ok(None) => Err(ContainerError::Precondition(format!(
                "StopContainer: container {id} did not exit within {} s of SIGKILL",
                KILL_WAIT.as_secs()
            ))),
            Err(e) => {
                // The shim is gone: so is the container (its init was the shim's child).
                tracing::warn!("container {id}: {e}");
                self.exited(&id, &c, UNKNOWN_EXIT_CODE as u32);
                Ok(())
            }
        }
    }

    /// Records an exit a caller observed (the TaskExit event may come later or not at all)
    /// and ends the task.
    fn exited(&self, id: &str, c: &Arc<Container>, code: u32) {
        let shim = {
            let mut g = c.lock();
            if g.record.state != RunState::Exited {
                g.record.set_exited(code as i32, now_ns());
                let _ = self.save(&g.record);
                self.publish(&g.record, cri::ContainerEventType::ContainerStoppedEvent);
            }
            g.shim.take()
        };
        if let Some(shim) = shim {
            self.finish_task(id, shim);
        }
    }

    /// RemoveContainer (blocking): a running container is killed first; its writable layer,
    /// bundle and name go. An unknown id succeeds (CRI: idempotent). The log file stays
    /// (kubelet owns it).
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let (id, c) = match self.find(id) {
            Ok(x) => x,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&id, 0)?;
        self.close_stdin_writer(&id);
        let shim = c.lock().shim.take();
        if let Some(shim) = shim {
            self.finish_task(&id, shim);
        }
        let bundle = self.bundle(&id);
        if bundle.join("address").exists() {
            // A shim left by a crash between start and exit.
            let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
        }
        crate::failpoint::hit("container-remove-after-task-delete");
        let record = c.lock().record.clone();
        remove_tree(&bundle)?;
        remove_tree(&record.snapshot)?;
        lock(&self.by_id).remove(&id);
        // Its image's layers: collected now if no image or other container uses them.
        if let Err(e) = self.images.release_layers(&id) {
            tracing::warn!("container {id}: release its image layers: {e}");
        }
        if let (Some(m), Ok(sb)) = (
            record.config.metadata.as_ref(),
            self.sandboxes.status(&record.sandbox_id, false),
        ) {
            if let Some(pm) = sb.status.and_then(|s| s.metadata) {
                let key = name_key(m, &pm);
                let mut names = lock(&self.names);
                if names.get(&key) == Some(&id) {
                    names.remove(&key);
                }
            }
        }
        // A name whose sandbox is gone already.
        lock(&self.names).retain(|_, v| v != &id);
        crate::shim::remove_runtime_root(SHIM_NAMESPACE);
        tracing::info!("container {id} removed");
        let mut gone = record;
        gone.state = RunState::Exited;
        self.publish(&gone, cri::ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    /// The ids of the containers of sandbox `sandbox_id` (full id).
    pub fn in_sandbox(&self, sandbox_id: &str) -> Vec<String> {
        self.all()
            .iter()
            .filter_map(|c| {
                let g = c.lock();
                (g.record.sandbox_id == sandbox_id).then(|| g.record.id.clone())
            })
            .collect()
    }

    /// ContainerStatus.
    pub fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, ContainerError> {
        let (id, c) = self.find(id)?;
        let r = c.lock().record.clone();
        let mut info = HashMap::new();
        if verbose {
            let spec: serde_json::Value = std::fs::read(self.bundle(&id).join("config.json"))
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
                .unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({
                "sandboxID": r.sandbox_id,
                "pid": r.pid,
                "removing": false,
                "snapshotKey": id,
                "snapshotter": "overlayfs",
                "runtimeType": "io.containerd.husk.v2",
                "bundle": self.bundle(&id).display().to_string(),
                "writableLayer": r.snapshot.join("upper").display().to_string(),
                "runtimeSpec": spec,
                "config": r.config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(r.status()),
            info,
        })
    }

    /// ListContainers: id (full or unique prefix), state, sandbox (full or prefix) and labels.
    pub fn list(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        let f = filter.unwrap_or_default();
        let containers: Vec<Arc<Container>> = if f.id.is_empty() {
            self.all()
        } else {
            self.find(&f.id).into_iter().map(|(_, c)| c).collect()
        };
        let mut out: Vec<cri::Container> = containers
            .iter()
            .map(|c| c.lock().record.container())
            .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .filter(|c| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    /// UpdateContainerResources (blocking): applied through the shim (`husk update`) while the
    /// container runs; remembered (and used by a later start) in any case.
    pub fn update(
        &self,
        id: &str,
        resources: Option<cri::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let (id, c) = self.find(id)?;
        let Some(res) = resources else {
            return Ok(());
        };
        let json = spec::linux_resources(&res);
        let (shim, state) = {
            let g = c.lock();
            (g.shim.clone(), g.record.state)
        };
        match (shim, state) {
            (Some(shim), RunState::Running) => {
                shim.update(Some(&json), &[])
                    .map_err(|source| ContainerError::Shim {
                        id: id.clone(),
                        source: Box::new(source),
                    })?;
            }
            (_, RunState::Exited) => {
                return Err(ContainerError::Precondition(format!(
                    "UpdateContainerResources: container {id} is not running"
                )))
            }
            _ => {
                // Not started yet: the spec it will start with carries the new resources.
                let path = self.bundle(&id).join("config.json");
                let mut spec: serde_json::Value = std::fs::read(&path)
                    .map_err(io_err("read", &path))
                    .and_then(|d| {
                        serde_json::from_slice(&d).map_err(|source| ContainerError::Json {
                            what: "parse",
                            path: path.clone(),
                            source,
                        })
                    })?;
                merge_resources(&mut spec["linux"]["resources"], &json);
                write_json(&path, &spec)?;
            }
        }
        let mut g = c.lock();
        g.record.resources = Some(merge_cri_resources(g.record.resources.take(), res));
        self.save(&g.record)
    }

    /// ReopenContainerLog (blocking): the shim reopens the log path (kubelet renamed the file).
    pub fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let (id, c) = self.find(id)?;
        let (shim, state, log) = {
            let g = c.lock();
            (g.shim.clone(), g.record.state, g.record.log_path.clone())
        };
        let Some(shim) = shim.filter(|_| state == RunState::Running) else {
            return Err(ContainerError::Precondition(format!(
                "ReopenContainerLog: container {id} is not running"
            )));
        };
        if log.is_empty() {
            return Err(ContainerError::Precondition(format!(
                "ReopenContainerLog: container {id} has no log path"
            )));
        }
        shim.update(None, &[(REOPEN_LOG_ANNOTATION, "1")])
            .map_err(|source| ContainerError::Shim {
                id,
                source: Box::new(source),
            })
    }

    /// The running container's shim, spec and record (ExecSync, stats).
    pub(crate) fn running(&self, id: &str) -> Result<(String, Arc<Shim>, Record), ContainerError> {
        let (id, c) = self.find(id)?;
        let g = c.lock();
        match (&g.shim, g.record.state) {
            (Some(s), RunState::Running) => Ok((id, s.clone(), g.record.clone())),
            _ => Err(ContainerError::Precondition(format!(
                "container {id} is not running"
            ))),
        }
    }

    pub(crate) fn spec_of(&self, id: &str) -> Result<serde_json::Value, ContainerError> {
        let path = self.bundle(id).join("config.json");
        let data = std::fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&data).map_err(|source| ContainerError::Json {
            what: "parse",
            path,
            source,
        })
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        self.all().iter().map(|c| c.lock().record.clone()).collect()
    }

    /// Reloads the containers an earlier husk-cri left: running ones are reconnected to their
    /// shims (a task that ended meanwhile gets its exit status from the shim; a shim that is
    /// gone means exit code 255, reason "Unknown", as containerd); a bundle without a record
    /// (a CreateContainer cut short) is removed with its writable layer.
    fn reload(&self) -> Result<(), ContainerError> {
        let found =
            crate::records::load_all(&self.dir, "container.json", |r: &Record| r.id.as_str())
                .map_err(io_err("read", &self.dir))?;
        for crate::records::Found {
            id,
            dir: bundle,
            file: rec_path,
            record,
        } in found
        {
            let Some(mut record) = record else {
                tracing::warn!(
                    "container {id}: no usable {}: cleaning up",
                    rec_path.display()
                );
                if bundle.join("address").exists() {
                    let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
                }
                let _ = remove_tree(&bundle);
                let _ = remove_tree(&self.snapshots.join(&id));
                continue;
            };
            // The layers it stacks stay held (its image may be removed while it exists).
            if record.layers.is_empty() {
                record.layers = self.images.layer_dirs(&record.image_id).unwrap_or_default();
            }
            match self.images.hold_layers(&id, &record.layers) {
                Ok(missing) if !missing.is_empty() => {
                    tracing::warn!("container {id}: image layers missing: {missing:?}")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("container {id}: hold its image layers: {e}"),
            }
            let mut shim = None;
            // A StartContainer cut short left a shim (its `address`) under a record that still
            // says created. As containerd: a task that never started is deleted (the container
            // stays created and can be started), one that runs or ended is taken as started.
            if record.state == RunState::Created && bundle.join("address").exists() {
                let task = Shim::connect(SHIM_NAMESPACE, &id, &bundle)
                    .ok()
                    .and_then(|s| s.state("").ok().map(|st| (s, st)));
                match task {
                    Some((s, st))
                        if st.status.enum_value()
                            == Ok(containerd_shim_protos::api::Status::CREATED) =>
                    {
                        tracing::warn!("container {id}: a start was cut short: task deleted");
                        self.finish_task(&id, Arc::new(s));
                    }
                    Some(_) => record.state = RunState::Starting,
                    None => {
                        tracing::warn!("container {id}: a start was cut short: cleaning up");
                        let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
                        let _ = std::fs::remove_file(bundle.join("address"));
                    }
                }
            }
            if matches!(record.state, RunState::Running | RunState::Starting) {
                match Shim::connect(SHIM_NAMESPACE, &id, &bundle) {
                    Ok(s) => match s.state("") {
                        Ok(st)
                            if st.status.enum_value()
                                == Ok(containerd_shim_protos::api::Status::RUNNING) =>
                        {
                            record.state = RunState::Running;
                            record.pid = st.pid;
                            if record.started_at == 0 {
                                record.started_at = now_ns();
                            }
                            // Attach writes to its stdin again (the shim held it meanwhile).
                            if record.config.stdin && !record.stdin_closed {
                                if let Err(e) = self.open_stdin_writer(&id) {
                                    tracing::warn!("container {id}: stdin: {e}");
                                }
                            }
                            shim = Some(Arc::new(s));
                        }
                        Ok(st)
                            if st.status.enum_value()
                                == Ok(containerd_shim_protos::api::Status::STOPPED) =>
                        {
                            let at = st
                                .exited_at
                                .as_ref()
                                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                                .unwrap_or_else(now_ns);
                            record.set_exited(st.exit_status as i32, at);
                            self.finish_task(&id, Arc::new(s));
                        }
                        other => {
                            tracing::warn!("container {id}: task state {other:?}: cleaning up");
                            record.set_exited(UNKNOWN_EXIT_CODE, now_ns());
                            record.reason = "Unknown".into();
                            self.finish_task(&id, Arc::new(s));
                        }
                    },
                    Err(err) => {
                        tracing::warn!("container {id}: its shim is gone ({err})");
                        if bundle.join("address").exists() {
                            let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
                        }
                        record.reason = "Unknown".into();
                        record.set_exited(UNKNOWN_EXIT_CODE, now_ns());
                    }
                }
            }
            let _ = self.save(&record);
            if let (Some(m), Ok(sb)) = (
                record.config.metadata.as_ref(),
                self.sandboxes.status(&record.sandbox_id, false),
            ) {
                if let Some(pm) = sb.status.and_then(|s| s.metadata) {
                    lock(&self.names).insert(name_key(m, &pm), id.clone());
                }
            }
            tracing::info!("container {id} reloaded ({:?})", record.state);
            lock(&self.by_id).insert(
                id,
                Arc::new(Container {
                    inner: Mutex::new(Inner { record, shim }),
                }),
            );
        }
        // Layers a removed container released just before a crash, once every container's
        // are held again.
        if let Err(e) = self.images.gc() {
            tracing::warn!("image store gc after reload: {e}");
        }
        Ok(())
    }
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|sig| sig as i32)
}

/// Overlays the fields present in `new` on `old` (runtime-spec LinuxResources JSON).
fn merge_resources(old: &mut serde_json::Value, new: &serde_json::Value) {
    match (old.as_object_mut(), new.as_object()) {
        (Some(o), Some(n)) => {
            for (k, v) in n {
                match o.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge_resources(slot, v),
                    _ => {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *old = new.clone(),
    }
}

/// The CRI resources after an update: containerd keeps fields the update leaves at zero.
fn merge_cri_resources(
    old: Option<cri::LinuxContainerResources>,
    new: cri::LinuxContainerResources,
) -> cri::LinuxContainerResources {
    let Some(mut r) = old else { return new };
    macro_rules! take_nonzero {
        ($($f:ident),*) => { $( if new.$f != cri::LinuxContainerResources::default().$f { r.$f = new.$f.clone(); } )* };
    }
    take_nonzero!(
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes,
        oom_score_adj,
        cpuset_cpus,
        cpuset_mems,
        hugepage_limits,
        unified,
        memory_swap_limit_in_bytes
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert!(parse_signal("SIGRTMIN+3").is_none());
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn resource_updates_keep_what_they_do_not_name() {
        let mut old = serde_json::json!({"memory": {"limit": 1}, "cpu": {"shares": 2}});
        merge_resources(&mut old, &serde_json::json!({"cpu": {"quota": 3}}));
        assert_eq!(
            old,
            serde_json::json!({"memory": {"limit": 1}, "cpu": {"shares": 2, "quota": 3}})
        );
        let r = merge_cri_resources(
            Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                memory_limit_in_bytes: 1 << 20,
                ..Default::default()
            }),
            cri::LinuxContainerResources {
                memory_limit_in_bytes: 2 << 20,
                ..Default::default()
            },
        );
        assert_eq!((r.cpu_shares, r.memory_limit_in_bytes), (512, 2 << 20));
    }

    #[test]
    fn container_names_as_containerd() {
        let c = cri::ContainerMetadata {
            name: "web".into(),
            attempt: 2,
        };
        let p = cri::PodSandboxMetadata {
            name: "pod".into(),
            uid: "u1".into(),
            namespace: "ns".into(),
            attempt: 0,
        };
        assert_eq!(name_key(&c, &p), "web_pod_ns_u1_2");
    }
}
