//! The OCI runtime spec (config.json) of a CRI container: image config + CRI request + the
//! sandbox it joins, with the semantics of containerd's CRI plugin
//! (`internal/cri/server/container_create_linux.go` and `internal/cri/opts/spec_linux*.go`).
//!
//! The base is husk's own default spec (`husk::spec::default_spec`), reshaped into
//! containerd's container defaults: no rlimits, no hostname (the sandbox's UTS namespace has
//! it), no inheritable or ambient capabilities, NNP only when asked, masked and read-only
//! paths only as kubelet sends them.
//!
//! What the spec does not carry and why:
//! - pod sysctls: applied once by the sandbox to the namespaces the containers join (as
//!   containerd); [`validate_sysctls`] is the check for RunPodSandbox.
//! - image VOLUMEs: listed in [`BuiltSpec::image_volumes`]; the caller makes their directories
//!   (`<bundle>/volumes/<n>` with a copy of the image's content: `container::volumes`) and
//!   adds them with [`add_image_volumes`].
use crate::container::user::{self, ResolvedUser, UserError};
use crate::image::ImageConfig;
use crate::security::{self, SecurityError};
use k8s_cri::v1 as cri;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use cri::{MountPropagation, NamespaceMode};

/// containerd's default capability set for containers.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows, by number.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's annotation keys (`pkg/cri/annotations`).
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// The sandbox a container joins.
pub struct SandboxRef<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
    /// The pause process, host pid.
    pub pid: u32,
    /// The sandbox's effective namespace options.
    pub namespaces: &'a cri::NamespaceOption,
    /// e.g. "/kubepods/pod123" or "/husk-cri"; the container's cgroupsPath is
    /// "{cgroup_parent}/{container id}".
    pub cgroup_parent: &'a str,
    /// Holds "hostname", "hosts", "resolv.conf" and a "shm" dir (a tmpfs mount when the pod
    /// has its own IPC namespace). Files that do not exist are not mounted.
    pub files_dir: &'a Path,
    /// With pid namespace mode TARGET: the host pid of the init of the container named by
    /// `namespace_options.target_id` (the caller looks it up; it must be running).
    pub target_pid: Option<u32>,
}

/// The image a container runs.
pub struct ImageRef<'a> {
    /// The image name for the `image-name` annotation (the reference the request used).
    pub name: &'a str,
    pub config: &'a ImageConfig,
    /// `ImageStore::layer_dirs`: unpacked layers, lowest first.
    pub layers: &'a [PathBuf],
}

/// A built container spec.
#[derive(Debug, Clone)]
pub struct BuiltSpec {
    /// config.json; `root.path` is "rootfs" (the shim mounts the overlay there).
    pub spec: Value,
    pub user: ResolvedUser,
    /// The image's STOPSIGNAL, or "SIGTERM".
    pub stop_signal: String,
    /// The request's mounts, echoed in ContainerStatus (as containerd does).
    pub mounts: Vec<cri::Mount>,
    /// Image VOLUMEs no CRI mount covers (cleaned absolute paths): the caller makes a
    /// directory for each (`container::volumes::prepare`) and adds it with
    /// [`add_image_volumes`].
    pub image_volumes: Vec<String>,
}

/// Errors of building a container spec; each names the field, path or value involved.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: {path}: not found")]
    NotFound { field: String, path: PathBuf },
    #[error("{field}: {path}: {source}")]
    Io {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount {container_path}: host path {host_path} is mounted on {mountpoint}, which is not a {wanted} mount")]
    Propagation {
        container_path: String,
        host_path: PathBuf,
        mountpoint: String,
        wanted: &'static str,
    },
    #[error("privileged container {name:?} is not allowed in sandbox {sandbox}: the sandbox is not privileged")]
    PrivilegedNotAllowed { name: String, sandbox: String },
    #[error("pid namespace TARGET {target_id:?}: the target container is not running")]
    TargetNotRunning { target_id: String },
}

impl From<SpecError> for tonic::Status {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::User(u) => u.into(),
            SpecError::Security(s) => s.into(),
            SpecError::Invalid { .. } | SpecError::PrivilegedNotAllowed { .. } => {
                tonic::Status::invalid_argument(e.to_string())
            }
            SpecError::NotFound { .. } | SpecError::TargetNotRunning { .. } => {
                tonic::Status::not_found(e.to_string())
            }
            SpecError::Propagation { .. } => tonic::Status::failed_precondition(e.to_string()),
            SpecError::Io { .. } => tonic::Status::internal(e.to_string()),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Facts about the host the spec depends on, gathered once per build (tests fake them).
#[derive(Debug, Clone)]
struct Host {
    hostname: String,
    cgroup2: bool,
    swap: bool,
    hugetlb: bool,
    oom_score_adj: i64,
    /// The capabilities husk-cri holds (its bounding set).
    caps: Vec<String>,
    mountinfo: String,
}

impl Host {
    fn probe() -> Host {
        let cgroup2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let swap = if cgroup2 {
            swap_controller_v2()
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
        let hugetlb = if cgroup2 {
            controllers.split_whitespace().any(|c| c == "hugetlb")
        } else {
            Path::new("/sys/fs/cgroup/hugetlb").is_dir()
        };
        let oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let caps = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .map(caps_from_mask)
            .unwrap_or_else(|| ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect());
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Host {
            hostname,
            cgroup2,
            swap,
            hugetlb,
            oom_score_adj,
            caps,
            mountinfo,
        }
    }
}

/// Whether cgroup v2 swap limits can be set: husk-cri's own cgroup (or, when that is the
/// root, which has no memory files, any top-level cgroup) has `memory.swap.max`, as
/// containerd's SwapControllerAvailable checks.
fn swap_controller_v2() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        })
        .unwrap_or_default();
    let own = own.trim_start_matches('/');
    if !own.is_empty() && !own.split('/').any(|c| c == "..") {
        return root.join(own).join("memory.swap.max").exists();
    }
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.path().join("memory.swap.max").exists())
        })
        .unwrap_or(false)
}

fn caps_from_mask(mask: u64) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Builds the spec of container `id` from the request, its sandbox and its image.
pub fn build(
    id: &str,
    cfg: &cri::ContainerConfig,
    sandbox: &SandboxRef,
    image: &ImageRef,
) -> Result<BuiltSpec, SpecError> {
    build_with(id, cfg, sandbox, image, &Host::probe())
}

fn build_with(
    id: &str,
    cfg: &cri::ContainerConfig,
    sandbox: &SandboxRef,
    image: &ImageRef,
    host: &Host,
) -> Result<BuiltSpec, SpecError> {
    let name = cfg
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("metadata.name", "must not be empty"));
    }
    if !cfg.cdi_devices.is_empty() {
        return Err(invalid(
            "CDI_devices",
            "CDI devices are not supported by husk-cri",
        ));
    }
    let default_sc = cri::LinuxContainerSecurityContext::default();
    let sc = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let privileged = sc.privileged;
    if privileged {
        let pod_privileged = sandbox
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        if !pod_privileged {
            return Err(SpecError::PrivilegedNotAllowed {
                name,
                sandbox: sandbox.id.to_string(),
            });
        }
    }

    let mut spec = husk::spec::default_spec(false);
    // containerd's container defaults over the runtime's template.
    if let Some(o) = spec.as_object_mut() {
        o.remove("hostname");
    }
    spec["root"] = json!({"path": "rootfs", "readonly": sc.readonly_rootfs});

    // process
    let user = user::resolve(&image.config.user, Some(sc), image.layers)?;
    let args = process_args(cfg, image.config)?;
    let cwd = working_dir(cfg, image.config)?;
    let hostname = if sandbox.config.hostname.is_empty() {
        host.hostname.clone()
    } else {
        sandbox.config.hostname.clone()
    };
    let env = environment(cfg, image.config, &hostname);
    let caps = capabilities(sc, privileged, host)?;
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": caps.to_json(),
        "noNewPrivileges": sc.no_new_privs,
    });
    let resources = cfg.linux.as_ref().and_then(|l| l.resources.as_ref());
    if let Some(r) = resources {
        let adj = r.oom_score_adj.max(host.oom_score_adj).clamp(-1000, 1000);
        if adj != r.oom_score_adj {
            tracing::debug!(
                requested = r.oom_score_adj,
                used = adj,
                "oom_score_adj raised to husk-cri's own (it cannot be lowered)"
            );
        }
        process["oomScoreAdj"] = json!(adj);
    }
    security::check_apparmor(sc.apparmor.as_ref(), legacy_apparmor(sc))?;
    spec["process"] = process;

    // linux
    let mut linux = Map::new();
    linux.insert(
        "namespaces".into(),
        Value::Array(namespaces(sc, sandbox, privileged, host)?),
    );
    if let Some(u) = sandbox.namespaces.userns_options.as_ref() {
        if u.mode() == NamespaceMode::Pod && (!u.uids.is_empty() || !u.gids.is_empty()) {
            let map = |m: &[cri::IdMapping]| -> Value {
                m.iter()
                    .map(|x| json!({"containerID": x.container_id, "hostID": x.host_id, "size": x.length}))
                    .collect()
            };
            linux.insert("uidMappings".into(), map(&u.uids));
            linux.insert("gidMappings".into(), map(&u.gids));
        }
    }
    let (masked, readonly): (Vec<String>, Vec<String>) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        (sc.masked_paths.clone(), sc.readonly_paths.clone())
    };
    for (field, list) in [("masked_paths", &masked), ("readonly_paths", &readonly)] {
        if let Some(p) = list.iter().find(|p| !p.starts_with('/')) {
            return Err(invalid(
                format!("security_context.{field}"),
                format!("{p:?} is not an absolute path"),
            ));
        }
    }
    linux.insert("maskedPaths".into(), json!(masked));
    linux.insert("readonlyPaths".into(), json!(readonly));

    let mut res = resources
        .map(|r| resources_json(r, host.swap, host.hugetlb))
        .unwrap_or_else(|| json!({}));
    let (devices, device_rules) = if privileged {
        let mut devs = host_devices(Path::new("/dev"))?;
        for d in requested_devices(cfg)? {
            push_device(&mut devs, d.0);
        }
        (devs, vec![json!({"allow": true, "access": "rwm"})])
    } else {
        let mut devs = Vec::new();
        let mut rules = vec![json!({"allow": false, "access": "rwm"})];
        for (d, rule) in requested_devices(cfg)? {
            push_device(&mut devs, d);
            rules.push(rule);
        }
        (devs, rules)
    };
    res["devices"] = Value::Array(device_rules);
    linux.insert("resources".into(), res);
    if !devices.is_empty() {
        linux.insert("devices".into(), Value::Array(devices));
    }
    if !sandbox.cgroup_parent.is_empty() {
        linux.insert(
            "cgroupsPath".into(),
            json!(format!(
                "{}/{}",
                sandbox.cgroup_parent.trim_end_matches('/'),
                id
            )),
        );
    }
    if let Some(seccomp) = security::seccomp_for(
        sc.seccomp.as_ref(),
        legacy_seccomp(sc),
        privileged,
        &caps.bounding,
    )? {
        linux.insert("seccomp".into(), seccomp);
    }

    // mounts
    let ipc_host = sandbox.namespaces.ipc() == NamespaceMode::Node;
    let mut rootfs_propagation: Option<&'static str> = None;
    let mounts = mounts(
        cfg,
        sc,
        sandbox.files_dir,
        ipc_host,
        privileged,
        host,
        &mut rootfs_propagation,
    )?;
    spec["mounts"] = Value::Array(mounts);
    if let Some(p) = rootfs_propagation {
        linux.insert("rootfsPropagation".into(), json!(p));
    }
    spec["linux"] = Value::Object(linux);

    // annotations
    let meta = sandbox.config.metadata.clone().unwrap_or_default();
    spec["annotations"] = json!({
        annotations::CONTAINER_TYPE: "container",
        annotations::SANDBOX_ID: sandbox.id,
        annotations::SANDBOX_NAMESPACE: meta.namespace,
        annotations::SANDBOX_UID: meta.uid,
        annotations::SANDBOX_NAME: meta.name,
        annotations::CONTAINER_NAME: name,
        annotations::IMAGE_NAME: image.name,
    });

    let covered: Vec<String> = cfg
        .mounts
        .iter()
        .map(|m| clean(&m.container_path))
        .collect();
    let mut image_volumes = Vec::new();
    for v in &image.config.volumes {
        let c = clean(v);
        if c.starts_with('/') && !covered.contains(&c) && !image_volumes.contains(&c) {
            image_volumes.push(c);
        }
    }
    let stop_signal = if image.config.stop_signal.is_empty() {
        "SIGTERM".to_string()
    } else {
        image.config.stop_signal.clone()
    };
    tracing::debug!(container = id, sandbox = sandbox.id, "built container spec");
    Ok(BuiltSpec {
        spec,
        user,
        stop_signal,
        mounts: cfg.mounts.clone(),
        image_volumes,
    })
}

/// The deprecated `apparmor_profile` string (still honoured, as containerd does, when the
/// `apparmor` message is absent).
#[allow(deprecated)]
fn legacy_apparmor(sc: &cri::LinuxContainerSecurityContext) -> &str {
    &sc.apparmor_profile
}

/// The deprecated `seccomp_profile_path` string (used when the `seccomp` message is absent).
#[allow(deprecated)]
fn legacy_seccomp(sc: &cri::LinuxContainerSecurityContext) -> &str {
    &sc.seccomp_profile_path
}

/// containerd's WithProcessArgs: the CRI command replaces the image entrypoint (and then the
/// image cmd is dropped); CRI args replace the image cmd.
fn process_args(cfg: &cri::ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let mut command = cfg.command.clone();
    let mut args = cfg.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() || command[0].is_empty() {
        return Err(invalid(
            "command",
            "no command specified (neither the request nor the image has one)",
        ));
    }
    Ok(command)
}

fn working_dir(cfg: &cri::ContainerConfig, image: &ImageConfig) -> Result<String, SpecError> {
    let (field, dir) = if !cfg.working_dir.is_empty() {
        ("working_dir", cfg.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".into());
    };
    if !dir.starts_with('/') {
        return Err(invalid(field, format!("{dir:?} is not an absolute path")));
    }
    Ok(dir.to_string())
}

/// Replaces the variable `kv` names in `env`, or appends it.
fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or("").to_string();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// PATH default, TERM for a terminal, HOSTNAME, the image's env, then the request's (later
/// values replace earlier ones in place, as containerd's WithEnv).
fn environment(cfg: &cri::ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if cfg.tty {
        set_env(&mut env, "TERM=xterm".into());
    }
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    for e in &image.env {
        if e.contains('=') {
            set_env(&mut env, e.clone());
        }
    }
    for kv in &cfg.envs {
        if kv.key.is_empty() {
            continue;
        }
        set_env(&mut env, format!("{}={}", kv.key, kv.value));
    }
    env
}

/// The capability sets of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Caps {
    bounding: Vec<String>,
    ambient: Vec<String>,
}

impl Caps {
    fn to_json(&self) -> Value {
        json!({
            "bounding": self.bounding,
            "effective": self.bounding,
            "permitted": self.bounding,
            "inheritable": self.ambient,
            "ambient": self.ambient,
        })
    }
}

/// "net_admin", "NET_ADMIN", "CAP_NET_ADMIN" → "CAP_NET_ADMIN", checked against the known set.
fn cap_name(field: &str, c: &str) -> Result<String, SpecError> {
    let up = c.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(invalid(
            format!("security_context.capabilities.{field}"),
            format!("unknown capability {c:?}"),
        ))
    }
}

/// containerd's WithCapabilities: "ALL" in add/drop first, then the individual names;
/// privileged: every capability husk-cri holds.
fn capabilities(
    sc: &cri::LinuxContainerSecurityContext,
    privileged: bool,
    host: &Host,
) -> Result<Caps, SpecError> {
    let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let mut ambient = Vec::new();
    if let Some(c) = sc.capabilities.as_ref() {
        let is_all =
            |s: &String| s.eq_ignore_ascii_case("ALL") || s.eq_ignore_ascii_case("CAP_ALL");
        if c.add_capabilities.iter().any(is_all) {
            set = host.caps.clone();
        }
        if c.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        for a in c.add_capabilities.iter().filter(|s| !is_all(s)) {
            let n = cap_name("add_capabilities", a)?;
            if !set.contains(&n) {
                set.push(n);
            }
        }
        for d in c.drop_capabilities.iter().filter(|s| !is_all(s)) {
            let n = cap_name("drop_capabilities", d)?;
            set.retain(|x| x != &n);
        }
        for a in &c.add_ambient_capabilities {
            let n = cap_name("add_ambient_capabilities", a)?;
            if !set.contains(&n) {
                set.push(n.clone());
            }
            if !ambient.contains(&n) {
                ambient.push(n);
            }
        }
    }
    if privileged {
        set = host.caps.clone();
    }
    // Ambient capabilities must stay within the bounding set (a drop wins over an ambient add
    // only if it comes from ALL; an explicit ambient add was re-added above).
    ambient.retain(|a| set.contains(a));
    Ok(Caps {
        bounding: set,
        ambient,
    })
}

fn ns_path(pid: u32, kind: &str) -> String {
    format!("/proc/{pid}/ns/{kind}")
}

/// The container's namespaces: the sandbox's network (with its UTS) and IPC unless the pod uses
/// the node's; pid per the container's mode; always a new mount namespace; a new cgroup
/// namespace on cgroup v2 unless privileged (containerd).
fn namespaces(
    sc: &cri::LinuxContainerSecurityContext,
    sandbox: &SandboxRef,
    privileged: bool,
    host: &Host,
) -> Result<Vec<Value>, SpecError> {
    let mut out = Vec::new();
    if sandbox.namespaces.network() != NamespaceMode::Node {
        out.push(json!({"type": "network", "path": ns_path(sandbox.pid, "net")}));
        out.push(json!({"type": "uts", "path": ns_path(sandbox.pid, "uts")}));
    }
    if sandbox.namespaces.ipc() != NamespaceMode::Node {
        out.push(json!({"type": "ipc", "path": ns_path(sandbox.pid, "ipc")}));
    }
    let container_ns = sc.namespace_options.as_ref();
    let pid_mode = container_ns
        .map(|n| n.pid())
        .unwrap_or_else(|| sandbox.namespaces.pid());
    match pid_mode {
        NamespaceMode::Pod => {
            if sandbox.namespaces.pid() != NamespaceMode::Node {
                out.push(json!({"type": "pid", "path": ns_path(sandbox.pid, "pid")}));
            }
        }
        NamespaceMode::Container => out.push(json!({"type": "pid"})),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let target_id = container_ns
                .map(|n| n.target_id.clone())
                .unwrap_or_default();
            if target_id.is_empty() {
                return Err(invalid(
                    "security_context.namespace_options.target_id",
                    "pid namespace mode TARGET needs a target_id",
                ));
            }
            let pid = sandbox
                .target_pid
                .ok_or(SpecError::TargetNotRunning { target_id })?;
            out.push(json!({"type": "pid", "path": ns_path(pid, "pid")}));
        }
    }
    if let Some(u) = sandbox.namespaces.userns_options.as_ref() {
        if u.mode() == NamespaceMode::Pod && (!u.uids.is_empty() || !u.gids.is_empty()) {
            out.push(json!({"type": "user", "path": ns_path(sandbox.pid, "user")}));
        }
    }
    out.push(json!({"type": "mount"}));
    if host.cgroup2 && !privileged {
        out.push(json!({"type": "cgroup"}));
    }
    Ok(out)
}

/// Lexically cleaned absolute path ("/a//b/../c/" → "/a/c").
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// The mount point containing `path` in `mountinfo` and its optional fields.
fn mount_of<'a>(mountinfo: &'a str, path: &Path) -> Option<(&'a str, Vec<&'a str>)> {
    let mut best: Option<(&str, Vec<&str>)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || sep < 6 {
            continue;
        }
        let mp = fields[4];
        let mp_path = Path::new(mp);
        if path.starts_with(mp_path) && best.as_ref().is_none_or(|(b, _)| mp.len() >= b.len()) {
            best = Some((mp, fields[6..sep].to_vec()));
        }
    }
    best
}

/// One CRI mount (or one of husk-cri's own) as a spec mount.
fn bind_mount(
    m: &cri::Mount,
    host: &Host,
    rootfs_propagation: &mut Option<&'static str>,
) -> Result<Value, SpecError> {
    let field = format!("mount {}", m.container_path);
    let dst = &m.container_path;
    if !dst.starts_with('/') {
        return Err(invalid(field, "container_path must be an absolute path"));
    }
    if Path::new(dst)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(invalid(field, "container_path must not contain '..'"));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(invalid(
            field,
            "image volume mounts are not supported by husk-cri",
        ));
    }
    if m.host_path.is_empty() || !m.host_path.starts_with('/') {
        return Err(invalid(field, "host_path must be an absolute path"));
    }
    let src = Path::new(&m.host_path);
    match std::fs::metadata(src) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // containerd creates a missing host path as a directory.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(src)
                .map_err(|source| SpecError::Io {
                    field: field.clone(),
                    path: src.to_path_buf(),
                    source,
                })?;
            tracing::info!(path = %src.display(), "created missing mount source directory");
        }
        Err(source) => {
            return Err(SpecError::Io {
                field,
                path: src.to_path_buf(),
                source,
            })
        }
    }
    let src = std::fs::canonicalize(src).map_err(|source| SpecError::Io {
        field: field.clone(),
        path: src.to_path_buf(),
        source,
    })?;
    let mut options = vec!["rbind".to_string()];
    let propagation = m.propagation();
    let check = |wanted: &'static str, ok: &[&str]| -> Result<(), SpecError> {
        let (mp, opts) = mount_of(&host.mountinfo, &src).unwrap_or(("/", Vec::new()));
        if opts.iter().any(|o| ok.iter().any(|p| o.starts_with(p))) {
            Ok(())
        } else {
            Err(SpecError::Propagation {
                container_path: dst.clone(),
                host_path: src.clone(),
                mountpoint: mp.to_string(),
                wanted,
            })
        }
    };
    match propagation {
        MountPropagation::PropagationPrivate => options.push("rprivate".into()),
        MountPropagation::PropagationBidirectional => {
            check("shared", &["shared:"])?;
            options.push("rshared".into());
            *rootfs_propagation = Some("rshared");
        }
        MountPropagation::PropagationHostToContainer => {
            check("shared or slave", &["shared:", "master:"])?;
            options.push("rslave".into());
            if rootfs_propagation.is_none() {
                *rootfs_propagation = Some("rslave");
            }
        }
    }
    options.push(if m.readonly { "ro" } else { "rw" }.into());
    if m.recursive_read_only {
        if !m.readonly {
            return Err(invalid(field, "recursive_read_only needs readonly"));
        }
        if propagation != MountPropagation::PropagationPrivate {
            return Err(invalid(
                field,
                "recursive_read_only needs propagation PROPAGATION_PRIVATE",
            ));
        }
        options.push("rro".into());
    }
    let mut out = json!({
        "destination": dst,
        "type": "bind",
        "source": src,
        "options": options,
    });
    let map = |v: &[cri::IdMapping]| -> Value {
        v.iter()
            .map(|x| json!({"containerID": x.container_id, "hostID": x.host_id, "size": x.length}))
            .collect()
    };
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        if m.uid_mappings.is_empty() || m.gid_mappings.is_empty() {
            return Err(invalid(
                field,
                "an idmapped mount needs both uid and gid mappings",
            ));
        }
        out["uidMappings"] = map(&m.uid_mappings);
        out["gidMappings"] = map(&m.gid_mappings);
    }
    Ok(out)
}

/// The spec's mounts: the defaults not overridden, then the CRI mounts and husk-cri's own
/// (/etc/hostname, /etc/hosts, /etc/resolv.conf, /dev/shm) sorted by depth (containerd's
/// WithMounts).
fn mounts(
    cfg: &cri::ContainerConfig,
    sc: &cri::LinuxContainerSecurityContext,
    files_dir: &Path,
    ipc_host: bool,
    privileged: bool,
    host: &Host,
    rootfs_propagation: &mut Option<&'static str>,
) -> Result<Vec<Value>, SpecError> {
    let mut supplied: Vec<cri::Mount> = cfg.mounts.clone();
    let in_cri = |p: &str| cfg.mounts.iter().any(|m| clean(&m.container_path) == p);
    let own = [
        (
            "/etc/hostname",
            files_dir.join("hostname"),
            sc.readonly_rootfs,
        ),
        ("/etc/hosts", files_dir.join("hosts"), sc.readonly_rootfs),
        (
            "/etc/resolv.conf",
            files_dir.join("resolv.conf"),
            sc.readonly_rootfs,
        ),
        (
            "/dev/shm",
            if ipc_host {
                PathBuf::from("/dev/shm")
            } else {
                files_dir.join("shm")
            },
            false,
        ),
    ];
    for (dst, src, ro) in own {
        if in_cri(dst) || !src.exists() {
            continue;
        }
        supplied.push(cri::Mount {
            container_path: dst.to_string(),
            host_path: src.to_string_lossy().into_owned(),
            readonly: ro,
            ..Default::default()
        });
    }
    // Stable sort by the number of components of the cleaned destination.
    supplied.sort_by_key(|m| clean(&m.container_path).split('/').count());
    let dsts: Vec<String> = supplied.iter().map(|m| clean(&m.container_path)).collect();
    let dev_supplied = dsts.iter().any(|d| d == "/dev");

    let base = husk::spec::default_spec(false);
    let mut out = Vec::new();
    for mut m in base["mounts"].as_array().cloned().unwrap_or_default() {
        let d = clean(m["destination"].as_str().unwrap_or(""));
        if dsts.contains(&d) || (dev_supplied && d.starts_with("/dev/")) {
            continue;
        }
        if privileged && (m["type"] == "sysfs" || m["type"] == "cgroup") {
            // containerd's WithWriteableSysfs / WithWriteableCgroupfs.
            if let Some(opts) = m["options"].as_array_mut() {
                for o in opts.iter_mut() {
                    if o == "ro" {
                        *o = json!("rw");
                    }
                }
            }
        }
        out.push(m);
    }
    for m in &supplied {
        out.push(bind_mount(m, host, rootfs_propagation)?);
    }
    Ok(out)
}

/// Adds the bind mounts of image VOLUMEs (destination, host directory the caller created),
/// each before the first mount nested under it so that nested mounts stay on top.
pub fn add_image_volumes(spec: &mut Value, volumes: &[(String, PathBuf)]) {
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return;
    };
    for (dst, src) in volumes {
        let dst = clean(dst);
        let prefix = format!("{}/", dst.trim_end_matches('/'));
        let m = json!({
            "destination": dst,
            "type": "bind",
            "source": src,
            "options": ["rbind", "rprivate", "rw"],
        });
        match mounts.iter().position(|x| {
            x["destination"]
                .as_str()
                .is_some_and(|d| clean(d).starts_with(&prefix))
        }) {
            Some(i) => mounts.insert(i, m),
            None => mounts.push(m),
        }
    }
}

fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// The spec device of the device node at `host` (None when it is not a device).
fn device_at(host: &Path, container_path: &str) -> Option<Value> {
    let md = std::fs::metadata(host).ok()?;
    let ft = md.file_type();
    let ty = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return None;
    };
    Some(json!({
        "path": container_path,
        "type": ty,
        "major": dev_major(md.rdev()),
        "minor": dev_minor(md.rdev()),
        "fileMode": md.mode() & 0o7777,
        "uid": md.uid(),
        "gid": md.gid(),
    }))
}

fn push_device(devs: &mut Vec<Value>, d: Value) {
    match devs.iter_mut().find(|x| x["path"] == d["path"]) {
        Some(x) => *x = d,
        None => devs.push(d),
    }
}

/// Every device under `dir` (containerd's HostDevices: pts, shm, fd, mqueue and a few tool
/// directories skipped, and /dev/console).
fn host_devices(dir: &Path) -> Result<Vec<Value>, SpecError> {
    let mut out = Vec::new();
    walk_devices(dir, dir, "/dev", &mut out, 0)?;
    Ok(out)
}

fn walk_devices(
    root: &Path,
    dir: &Path,
    container_root: &str,
    out: &mut Vec<Value>,
    depth: usize,
) -> Result<(), SpecError> {
    if depth > 8 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Io {
        field: "devices".into(),
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let cpath = format!(
            "{}/{}",
            container_root.trim_end_matches('/'),
            rel.to_string_lossy()
        );
        if ft.is_dir() {
            if matches!(
                name.as_str(),
                "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
            ) {
                continue;
            }
            walk_devices(root, &path, container_root, out, depth + 1)?;
        } else if name == "console" || ft.is_symlink() {
            continue;
        } else if let Some(d) = device_at(&path, &cpath) {
            out.push(d);
        }
    }
    Ok(())
}

/// The CRI devices as (spec device, cgroup rule) pairs.
fn requested_devices(cfg: &cri::ContainerConfig) -> Result<Vec<(Value, Value)>, SpecError> {
    let mut out = Vec::new();
    for d in &cfg.devices {
        let field = format!("device {}", d.host_path);
        let perms = if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        };
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(
                field,
                format!(
                    "permissions {:?}: only r, w and m are allowed",
                    d.permissions
                ),
            ));
        }
        let cpath = if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        };
        if !cpath.starts_with("/dev/") || cpath.contains("/../") || cpath.ends_with("/..") {
            return Err(invalid(
                field,
                format!("container_path {cpath:?} must be an absolute path under /dev"),
            ));
        }
        let host = std::fs::canonicalize(&d.host_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SpecError::NotFound {
                    field: field.clone(),
                    path: PathBuf::from(&d.host_path),
                }
            } else {
                SpecError::Io {
                    field: field.clone(),
                    path: PathBuf::from(&d.host_path),
                    source: e,
                }
            }
        })?;
        let mut found = Vec::new();
        if host.is_dir() {
            walk_devices(&host, &host, &cpath, &mut found, 0)?;
        } else if let Some(dev) = device_at(&host, &cpath) {
            found.push(dev);
        } else {
            return Err(invalid(field, "not a device node"));
        }
        for dev in found {
            let rule = json!({
                "allow": true,
                "type": dev["type"],
                "major": dev["major"],
                "minor": dev["minor"],
                "access": perms,
            });
            out.push((dev, rule));
        }
    }
    Ok(out)
}

/// `linux.resources` for the CRI resources (without device rules), for CreateContainer and
/// UpdateContainerResources: only the values that are set.
pub fn linux_resources(r: &cri::LinuxContainerResources) -> Value {
    let host = Host::probe();
    resources_json(r, host.swap, host.hugetlb)
}

fn resources_json(r: &cri::LinuxContainerResources, swap: bool, hugetlb: bool) -> Value {
    let mut out = Map::new();
    let mut cpu = Map::new();
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    let mut mem = Map::new();
    if r.memory_limit_in_bytes != 0 {
        mem.insert("limit".into(), json!(r.memory_limit_in_bytes));
        if swap && r.memory_swap_limit_in_bytes == 0 {
            // No swap beyond the memory limit unless asked (containerd).
            mem.insert("swap".into(), json!(r.memory_limit_in_bytes));
        }
    }
    if swap && r.memory_swap_limit_in_bytes != 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !mem.is_empty() {
        out.insert("memory".into(), Value::Object(mem));
    }
    if !r.hugepage_limits.is_empty() {
        if hugetlb {
            let h: Vec<Value> = r
                .hugepage_limits
                .iter()
                .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
                .collect();
            out.insert("hugepageLimits".into(), Value::Array(h));
        } else {
            tracing::warn!("hugetlb cgroup controller is absent: hugepage limits skipped");
        }
    }
    if !r.unified.is_empty() {
        let u: Map<String, Value> = r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        out.insert("unified".into(), Value::Object(u));
    }
    Value::Object(out)
}

/// Checks pod sysctls as runc/containerd would apply them: only namespaced sysctls (IPC:
/// kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*; network: net.* only with the pod's own
/// network namespace), and no value or key that could smuggle another assignment
/// (CVE-2022-0811: '=', '+', newlines).
pub fn validate_sysctls(
    sysctls: &HashMap<String, String>,
    namespaces: &cri::NamespaceOption,
) -> Result<(), SpecError> {
    for (k, v) in sysctls {
        let field = format!("sysctls {k:?}");
        if k.is_empty()
            || k.contains("..")
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            return Err(invalid(field, "malformed sysctl name"));
        }
        if v.contains('=')
            || v.contains('+')
            || v.contains('\n')
            || v.contains('\r')
            || v.contains('\0')
        {
            return Err(invalid(
                field,
                format!("value {v:?} contains '=', '+', a newline or a NUL"),
            ));
        }
        let key = k.replace('/', ".");
        let ipc = matches!(
            key.as_str(),
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        ) || key.starts_with("fs.mqueue.");
        if ipc {
            if namespaces.ipc() == NamespaceMode::Node {
                return Err(invalid(
                    field,
                    "an IPC sysctl needs the pod's own IPC namespace",
                ));
            }
        } else if key.starts_with("net.") {
            if namespaces.network() == NamespaceMode::Node {
                return Err(invalid(
                    field,
                    "a network sysctl needs the pod's own network namespace",
                ));
            }
        } else {
            return Err(invalid(
                field,
                "not a namespaced sysctl; refusing to change the node's",
            ));
        }
    }
    Ok(())
}

/// The runtime-spec `process` of an exec in the container: the container's process (user,
/// env, cwd, capabilities, NNP, rlimits, LSM labels) with `cmd` as args and a terminal when
/// `tty` (with TERM=xterm, as containerd's exec).
pub fn exec_process(spec: &Value, cmd: &[String], tty: bool) -> Value {
    let mut p = match spec.get("process") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": [DEFAULT_PATH_ENV]}),
    };
    p["args"] = json!(cmd);
    p["terminal"] = json!(tty);
    if let Some(o) = p.as_object_mut() {
        o.remove("consoleSize");
    }
    if tty {
        let mut env: Vec<String> = p["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        set_env(&mut env, "TERM=xterm".into());
        p["env"] = json!(env);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri::security_profile::ProfileType;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        files: PathBuf,
        layers: Vec<PathBuf>,
        pod: cri::PodSandboxConfig,
        ns: cri::NamespaceOption,
        image: ImageConfig,
        host: Host,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let files = root.join("files");
        std::fs::create_dir_all(files.join("shm")).unwrap();
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(files.join(f), f).unwrap();
        }
        let layer = root.join("layer0");
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(layer.join("etc/group"), "root:x:0:\nwheel:x:10:root\n").unwrap();
        let pod = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-pod".into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod1".into(),
                security_context: Some(cri::LinuxSandboxSecurityContext::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let image = ImageConfig {
            user: String::new(),
            env: vec!["PATH=/image/bin:/bin".into(), "LANG=C".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            working_dir: "/srv".into(),
            exposed_ports: vec![],
            volumes: vec!["/data".into(), "/cache/".into()],
            labels: Default::default(),
            stop_signal: "SIGQUIT".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
        };
        let mountinfo = format!(
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
             2 1 0:40 / {root}/shared rw shared:7 - tmpfs tmpfs rw\n\
             3 1 0:41 / {root}/slave rw master:3 - tmpfs tmpfs rw\n",
            root = root.display()
        );
        Fixture {
            _tmp: tmp,
            files,
            layers: vec![layer],
            pod,
            ns: cri::NamespaceOption::default(),
            image,
            host: Host {
                hostname: "node-1".into(),
                cgroup2: false,
                swap: true,
                hugetlb: true,
                oom_score_adj: -999,
                caps: ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
                mountinfo,
            },
            root,
        }
    }

    fn config() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxContainerConfig {
                resources: None,
                security_context: Some(cri::LinuxContainerSecurityContext::default()),
            }),
            ..Default::default()
        }
    }

    fn sc_mut(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn run(f: &Fixture, c: &cri::ContainerConfig) -> Result<BuiltSpec, SpecError> {
        run_target(f, c, None)
    }

    fn run_target(
        f: &Fixture,
        c: &cri::ContainerConfig,
        target_pid: Option<u32>,
    ) -> Result<BuiltSpec, SpecError> {
        let sandbox = SandboxRef {
            id: "sb1",
            config: &f.pod,
            pid: std::process::id(),
            namespaces: &f.ns,
            cgroup_parent: "/kubepods/pod1",
            files_dir: &f.files,
            target_pid,
        };
        let image = ImageRef {
            name: "docker.io/library/app:1",
            config: &f.image,
            layers: &f.layers,
        };
        build_with("c1", c, &sandbox, &image, &f.host)
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mount<'a>(s: &'a Value, dst: &str) -> Option<&'a Value> {
        s["mounts"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["destination"] == dst))
    }

    fn ns_types(s: &Value) -> Vec<(String, Option<String>)> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["type"].as_str().unwrap().to_string(),
                    n["path"].as_str().map(String::from),
                )
            })
            .collect()
    }

    fn code(e: SpecError) -> tonic::Code {
        tonic::Status::from(e).code()
    }

    #[test]
    fn args_follow_containerd() {
        let f = fixture();
        let mut c = config();
        let args = |c: &cri::ContainerConfig| strs(&run(&f, c).unwrap().spec["process"]["args"]);
        assert_eq!(args(&c), ["/entry", "serve", "--port=80"]);
        c.args = vec!["other".into()];
        assert_eq!(args(&c), ["/entry", "other"]);
        c.command = vec!["/bin/sh".into()];
        c.args = vec![];
        assert_eq!(args(&c), ["/bin/sh"], "a command drops the image cmd");
        c.args = vec!["-c".into(), "true".into()];
        assert_eq!(args(&c), ["/bin/sh", "-c", "true"]);
        let mut f2 = fixture();
        f2.image.entrypoint = vec![String::new()];
        assert_eq!(
            strs(&run(&f2, &config()).unwrap().spec["process"]["args"]),
            ["serve", "--port=80"]
        );
        f2.image.cmd.clear();
        let e = run(&f2, &config()).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        assert_eq!(code(e), tonic::Code::InvalidArgument);
    }

    #[test]
    fn env_cwd_terminal() {
        let f = fixture();
        let mut c = config();
        c.envs = vec![
            cri::KeyValue {
                key: "LANG".into(),
                value: "en_US.UTF-8".into(),
            },
            cri::KeyValue {
                key: "EXTRA".into(),
                value: "a=b".into(),
            },
        ];
        c.tty = true;
        let s = run(&f, &c).unwrap().spec;
        assert_eq!(
            strs(&s["process"]["env"]),
            [
                "PATH=/image/bin:/bin",
                "TERM=xterm",
                "HOSTNAME=web-pod",
                "LANG=en_US.UTF-8",
                "EXTRA=a=b"
            ]
        );
        assert_eq!(s["process"]["terminal"], true);
        assert_eq!(s["process"]["cwd"], "/srv");
        assert!(
            s.get("hostname").is_none(),
            "the sandbox's UTS namespace has it"
        );
        assert!(s["process"].get("rlimits").is_none());
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));

        let mut f2 = fixture();
        f2.pod.hostname.clear();
        f2.image.working_dir.clear();
        let mut c = config();
        c.working_dir = "/work".into();
        let s = run(&f2, &c).unwrap().spec;
        assert!(strs(&s["process"]["env"]).contains(&"HOSTNAME=node-1".to_string()));
        assert_eq!(s["process"]["terminal"], false);
        assert_eq!(s["process"]["cwd"], "/work");
        assert_eq!(run(&f2, &config()).unwrap().spec["process"]["cwd"], "/");
        c.working_dir = "rel".into();
        assert_eq!(
            code(run(&f2, &c).unwrap_err()),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn namespaces_follow_the_pod() {
        let mut f = fixture();
        let pid = std::process::id();
        let s = run(&f, &config()).unwrap().spec;
        assert_eq!(
            ns_types(&s),
            vec![
                ("network".into(), Some(format!("/proc/{pid}/ns/net"))),
                ("uts".into(), Some(format!("/proc/{pid}/ns/uts"))),
                ("ipc".into(), Some(format!("/proc/{pid}/ns/ipc"))),
                ("pid".into(), Some(format!("/proc/{pid}/ns/pid"))),
                ("mount".into(), None),
            ]
        );
        // Pod ipc: /dev/shm is the pod's.
        assert_eq!(
            mount(&s, "/dev/shm").unwrap()["source"],
            json!(f.files.join("shm"))
        );

        // Host network and IPC: none of those namespaces; the host's /dev/shm.
        f.ns.network = NamespaceMode::Node as i32;
        f.ns.ipc = NamespaceMode::Node as i32;
        f.host.cgroup2 = true;
        let s = run(&f, &config()).unwrap().spec;
        let t = ns_types(&s);
        assert_eq!(
            t.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["pid", "mount", "cgroup"]
        );
        assert_eq!(mount(&s, "/dev/shm").unwrap()["source"], "/dev/shm");

        // Container pid modes.
        let mut c = config();
        sc_mut(&mut c).namespace_options = Some(cri::NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        });
        assert!(ns_types(&run(&f, &c).unwrap().spec).contains(&("pid".into(), None)));
        sc_mut(&mut c).namespace_options = Some(cri::NamespaceOption {
            pid: NamespaceMode::Node as i32,
            ..Default::default()
        });
        assert!(!ns_types(&run(&f, &c).unwrap().spec)
            .iter()
            .any(|n| n.0 == "pid"));
        sc_mut(&mut c).namespace_options = Some(cri::NamespaceOption {
            pid: NamespaceMode::Target as i32,
            target_id: "other".into(),
            ..Default::default()
        });
        assert!(ns_types(&run_target(&f, &c, Some(4242)).unwrap().spec)
            .contains(&("pid".into(), Some("/proc/4242/ns/pid".into()))));
        let e = run_target(&f, &c, None).unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        assert_eq!(code(e), tonic::Code::NotFound);

        // Pod pid namespace on the host: the container shares it.
        f.ns.pid = NamespaceMode::Node as i32;
        assert!(!ns_types(&run(&f, &config()).unwrap().spec)
            .iter()
            .any(|n| n.0 == "pid"));
    }

    #[test]
    fn own_files_and_cri_mounts() {
        let f = fixture();
        let mut c = config();
        let data = f.root.join("vol");
        let created = f.root.join("made/by/us");
        let shared = f.root.join("shared");
        let slave = f.root.join("slave");
        for d in [&data, &shared, &slave] {
            std::fs::create_dir_all(d).unwrap();
        }
        let link = f.root.join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        c.mounts = vec![
            cri::Mount {
                container_path: "/var/lib/x/y".into(),
                host_path: created.display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/var/lib/x".into(),
                host_path: link.display().to_string(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: f.files.join("hostname").display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/bidi".into(),
                host_path: shared.display().to_string(),
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/h2c".into(),
                host_path: slave.display().to_string(),
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
        ];
        sc_mut(&mut c).readonly_rootfs = true;
        let b = run(&f, &c).unwrap();
        let s = &b.spec;
        assert_eq!(b.mounts, c.mounts, "the request's mounts are echoed");
        assert!(created.is_dir(), "a missing host path is created");
        let x = mount(s, "/var/lib/x").unwrap();
        assert_eq!(x["source"], json!(data), "symlinks resolved");
        assert_eq!(strs(&x["options"]), ["rbind", "rprivate", "ro", "rro"]);
        assert_eq!(
            strs(&mount(s, "/bidi").unwrap()["options"]),
            ["rbind", "rshared", "rw"]
        );
        assert_eq!(
            strs(&mount(s, "/h2c").unwrap()["options"]),
            ["rbind", "rslave", "rw"]
        );
        assert_eq!(s["linux"]["rootfsPropagation"], "rshared");
        // Own files: read-only with a read-only rootfs; the CRI /etc/hosts wins.
        let h = mount(s, "/etc/hostname").unwrap();
        assert_eq!(h["source"], json!(f.files.join("hostname")));
        assert_eq!(strs(&h["options"]), ["rbind", "rprivate", "ro"]);
        assert_eq!(
            mount(s, "/etc/hosts").unwrap()["source"],
            json!(f.files.join("hostname"))
        );
        assert_eq!(
            strs(&mount(s, "/dev/shm").unwrap()["options"]),
            ["rbind", "rprivate", "rw"]
        );
        assert_eq!(s["root"]["readonly"], true);
        // One mount per destination; nested mounts after their parents.
        let dsts: Vec<String> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(dsts.iter().filter(|d| *d == "/dev/shm").count(), 1);
        assert_eq!(dsts.iter().filter(|d| *d == "/etc/hosts").count(), 1);
        let pos = |d: &str| dsts.iter().position(|x| x == d).unwrap();
        assert!(pos("/var/lib/x") < pos("/var/lib/x/y"));
        assert!(pos("/proc") < pos("/var/lib/x"));
        // Image volumes not covered by a mount.
        assert_eq!(b.image_volumes, ["/data", "/cache"]);
        assert_eq!(b.stop_signal, "SIGQUIT");
    }

    #[test]
    fn mount_errors() {
        let f = fixture();
        let private = f.root.join("private");
        std::fs::create_dir_all(&private).unwrap();
        let cases: Vec<(cri::Mount, tonic::Code)> = vec![
            (
                cri::Mount {
                    container_path: "rel".into(),
                    host_path: private.display().to_string(),
                    ..Default::default()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Mount {
                    container_path: "/a/../b".into(),
                    host_path: private.display().to_string(),
                    ..Default::default()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Mount {
                    container_path: "/x".into(),
                    host_path: private.display().to_string(),
                    propagation: MountPropagation::PropagationBidirectional as i32,
                    ..Default::default()
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                cri::Mount {
                    container_path: "/x".into(),
                    host_path: private.display().to_string(),
                    propagation: MountPropagation::PropagationHostToContainer as i32,
                    ..Default::default()
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                cri::Mount {
                    container_path: "/x".into(),
                    host_path: private.display().to_string(),
                    recursive_read_only: true,
                    ..Default::default()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Mount {
                    container_path: "/x".into(),
                    host_path: f.root.join("shared").display().to_string(),
                    readonly: true,
                    recursive_read_only: true,
                    propagation: MountPropagation::PropagationBidirectional as i32,
                    ..Default::default()
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Mount {
                    container_path: "/x".into(),
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                tonic::Code::InvalidArgument,
            ),
        ];
        std::fs::create_dir_all(f.root.join("shared")).unwrap();
        for (m, want) in cases {
            let mut c = config();
            c.mounts = vec![m.clone()];
            let e = run(&f, &c).expect_err(&format!("{m:?}"));
            assert!(e.to_string().contains(&m.container_path), "{e}");
            assert_eq!(code(e), want, "{m:?}");
        }
    }

    #[test]
    fn a_dev_mount_replaces_the_dev_defaults() {
        let f = fixture();
        let mut c = config();
        c.mounts = vec![cri::Mount {
            container_path: "/dev".into(),
            host_path: f.root.display().to_string(),
            ..Default::default()
        }];
        let s = run(&f, &c).unwrap().spec;
        for d in ["/dev/pts", "/dev/mqueue"] {
            assert!(mount(&s, d).is_none(), "{d}");
        }
        assert_eq!(mount(&s, "/dev").unwrap()["type"], "bind");
        // The pod's /dev/shm still goes on top (containerd adds it unless /dev/shm itself is
        // a CRI mount); the runtime's tmpfs default is gone.
        let shm = mount(&s, "/dev/shm").unwrap();
        assert_eq!(shm["type"], "bind");
        assert_eq!(shm["source"], json!(f.files.join("shm")));
    }

    #[test]
    fn devices() {
        let f = fixture();
        let mut c = config();
        c.devices = vec![cri::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }];
        let s = run(&f, &c).unwrap().spec;
        let d = &s["linux"]["devices"][0];
        assert_eq!(
            (d["path"].as_str(), d["type"].as_str()),
            (Some("/dev/mynull"), Some("c"))
        );
        assert_eq!(
            (d["major"].as_u64(), d["minor"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}
            ])
        );
        for (dev, want) in [
            (
                cri::Device {
                    container_path: "/dev/x".into(),
                    host_path: "/dev/null".into(),
                    permissions: "rwx".into(),
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Device {
                    container_path: "/etc/x".into(),
                    host_path: "/dev/null".into(),
                    permissions: "r".into(),
                },
                tonic::Code::InvalidArgument,
            ),
            (
                cri::Device {
                    container_path: "/dev/x".into(),
                    host_path: "/dev/husk-no-such".into(),
                    permissions: "r".into(),
                },
                tonic::Code::NotFound,
            ),
            (
                cri::Device {
                    container_path: "/dev/x".into(),
                    host_path: "/etc/hostname".into(),
                    permissions: "r".into(),
                },
                tonic::Code::InvalidArgument,
            ),
        ] {
            let mut c = config();
            c.devices = vec![dev.clone()];
            assert_eq!(
                code(run(&f, &c).expect_err(&format!("{dev:?}"))),
                want,
                "{dev:?}"
            );
        }
        assert_eq!(dev_major(0x0000_0000_0000_0103), 1);
        assert_eq!(dev_minor(0x0000_0000_0000_0103), 3);
        assert_eq!(dev_major(0x0000_1000_0000_0000), 0x1000);
        assert_eq!(dev_minor(0x0000_0000_0010_0000), 0x100);
    }

    #[test]
    fn capabilities_as_containerd() {
        let f = fixture();
        let caps =
            |c: &cri::ContainerConfig| run(&f, c).unwrap().spec["process"]["capabilities"].clone();
        let d = caps(&config());
        assert_eq!(strs(&d["bounding"]), DEFAULT_CAPABILITIES);
        assert_eq!(d["effective"], d["bounding"]);
        assert_eq!(d["permitted"], d["bounding"]);
        assert_eq!(d["inheritable"], json!([]));
        assert_eq!(d["ambient"], json!([]));
        let mut c = config();
        sc_mut(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into(), "cap_sys_admin".into()],
            drop_capabilities: vec!["net_raw".into()],
            add_ambient_capabilities: vec![],
        });
        let b = strs(&caps(&c)["bounding"]);
        assert!(b.contains(&"CAP_NET_ADMIN".into()) && b.contains(&"CAP_SYS_ADMIN".into()));
        assert!(!b.contains(&"CAP_NET_RAW".into()));
        sc_mut(&mut c).capabilities = Some(cri::Capability {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        assert_eq!(caps(&c)["bounding"], json!([]));
        sc_mut(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["all".into()],
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        });
        let b = strs(&caps(&c)["bounding"]);
        assert_eq!(b.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!b.contains(&"CAP_CHOWN".into()));
        sc_mut(&mut c).capabilities = Some(cri::Capability {
            add_ambient_capabilities: vec!["NET_BIND_SERVICE".into(), "SYS_TIME".into()],
            ..Default::default()
        });
        let v = caps(&c);
        assert_eq!(
            strs(&v["ambient"]),
            ["CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"]
        );
        assert_eq!(v["inheritable"], v["ambient"]);
        assert!(strs(&v["bounding"]).contains(&"CAP_SYS_TIME".into()));
        sc_mut(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["CAP_BOGUS".into()],
            ..Default::default()
        });
        let e = run(&f, &c).unwrap_err();
        assert!(e.to_string().contains("CAP_BOGUS"), "{e}");
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        assert_eq!(caps_from_mask(0b101), ["CAP_CHOWN", "CAP_DAC_READ_SEARCH"]);
    }

    #[test]
    fn security_profiles_and_paths() {
        let f = fixture();
        let mut c = config();
        let s = run(&f, &c).unwrap().spec;
        assert!(s["linux"].get("seccomp").is_none(), "unset = unconfined");
        assert_eq!(s["linux"]["maskedPaths"], json!([]));
        assert_eq!(s["linux"]["readonlyPaths"], json!([]));
        let sc = sc_mut(&mut c);
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        sc.capabilities = Some(cri::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        });
        sc.masked_paths = vec!["/proc/kcore".into()];
        sc.readonly_paths = vec!["/proc/sys".into()];
        sc.no_new_privs = true;
        let s = run(&f, &c).unwrap().spec;
        let sec = &s["linux"]["seccomp"];
        assert_eq!(sec["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<String> = sec["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| strs(&r["names"]))
            .collect();
        assert!(
            allowed.contains(&"mount".to_string()),
            "CAP_SYS_ADMIN opens mount"
        );
        assert_eq!(s["linux"]["maskedPaths"], json!(["/proc/kcore"]));
        assert_eq!(s["linux"]["readonlyPaths"], json!(["/proc/sys"]));
        assert_eq!(s["process"]["noNewPrivileges"], true);
        // AppArmor cannot be honoured here.
        sc_mut(&mut c).apparmor = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "p".into(),
        });
        assert_eq!(
            code(run(&f, &c).unwrap_err()),
            tonic::Code::FailedPrecondition
        );
        sc_mut(&mut c).apparmor = None;
        sc_mut(&mut c).masked_paths = vec!["proc/kcore".into()];
        assert_eq!(code(run(&f, &c).unwrap_err()), tonic::Code::InvalidArgument);
    }

    #[test]
    fn privileged() {
        let mut f = fixture();
        let mut c = config();
        let sc = sc_mut(&mut c);
        sc.privileged = true;
        sc.masked_paths = vec!["/proc/kcore".into()];
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "/no/such.json".into(),
        });
        sc.capabilities = Some(cri::Capability {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        let e = run(&f, &c).unwrap_err();
        assert!(matches!(e, SpecError::PrivilegedNotAllowed { .. }), "{e}");
        f.pod
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        f.host.cgroup2 = true;
        let s = run(&f, &c).unwrap().spec;
        assert_eq!(
            strs(&s["process"]["capabilities"]["bounding"]).len(),
            ALL_CAPABILITIES.len()
        );
        assert_eq!(s["linux"]["maskedPaths"], json!([]));
        assert!(s["linux"].get("seccomp").is_none());
        assert!(!ns_types(&s).iter().any(|n| n.0 == "cgroup"));
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert!(s["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == "/dev/null"));
        assert!(strs(&mount(&s, "/sys").unwrap()["options"]).contains(&"rw".into()));
        assert!(strs(&mount(&s, "/sys/fs/cgroup").unwrap()["options"]).contains(&"rw".into()));
    }

    #[test]
    fn resources_and_oom() {
        let f = fixture();
        let mut c = config();
        let mut unified = HashMap::new();
        unified.insert("memory.high".to_string(), "1000000".to_string());
        c.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -1000,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified,
            memory_swap_limit_in_bytes: 0,
        });
        let s = run(&f, &c).unwrap().spec;
        let r = &s["linux"]["resources"];
        assert_eq!(
            r["cpu"],
            json!({"period": 100000, "quota": 50000, "shares": 512, "cpus": "0", "mems": "0"})
        );
        assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(
            r["hugepageLimits"],
            json!([{"pageSize": "2MB", "limit": 0}])
        );
        assert_eq!(r["unified"], json!({"memory.high": "1000000"}));
        assert_eq!(r["devices"][0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(
            s["process"]["oomScoreAdj"], -999,
            "never below husk-cri's own"
        );
        let mut r2 = cri::LinuxContainerResources {
            memory_swap_limit_in_bytes: 128 << 20,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        assert_eq!(
            resources_json(&r2, true, true)["memory"],
            json!({"limit": 64 << 20, "swap": 128 << 20})
        );
        assert_eq!(
            resources_json(&r2, false, true)["memory"],
            json!({"limit": 64 << 20})
        );
        r2.hugepage_limits = vec![cri::HugepageLimit {
            page_size: "1GB".into(),
            limit: 1,
        }];
        assert!(resources_json(&r2, false, false)
            .get("hugepageLimits")
            .is_none());
        assert_eq!(resources_json(&Default::default(), true, true), json!({}));
        assert!(linux_resources(&Default::default()).is_object());
        // No resources: no oomScoreAdj.
        assert!(run(&f, &config()).unwrap().spec["process"]
            .get("oomScoreAdj")
            .is_none());
    }

    #[test]
    fn identity_annotations_cgroup() {
        let f = fixture();
        let mut c = config();
        let sc = sc_mut(&mut c);
        sc.run_as_username = "nobody".into();
        sc.supplemental_groups = vec![1234];
        let b = run(&f, &c).unwrap();
        assert_eq!(
            b.spec["process"]["user"],
            json!({"uid": 65534, "gid": 65534, "additionalGids": [1234, 65534]})
        );
        assert_eq!(b.user.username, "nobody");
        assert_eq!(b.spec["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
        assert_eq!(
            b.spec["annotations"],
            json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "sb1",
                "io.kubernetes.cri.sandbox-namespace": "default",
                "io.kubernetes.cri.sandbox-uid": "uid-1",
                "io.kubernetes.cri.sandbox-name": "web",
                "io.kubernetes.cri.container-name": "app",
                "io.kubernetes.cri.image-name": "docker.io/library/app:1",
            })
        );
        let mut c = config();
        sc_mut(&mut c).run_as_group = Some(cri::Int64Value { value: 5 });
        assert_eq!(code(run(&f, &c).unwrap_err()), tonic::Code::InvalidArgument);
        let mut c = config();
        sc_mut(&mut c).run_as_username = "ghost".into();
        assert_eq!(code(run(&f, &c).unwrap_err()), tonic::Code::NotFound);
        let mut c = config();
        c.metadata = None;
        assert_eq!(code(run(&f, &c).unwrap_err()), tonic::Code::InvalidArgument);
    }

    #[test]
    fn image_volumes_are_added_under_nested_mounts() {
        let mut s = json!({"mounts": [
            {"destination": "/proc"},
            {"destination": "/data/sub"},
        ]});
        add_image_volumes(
            &mut s,
            &[
                ("/data/".into(), PathBuf::from("/v/1")),
                ("/cache".into(), PathBuf::from("/v/2")),
            ],
        );
        let d: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(d, ["/proc", "/data", "/data/sub", "/cache"]);
        assert_eq!(
            s["mounts"][1]["options"],
            json!(["rbind", "rprivate", "rw"])
        );
    }

    #[test]
    fn sysctls() {
        let pod = cri::NamespaceOption::default();
        let host_net = cri::NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..Default::default()
        };
        let one = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        validate_sysctls(&one("net.ipv4.ip_forward", "1"), &pod).unwrap();
        validate_sysctls(&one("kernel.shm_rmid_forced", "1"), &pod).unwrap();
        validate_sysctls(&one("fs.mqueue.msg_max", "100"), &pod).unwrap();
        validate_sysctls(&one("net/ipv4/ip_forward", "1"), &pod).unwrap();
        for (k, v, ns) in [
            ("net.ipv4.ip_forward", "1", &host_net),
            (
                "kernel.shmmax",
                "1",
                &cri::NamespaceOption {
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                },
            ),
            ("vm.swappiness", "1", &pod),
            ("kernel.hostname", "x", &pod),
            ("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/x", &pod),
            ("kernel.shm_rmid_forced", "1\nkernel.core_pattern=x", &pod),
            ("net..x", "1", &pod),
            ("net.ipv4.conf.all.x y", "1", &pod),
        ] {
            let e = validate_sysctls(&one(k, v), ns).expect_err(k);
            assert_eq!(code(e), tonic::Code::InvalidArgument, "{k}={v}");
        }
    }

    #[test]
    fn exec_process_copies_the_container_process() {
        let f = fixture();
        let mut c = config();
        sc_mut(&mut c).no_new_privs = true;
        let s = run(&f, &c).unwrap().spec;
        let p = exec_process(&s, &["ls".to_string(), "-l".to_string()], true);
        assert_eq!(strs(&p["args"]), ["ls", "-l"]);
        assert_eq!(p["terminal"], true);
        assert_eq!(p["user"], s["process"]["user"]);
        assert_eq!(p["capabilities"], s["process"]["capabilities"]);
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["noNewPrivileges"], true);
        assert!(strs(&p["env"]).contains(&"TERM=xterm".into()));
        let p = exec_process(&s, &["true".to_string()], false);
        assert_eq!(p["terminal"], false);
        assert_eq!(p["env"], s["process"]["env"]);
        let p = exec_process(&json!({}), &["true".to_string()], false);
        assert_eq!(p["cwd"], "/");
    }

    #[test]
    fn mountinfo_lookup() {
        let mi = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                  2 1 0:4 / /a rw shared:1 master:2 - tmpfs t rw\n\
                  3 2 0:5 / /a/b rw - tmpfs t rw\n\
                  garbage\n";
        assert_eq!(
            mount_of(mi, Path::new("/a/x")),
            Some(("/a", vec!["shared:1", "master:2"]))
        );
        assert_eq!(mount_of(mi, Path::new("/a/b/c")), Some(("/a/b", vec![])));
        assert_eq!(mount_of(mi, Path::new("/ab")), Some(("/", vec![])));
        assert_eq!(clean("/a//b/../c/"), "/a/c");
        assert_eq!(clean("/"), "/");
    }

    /// A spec built for a typical kubelet request is accepted by husk's own config checks,
    /// and its seccomp profile compiles.
    #[test]
    fn kubelet_request_passes_husk_validation() {
        let f = fixture();
        let log = f.root.join("termination-log");
        std::fs::write(&log, "").unwrap();
        let sa = f.root.join("serviceaccount");
        std::fs::create_dir_all(&sa).unwrap();
        let mut c = config();
        c.command = vec!["/bin/sh".into(), "-c".into()];
        c.args = vec!["sleep 1000".into()];
        c.envs = vec![cri::KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: "10.0.0.1".into(),
        }];
        c.mounts = vec![
            cri::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: log.display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                host_path: sa.display().to_string(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
        ];
        c.log_path = "app/0.log".into();
        c.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            cpu_period: 100000,
            cpu_shares: 2,
            oom_score_adj: 1000,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        });
        let sc = sc_mut(&mut c);
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        sc.capabilities = Some(cri::Capability {
            drop_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        });
        sc.masked_paths = [
            "/proc/asound",
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ]
        .map(String::from)
        .to_vec();
        sc.readonly_paths = [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]
        .map(String::from)
        .to_vec();
        sc.namespace_options = Some(cri::NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        });
        let b = build(
            "c1",
            &c,
            &SandboxRef {
                id: "sb1",
                config: &f.pod,
                pid: std::process::id(),
                namespaces: &f.ns,
                cgroup_parent: "/kubepods/pod1",
                files_dir: &f.files,
                target_pid: None,
            },
            &ImageRef {
                name: "busybox",
                config: &f.image,
                layers: &f.layers,
            },
        )
        .unwrap();
        assert_eq!(b.spec["process"]["oomScoreAdj"], 1000);
        assert_eq!(b.spec["process"]["user"]["uid"], 1000);
        let bundle = f.root.join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&b.spec).unwrap(),
        )
        .unwrap();
        if let Err(e) = husk::spec::load_bundle(&bundle) {
            panic!(
                "husk refuses the spec: {e}\n{}",
                serde_json::to_string_pretty(&b.spec).unwrap()
            );
        }
        let seccomp = husk::seccomp::parse_seccomp(&b.spec["linux"]["seccomp"]).unwrap();
        husk::seccomp::compile(&seccomp).unwrap();
        // The exec process passes the runtime's process checks too.
        let p = exec_process(&b.spec, &["id".to_string()], true);
        let mut exec_spec = b.spec.clone();
        exec_spec["process"] = p;
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&exec_spec).unwrap(),
        )
        .unwrap();
        husk::spec::load_bundle(&bundle).unwrap();
    }
}
