//! Pod sandboxes: one pause container per pod, run through containerd-shim-husk-v2 as containerd
//! does it (`Shim::start` in the sandbox's bundle, Create, Start).
//!
//! - The pause process is Debian's statically linked catatonit in pause mode (`catatonit -P`).
//!   Its root filesystem (just the binary and the mount points) is built once under husk-cri's
//!   root (`<root>/pause/rootfs`) and shared read-only by every sandbox.
//! - Each sandbox has a bundle directory `<state>/sandboxes/<id>/` holding config.json (the OCI
//!   spec written here) and sandbox.json (the [`Record`]: the CRI config, state, pid, times).
//! - Namespaces: new mount, new network (not with network NODE), new ipc (not with ipc NODE), new
//!   uts with the pod's hostname (not with network NODE: a host-network pod sees the node's
//!   hostname, as with containerd), new pid (not with pid NODE).
//! - cgroups (cgroupfs driver): `<cgroup_parent>/<id>`; an empty parent means
//!   [`DEFAULT_CGROUP_PARENT`] (husk creates it when missing; husk-cri removes it from every
//!   hierarchy when the last sandbox under it is removed).
//! - Pod networking (see `network`): a pod that is not host-network gets a network namespace
//!   pinned at `<state>/netns/<id>` and attached through CNI before the pause process starts
//!   in it; the record holds the pin and the IPs before and after ADD, so a stop (or a restart's
//!   garbage collection) can always undo it. StopPodSandbox runs CNI DEL and unpins.
//! - State is kept in memory and in the JSON records. husk-cri leaves sandboxes running when it
//!   exits (as containerd does); the next husk-cri with the same state dir reloads the records,
//!   reconnects to the running shims (the `address` file in each bundle) and marks sandboxes whose
//!   pause process or shim is gone NOTREADY (their stop then cleans up with `shim delete`).

use crate::network::{Network, NetworkError};
use crate::shim::{Event, Shim, ShimConfig, ShimError, TaskIo};
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The shim (and husk state root, /run/husk/<ns>) namespace of husk-cri's pods.
pub const SHIM_NAMESPACE: &str = "k8s.io";
/// The cgroup parent of sandboxes whose config names none.
pub const DEFAULT_CGROUP_PARENT: &str = "/husk-cri";
/// The pause binary copied into the shared pause rootfs (Debian package catatonit).
pub const PAUSE_BINARY: &str = "/usr/bin/catatonit";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("pod sandbox id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("pod sandbox name {name:?} is reserved for {id}")]
    NameReserved { name: String, id: String },
    #[error("RunPodSandbox: {0}")]
    Invalid(String),
    #[error("RunPodSandbox: {0} is not supported by husk-cri yet")]
    Unsupported(String),
    #[error("RunPodSandbox: {0}")]
    Precondition(String),
    #[error("pod sandbox {id}: {source}")]
    Shim { id: String, source: Box<ShimError> },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("pod sandbox {id}: {source}")]
    UserNamespace {
        id: String,
        source: userns::UsernsError,
    },
    #[error("pod sandbox {id}: {what}: {source}")]
    Task {
        id: String,
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

impl From<SandboxError> for tonic::Status {
    fn from(e: SandboxError) -> tonic::Status {
        let msg = e.to_string();
        match e {
            SandboxError::NotFound(_) => tonic::Status::not_found(msg),
            SandboxError::NameReserved { .. } => tonic::Status::already_exists(msg),
            SandboxError::Invalid(_) | SandboxError::Ambiguous(_) => {
                tonic::Status::invalid_argument(msg)
            }
            SandboxError::Unsupported(_) => tonic::Status::unimplemented(msg),
            SandboxError::Precondition(_) => tonic::Status::failed_precondition(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { what, path, source }
}

/// What husk-cri remembers of a sandbox (sandbox.json in its bundle).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ready: bool,
    /// The pause process (host pid); 0 once stopped.
    pub pid: u32,
    pub cgroups_path: String,
    /// What was used (echoed in PodSandboxStatus).
    pub namespaces: cri::NamespaceOption,
    /// The pinned network namespace while the pod holds one (set before CNI ADD, cleared once
    /// CNI DEL and the unpinning succeeded).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The pod's IPs from CNI (IPv4 first).
    #[serde(default)]
    pub ips: Vec<String>,
}

impl Record {
    fn metadata(&self) -> Option<cri::PodSandboxMetadata> {
        self.config.metadata.clone()
    }
    fn state(&self) -> i32 {
        if self.ready {
            cri::PodSandboxState::SandboxReady as i32
        } else {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

struct Sandbox {
    record: Mutex<Record>,
    /// The running shim; None once stopped. Held through stop so stops are serialized.
    shim: Mutex<Option<Shim>>,
}

use crate::records::lock;

pub mod userns;

/// All sandboxes of this husk-cri.
pub struct Sandboxes {
    shim: ShimConfig,
    net: Arc<Network>,
    /// `<state>/sandboxes`
    dir: PathBuf,
    /// `<root>/pause`
    pause_dir: PathBuf,
    by_id: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// name key (name_uid_namespace_attempt) → id, reserved from RunPodSandbox to removal.
    names: Mutex<HashMap<String, String>>,
    /// Held (shared) while a pause process is created under the default cgroup parent, and
    /// (exclusive) while that parent is removed: a removal never races a creation.
    cgroup_parent: std::sync::RwLock<()>,
}

fn name_key(m: &cri::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

pub fn new_id() -> Result<String, SandboxError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut b = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("read", path))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), SandboxError> {
    crate::records::write_json(path, v).map_err(|(what, path, source)| SandboxError::Io {
        what,
        path,
        source,
    })
}

/// Builds `<pause_dir>/rootfs` (catatonit and the mount points the spec needs) once; later
/// calls find it in place. Built in a temporary directory and renamed, so a crash leaves no
/// half-built rootfs.
pub fn ensure_pause_rootfs(pause_dir: &Path) -> Result<PathBuf, SandboxError> {
    let rootfs = pause_dir.join("rootfs");
    if rootfs.join("catatonit").is_file() {
        return Ok(rootfs);
    }
    std::fs::create_dir_all(pause_dir).map_err(io_err("mkdir", pause_dir))?;
    let tmp = pause_dir.join(format!("rootfs.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for d in ["proc", "dev", "sys", "etc", "tmp"] {
        let p = tmp.join(d);
        std::fs::create_dir_all(&p).map_err(io_err("mkdir", &p))?;
    }
    let bin = tmp.join("catatonit");
    std::fs::copy(PAUSE_BINARY, &bin).map_err(io_err(
        "copy the pause binary (Debian package catatonit) from",
        Path::new(PAUSE_BINARY),
    ))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &bin))?;
    match std::fs::rename(&tmp, &rootfs) {
        Ok(()) => Ok(rootfs),
        // Another husk-cri sharing this root built it first.
        Err(_) if rootfs.join("catatonit").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(rootfs)
        }
        Err(e) => Err(io_err("rename to", &rootfs)(e)),
    }
}

fn mode(m: i32) -> cri::NamespaceMode {
    cri::NamespaceMode::try_from(m).unwrap_or(cri::NamespaceMode::Pod)
}

/// The namespaces a sandbox gets, validated; what the status echoes.
fn namespace_options(cfg: &cri::PodSandboxConfig) -> Result<cri::NamespaceOption, SandboxError> {
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let ns = sc
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    userns::pod_maps(&ns).map_err(|e| {
        SandboxError::Invalid(format!("linux.security_context.namespace_options.{e}"))
    })?;
    for (what, m) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
        if mode(m) == cri::NamespaceMode::Target {
            return Err(SandboxError::Invalid(format!(
                "namespace_options.{what} TARGET is for containers, not sandboxes"
            )));
        }
    }
    Ok(ns)
}

/// The pause container's OCI spec.
fn pause_spec(
    cfg: &cri::PodSandboxConfig,
    ns: &cri::NamespaceOption,
    rootfs: &Path,
    cgroups_path: &str,
    netns: Option<&Path>,
    user_ns: Option<&Path>,
) -> Result<serde_json::Value, SandboxError> {
    let linux = cfg.linux.clone().unwrap_or_default();
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut seccomp = None;
    if let Some(sc) = &linux.security_context {
        if sc.selinux_options.is_some() {
            // As containerd and CRI-O on a host without SELinux: labels have nothing to apply to.
            tracing::info!("sandbox: selinux_options ignored: SELinux is not enabled on this host");
        }
        // The pause process needs nothing a privileged pod asks for: a privileged sandbox only
        // means its containers may be privileged (containerd does the same). Its seccomp
        // profile is the one asked for (kubelet always asks for RuntimeDefault).
        #[allow(deprecated)] // still sent by older kubelets
        let legacy = sc.seccomp_profile_path.as_str();
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        seccomp = crate::security::seccomp_for(sc.seccomp.as_ref(), legacy, sc.privileged, &caps)
            .map_err(|e| SandboxError::Invalid(e.to_string()))?;
        // AppArmor: this host has none; a profile that cannot be honoured is refused.
        crate::security::check_apparmor(sc.apparmor.as_ref(), "")
            .map_err(|e| SandboxError::Invalid(e.to_string()))?;
    }
    let host_net = mode(ns.network) == cri::NamespaceMode::Node;
    let mut namespaces = vec![serde_json::json!({"type": "mount"})];
    // The pod's user namespace (it owns the network namespace too: sandbox/userns.rs).
    if let Some(p) = user_ns {
        namespaces.push(serde_json::json!({"type": "user", "path": p}));
    }
    if !host_net {
        namespaces.push(match netns {
            Some(p) => serde_json::json!({"type": "network", "path": p}),
            None => serde_json::json!({"type": "network"}),
        });
        namespaces.push(serde_json::json!({"type": "uts"}));
    }
    if mode(ns.ipc) != cri::NamespaceMode::Node {
        namespaces.push(serde_json::json!({"type": "ipc"}));
    }
    if mode(ns.pid) != cri::NamespaceMode::Node {
        namespaces.push(serde_json::json!({"type": "pid"}));
    }
    // With the host's network namespace, sysctls under net.* would change the node's.
    let sysctl: HashMap<String, String> = linux.sysctls.clone();
    // Only namespaced sysctls, values that cannot smuggle another setting (CVE-2022-0811).
    crate::container::spec::validate_sysctls(&sysctl, ns)
        .map_err(|e| SandboxError::Invalid(e.to_string()))?;
    if host_net {
        // No UTS namespace either (kubelet sends no hostname for host-network pods; runc refuses
        // it the same way under containerd).
        if !cfg.hostname.is_empty() {
            return Err(SandboxError::Invalid(format!(
                "hostname {:?}: a host-network pod has the node's UTS namespace and hostname",
                cfg.hostname
            )));
        }
        if let Some(k) = sysctl.keys().find(|k| k.starts_with("net.")) {
            return Err(SandboxError::Invalid(format!(
                "linux.sysctls {k}: a network sysctl needs the pod's own network namespace"
            )));
        }
    }
    let caps = serde_json::json!(caps);
    let mut spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/catatonit", "-P"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs.display().to_string(), "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "sysctl": sysctl,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if !cfg.hostname.is_empty() {
        spec["hostname"] = serde_json::Value::String(cfg.hostname.clone());
    }
    if let Some(profile) = seccomp {
        spec["linux"]["seccomp"] = profile;
    }
    // The pod-level user (kubelet passes the pod's runAsUser/runAsGroup/supplementalGroups).
    if let Some(sc) = &linux.security_context {
        let id = |v: &Option<cri::Int64Value>, what: &str| -> Result<Option<u32>, SandboxError> {
            v.as_ref()
                .map(|x| {
                    u32::try_from(x.value).map_err(|_| {
                        SandboxError::Invalid(format!("linux.security_context.{what} {}", x.value))
                    })
                })
                .transpose()
        };
        if let Some(uid) = id(&sc.run_as_user, "run_as_user")? {
            spec["process"]["user"]["uid"] = serde_json::json!(uid);
        }
        if let Some(gid) = id(&sc.run_as_group, "run_as_group")? {
            spec["process"]["user"]["gid"] = serde_json::json!(gid);
        }
        let groups = sc
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g).map_err(|_| {
                    SandboxError::Invalid(format!("linux.security_context.supplemental_groups {g}"))
                })
            })
            .collect::<Result<Vec<u32>, _>>()?;
        if !groups.is_empty() {
            spec["process"]["user"]["additionalGids"] = serde_json::json!(groups);
        }
        // readonly_rootfs: the shared pause rootfs is always read-only.
    }
    Ok(spec)
}

/// A sandbox as its containers see it.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    /// The pause process (host pid); 0 when stopped.
    pub pid: u32,
    pub ready: bool,
    pub namespaces: cri::NamespaceOption,
    /// Containers' cgroups go to `<cgroup_parent>/<container id>`.
    pub cgroup_parent: String,
    /// Holds `hostname`, `hosts`, `resolv.conf` and `shm` (a tmpfs when the pod has its own
    /// IPC namespace), bind-mounted into every container of the pod.
    pub files_dir: PathBuf,
    pub runtime_handler: String,
    /// The pinned network namespace (None for a host-network pod).
    pub netns: Option<PathBuf>,
    /// The pod's own user namespace (its pin) and its id mappings; None in the node's.
    pub userns: Option<(PathBuf, userns::PodIdMaps)>,
}

impl SandboxInfo {
    /// The pod's network namespace as a path a process can `setns` into (port-forward, CNI);
    /// `None` for a host-network pod (the node's namespace) or a stopped sandbox.
    pub fn netns_path(&self) -> Option<PathBuf> {
        if mode(self.namespaces.network) == cri::NamespaceMode::Node {
            return None;
        }
        if let Some(p) = &self.netns {
            return Some(p.clone());
        }
        (self.pid != 0).then(|| PathBuf::from(format!("/proc/{}/ns/net", self.pid)))
    }
}

/// /etc/resolv.conf for a pod: from its DNSConfig, else the node's (as containerd).
fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Result<Vec<u8>, SandboxError> {
    let Some(d) = dns else {
        let host = Path::new("/etc/resolv.conf");
        return match std::fs::read(host) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", host)(e)),
        };
    };
    let bad = |v: &String| v.contains(['\n', '\r']) || v.trim().is_empty();
    if let Some(v) = d
        .servers
        .iter()
        .chain(&d.searches)
        .chain(&d.options)
        .find(|v| bad(v))
    {
        return Err(SandboxError::Invalid(format!(
            "dns_config entry {v:?}: empty or spans lines"
        )));
    }
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    Ok(out.into_bytes())
}

/// Writes the files every container of the pod mounts (`hostname`, `hosts`, `resolv.conf`)
/// into the sandbox's directory and mounts its `shm` tmpfs when the pod has its own IPC
/// namespace (a host-IPC pod's containers use the node's /dev/shm).
fn write_pod_files(
    dir: &Path,
    cfg: &cri::PodSandboxConfig,
    ns: &cri::NamespaceOption,
) -> Result<(), SandboxError> {
    let hostname = if mode(ns.network) == cri::NamespaceMode::Node || cfg.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        cfg.hostname.clone()
    };
    let write = |name: &str, data: &[u8]| -> Result<(), SandboxError> {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(io_err("write", &p))
    };
    write("hostname", format!("{hostname}\n").as_bytes())?;
    let hosts = match std::fs::read("/etc/hosts") {
        Ok(b) => b,
        Err(_) => b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
    };
    write("hosts", &hosts)?;
    write("resolv.conf", &resolv_conf(cfg.dns_config.as_ref())?)?;
    let shm = dir.join("shm");
    std::fs::create_dir(&shm).map_err(io_err("mkdir", &shm))?;
    if mode(ns.ipc) != cri::NamespaceMode::Node {
        use nix::mount::{mount, MsFlags};
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )
        .map_err(|e| io_err("mount tmpfs on", &shm)(e.into()))?;
    }
    Ok(())
}

/// The pod's own line in its hosts file (`<ip>\t<hostname>`), as containerd writes it.
fn add_pod_ip_to_hosts(dir: &Path, r: &Record) -> Result<(), SandboxError> {
    let (Some(ip), false) = (r.ips.first(), r.config.hostname.is_empty()) else {
        return Ok(());
    };
    let p = dir.join("hosts");
    let mut hosts = std::fs::read(&p).map_err(io_err("read", &p))?;
    if !hosts.is_empty() && !hosts.ends_with(b"\n") {
        hosts.push(b'\n');
    }
    hosts.extend_from_slice(format!("{ip}\t{}\n", r.config.hostname).as_bytes());
    std::fs::write(&p, hosts).map_err(io_err("write", &p))
}

/// Unmounts the pod's shm tmpfs, if mounted (lazily when busy: a container that still holds it
/// keeps its own reference).
/// The pin of a pod's user namespace in its bundle (sandbox/userns.rs).
const USERNS_PIN: &str = "userns";

/// Unmounts what a sandbox's bundle holds: the pod's `shm` tmpfs and its user namespace pin.
fn unmount_pod_mounts(dir: &Path) {
    let shm = dir.join("shm");
    match nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("umount {}: {e}", shm.display()),
    }
    userns::unpin(&dir.join(USERNS_PIN));
}

/// Stops a pause task and its shim: SIGKILL, wait, delete, shutdown. When the shim does not
/// answer any more, `shim delete` cleans up what it left.
fn teardown(cfg: &ShimConfig, shim: Shim) -> Result<(), SandboxError> {
    let id = shim.id.clone();
    let bundle = shim.bundle.clone();
    if let Err(e) = shim.kill("", libc::SIGKILL as u32, true) {
        // Already exited: the wait below returns at once.
        tracing::debug!("sandbox {id}: kill: {e}");
    }
    let deleted = shim.wait("").and_then(|_| shim.delete(""));
    match deleted {
        Ok(_) => shim.shutdown().map_err(|source| SandboxError::Shim {
            id: id.clone(),
            source: Box::new(source),
        }),
        Err(e) => {
            tracing::warn!("sandbox {id}: {e}; cleaning up with `shim delete`");
            drop(shim);
            Shim::cleanup(cfg, SHIM_NAMESPACE, &id, &bundle).map_err(|source| SandboxError::Shim {
                id,
                source: Box::new(source),
            })
        }
    }
}

impl Sandboxes {
    /// `state_dir/sandboxes` holds the bundles, `root/pause` the shared pause rootfs.
    pub fn new(
        shim: ShimConfig,
        net: Arc<Network>,
        root: &Path,
        state_dir: &Path,
    ) -> Result<Sandboxes, SandboxError> {
        let dir = state_dir.join("sandboxes");
        std::fs::create_dir_all(&dir).map_err(io_err("mkdir", &dir))?;
        let pause_dir = root.join("pause");
        ensure_pause_rootfs(&pause_dir)?;
        let sandboxes = Sandboxes {
            shim,
            net,
            dir,
            pause_dir,
            by_id: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            cgroup_parent: std::sync::RwLock::new(()),
        };
        sandboxes.reload()?;
        // Attachments and pins of sandboxes that were never recorded (a husk-cri killed
        // mid-RunPodSandbox) or whose record is gone.
        let keep = lock(&sandboxes.by_id)
            .iter()
            .filter(|(_, sb)| lock(&sb.record).netns.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        sandboxes.net.gc(&keep);
        Ok(sandboxes)
    }

    /// Reloads the sandboxes an earlier husk-cri left in the state dir. A bundle without a
    /// record (a RunPodSandbox cut short) is cleaned up and removed.
    fn reload(&self) -> Result<(), SandboxError> {
        let found = crate::records::load_all(&self.dir, "sandbox.json", |r: &Record| r.id.as_str())
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
                    "sandbox {id}: no usable {}: cleaning up",
                    rec_path.display()
                );
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
                unmount_pod_mounts(&bundle);
                let _ = std::fs::remove_dir_all(&bundle);
                continue;
            };
            if record.pid == 0 && bundle.join("address").exists() {
                // A RunPodSandbox cut short once its pause task ran: never recorded, it goes
                // now (the sandbox stays NOTREADY; its stop undoes the network and shm).
                tracing::warn!("sandbox {id}: its run was cut short: removing its pause task");
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &bundle);
                let _ = std::fs::remove_file(bundle.join("address"));
            }
            let mut shim = None;
            if record.pid != 0 {
                match Shim::connect(SHIM_NAMESPACE, &id, &bundle) {
                    Ok(s) => {
                        let running = s.state("").is_ok_and(|st| {
                            st.status.enum_value()
                                == Ok(containerd_shim_protos::api::Status::RUNNING)
                        });
                        if !running {
                            record.ready = false;
                        }
                        shim = Some(s);
                    }
                    Err(e) => {
                        tracing::warn!("sandbox {id}: its shim is gone ({e}): NOTREADY");
                        record.ready = false;
                    }
                }
            }
            let _ = write_json(&rec_path, &record);
            if let Some(meta) = record.metadata() {
                lock(&self.names).insert(name_key(&meta), id.clone());
            }
            tracing::info!(
                "sandbox {id} reloaded ({})",
                if record.ready { "ready" } else { "not ready" }
            );
            lock(&self.by_id).insert(
                id,
                Arc::new(Sandbox {
                    record: Mutex::new(record),
                    shim: Mutex::new(shim),
                }),
            );
        }
        Ok(())
    }

    /// A full id or a unique prefix of one (as containerd accepts).
    fn find(&self, id: &str) -> Result<(String, Arc<Sandbox>), SandboxError> {
        crate::records::find(&lock(&self.by_id), id).map_err(|l| match l {
            crate::records::Lookup::NotFound => SandboxError::NotFound(id.to_string()),
            crate::records::Lookup::Ambiguous => SandboxError::Ambiguous(id.to_string()),
        })
    }

    /// Marks the sandbox whose pause task exited NOTREADY (from the shims' TaskExit events).
    pub fn on_event(&self, ev: &Event) {
        let Some(exit) = ev.task_exit() else { return };
        if ev.namespace != SHIM_NAMESPACE {
            return;
        }
        let sb = lock(&self.by_id).get(&exit.container_id).cloned();
        if let Some(sb) = sb {
            let mut r = lock(&sb.record);
            if r.ready {
                tracing::info!(
                    "sandbox {}: pause process exited with status {}",
                    r.id,
                    exit.exit_status
                );
                r.ready = false;
                let _ = write_json(&self.dir.join(&r.id).join("sandbox.json"), &*r);
            }
        }
    }

    /// RunPodSandbox (blocking: runs the shim).
    pub fn run(&self, cfg: cri::PodSandboxConfig, handler: String) -> Result<String, SandboxError> {
        let meta = cfg
            .metadata
            .clone()
            .ok_or_else(|| SandboxError::Invalid("config.metadata is missing".into()))?;
        if meta.name.is_empty() {
            return Err(SandboxError::Invalid(
                "config.metadata.name is empty".into(),
            ));
        }
        if !handler.is_empty() {
            return Err(SandboxError::Unsupported(format!(
                "runtime handler {handler:?} (only the default, \"\")"
            )));
        }
        let ns = namespace_options(&cfg)?;
        let id = new_id()?;
        let key = name_key(&meta);
        {
            let mut names = lock(&self.names);
            if let Some(other) = names.get(&key) {
                return Err(SandboxError::NameReserved {
                    name: key,
                    id: other.clone(),
                });
            }
            names.insert(key.clone(), id.clone());
        }
        let r = self.run_reserved(&id, cfg, ns, handler);
        if r.is_err() {
            lock(&self.names).remove(&key);
        }
        r.map(|_| id)
    }

    fn run_reserved(
        &self,
        id: &str,
        cfg: cri::PodSandboxConfig,
        ns: cri::NamespaceOption,
        handler: String,
    ) -> Result<(), SandboxError> {
        let parent = cfg
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_CGROUP_PARENT);
        if parent.ends_with(".slice") {
            return Err(SandboxError::Unsupported(format!(
                "linux.cgroup_parent {parent:?}: the systemd cgroup driver (husk-cri uses cgroupfs)"
            )));
        }
        let cgroups_path = if parent.starts_with('/') {
            format!("{parent}/{id}")
        } else {
            format!("/{parent}/{id}")
        };
        let rootfs = ensure_pause_rootfs(&self.pause_dir)?;
        let pod_net = mode(ns.network) != cri::NamespaceMode::Node;
        let pin = pod_net.then(|| self.net.netns_path(id));
        let bundle = self.dir.join(id);
        let maps = userns::pod_maps(&ns).map_err(SandboxError::Invalid)?;
        if maps.is_some() {
            for d in [&self.dir, &self.pause_dir] {
                if let Some(bad) = userns::unreachable_dir(d) {
                    return Err(SandboxError::Precondition(format!(
                        "a pod with its own user namespace is set up by its root, an \
                         unprivileged uid on the host, which cannot search {} (mode o-x) above \
                         husk-cri's {}: give it o+x (as /var/lib and /run have)",
                        bad.display(),
                        d.display()
                    )));
                }
            }
        }
        let user_pin = maps.map(|_| bundle.join(USERNS_PIN));
        let spec = pause_spec(
            &cfg,
            &ns,
            &rootfs,
            &cgroups_path,
            pin.as_deref(),
            user_pin.as_deref(),
        )?;
        {
            // In a pod's own user namespace its containers are set up as its root (an
            // unprivileged uid on the host): they bind the pod's files (hosts, resolv.conf,
            // hostname, shm) from here, so others may search the bundle (its files are 0600).
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(if maps.is_some() { 0o711 } else { 0o700 })
                .create(&bundle)
                .map_err(io_err("mkdir", &bundle))?;
        }
        let mut record = Record {
            id: id.to_string(),
            config: cfg,
            runtime_handler: handler,
            created_at: now_ns(),
            ready: false,
            pid: 0,
            cgroups_path,
            namespaces: ns,
            netns: None,
            ips: vec![],
        };
        // Undoes what was made so far (network, shm, bundle); errors are logged: the one
        // returned is the cause.
        let undo = |record: &Record| {
            if record.netns.is_some() {
                if let Err(e) = self.net.detach(id, &record.config) {
                    tracing::warn!("sandbox {id}: undoing its network: {e}");
                }
            }
            unmount_pod_mounts(&bundle);
            let _ = std::fs::remove_dir_all(&bundle);
        };
        if let Err(e) = write_pod_files(&bundle, &record.config, &record.namespaces) {
            undo(&record);
            return Err(e);
        }
        if pod_net {
            // Recorded before CNI ADD: whatever happens next, a stop or the next husk-cri's
            // garbage collection finds the attachment to undo.
            // A pod with its own user namespace gets a network namespace owned by it.
            let netns = match (&maps, &user_pin) {
                (Some(m), Some(user_pin)) => {
                    let net_pin = self.net.netns_path(id);
                    userns::create(m, user_pin, &net_pin)
                        .map(|_| net_pin)
                        .map_err(|e| SandboxError::UserNamespace {
                            id: id.to_string(),
                            source: e,
                        })
                }
                _ => self.net.create_netns(id).map_err(SandboxError::from),
            };
            let made = netns
                .and_then(|p| {
                    record.netns = Some(p);
                    write_json(&bundle.join("sandbox.json"), &record)
                })
                .and_then(|_| {
                    self.net.attach(id, &record.config).map_err(|e| {
                        // ADD undid itself and the namespace is gone: nothing to detach.
                        record.netns = None;
                        SandboxError::from(e)
                    })
                })
                .and_then(|ips| {
                    record.ips = ips;
                    add_pod_ip_to_hosts(&bundle, &record)
                });
            if let Err(e) = made {
                undo(&record);
                return Err(e);
            }
            crate::failpoint::hit("sandbox-after-cni");
        }
        let started = {
            let _creating = self.cgroup_parent.read().unwrap_or_else(|e| e.into_inner());
            write_json(&bundle.join("config.json"), &spec)
                .and_then(|_| write_json(&bundle.join("sandbox.json"), &record))
                .and_then(|_| self.start_pause(id, &bundle))
        };
        let (shim, pid) = match started {
            Ok(s) => s,
            Err(e) => {
                undo(&record);
                return Err(e);
            }
        };
        crate::failpoint::hit("sandbox-after-pause-start");
        record.ready = true;
        record.pid = pid;
        if let Err(e) = write_json(&bundle.join("sandbox.json"), &record) {
            let _ = teardown(&self.shim, shim);
            undo(&record);
            return Err(e);
        }
        tracing::info!("sandbox {id} running, pause pid {pid}");
        lock(&self.by_id).insert(
            id.to_string(),
            Arc::new(Sandbox {
                record: Mutex::new(record),
                shim: Mutex::new(Some(shim)),
            }),
        );
        Ok(())
    }

    fn start_pause(&self, id: &str, bundle: &Path) -> Result<(Shim, u32), SandboxError> {
        let shim_err = |source| SandboxError::Shim {
            id: id.to_string(),
            source: Box::new(source),
        };
        let shim = match Shim::start(&self.shim, SHIM_NAMESPACE, id, bundle) {
            Ok(s) => s,
            Err(e) => {
                // A shim that started but did not answer: `shim delete` removes what it left.
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, bundle);
                return Err(shim_err(e));
            }
        };
        // Empty stdio paths: the shim gives the process /dev/null.
        let created = shim.create(&TaskIo::default(), vec![]);
        if let Err(e) = created {
            let _ = shim.shutdown();
            let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, bundle);
            return Err(shim_err(e));
        }
        match shim.start_task("") {
            Ok(pid) => Ok((shim, pid)),
            Err(e) => {
                let _ = teardown(&self.shim, shim);
                Err(shim_err(e))
            }
        }
    }

    /// StopPodSandbox (blocking). Stopping a stopped sandbox, or one that is unknown or already
    /// removed, succeeds (CRI: StopPodSandbox is idempotent). Its containers must be stopped
    /// first (the runtime service does that).
    pub fn stop(&self, id: &str) -> Result<(), SandboxError> {
        let (id, sb) = match self.find(id) {
            Ok(x) => x,
            Err(SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut shim = lock(&sb.shim);
        let pid = lock(&sb.record).pid;
        match shim.take() {
            Some(s) => {
                if let Err(e) = teardown(&self.shim, s) {
                    tracing::warn!("sandbox {id}: stop: {e}");
                    return Err(e);
                }
            }
            // Reloaded with its shim gone: `shim delete` kills and deletes what is left.
            None if pid != 0 => {
                Shim::cleanup(&self.shim, SHIM_NAMESPACE, &id, &self.dir.join(&id)).map_err(
                    |source| SandboxError::Shim {
                        id: id.clone(),
                        source: Box::new(source),
                    },
                )?;
            }
            None => {}
        }
        // The shim is gone: a restarted husk-cri must not look for it.
        let _ = std::fs::remove_file(self.dir.join(&id).join("address"));
        unmount_pod_mounts(&self.dir.join(&id));
        let mut r = lock(&sb.record);
        if r.ready || r.pid != 0 {
            r.ready = false;
            r.pid = 0;
            write_json(&self.dir.join(&id).join("sandbox.json"), &*r)?;
        }
        // CNI DEL and the namespace pin (a failing DEL fails the stop; kubelet retries).
        if r.netns.is_some() {
            self.net.detach(&id, &r.config)?;
            r.netns = None;
            write_json(&self.dir.join(&id).join("sandbox.json"), &*r)?;
        }
        Ok(())
    }

    /// What a container of sandbox `id` (a full id or a unique prefix) needs to join it.
    pub fn info(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        let (id, sb) = self.find(id)?;
        let r = lock(&sb.record).clone();
        let cgroup_parent = r
            .cgroups_path
            .rsplit_once('/')
            .map(|(p, _)| if p.is_empty() { "/" } else { p })
            .unwrap_or("/")
            .to_string();
        let userns = userns::pod_maps(&r.namespaces)
            .ok()
            .flatten()
            .map(|m| (self.dir.join(&id).join(USERNS_PIN), m));
        Ok(SandboxInfo {
            userns,
            files_dir: self.dir.join(&id),
            id,
            config: r.config,
            pid: r.pid,
            ready: r.ready,
            namespaces: r.namespaces,
            cgroup_parent,
            runtime_handler: r.runtime_handler,
            netns: r.netns,
        })
    }

    /// The ids of every sandbox.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.by_id).keys().cloned().collect()
    }

    /// RemovePodSandbox (blocking): stops it if needed and removes its bundle and name. An
    /// unknown id succeeds.
    pub fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let (id, sb) = match self.find(id) {
            Ok(x) => x,
            Err(SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&id)?;
        let bundle = self.dir.join(&id);
        match std::fs::remove_dir_all(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &bundle)(e)),
        }
        lock(&self.by_id).remove(&id);
        if let Some(meta) = lock(&sb.record).metadata() {
            let key = name_key(&meta);
            let mut names = lock(&self.names);
            if names.get(&key) == Some(&id) {
                names.remove(&key);
            }
        }
        // husk's state root for the namespace, if this was its last container.
        crate::shim::remove_runtime_root(SHIM_NAMESPACE);
        self.remove_default_cgroup_parent();
        tracing::info!("sandbox {id} removed");
        Ok(())
    }

    /// The default cgroup parent is husk-cri's own (kubelet's parents are kubelet's): once no
    /// sandbox is under it, it goes from every hierarchy (one still in use stays: rmdir says so).
    fn remove_default_cgroup_parent(&self) {
        let prefix = format!("{DEFAULT_CGROUP_PARENT}/");
        let in_use = lock(&self.by_id)
            .values()
            .any(|sb| lock(&sb.record).cgroups_path.starts_with(&prefix));
        if in_use {
            return;
        }
        let Ok(host) = husk::cgroups::Host::detect() else {
            return;
        };
        let _removing = self
            .cgroup_parent
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut dirs: Vec<PathBuf> = host
            .v1
            .values()
            .chain(host.unified.iter())
            .filter(|m| m.root == "/")
            .map(|m| {
                m.mountpoint
                    .join(DEFAULT_CGROUP_PARENT.trim_start_matches('/'))
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            match std::fs::remove_dir(&d) {
                Ok(()) => tracing::debug!("removed the empty cgroup parent {}", d.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!("cgroup parent {} kept: {e}", d.display()),
            }
        }
    }

    /// PodSandboxStatus.
    pub fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, SandboxError> {
        let (_, sb) = self.find(id)?;
        let r = lock(&sb.record).clone();
        let mut info = HashMap::new();
        if verbose {
            let mut nss = serde_json::Map::new();
            if r.pid != 0 {
                let mut kinds = vec!["mnt"];
                if mode(r.namespaces.network) != cri::NamespaceMode::Node {
                    kinds.extend(["net", "uts"]);
                }
                if mode(r.namespaces.ipc) != cri::NamespaceMode::Node {
                    kinds.push("ipc");
                }
                if mode(r.namespaces.pid) != cri::NamespaceMode::Node {
                    kinds.push("pid");
                }
                if userns::pod_maps(&r.namespaces).is_ok_and(|m| m.is_some()) {
                    kinds.push("user");
                }
                for k in kinds {
                    nss.insert(
                        k.to_string(),
                        serde_json::Value::String(format!("/proc/{}/ns/{k}", r.pid)),
                    );
                }
            }
            let v = serde_json::json!({
                "pid": r.pid,
                "namespaces": nss,
                "cgroupsPath": r.cgroups_path,
                "bundle": self.dir.join(&r.id).display().to_string(),
                "image": "husk-cri built-in pause (catatonit -P)",
                "netns": r.netns,
                "ips": r.ips,
                "cni": self.net.describe(),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: r.id.clone(),
                metadata: r.metadata(),
                state: r.state(),
                created_at: r.created_at,
                network: Some(cri::PodSandboxNetworkStatus {
                    ip: r.ips.first().cloned().unwrap_or_default(),
                    additional_ips: r
                        .ips
                        .iter()
                        .skip(1)
                        .map(|ip| cri::PodIp { ip: ip.clone() })
                        .collect(),
                }),
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(r.namespaces.clone()),
                    }),
                }),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            }),
            info,
            containers_statuses: vec![],
            timestamp: now_ns(),
        })
    }

    /// ListPodSandbox: id (full or a unique prefix), state and labels (all must match).
    pub fn list(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let f = filter.unwrap_or_default();
        let sandboxes: Vec<(String, Arc<Sandbox>)> = if f.id.is_empty() {
            lock(&self.by_id)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            // An ambiguous or unknown id lists nothing, as containerd.
            self.find(&f.id).into_iter().collect()
        };
        let mut out: Vec<cri::PodSandbox> = sandboxes
            .into_iter()
            .map(|(_, sb)| lock(&sb.record).clone())
            .filter(|r| f.state.is_none_or(|s| s.state == r.state()))
            .filter(|r| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .map(|r| cri::PodSandbox {
                id: r.id.clone(),
                metadata: r.metadata(),
                state: r.state(),
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|p| p.created_at);
        out
    }
}

/// Runs `f` on tokio's blocking pool (shim calls block).
pub async fn blocking<T: Send + 'static>(
    id: &str,
    what: &'static str,
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| SandboxError::Task {
            id: id.to_string(),
            what,
            source,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: cri::NamespaceMode) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 0,
            }),
            hostname: "pod-host".into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ns_types(spec: &serde_json::Value) -> Vec<String> {
        spec["linux"]["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["type"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn pod_network_gets_its_own_net_and_uts_and_the_hostname() {
        let cfg = config(cri::NamespaceMode::Pod);
        let ns = namespace_options(&cfg).expect("namespaces");
        let spec = pause_spec(&cfg, &ns, Path::new("/r"), "/husk-cri/x", None, None).expect("spec");
        assert_eq!(ns_types(&spec), ["mount", "network", "uts", "ipc", "pid"]);
        assert_eq!(spec["hostname"], "pod-host");
        assert_eq!(spec["linux"]["cgroupsPath"], "/husk-cri/x");
        assert_eq!(spec["process"]["args"][0], "/catatonit");
        assert_eq!(spec["root"]["readonly"], true);
    }

    #[test]
    fn host_network_has_no_net_or_uts_namespace_and_refuses_net_sysctls() {
        let mut cfg = config(cri::NamespaceMode::Node);
        let ns = namespace_options(&cfg).expect("namespaces");
        assert!(matches!(
            pause_spec(&cfg, &ns, Path::new("/r"), "/p/x", None, None),
            Err(SandboxError::Invalid(_))
        ));
        cfg.hostname.clear();
        let spec = pause_spec(&cfg, &ns, Path::new("/r"), "/p/x", None, None).expect("spec");
        assert_eq!(ns_types(&spec), ["mount", "ipc", "pid"]);
        assert!(spec.get("hostname").is_none());
        if let Some(l) = cfg.linux.as_mut() {
            l.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        }
        assert!(matches!(
            pause_spec(&cfg, &ns, Path::new("/r"), "/p/x", None, None),
            Err(SandboxError::Invalid(_))
        ));
    }

    #[test]
    fn ids_are_64_hex_and_differ() {
        let a = new_id().expect("id");
        let b = new_id().expect("id");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
