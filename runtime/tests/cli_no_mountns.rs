//! Containers without a mount namespace (issue 16 item 4): they run, sharing the runtime's mount
//! namespace (chrooted into the rootfs), and delete removes every mount made for them (runc
//! leaves them all on the host), also after `create` was killed half-way.
//!
//! Every husk command runs in a private mount namespace held by a helper process (`unshare -m
//! --propagation private sleep`): "the runtime's mount namespace" is that one, so the test can
//! compare its whole mount table before and after without other work on the machine adding or
//! removing mounts, and nothing it does can reach the host's mount table.
mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The helper holding the private mount namespace husk runs in.
struct MountNs {
    child: Child,
}

impl MountNs {
    fn new() -> MountNs {
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let ns = MountNs { child };
        let me = std::fs::read_link("/proc/self/ns/mnt").expect("own mount ns");
        assert!(
            wait_until(
                || std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid())).is_ok_and(|l| l != me)
            ),
            "helper did not enter a new mount namespace"
        );
        ns
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// husk, with `e`'s state root, in the helper's mount namespace. Its stdout and stderr go
    /// to files (a created container's init inherits them: pipes would never reach EOF).
    fn husk(&self, e: &Env, args: &[&str]) -> Output {
        let out = e.dir.path().join("husk.stdout");
        let err = e.dir.path().join("husk.stderr");
        let status = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg("--")
            .arg(HUSK)
            .arg("--root")
            .arg(&e.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .status()
            .expect("run nsenter husk");
        Output {
            status,
            stdout: std::fs::read(&out).unwrap_or_default(),
            stderr: std::fs::read(&err).unwrap_or_default(),
        }
    }

    fn ok(&self, e: &Env, args: &[&str]) -> String {
        let o = self.husk(e, args);
        assert!(
            o.status.success(),
            "husk {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The namespace's mount table: "ID MOUNTPOINT" per mount.
    fn mounts(&self) -> BTreeSet<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid()))
            .expect("read helper mountinfo")
            .lines()
            .map(|l| l.split(' ').take(5).collect::<Vec<_>>())
            .map(|f| format!("{} {}", f[0], f.get(4).unwrap_or(&"")))
            .collect()
    }

    /// Mount points at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<String> {
        let d = dir.display().to_string();
        self.mounts()
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(_, p)| p.to_string()))
            .filter(|p| *p == d || p.starts_with(&format!("{d}/")))
            .collect()
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default config without its mount namespace.
fn no_mountns_config(e: &Env, args: &[&str]) {
    let mut c = e.config();
    if let Some(a) = c["linux"]["namespaces"].as_array_mut() {
        a.retain(|n| n["type"] != "mount");
    }
    c["process"]["args"] = serde_json::json!(args);
    e.write_config(&c);
}

#[test]
fn no_mount_namespace_runs_and_delete_removes_every_mount() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("nomntns");
    let ns = MountNs::new();
    let id = e.id("nomntns");
    no_mountns_config(&e, &["sleep", "1000"]);
    std::fs::write(e.bundle().join("rootfs/marker"), "in-rootfs").expect("marker");
    let b = e.bundle().display().to_string();
    let before = ns.mounts();

    ns.ok(&e, &["create", "--bundle", &b, &id]);
    ns.ok(&e, &["start", &id]);
    let rootfs = e.bundle().join("rootfs");
    let during = ns.mounts_under(&rootfs);
    // the rootfs bind, /proc, /dev (+ pts, shm, mqueue), /sys, the cgroup tmpfs and its
    // hierarchies, masked and read-only paths
    assert!(
        during.len() >= 10,
        "mounts made for the container: {during:?}"
    );
    // the container shares the runtime's mount namespace ...
    let init = e.pid(&id);
    assert_eq!(
        std::fs::read_link(format!("/proc/{init}/ns/mnt")).unwrap(),
        std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid())).unwrap()
    );
    // ... and its root (and an exec'd process's) is the rootfs
    let out = ns.ok(&e, &["exec", &id, "cat", "/marker"]);
    assert_eq!(out, "in-rootfs");
    let out = ns.ok(&e, &["exec", &id, "sh", "-c", "cat /proc/1/root/marker"]);
    assert_eq!(out, "in-rootfs");
    // the state records what was there before and what was made
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.root.join(&id).join("state.json")).expect("state.json"),
    )
    .expect("state json");
    let made = st["host_mounts"]["made"].as_array().map_or(0, |a| a.len());
    assert_eq!(made, during.len(), "{}", st["host_mounts"]);

    ns.ok(&e, &["kill", &id, "KILL"]);
    assert!(wait_until(|| ns
        .ok(&e, &["state", &id])
        .contains("\"stopped\"")));
    ns.ok(&e, &["delete", &id]);
    let after = ns.mounts();
    let new: Vec<&String> = after.difference(&before).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(new.is_empty(), "mounts left after delete: {new:?}");
    assert!(
        gone.is_empty(),
        "mounts removed that were not ours: {gone:?}"
    );
}

/// A mount that was already below the rootfs before `create` (like an overlay a client mounts
/// as the rootfs) stays; `run` (create, start, wait, delete) removes only what it made.
#[test]
fn mounts_below_the_rootfs_from_before_create_are_kept() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("nomntnskeep");
    let ns = MountNs::new();
    let id = e.id("nomntnskeep");
    let rootfs = e.bundle().join("rootfs");
    let data = rootfs.join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let pre = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", ns.pid()))
        .args(["--", "mount", "-t", "tmpfs", "-o", "size=1m", "predata"])
        .arg(&data)
        .status()
        .expect("mount");
    assert!(pre.success());
    no_mountns_config(&e, &["sh", "-c", "grep -c predata /proc/self/mountinfo"]);
    let b = e.bundle().display().to_string();
    let before = ns.mounts();
    let out = ns.ok(&e, &["run", "--bundle", &b, &id]);
    // the container sees the client's mount (through the rbind of the rootfs)
    assert_eq!(out.trim(), "1", "{out}");
    assert_eq!(ns.mounts(), before, "mount table changed by run");
    assert_eq!(
        ns.mounts_under(&rootfs),
        vec![data.display().to_string()],
        "the client's mount is still there, alone"
    );
}

/// `create` SIGKILLed after the init made its mounts (by a createRuntime hook killing its
/// parent, husk): the state written before the init was cloned is enough for `delete --force`
/// to remove every mount.
#[test]
fn delete_after_create_was_killed_removes_the_mounts() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("nomntnskill");
    let ns = MountNs::new();
    let id = e.id("nomntnskill");
    no_mountns_config(&e, &["true"]);
    let mut c = e.config();
    c["hooks"] = serde_json::json!({"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}
    ]});
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let rootfs = e.bundle().join("rootfs");
    let before = ns.mounts();
    let o = ns.husk(&e, &["create", "--bundle", &b, &id]);
    assert!(!o.status.success(), "create survived its hook");
    assert!(
        !ns.mounts_under(&rootfs).is_empty(),
        "the killed create left no mounts: the test shows nothing"
    );
    assert!(e.root.join(&id).join("state.json").exists());
    ns.ok(&e, &["delete", "--force", &id]);
    let after = ns.mounts();
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.is_empty(), "mounts left after delete: {new:?}");
    assert!(!e.root.join(&id).exists());
}

#[test]
fn a_new_user_namespace_without_a_mount_namespace_is_refused() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("nomntnsuser");
    let id = e.id("nomntnsuser");
    let mut c = e.config();
    c["linux"]["namespaces"] =
        serde_json::json!([{"type": "pid"}, {"type": "uts"}, {"type": "user"}]);
    c["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["create", "--bundle", &b, &id]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a new user namespace needs a mount namespace"),
        "{err}"
    );
    assert!(!e.root.join(&id).exists());
}
