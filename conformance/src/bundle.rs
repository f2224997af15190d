//! Bundles: a busybox rootfs template built once per run (from the host's busybox-static and the
//! embedded static validator), copied per case with hard links, and the base config.json.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The statically linked validator built by build.rs.
pub static VALIDATOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oci-validate"));

/// Where the validator and its inputs live inside the container.
pub const VDIR: &str = "/.oci-validate";
pub const VALIDATOR_PATH: &str = "/.oci-validate/oci-validate";

pub fn mkdir_mode(p: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, p.display()))?;
    Ok(())
}

/// Build the rootfs template at `dir`: /bin/busybox + applet symlinks, the validator, a few
/// directories and /etc/passwd, /etc/group.
pub fn build_template(dir: &Path, busybox: &Path) -> Result<()> {
    if !busybox.exists() {
        bail!(
            "{} not found: install busybox-static (a statically linked busybox)",
            busybox.display()
        );
    }
    for d in [
        "", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home", "mnt",
        "proc", "sys", "dev", "var", "run",
    ] {
        mkdir_mode(&dir.join(d), 0o755)?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))
        .context("chmod rootfs/tmp")?;
    fs::copy(busybox, dir.join("bin/busybox"))
        .with_context(|| format!("copy {} into the rootfs template", busybox.display()))?;
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("{} --list-full", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list-full failed", busybox.display());
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = dir.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    mkdir_mode(&dir.join(&VDIR[1..]), 0o755)?;
    let v = dir.join(&VALIDATOR_PATH[1..]);
    fs::write(&v, VALIDATOR).with_context(|| format!("write {}", v.display()))?;
    fs::set_permissions(&v, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", v.display()))?;
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nhc:x:1000:1000:hc:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .context("write rootfs/etc/passwd")?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nhc:x:1000:\nhc1:x:1001:\nhc2:x:1002:\nnogroup:x:65534:\n",
    )
    .context("write rootfs/etc/group")?;
    Ok(())
}

/// Copy a template tree: directories are created, symlinks recreated, files hard-linked
/// (falling back to a copy).
pub fn clone_tree(src: &Path, dst: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("lstat {}", src.display()))?;
    fs::create_dir_all(dst).with_context(|| format!("mkdir {}", dst.display()))?;
    fs::set_permissions(dst, md.permissions())
        .with_context(|| format!("chmod {}", dst.display()))?;
    for ent in fs::read_dir(src).with_context(|| format!("readdir {}", src.display()))? {
        let ent = ent.with_context(|| format!("readdir {}", src.display()))?;
        let from = ent.path();
        let to = dst.join(ent.file_name());
        let ft = ent
            .file_type()
            .with_context(|| format!("lstat {}", from.display()))?;
        if ft.is_dir() {
            clone_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&from).with_context(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(&t, &to)
                .with_context(|| format!("symlink {}", to.display()))?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).with_context(|| format!("copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// Copy a template tree (real copies, no hard links) and lchown everything to uid:gid.
pub fn copy_tree_owned(src: &Path, dst: &Path, uid: u32, gid: u32) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("lstat {}", src.display()))?;
    fs::create_dir_all(dst).with_context(|| format!("mkdir {}", dst.display()))?;
    fs::set_permissions(dst, md.permissions())
        .with_context(|| format!("chmod {}", dst.display()))?;
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dst.display()))?;
    for ent in fs::read_dir(src).with_context(|| format!("readdir {}", src.display()))? {
        let ent = ent.with_context(|| format!("readdir {}", src.display()))?;
        let from = ent.path();
        let to = dst.join(ent.file_name());
        let ft = ent
            .file_type()
            .with_context(|| format!("lstat {}", from.display()))?;
        if ft.is_dir() {
            copy_tree_owned(&from, &to, uid, gid)?;
            continue;
        }
        if ft.is_symlink() {
            let t = fs::read_link(&from).with_context(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(&t, &to)
                .with_context(|| format!("symlink {}", to.display()))?;
        } else {
            fs::copy(&from, &to).with_context(|| format!("copy {}", from.display()))?;
        }
        std::os::unix::fs::lchown(&to, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", to.display()))?;
    }
    Ok(())
}

/// The base config: what `runc spec` produces, with terminal=false and the process replaced by
/// the validator. `env` gets a marker `HC_ID=<id>` so leftover processes can be found.
pub fn base_config(id: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [VALIDATOR_PATH],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
                format!("HC_ID={id}")
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Host namespace inodes, as `type inode` lines, for the validator.
pub fn host_ns_lines() -> Vec<String> {
    let mut v = Vec::new();
    for ns in ["mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time"] {
        if let Ok(md) = fs::metadata(format!("/proc/self/ns/{ns}")) {
            v.push(format!(
                "hostns {ns} {}",
                std::os::unix::fs::MetadataExt::ino(&md)
            ));
        }
    }
    v
}

pub fn abs(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
