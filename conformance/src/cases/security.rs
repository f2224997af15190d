//! Security regressions of known runtime bug classes. Each case runs the attack against a
//! throw-away target (a directory of the case, a private copy of the runtime binary), never
//! against anything real.

use super::{case, Case};
use crate::bundle::VALIDATOR_PATH;
use crate::ctx::{timeout, wait_for, CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub fn cases() -> Vec<Case> {
    vec![
        case("security.mount-dest-absolute-symlink-escape", |c| {
            symlink_dest(c, Kind::Absolute)
        }),
        case("security.mount-dest-relative-symlink-escape", |c| {
            symlink_dest(c, Kind::Relative)
        }),
        case("security.proc-on-symlink-escape", |c| {
            symlink_dest(c, Kind::Proc)
        }),
        case("security.proc-self-exe-overwrite", proc_self_exe),
        case(
            "security.runtime-exe-not-writable-from-container",
            exe_reference,
        ),
        case(
            "security.runtime-exe-not-writable-from-sibling-container",
            exe_from_sibling,
        ),
        case("security.cwd-leaked-fd-escape", cwd_fd_escape),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Absolute,
    Relative,
    Proc,
}

/// Entries of a directory (names), for before/after comparisons.
fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn host_mounts_at(p: &Path) -> bool {
    let s = p.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(s.as_str()))
}

/// A mount destination that is a symlink pointing outside the rootfs must be resolved inside
/// the rootfs (or refused): nothing may be created or mounted at the host target.
fn symlink_dest(c: &mut Ctx<'_>, kind: Kind) -> CaseResult {
    let target = c.dir.join("host-target");
    crate::bundle::mkdir_mode(&target, 0o755)?;
    fs::write(target.join("orig"), "host").context("write host-target/orig")?;
    c.cfg["root"]["readonly"] = json!(false);
    let depth = c.rootfs.components().count();
    let dest = match kind {
        Kind::Proc => {
            fs::remove_dir(c.rootfs.join("proc")).context("rm rootfs/proc")?;
            std::os::unix::fs::symlink(&target, c.rootfs.join("proc"))
                .context("symlink rootfs/proc")?;
            "/proc".to_string()
        }
        Kind::Absolute | Kind::Relative => {
            let link_target: PathBuf = if kind == Kind::Absolute {
                target.clone()
            } else {
                // rootfs/mnt/evil -> ../../../..(enough)../<target>
                let mut p = PathBuf::new();
                for _ in 0..depth + 2 {
                    p.push("..");
                }
                p.join(target.strip_prefix("/").unwrap_or(&target))
            };
            std::os::unix::fs::symlink(&link_target, c.rootfs.join("mnt/evil"))
                .context("symlink rootfs/mnt/evil")?;
            c.add_mount(
                json!({"destination": "/mnt/evil/sub", "type": "tmpfs", "source": "tmpfs",
                               "options": ["size=64k"]}),
            );
            "/mnt/evil/sub".to_string()
        }
    };
    let before = entries(&target);
    c.sh(&format!("touch {dest}/hc-pwned 2>/dev/null; true"));
    let o = c.run()?;
    let after = entries(&target);
    ensure!(
        !host_mounts_at(&target),
        "{} is a mount point on the host",
        target.display()
    );
    ensure!(
        before == after,
        "the host directory {} changed through the symlinked mount destination {dest}: {before:?} -> {after:?} ({})",
        target.display(),
        o.describe()
    );
    ensure!(
        fs::read_to_string(target.join("orig")).unwrap_or_default() == "host",
        "host-target/orig changed"
    );
    Ok(Outcome::Pass)
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let x = fs::read(a).with_context(|| format!("read {}", a.display()))?;
    let y = fs::read(b).with_context(|| format!("read {}", b.display()))?;
    Ok(x == y)
}

/// A private copy of the runtime binary for cases that attack it.
fn runtime_copy(c: &Ctx<'_>) -> Result<PathBuf> {
    let d = c.dir.join("rtbin");
    crate::bundle::mkdir_mode(&d, 0o755)?;
    let name =
        c.rt.path
            .file_name()
            .context("runtime path has no file name")?;
    let copy = d.join(name);
    fs::copy(&c.rt.path, &copy)
        .with_context(|| format!("copy {} to {}", c.rt.path.display(), copy.display()))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
        .context("chmod the runtime copy")?;
    Ok(copy)
}

/// CVE-2019-5736 class, container side: the container's entrypoint is /proc/self/exe and the
/// program tries to write to it. The runtime binary on the host must stay unchanged.
fn proc_self_exe(c: &mut Ctx<'_>) -> CaseResult {
    let copy = runtime_copy(c)?;
    let rt2 = c.rt.with_binary(&copy);
    c.set_args(&["/proc/self/exe"]);
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let _ = c.rt_with(&rt2, &["run", "--bundle", &b, &id], &[], &[], timeout())?;
    // A shell in the container that opens /proc/self/exe-like paths of the container's
    // processes for writing.
    c.sh("for p in /proc/[0-9]*; do echo hc-overwrite >> $p/exe 2>/dev/null && echo wrote $p; done; true");
    c.save()?;
    let o = c.rt_with(&rt2, &["run", "--bundle", &b, &id], &[], &[], timeout())?;
    ensure!(
        same_file(&c.rt.path, &copy)?,
        "the runtime binary (a private copy at {}) was modified from inside the container",
        copy.display()
    );
    ensure!(
        !o.stdout.contains("wrote"),
        "the container wrote to a process executable: {}",
        o.stdout.trim()
    );
    Ok(Outcome::Pass)
}

/// CVE-2019-5736 class, the mechanism: while the container is `created`, its init process
/// runs runtime code. Whatever executable it runs must not be the host runtime binary in a
/// writable way: take a reference to /proc/<init>/exe (as a process in the container could),
/// start the container (the init execs the user program, so the binary is no longer busy) and
/// try to write through the reference. The private copy of the runtime must be unchanged.
fn exe_reference(c: &mut Ctx<'_>) -> CaseResult {
    let copy = runtime_copy(c)?;
    let rt2 = c.rt.with_binary(&copy);
    c.share();
    c.sh("echo started > /shared/started; while [ ! -e /shared/stop ]; do sleep 0.05; done");
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let o = c.rt_with(&rt2, &["create", "--bundle", &b, &id], &[], &[], timeout())?;
    ensure!(o.ok(), "{}", o.describe());
    let pid = c.pid()?;
    let exe = format!("/proc/{pid}/exe");
    let reference = fs::OpenOptions::new()
        .read(true)
        .custom_flags_path()
        .open(&exe);
    let start = c.rt_with(&rt2, &["start", &id], &[], &[], timeout())?;
    let started =
        start.ok() && wait_for("the user program", || c.shared.join("started").exists()).is_ok();
    let mut wrote = None;
    if let Ok(f) = &reference {
        use std::os::fd::AsRawFd;
        let via = format!("/proc/self/fd/{}", f.as_raw_fd());
        if let Ok(mut w) = fs::OpenOptions::new().append(true).open(&via) {
            if w.write_all(b"hc-overwrite").is_ok() {
                wrote = Some(via);
            }
        }
    }
    let _ = fs::write(c.shared.join("stop"), "");
    let _ = c.wait_exit(pid);
    let _ = c.rt_with(&rt2, &["delete", "--force", &id], &[], &[], timeout());
    ensure!(start.ok(), "{}", start.describe());
    ensure!(started, "the container did not start");
    if reference.is_err() {
        return Ok(Outcome::Pass);
    }
    ensure!(
        same_file(&c.rt.path, &copy)?,
        "the container init executed the host runtime binary itself: writing through a reference \
         to /proc/<init>/exe ({}) modified the runtime binary (CVE-2019-5736 class)",
        wrote.unwrap_or_default()
    );
    Ok(Outcome::Pass)
}

/// CVE-2019-5736 class, the real attack path: a second container joins the pid namespace of a
/// `created` container, whose pid 1 is still runtime code, opens /proc/1/exe, waits until that
/// process has exec'd the user program (the runtime binary is no longer busy) and writes through
/// /proc/self/fd/N. The private copy of the runtime must be unchanged.
fn exe_from_sibling(c: &mut Ctx<'_>) -> CaseResult {
    let copy = runtime_copy(c)?;
    let rt2 = c.rt.with_binary(&copy);
    c.share();
    c.sh("echo started > /shared/a-started; while [ ! -e /shared/stop ]; do sleep 0.05; done");
    c.save()?;
    let b = c.bundle_str();
    let a = c.id.clone();
    let o = c.rt_with(&rt2, &["create", "--bundle", &b, &a], &[], &[], timeout())?;
    ensure!(o.ok(), "{}", o.describe());
    let a_pid = c.pid()?;
    // Container B: same rootfs and /shared, A's pid namespace.
    let b_id = c.other_id("sibling");
    let b_bundle = c.dir.join("bundle-b");
    crate::bundle::mkdir_mode(&b_bundle, 0o755)?;
    let mut cfg = c.cfg.clone();
    cfg["root"]["path"] = json!(c.rootfs.display().to_string());
    cfg["process"]["env"] = json!(["PATH=/bin:/usr/bin", format!("HC_ID={b_id}")]);
    cfg["process"]["args"] = json!(["sh", "-c", "if ! (exec 3</proc/1/exe) 2>/dev/null; then echo denied > /shared/b-opened; exit 0; fi; exec 3</proc/1/exe; echo opened > /shared/b-opened; \
         while [ ! -e /shared/go ]; do sleep 0.05; done; \
         if echo hc-overwrite >> /proc/self/fd/3; then echo wrote; else echo refused; fi > /shared/b-result 2>&1"]);
    for n in cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "pid" {
            *n = json!({"type": "pid", "path": format!("/proc/{a_pid}/ns/pid")});
        }
    }
    cfg["hostname"] = json!("hc-sibling");
    std::fs::write(
        b_bundle.join("config.json"),
        serde_json::to_string_pretty(&cfg)?,
    )
    .context("write bundle-b/config.json")?;
    let bb = b_bundle.display().to_string();
    let r = (|| -> Result<String> {
        let o = c.rt_with(
            &rt2,
            &["run", "--detach", "--bundle", &bb, &b_id],
            &[],
            &[],
            timeout(),
        )?;
        ensure!(o.ok(), "starting the sibling container: {}", o.describe());
        wait_for("the sibling to try /proc/1/exe", || {
            c.shared.join("b-opened").exists()
        })?;
        let opened = fs::read_to_string(c.shared.join("b-opened")).unwrap_or_default();
        if opened.trim() != "opened" {
            return Ok("denied".into());
        }
        let o = c.rt_with(&rt2, &["start", &a], &[], &[], timeout())?;
        ensure!(o.ok(), "{}", o.describe());
        wait_for("container A's user program", || {
            c.shared.join("a-started").exists()
        })?;
        fs::write(c.shared.join("go"), "").context("write go")?;
        wait_for("the sibling's write attempt", || {
            fs::read_to_string(c.shared.join("b-result"))
                .map(|s| !s.is_empty())
                .unwrap_or(false)
        })?;
        Ok(fs::read_to_string(c.shared.join("b-result")).unwrap_or_default())
    })();
    let _ = fs::write(c.shared.join("stop"), "");
    let _ = c.rt_with(&rt2, &["delete", "--force", &b_id], &[], &[], timeout());
    let _ = c.rt_with(&rt2, &["delete", "--force", &a], &[], &[], timeout());
    let _ = c.wait_exit(a_pid);
    let result = r?;
    ensure!(
        same_file(&c.rt.path, &copy)?,
        "a sibling container overwrote the runtime binary (private copy {}) through /proc/1/exe of a created container ({})",
        copy.display(),
        result.trim()
    );
    Ok(Outcome::Pass)
}

trait PathOpen {
    fn custom_flags_path(&mut self) -> &mut Self;
}

impl PathOpen for fs::OpenOptions {
    fn custom_flags_path(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_PATH)
    }
}

/// CVE-2024-21626 class: process.cwd = /proc/self/fd/N must not give the process a working
/// directory outside its root through a descriptor leaked by the runtime.
fn cwd_fd_escape(c: &mut Ctx<'_>) -> CaseResult {
    c.set_args(&[VALIDATOR_PATH, "cwd-escape"]);
    let b = c.bundle_str();
    let id = c.id.clone();
    for n in 3..=9 {
        c.cfg["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        c.save()?;
        let o = c.rt(&["run", "--bundle", &b, &id])?;
        if o.stdout.contains("not ok") {
            bail!("process.cwd /proc/self/fd/{n}: {}", o.stdout.trim());
        }
        // A finished or refused run must not leave the container behind.
        if c.rt(&["state", &id])?.code == 0 {
            let _ = c.rt(&["delete", "--force", &id]);
            bail!(
                "process.cwd /proc/self/fd/{n}: the container still exists after `run` returned {}",
                o.code
            );
        }
    }
    Ok(Outcome::Pass)
}
