//! Security profiles: seccomp (RuntimeDefault, Localhost, Unconfined) and AppArmor, with the
//! semantics of containerd's CRI plugin.
//!
//! - Seccomp: a `SecurityProfile` message wins over the deprecated path string. No message and
//!   an empty path means unconfined (containerd's `unset_seccomp_profile` default); a message
//!   with the zero profile type is RuntimeDefault. Privileged containers get no filter.
//!   RuntimeDefault is containerd's DefaultProfile, kept as a table in `runtime_default.json`
//!   and specialised for the machine, the kernel and the container's bounding set.
//!   Localhost profiles are runtime-spec `linux.seccomp` objects read from an absolute path.
//! - AppArmor: husk-cri applies no AppArmor profile, so it answers as containerd does on a host
//!   without AppArmor: unconfined (or nothing asked) is fine, anything else is refused.
use k8s_cri::v1 as cri;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cri::security_profile::ProfileType;

/// The prefix of legacy `localhost/<path>` profile strings.
const LOCALHOST_PREFIX: &str = "localhost/";
/// Largest Localhost seccomp profile read (Docker's whole default profile is ~20 KiB).
const MAX_PROFILE_BYTES: u64 = 4 << 20;
/// The table behind [`runtime_default_profile`].
const RUNTIME_DEFAULT_TABLE: &str = include_str!("runtime_default.json");

/// Errors of security profile handling; each names the profile or file involved.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{kind} profile {profile:?}: {reason}")]
    InvalidProfile {
        kind: &'static str,
        profile: String,
        reason: String,
    },
    #[error("seccomp profile {path}: not found")]
    ProfileNotFound { path: PathBuf },
    #[error("seccomp profile {path}: {source}")]
    ProfileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp profile {path}: {reason}")]
    ProfileMalformed { path: PathBuf, reason: String },
    #[error("apparmor profile {profile:?} requested, but apparmor is not enabled on this host (husk-cri applies no AppArmor profiles)")]
    AppArmorNotEnabled { profile: String },
}

impl From<SecurityError> for tonic::Status {
    fn from(e: SecurityError) -> Self {
        let msg = e.to_string();
        match e {
            SecurityError::InvalidProfile { .. } | SecurityError::ProfileMalformed { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            SecurityError::ProfileNotFound { .. } => tonic::Status::not_found(msg),
            SecurityError::ProfileRead { .. } => tonic::Status::internal(msg),
            SecurityError::AppArmorNotEnabled { .. } => tonic::Status::failed_precondition(msg),
        }
    }
}

/// A profile request after the legacy string form has been folded into the message form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

/// Folds the `SecurityProfile` message (preferred) or the deprecated path string into one
/// request; `None` when nothing was asked.
fn wanted(
    kind: &'static str,
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
) -> Result<Option<Wanted>, SecurityError> {
    if let Some(p) = profile {
        let ty =
            ProfileType::try_from(p.profile_type).map_err(|_| SecurityError::InvalidProfile {
                kind,
                profile: format!("profile_type {}", p.profile_type),
                reason: "unknown profile type".into(),
            })?;
        if ty != ProfileType::Localhost && !p.localhost_ref.is_empty() {
            return Err(SecurityError::InvalidProfile {
                kind,
                profile: p.localhost_ref.clone(),
                reason: "localhost_ref must only be set if profile_type is Localhost".into(),
            });
        }
        return Ok(Some(match ty {
            ProfileType::Unconfined => Wanted::Unconfined,
            ProfileType::RuntimeDefault => Wanted::RuntimeDefault,
            ProfileType::Localhost => {
                let r = p
                    .localhost_ref
                    .strip_prefix(LOCALHOST_PREFIX)
                    .unwrap_or(&p.localhost_ref);
                if r.is_empty() {
                    return Err(SecurityError::InvalidProfile {
                        kind,
                        profile: p.localhost_ref.clone(),
                        reason: "profile_type Localhost needs a localhost_ref".into(),
                    });
                }
                Wanted::Localhost(r.to_string())
            }
        }));
    }
    match deprecated {
        "" => Ok(None),
        "unconfined" => Ok(Some(Wanted::Unconfined)),
        "runtime/default" | "docker/default" => Ok(Some(Wanted::RuntimeDefault)),
        s => match s.strip_prefix(LOCALHOST_PREFIX) {
            Some(r) if !r.is_empty() => Ok(Some(Wanted::Localhost(r.to_string()))),
            _ => Err(SecurityError::InvalidProfile {
                kind,
                profile: s.to_string(),
                reason: "expected \"unconfined\", \"runtime/default\", \"docker/default\" or \"localhost/<profile>\"".into(),
            }),
        },
    }
}

/// The `linux.seccomp` of a container: `None` for no filter.
///
/// `caps` is the container's final bounding set (`CAP_*` names); RuntimeDefault opens the
/// syscalls those capabilities are meant to grant, as containerd does.
pub fn seccomp_for(
    profile: Option<&cri::SecurityProfile>,
    deprecated_path: &str,
    privileged: bool,
    caps: &[String],
) -> Result<Option<Value>, SecurityError> {
    if privileged {
        // containerd: "Do not set seccomp profile when container is privileged", whatever asked.
        return Ok(None);
    }
    match wanted("seccomp", profile, deprecated_path)? {
        None | Some(Wanted::Unconfined) => Ok(None),
        Some(Wanted::RuntimeDefault) => Ok(Some(runtime_default_profile(caps))),
        Some(Wanted::Localhost(path)) => load_localhost(Path::new(&path)).map(Some),
    }
}

/// Reads a Localhost seccomp profile: a runtime-spec `linux.seccomp` object. Fields outside
/// the runtime-spec (Docker's `archMap`, `includes`, comments ...) are dropped as containerd's
/// Go unmarshalling drops them; what remains must pass husk's own seccomp parser.
fn load_localhost(path: &Path) -> Result<Value, SecurityError> {
    use std::io::Read;
    if !path.is_absolute() {
        return Err(SecurityError::InvalidProfile {
            kind: "seccomp",
            profile: path.display().to_string(),
            reason: "a Localhost profile must be an absolute path on the node".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SecurityError::ProfileNotFound {
            path: path.to_path_buf(),
        },
        _ => SecurityError::ProfileRead {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut data = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| SecurityError::ProfileRead {
            path: path.to_path_buf(),
            source: e,
        })?;
    if data.len() as u64 > MAX_PROFILE_BYTES {
        return Err(SecurityError::ProfileMalformed {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_PROFILE_BYTES} bytes"),
        });
    }
    let raw: Value =
        serde_json::from_slice(&data).map_err(|e| SecurityError::ProfileMalformed {
            path: path.to_path_buf(),
            reason: format!("not JSON: {e}"),
        })?;
    let Value::Object(obj) = raw else {
        return Err(SecurityError::ProfileMalformed {
            path: path.to_path_buf(),
            reason: "expected a JSON object (a runtime-spec linux.seccomp)".into(),
        });
    };
    let mut out = Map::new();
    for key in [
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
    ] {
        if let Some(v) = obj.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    if !out.contains_key("defaultAction") {
        return Err(SecurityError::ProfileMalformed {
            path: path.to_path_buf(),
            reason: "defaultAction is missing".into(),
        });
    }
    if let Some(syscalls) = obj.get("syscalls") {
        let Value::Array(list) = syscalls else {
            return Err(SecurityError::ProfileMalformed {
                path: path.to_path_buf(),
                reason: "syscalls must be an array".into(),
            });
        };
        let kept: Vec<Value> = list
            .iter()
            .map(|sc| match sc {
                Value::Object(m) => {
                    let mut e = Map::new();
                    for key in ["names", "action", "errnoRet", "args"] {
                        if let Some(v) = m.get(key) {
                            e.insert(key.to_string(), v.clone());
                        }
                    }
                    Value::Object(e)
                }
                other => other.clone(),
            })
            .collect();
        out.insert("syscalls".into(), Value::Array(kept));
    }
    let out = Value::Object(out);
    husk::seccomp::parse_seccomp(&out).map_err(|e| SecurityError::ProfileMalformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    tracing::debug!(path = %path.display(), "loaded localhost seccomp profile");
    Ok(out)
}

/// The parsed `runtime_default.json` table.
fn table() -> &'static Value {
    static TABLE: OnceLock<Value> = OnceLock::new();
    TABLE.get_or_init(|| {
        // A constant of this crate, checked by the unit tests: never input.
        serde_json::from_str(RUNTIME_DEFAULT_TABLE)
            .expect("security/runtime_default.json is valid JSON")
    })
}

/// The architecture husk-cri was built for (containerd uses its GOARCH the same way).
fn machine() -> &'static str {
    std::env::consts::ARCH
}

/// The running kernel's (major, minor), or `None` when it cannot be read.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_version(release.trim())
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// containerd's RuntimeDefault seccomp profile (a runtime-spec `linux.seccomp` object) for
/// this machine's architecture and a container whose bounding set is `caps`.
pub fn runtime_default_profile(caps: &[String]) -> Value {
    profile_for(caps, machine(), kernel_version())
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    }
}

fn profile_for(caps: &[String], machine: &str, kernel: Option<(u32, u32)>) -> Value {
    let t = table();
    let has_cap = |c: &str| caps.iter().any(|x| x.eq_ignore_ascii_case(c));
    // The table's machine keys are canonical names; map the usual aliases onto them.
    let arch = match machine {
        "amd64" => "x86_64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        "arm64" | "armv8l" => "aarch64",
        "ppc64le" | "ppc64" => "powerpc64",
        m if m.starts_with("arm") => "arm",
        m => m,
    };
    let mut syscalls = Vec::new();
    if let Some(Value::Array(rules)) = t.get("rules") {
        for rule in rules {
            let if_arch = str_list(rule.get("ifArch"));
            if !if_arch.is_empty() && !if_arch.contains(&arch) {
                continue;
            }
            if str_list(rule.get("unlessArch")).contains(&arch) {
                continue;
            }
            if !str_list(rule.get("ifCap")).into_iter().all(has_cap) {
                continue;
            }
            if str_list(rule.get("unlessCap")).into_iter().any(has_cap) {
                continue;
            }
            if let Some(min) = rule.get("minKernel").and_then(Value::as_str) {
                // An unknown kernel version keeps the rule (every supported kernel is newer).
                if let (Some(have), Some(need)) = (kernel, parse_version(min)) {
                    if have < need {
                        continue;
                    }
                }
            }
            let mut e = Map::new();
            for key in ["names", "action", "errnoRet", "args"] {
                if let Some(v) = rule.get(key) {
                    e.insert(key.to_string(), v.clone());
                }
            }
            syscalls.push(Value::Object(e));
        }
    }
    let arches = t
        .get("architectures")
        .and_then(|a| a.get(if arch == "arm" { "aarch64" } else { arch }))
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    serde_json::json!({
        "defaultAction": t.get("defaultAction").cloned().unwrap_or(Value::Null),
        "defaultErrnoRet": t.get("defaultErrnoRet").cloned().unwrap_or(Value::Null),
        "architectures": arches,
        "syscalls": syscalls,
    })
}

/// Checks an AppArmor request as a node without AppArmor answers it (containerd with
/// AppArmor disabled): nothing asked or Unconfined is fine; RuntimeDefault or a Localhost
/// profile cannot be honoured and fails the container's creation.
pub fn check_apparmor(
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
) -> Result<(), SecurityError> {
    match wanted("apparmor", profile, deprecated)? {
        None | Some(Wanted::Unconfined) => Ok(()),
        Some(Wanted::RuntimeDefault) => Err(SecurityError::AppArmorNotEnabled {
            profile: "runtime/default".into(),
        }),
        Some(Wanted::Localhost(name)) => Err(SecurityError::AppArmorNotEnabled {
            profile: format!("{LOCALHOST_PREFIX}{name}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

    fn default_caps() -> Vec<String> {
        [
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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn sp(ty: ProfileType, r: &str) -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: ty as i32,
            localhost_ref: r.to_string(),
        }
    }

    fn compile(v: &Value) -> husk::seccomp::CompiledFilter {
        let parsed = husk::seccomp::parse_seccomp(v).expect("profile parses");
        husk::seccomp::compile(&parsed).expect("profile compiles")
    }

    fn action(f: &husk::seccomp::CompiledFilter, nr: i64, args: [u64; 6]) -> u32 {
        f.evaluate(nr as u32, AUDIT_ARCH_X86_64, args)
            .expect("the program returns")
    }

    fn names_of(v: &Value) -> Vec<String> {
        v["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r.get("args").is_none() && r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    }

    #[test]
    fn table_is_valid_and_matches_containerd_shape() {
        let p = profile_for(&default_caps(), "x86_64", Some((6, 1)));
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(
            p["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = names_of(&p);
        assert!(allowed.len() > 340, "{}", allowed.len());
        for n in ["read", "write", "execve", "arch_prctl", "chroot", "ptrace"] {
            assert!(allowed.iter().any(|a| a == n), "{n} allowed");
        }
        for n in [
            "mount",
            "unshare",
            "reboot",
            "init_module",
            "kexec_load",
            "bpf",
            "keyctl",
        ] {
            assert!(!allowed.iter().any(|a| a == n), "{n} not allowed");
        }
        // personality arguments, the clone mask, clone3 → ENOSYS, the vsock rule.
        let rules = p["syscalls"].as_array().expect("syscalls");
        let personality: Vec<u64> = rules
            .iter()
            .filter(|r| r["names"][0] == "personality")
            .filter_map(|r| r["args"][0]["value"].as_u64())
            .collect();
        assert_eq!(personality, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        assert!(rules
            .iter()
            .any(|r| r["names"][0] == "clone" && r["args"][0]["value"] == 2114060288u64));
        assert!(rules
            .iter()
            .any(|r| r["names"][0] == "clone3" && r["errnoRet"] == 38));
        assert!(rules
            .iter()
            .any(|r| r["names"][0] == "socket" && r["args"][0]["op"] == "SCMP_CMP_NE"));
        // Table metadata never reaches the spec.
        assert!(rules.iter().all(|r| r.get("ifCap").is_none()
            && r.get("unlessCap").is_none()
            && r.get("comment").is_none()));
    }

    #[test]
    fn default_profile_compiles_and_enforces_on_x86_64() {
        let f = compile(&profile_for(&default_caps(), "x86_64", Some((6, 1))));
        let z = [0u64; 6];
        assert_eq!(action(&f, libc::SYS_getpid, z), SECCOMP_RET_ALLOW);
        assert_eq!(action(&f, libc::SYS_mount, z), SECCOMP_RET_ERRNO | 1);
        assert_eq!(action(&f, libc::SYS_unshare, z), SECCOMP_RET_ERRNO | 1);
        assert_eq!(action(&f, libc::SYS_clone3, z), SECCOMP_RET_ERRNO | 38);
        // clone: plain thread/fork flags pass, a namespace flag is refused.
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u64;
        assert_eq!(
            action(&f, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        let newns = libc::CLONE_NEWNS as u64;
        assert_eq!(
            action(&f, libc::SYS_clone, [newns, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ERRNO | 1
        );
        // socket: AF_INET allowed, AF_VSOCK refused.
        assert_eq!(
            action(&f, libc::SYS_socket, [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            action(&f, libc::SYS_socket, [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]),
            SECCOMP_RET_ERRNO | 1
        );
        // personality(PER_LINUX) allowed, anything else refused.
        assert_eq!(action(&f, libc::SYS_personality, z), SECCOMP_RET_ALLOW);
        assert_eq!(
            action(&f, libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
            SECCOMP_RET_ERRNO | 1
        );
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = default_caps();
        caps.push("CAP_SYS_ADMIN".into());
        caps.push("CAP_SYS_PTRACE".into());
        caps.push("CAP_SYS_MODULE".into());
        let p = profile_for(&caps, "x86_64", Some((6, 1)));
        let allowed = names_of(&p);
        for n in [
            "mount",
            "unshare",
            "setns",
            "sethostname",
            "clone",
            "clone3",
            "kcmp",
            "init_module",
        ] {
            assert!(allowed.iter().any(|a| a == n), "{n} allowed with the caps");
        }
        let rules = p["syscalls"].as_array().expect("syscalls");
        assert!(
            !rules
                .iter()
                .any(|r| r["names"][0] == "clone3" && r["action"] == "SCMP_ACT_ERRNO"),
            "no clone3 ENOSYS with CAP_SYS_ADMIN"
        );
        let f = compile(&p);
        let z = [0u64; 6];
        assert_eq!(action(&f, libc::SYS_mount, z), SECCOMP_RET_ALLOW);
        assert_eq!(action(&f, libc::SYS_unshare, z), SECCOMP_RET_ALLOW);
        assert_eq!(
            action(
                &f,
                libc::SYS_clone,
                [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]
            ),
            SECCOMP_RET_ALLOW
        );
        // Without CAP_SYS_CHROOT, chroot goes.
        let p = profile_for(&["CAP_KILL".to_string()], "x86_64", Some((6, 1)));
        assert!(!names_of(&p).iter().any(|a| a == "chroot"));
    }

    #[test]
    fn arch_and_kernel_conditions() {
        let p = profile_for(&default_caps(), "aarch64", Some((6, 1)));
        assert_eq!(
            p["architectures"],
            serde_json::json!(["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"])
        );
        let allowed = names_of(&p);
        assert!(allowed.iter().any(|a| a == "set_tls"));
        assert!(!allowed.iter().any(|a| a == "arch_prctl"));
        let old = profile_for(&default_caps(), "x86_64", Some((4, 4)));
        assert!(!names_of(&old).iter().any(|a| a == "ptrace"));
        assert_eq!(parse_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn native_profile_compiles() {
        compile(&runtime_default_profile(&default_caps()));
    }

    #[test]
    fn seccomp_branches() {
        let caps = default_caps();
        // Nothing asked → unconfined.
        assert!(seccomp_for(None, "", false, &caps).unwrap().is_none());
        // A message with the zero type → RuntimeDefault.
        let rd = sp(ProfileType::RuntimeDefault, "");
        let v = seccomp_for(Some(&rd), "", false, &caps)
            .unwrap()
            .expect("a profile");
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        // Unconfined.
        let un = sp(ProfileType::Unconfined, "");
        assert!(seccomp_for(Some(&un), "", false, &caps).unwrap().is_none());
        // Privileged wins over anything.
        assert!(seccomp_for(Some(&rd), "", true, &caps).unwrap().is_none());
        let missing = sp(ProfileType::Localhost, "/nonexistent/p.json");
        assert!(seccomp_for(Some(&missing), "", true, &caps)
            .unwrap()
            .is_none());
        // Legacy strings; the message wins over the string.
        for s in ["runtime/default", "docker/default"] {
            assert!(seccomp_for(None, s, false, &caps).unwrap().is_some(), "{s}");
        }
        assert!(seccomp_for(None, "unconfined", false, &caps)
            .unwrap()
            .is_none());
        assert!(seccomp_for(Some(&un), "runtime/default", false, &caps)
            .unwrap()
            .is_none());
        let e = seccomp_for(None, "bogus", false, &caps).unwrap_err();
        assert!(matches!(e, SecurityError::InvalidProfile { .. }), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        // localhost_ref with another type.
        let bad = sp(ProfileType::RuntimeDefault, "/x.json");
        assert!(seccomp_for(Some(&bad), "", false, &caps).is_err());
        // Unknown type number.
        let weird = cri::SecurityProfile {
            profile_type: 42,
            localhost_ref: String::new(),
        };
        assert!(seccomp_for(Some(&weird), "", false, &caps).is_err());
    }

    #[test]
    fn localhost_profiles() {
        let caps = default_caps();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("block-chmod.json");
        std::fs::write(
            &good,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "comment": "x",
                "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "comment": "y"}]}"#,
        )
        .unwrap();
        let p = sp(ProfileType::Localhost, good.to_str().unwrap());
        let v = seccomp_for(Some(&p), "", false, &caps)
            .unwrap()
            .expect("profile");
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(v.get("comment").is_none());
        assert!(v["syscalls"][0].get("comment").is_none());
        let f = compile(&v);
        assert_eq!(
            f.evaluate(libc::SYS_chmod as u32, AUDIT_ARCH_X86_64, [0; 6]),
            Some(SECCOMP_RET_ERRNO | libc::EPERM as u32)
        );
        // Legacy localhost/<path>, and the prefix inside localhost_ref.
        let legacy = format!("localhost/{}", good.display());
        assert!(seccomp_for(None, &legacy, false, &caps).unwrap().is_some());
        let prefixed = sp(ProfileType::Localhost, &legacy);
        assert!(seccomp_for(Some(&prefixed), "", false, &caps)
            .unwrap()
            .is_some());

        // Missing file → NotFound naming the path.
        let missing = dir.path().join("missing.json");
        let p = sp(ProfileType::Localhost, missing.to_str().unwrap());
        let e = seccomp_for(Some(&p), "", false, &caps).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::NotFound);

        // Malformed: not JSON, unknown action, no defaultAction.
        for (name, body) in [
            ("a.json", "{not json"),
            ("b.json", r#"{"defaultAction": "SCMP_ACT_NOPE"}"#),
            ("c.json", r#"{"syscalls": []}"#),
            ("d.json", r#"[1, 2]"#),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let p = sp(ProfileType::Localhost, path.to_str().unwrap());
            let e = seccomp_for(Some(&p), "", false, &caps).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        }
        // Relative path and empty ref.
        let rel = sp(ProfileType::Localhost, "profiles/x.json");
        assert!(matches!(
            seccomp_for(Some(&rel), "", false, &caps),
            Err(SecurityError::InvalidProfile { .. })
        ));
        let empty = sp(ProfileType::Localhost, "");
        assert!(seccomp_for(Some(&empty), "", false, &caps).is_err());
    }

    #[test]
    fn apparmor_on_a_host_without_it() {
        check_apparmor(None, "").unwrap();
        check_apparmor(None, "unconfined").unwrap();
        check_apparmor(Some(&sp(ProfileType::Unconfined, "")), "").unwrap();
        let e = check_apparmor(Some(&sp(ProfileType::Localhost, "my-profile")), "").unwrap_err();
        assert!(e.to_string().contains("localhost/my-profile"), "{e}");
        assert!(e.to_string().contains("apparmor is not enabled"), "{e}");
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::FailedPrecondition
        );
        assert!(check_apparmor(Some(&sp(ProfileType::RuntimeDefault, "")), "").is_err());
        assert!(check_apparmor(None, "runtime/default").is_err());
        assert!(check_apparmor(None, "localhost/foo").is_err());
        let e = check_apparmor(None, "nonsense").unwrap_err();
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        // The message wins over the deprecated string.
        check_apparmor(Some(&sp(ProfileType::Unconfined, "")), "localhost/foo").unwrap();
    }
}
