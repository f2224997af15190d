//! Loading and validating a bundle's config.json. Everything that can be checked before any
//! kernel object is created is checked here, so a bad config leaves nothing behind.
use crate::error::{Context, Error, Result};
use crate::namespaces::NsPlan;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::path::{Path, PathBuf};

/// The OCI runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

/// A loaded bundle: its absolute directory, the parsed spec and the absolute rootfs path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

/// Read `<bundle>/config.json`, parse it and validate it.
pub fn load_bundle(dir: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(dir).ctx(|| format!("bundle {}", dir.display()))?;
    let path = dir.join("config.json");
    let data = std::fs::read(&path).ctx(|| format!("read {}", path.display()))?;
    let spec: Spec = serde_json::from_slice(&data)
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root: missing (root.path is required)"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let rootfs =
        std::fs::canonicalize(&rootfs).ctx(|| format!("root.path {}", rootfs.display()))?;
    if !rootfs.is_dir() {
        return Err(Error::config(format!(
            "root.path {}: not a directory",
            rootfs.display()
        )));
    }
    validate(&spec)?;
    Ok(Bundle { dir, spec, rootfs })
}

/// Check the parts of a spec that the runtime relies on. Returns the first problem found, naming
/// the field.
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process: missing"))?;
    validate_process(process)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux: missing (required on Linux)"))?;
    validate_linux(spec, linux)
}

/// The checks on a process that hold for the init and for exec'd processes alike.
pub fn validate_process(process: &oci_spec::runtime::Process) -> Result<()> {
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(Error::config("process.args: must not be empty")),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::config(format!(
            "process.cwd {:?}: must be an absolute path",
            process.cwd()
        )));
    }
    if let Some(s) = process.scheduler() {
        validate_scheduler(s)?;
    }
    if let Some(env) = process.env() {
        for e in env {
            if !e.contains('=') {
                return Err(Error::config(format!(
                    "process.env {e:?}: expected KEY=VALUE"
                )));
            }
        }
    }
    Ok(())
}

/// process.scheduler: the kernel's SCHED_DEADLINE rules (sched_setattr(2)), checked before
/// anything exists so the error names the fields rather than being sched_setattr's bare EINVAL
/// from inside a half-made container (as crun does).
fn validate_scheduler(s: &oci_spec::runtime::Scheduler) -> Result<()> {
    use oci_spec::runtime::LinuxSchedulerPolicy;
    if *s.policy() != LinuxSchedulerPolicy::SchedDeadline {
        return Ok(());
    }
    let runtime = s.runtime().unwrap_or(0);
    let deadline = s.deadline().unwrap_or(0);
    // The kernel takes a period of 0 as "equal to the deadline".
    let period = s.period().unwrap_or(0);
    let bad = |why: String| {
        Err(Error::config(format!(
            "process.scheduler: SCHED_DEADLINE {why} (runtime {runtime}, deadline {deadline}, period {period}; the kernel requires 1024 <= runtime <= deadline <= period, in nanoseconds)"
        )))
    };
    if deadline == 0 {
        return bad("needs a deadline".into());
    }
    if runtime < 1024 {
        return bad(format!("runtime {runtime} is below 1024 ns"));
    }
    if runtime > deadline {
        return bad(format!(
            "runtime {runtime} is greater than deadline {deadline}"
        ));
    }
    if period != 0 && deadline > period {
        return bad(format!(
            "deadline {deadline} is greater than period {period}"
        ));
    }
    // The kernel also refuses values with bit 63 set (they overflow its arithmetic).
    if (deadline | period) & (1 << 63) != 0 {
        return bad("deadline or period is too large (bit 63 set)".into());
    }
    Ok(())
}

fn validate_linux(spec: &Spec, linux: &oci_spec::runtime::Linux) -> Result<()> {
    let plan = NsPlan::from_spec(spec)?;

    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            validate_mount(i, m)?;
        }
    }
    if (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()))
        && !plan.has(LinuxNamespaceType::User)
    {
        return Err(Error::config(
            "linux.uidMappings/gidMappings: given without a user namespace",
        ));
    }
    if plan.is_new(LinuxNamespaceType::User)
        && (linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
    {
        return Err(Error::config(
            "linux.uidMappings/gidMappings: a new user namespace needs both mappings",
        ));
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !plan.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::config(
            "hostname: cannot set a hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty())
        && !plan.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::config(
            "domainname: cannot set a domainname without a private UTS namespace",
        ));
    }
    // Without a mount namespace the container shares the runtime's (see hostmounts): allowed,
    // except with a new user namespace, whose root cannot mount in the runtime's namespace.
    if !plan.has(LinuxNamespaceType::Mount) && plan.is_new(LinuxNamespaceType::User) {
        return Err(Error::config(
            "linux.namespaces: a new user namespace needs a mount namespace too (without one the container's mounts would be made in the runtime's mount namespace, which the new user namespace's root may not change)",
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        for (k, v) in sysctl {
            validate_sysctl(k, v, &plan)?;
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        crate::rootfs::propagation_flags(p)?;
    }
    if let Some(hooks) = spec.hooks() {
        let all = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in all {
            for h in list.iter().flatten() {
                if !h.path().is_absolute() {
                    return Err(Error::config(format!(
                        "hooks.{name}: path {:?} must be absolute",
                        h.path()
                    )));
                }
                if h.timeout().is_some_and(|t| t <= 0) {
                    return Err(Error::config(format!(
                        "hooks.{name}: timeout of {:?} must be positive",
                        h.path()
                    )));
                }
            }
        }
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty())
        && !plan.is_new(LinuxNamespaceType::Network)
    {
        return Err(Error::config(
            "linux.netDevices: needs a new network namespace",
        ));
    }
    if let Some(p) = linux.memory_policy() {
        crate::procattr::parse_nodes(p.nodes().as_deref().unwrap_or(""))?;
    }
    if linux.intel_rdt().is_some() && !Path::new("/sys/fs/resctrl/schemata").exists() {
        return Err(Error::Unsupported(
            "linux.intelRdt: resctrl is not mounted on this host (/sys/fs/resctrl)".into(),
        ));
    } else if linux.intel_rdt().is_some() {
        return Err(Error::Unsupported(
            "linux.intelRdt: not supported by husk yet".into(),
        ));
    }
    if let Some(devs) = linux.devices() {
        for d in devs {
            if !d.path().is_absolute() || !d.path().starts_with("/dev") {
                return Err(Error::config(format!(
                    "linux.devices: path {:?} must be absolute and under /dev",
                    d.path()
                )));
            }
        }
    }
    Ok(())
}

fn validate_mount(i: usize, m: &Mount) -> Result<()> {
    let d = m.destination();
    if !d.is_absolute() {
        return Err(Error::config(format!(
            "mounts[{i}].destination {d:?}: must be an absolute path"
        )));
    }
    if d.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::config(format!(
            "mounts[{i}].destination {d:?}: must not contain '..'"
        )));
    }
    for o in m.options().iter().flatten() {
        crate::rootfs::MountOpt::parse(o)
            .map_err(|e| Error::config(format!("mounts[{i}] ({}): {e}", d.display())))?;
    }
    Ok(())
}

/// Only namespaced sysctls are allowed, and only when the container has its own namespace of
/// that kind (runc's rules).
fn validate_sysctl(key: &str, value: &str, plan: &NsPlan) -> Result<()> {
    if value.contains('=') || value.contains('+') || value.contains('\n') {
        return Err(Error::config(format!(
            "linux.sysctl {key:?}: value {value:?} contains '=', '+' or a newline"
        )));
    }
    if key.contains("..") || key.contains('/') && key.contains('.') || key.is_empty() {
        return Err(Error::config(format!(
            "linux.sysctl {key:?}: malformed key"
        )));
    }
    let k = key.replace('/', ".");
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if ipc.contains(&k.as_str()) || k.starts_with("fs.mqueue.") {
        if !plan.is_new(LinuxNamespaceType::Ipc) && !plan.is_joined(LinuxNamespaceType::Ipc) {
            return Err(Error::config(format!(
                "linux.sysctl {key:?}: needs a private IPC namespace"
            )));
        }
        return Ok(());
    }
    if k.starts_with("net.") {
        if !plan.is_new(LinuxNamespaceType::Network) && !plan.is_joined(LinuxNamespaceType::Network)
        {
            return Err(Error::config(format!(
                "linux.sysctl {key:?}: needs a private network namespace"
            )));
        }
        return Ok(());
    }
    if k == "kernel.hostname" || k == "kernel.domainname" {
        if !plan.is_new(LinuxNamespaceType::Uts) {
            return Err(Error::config(format!(
                "linux.sysctl {key:?}: needs a private UTS namespace"
            )));
        }
        return Ok(());
    }
    Err(Error::config(format!(
        "linux.sysctl {key:?}: not a namespaced sysctl, refusing to change the host's"
    )))
}

/// The config.json `husk spec` writes: runc's default (busybox-friendly `sh` with a terminal),
/// or with `rootless` a user namespace mapping the caller and no network namespace.
pub fn default_spec(rootless: bool) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "husk",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if rootless {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}]);
        v["linux"]["resources"] = serde_json::json!({});
        let mounts = v["mounts"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut out = Vec::new();
        for mut m in mounts {
            if m["destination"] == "/sys" {
                m = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
            if m["destination"] == "/dev/pts" {
                m["options"] = serde_json::json!([
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620"
                ]);
            }
            if m["destination"] == "/sys/fs/cgroup" {
                continue;
            }
            out.push(m);
        }
        v["mounts"] = serde_json::Value::Array(out);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}]}
        })
    }

    fn check(v: serde_json::Value) -> Result<()> {
        let spec: Spec = serde_json::from_value(v).map_err(|e| Error::config(e.to_string()))?;
        validate(&spec)
    }

    #[test]
    fn base_is_valid() {
        check(base()).unwrap();
    }

    #[test]
    fn relative_mount_destination_is_refused() {
        let mut v = base();
        v["mounts"] =
            serde_json::json!([{"destination": "tmp", "type": "tmpfs", "source": "tmpfs"}]);
        let e = check(v).unwrap_err().to_string();
        assert!(e.contains("mounts[0].destination"), "{e}");
    }

    #[test]
    fn unknown_namespace_is_refused() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "bogus"}]);
        assert!(check(v).is_err());
    }

    #[test]
    fn sysctl_rules() {
        let plan_spec: Spec = serde_json::from_value(base()).unwrap();
        let plan = NsPlan::from_spec(&plan_spec).unwrap();
        assert!(validate_sysctl("kernel.shmmax", "1000", &plan).is_ok());
        assert!(validate_sysctl("kernel.shmmax", "a=b", &plan).is_err());
        assert!(validate_sysctl("net.ipv4.ip_forward", "1", &plan).is_err());
        assert!(validate_sysctl("vm.swappiness", "1", &plan).is_err());
    }

    #[test]
    fn hostname_needs_uts() {
        let mut v = base();
        v["hostname"] = serde_json::json!("x");
        assert!(check(v).unwrap_err().to_string().contains("hostname"));
    }

    #[test]
    fn sched_deadline_fields_are_checked_before_anything_exists() {
        let sched = |runtime: u64, deadline: u64, period: u64| {
            let mut v = base();
            v["process"]["scheduler"] = serde_json::json!({
                "policy": "SCHED_DEADLINE", "runtime": runtime, "deadline": deadline, "period": period
            });
            check(v).map_err(|e| e.to_string())
        };
        let e = sched(2_000_000, 1_000_000, 10_000_000).unwrap_err();
        assert!(
            e.contains("runtime 2000000 is greater than deadline 1000000"),
            "{e}"
        );
        let e = sched(1_000_000, 20_000_000, 10_000_000).unwrap_err();
        assert!(
            e.contains("deadline 20000000 is greater than period 10000000"),
            "{e}"
        );
        assert!(sched(100, 1_000_000, 0).unwrap_err().contains("below 1024"));
        assert!(sched(42_000, 0, 0)
            .unwrap_err()
            .contains("needs a deadline"));
        sched(42_000, 100_000, 1_000_000).unwrap();
        // period 0 means "the deadline" to the kernel
        sched(42_000, 100_000, 0).unwrap();
        // the other policies do not use these fields
        let mut v = base();
        v["process"]["scheduler"] =
            serde_json::json!({"policy": "SCHED_BATCH", "runtime": 5, "deadline": 1});
        check(v).unwrap();
    }

    #[test]
    fn no_mount_namespace_is_valid_unless_a_user_namespace_is_new() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
        check(v.clone()).unwrap();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "user"}]);
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let e = check(v).unwrap_err().to_string();
        assert!(
            e.contains("a new user namespace needs a mount namespace"),
            "{e}"
        );
    }

    #[test]
    fn empty_args_refused() {
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        assert!(check(v).is_err());
    }
}
