//! config.md "Root" and "Mounts", config-linux.md "Devices", "Default Devices", "Default
//! Filesystems", "Masked Paths", "Readonly Paths", "Rootfs Mount Propagation", runtime-linux.md
//! "/dev symbolic links", and the runc CLI's --no-pivot.

use super::{case, Case};
use crate::bundle::VALIDATOR_PATH;
use crate::ctx::{validator_verdict, CaseResult, Ctx, Outcome};
use anyhow::{ensure, Context};
use serde_json::json;
use std::fs;

pub fn cases() -> Vec<Case> {
    vec![
        case("root.readonly", |c| c.validate(&["root", "mounts"])),
        case("root.writable", root_writable),
        case("mounts.default-filesystems", |c| {
            c.validate(&["mounts", "masked", "readonly"])
        }),
        case("mounts.default-devices-and-symlinks", |c| {
            c.validate(&["default-devices"])
        }),
        case("mounts.tmpfs-size-mode-options", tmpfs_options),
        case("mounts.tmpfs-tmpcopyup", tmpfs_copyup),
        case("mounts.bind-ro", bind_ro),
        case("mounts.bind-file", bind_file),
        case("mounts.bind-nosuid-nodev-noexec", bind_flags),
        case("mounts.bind-vs-rbind-submounts", bind_vs_rbind),
        case("mounts.rbind-rro-recursive-readonly", rbind_rro),
        case("mounts.bind-relative-source", bind_relative_source),
        case("mounts.listed-order", listed_order),
        case("mounts.propagation-options", propagation_options),
        case("mounts.rootfs-propagation-private", |c| {
            rootfs_prop(c, "private")
        }),
        case("mounts.rootfs-propagation-rslave", |c| {
            rootfs_prop(c, "rslave")
        }),
        case("mounts.rootfs-propagation-shared", |c| {
            rootfs_prop(c, "shared")
        }),
        case("mounts.relative-destination", relative_destination),
        case("mounts.missing-source-refused", missing_source),
        case("linux.devices-char-device", devices),
        case(
            "linux.devices-existing-file-mismatch-refused",
            devices_mismatch,
        ),
        case("linux.masked-paths", masked),
        case("linux.readonly-paths", readonly),
        case("mounts.no-pivot", no_pivot),
    ]
}

fn root_writable(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["root"]["readonly"] = json!(false);
    c.validate(&["root"])
}

fn tmpfs_options(c: &mut Ctx<'_>) -> CaseResult {
    // The destination does not exist in the rootfs: the runtime must create it.
    c.add_mount(json!({"destination": "/hc-tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1700", "uid=1000", "gid=1000"]}));
    c.add_mount(
        json!({"destination": "/hc-tmp-ro", "type": "tmpfs", "source": "tmpfs",
                       "options": ["ro", "size=256k", "mode=755"]}),
    );
    c.validate(&["mounts"])
}

/// `tmpcopyup`, the runc/crun extension podman uses for `--read-only` (/tmp, /run, /var/tmp):
/// the tmpfs starts with a copy of the directory it covers (modes kept, links not followed), and
/// writes stay in the tmpfs.
fn tmpfs_copyup(c: &mut Ctx<'_>) -> CaseResult {
    let d = c.rootfs.join("hc-copyup");
    crate::bundle::mkdir_mode(&d.join("sub"), 0o755)?;
    fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .context("chmod hc-copyup")?;
    fs::write(d.join("sub/file"), "copied").context("write hc-copyup/sub/file")?;
    fs::set_permissions(
        d.join("sub/file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .context("chmod hc-copyup/sub/file")?;
    std::os::unix::fs::symlink("/etc/passwd", d.join("link")).context("symlink hc-copyup/link")?;
    c.add_mount(
        json!({"destination": "/hc-copyup", "type": "tmpfs", "source": "tmpfs",
                       "options": ["tmpcopyup", "nosuid", "nodev"]}),
    );
    c.sh(
        "cat /hc-copyup/sub/file; echo; stat -c %a /hc-copyup/sub/file; readlink /hc-copyup/link; \
          stat -c %a /hc-copyup; echo new > /hc-copyup/sub/file && \
          grep -c '^tmpfs /hc-copyup tmpfs' /proc/mounts",
    );
    let o = c.run()?;
    let lines: Vec<&str> = o.stdout.lines().collect();
    ensure!(
        o.ok() && lines == ["copied", "640", "/etc/passwd", "1777", "1"],
        "inside the tmpcopyup tmpfs (want copied/640//etc/passwd/1777/1): {}",
        o.describe()
    );
    let host = fs::read_to_string(d.join("sub/file")).unwrap_or_default();
    ensure!(
        host == "copied",
        "a write to the tmpfs reached the rootfs: {host:?}"
    );
    Ok(Outcome::Pass)
}

fn bind_ro(c: &mut Ctx<'_>) -> CaseResult {
    let src = c.dir.join("bind-src");
    crate::bundle::mkdir_mode(&src, 0o755)?;
    fs::write(src.join("file"), "x").context("write bind-src/file")?;
    c.add_mount(
        json!({"destination": "/mnt/ro", "type": "bind", "source": src.display().to_string(),
                       "options": ["rbind", "ro"]}),
    );
    c.validate(&["mounts"])?;
    // And the host directory is untouched by a write attempt.
    c.sh("echo y > /mnt/ro/file; echo new > /mnt/ro/new; true");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        !src.join("new").exists(),
        "a file was created through a read-only bind mount"
    );
    ensure!(
        fs::read_to_string(src.join("file")).unwrap_or_default() == "x",
        "a read-only bind source changed"
    );
    Ok(Outcome::Pass)
}

fn bind_file(c: &mut Ctx<'_>) -> CaseResult {
    let src = c.dir.join("bind-file");
    fs::write(&src, "hc-bind-file-content").context("write bind-file")?;
    c.add_mount(
        json!({"destination": "/etc/hc-file", "type": "bind", "source": src.display().to_string(),
                       "options": ["bind", "ro"]}),
    );
    c.validate(&["mounts"])?;
    c.sh("cat /etc/hc-file");
    let o = c.run()?;
    ensure!(
        o.ok() && o.stdout.trim() == "hc-bind-file-content",
        "reading the bound file: {}",
        o.describe()
    );
    Ok(Outcome::Pass)
}

fn bind_flags(c: &mut Ctx<'_>) -> CaseResult {
    let src = c.dir.join("bind-src");
    crate::bundle::mkdir_mode(&src, 0o755)?;
    fs::copy(c.rootfs.join("bin/busybox"), src.join("bb")).context("copy busybox into bind-src")?;
    c.add_mount(
        json!({"destination": "/mnt/flags", "type": "bind", "source": src.display().to_string(),
                       "options": ["rbind", "nosuid", "nodev", "noexec"]}),
    );
    c.validate(&["mounts"])?;
    c.sh("/mnt/flags/bb true && echo executed || echo refused");
    let o = c.run()?;
    ensure!(
        o.stdout.trim() == "refused",
        "exec from a noexec mount: {:?}",
        o.stdout.trim()
    );
    Ok(Outcome::Pass)
}

fn bind_vs_rbind(c: &mut Ctx<'_>) -> CaseResult {
    // A host directory with a submount: rbind must carry it, bind must not.
    let src = c.dir.join("tree");
    let sub = src.join("sub");
    crate::bundle::mkdir_mode(&sub, 0o755)?;
    let s = sub.display().to_string();
    c.host_ok("mount", &["-t", "tmpfs", "-o", "size=64k", "hc-sub", &s])?;
    c.cleanup_cmds.push(vec!["umount".into(), s.clone()]);
    fs::write(sub.join("marker"), "sub").context("write the submount marker")?;
    let srcs = src.display().to_string();
    c.add_mount(
        json!({"destination": "/mnt/bind", "type": "bind", "source": srcs, "options": ["bind"]}),
    );
    c.add_mount(
        json!({"destination": "/mnt/rbind", "type": "bind", "source": srcs, "options": ["rbind"]}),
    );
    c.sh("test -e /mnt/rbind/sub/marker && echo rbind-has-sub; test -e /mnt/bind/sub/marker && echo bind-has-sub; true");
    let o = c.run()?;
    // Unmount the host submount before the after-case check.
    let _ = c.host("umount", &[&s]);
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("rbind-has-sub"),
        "rbind did not carry the submount: {:?}",
        o.stdout
    );
    ensure!(
        !o.stdout.lines().any(|l| l == "bind-has-sub"),
        "bind (non-recursive) carried the submount: {:?}",
        o.stdout
    );
    Ok(Outcome::Pass)
}

fn rbind_rro(c: &mut Ctx<'_>) -> CaseResult {
    // runtime-spec 1.1 "rro": recursively read-only, submounts included (mount_setattr).
    let src = c.dir.join("tree");
    let sub = src.join("sub");
    crate::bundle::mkdir_mode(&sub, 0o755)?;
    let s = sub.display().to_string();
    c.host_ok("mount", &["-t", "tmpfs", "-o", "size=64k", "hc-sub", &s])?;
    c.cleanup_cmds.push(vec!["umount".into(), s.clone()]);
    let srcs = src.display().to_string();
    c.add_mount(json!({"destination": "/mnt/rro", "type": "bind", "source": srcs, "options": ["rbind", "rro"]}));
    c.sh("touch /mnt/rro/top 2>/dev/null && echo top-writable; touch /mnt/rro/sub/x 2>/dev/null && echo sub-writable; test -d /mnt/rro/sub && echo sub-present; true");
    let o = c.run()?;
    let _ = c.host("umount", &[&s]);
    if o.code != 0 {
        // Refusing an option it cannot honour is acceptable; silently ignoring it is not.
        return Ok(Outcome::Pass);
    }
    let lines: Vec<&str> = o.stdout.lines().collect();
    ensure!(
        lines == ["sub-present"],
        "rbind,rro: {lines:?}, want only [sub-present] (top and submount read-only)"
    );
    Ok(Outcome::Pass)
}

fn bind_relative_source(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: source paths are either absolute or relative to the bundle.
    let src = c.bundle.join("rel-src");
    crate::bundle::mkdir_mode(&src, 0o755)?;
    fs::write(src.join("marker"), "relative").context("write rel-src/marker")?;
    c.add_mount(json!({"destination": "/mnt/rel", "type": "bind", "source": "rel-src", "options": ["rbind", "ro"]}));
    c.validate(&["mounts"])?;
    c.sh("cat /mnt/rel/marker");
    let o = c.run()?;
    ensure!(
        o.ok() && o.stdout.trim() == "relative",
        "bundle-relative bind source: {}",
        o.describe()
    );
    Ok(Outcome::Pass)
}

fn listed_order(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: the runtime MUST mount entries in the listed order: /mnt/a/b lives on /mnt/a.
    c.add_mount(json!({"destination": "/mnt/a", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]}));
    c.add_mount(json!({"destination": "/mnt/a/b", "type": "tmpfs", "source": "tmpfs", "options": ["size=32k", "ro"]}));
    c.validate(&["mounts"])?;
    c.sh("grep -E ' /mnt/a(/b)? ' /proc/self/mountinfo | awk '{print $5}'");
    let o = c.run()?;
    let order: Vec<&str> = o.stdout.lines().collect();
    ensure!(
        order == ["/mnt/a", "/mnt/a/b"],
        "mount order in mountinfo: {order:?}"
    );
    Ok(Outcome::Pass)
}

fn propagation_options(c: &mut Ctx<'_>) -> CaseResult {
    let a = c.dir.join("prop-shared");
    let b = c.dir.join("prop-private");
    crate::bundle::mkdir_mode(&a, 0o755)?;
    crate::bundle::mkdir_mode(&b, 0o755)?;
    c.add_mount(
        json!({"destination": "/mnt/shared", "type": "bind", "source": a.display().to_string(),
                       "options": ["rbind", "rshared"]}),
    );
    c.add_mount(
        json!({"destination": "/mnt/private", "type": "bind", "source": b.display().to_string(),
                       "options": ["rbind", "rprivate"]}),
    );
    c.validate(&["mounts"])
}

fn rootfs_prop(c: &mut Ctx<'_>, p: &str) -> CaseResult {
    if p != "private" {
        // A slave needs a shared master: make the bundle's rootfs a shared mount on the host
        // (a bind mount onto itself), so the container's root can be a slave/peer of it.
        let r = c.rootfs.display().to_string();
        c.host_ok("mount", &["--bind", &r, &r])?;
        c.cleanup_cmds
            .push(vec!["umount".into(), "-l".into(), r.clone()]);
        c.host_ok("mount", &["--make-shared", &r])?;
    }
    c.cfg["linux"]["rootfsPropagation"] = json!(p);
    c.validate(&["root"])
}

fn relative_destination(c: &mut Ctx<'_>) -> CaseResult {
    // runtime-spec 1.0: destination MUST be absolute; 1.1+: a relative destination is
    // deprecated and MUST be interpreted relative to "/". Either refusal or /<dest> is
    // conforming; anything else (relative to the cwd, the bundle, the host) is not.
    c.add_mount(json!({"destination": "hc-rel/dest", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]}));
    c.cfg["process"]["cwd"] = json!("/etc");
    c.sh("grep -E ' [^ ]*hc-rel/dest ' /proc/self/mountinfo | awk '{print $5}'");
    let o = c.run()?;
    if o.code != 0 {
        return Ok(Outcome::Pass);
    }
    let points: Vec<&str> = o.stdout.lines().collect();
    ensure!(
        points == ["/hc-rel/dest"],
        "relative destination mounted at {points:?}, want [\"/hc-rel/dest\"] or a refusal"
    );
    ensure!(
        !c.bundle.join("hc-rel").exists(),
        "the relative destination was created in the bundle dir"
    );
    Ok(Outcome::Pass)
}

fn missing_source(c: &mut Ctx<'_>) -> CaseResult {
    let src = c.dir.join("no-such-source");
    c.add_mount(
        json!({"destination": "/mnt/missing", "type": "bind", "source": src.display().to_string(),
                       "options": ["rbind"]}),
    );
    c.sh("true");
    let o = c.run()?;
    ensure!(o.code != 0, "a bind mount of a missing source was accepted");
    Ok(Outcome::Pass)
}

fn devices(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["devices"] = json!([
        {"path": "/dev/hc-null", "type": "c", "major": 1, "minor": 3, "fileMode": 416, "uid": 1000, "gid": 1001},
        {"path": "/dev/hc-dir/hc-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 438, "uid": 0, "gid": 0}
    ]);
    // Allow the devices in the cgroup too so they are usable, not only present.
    c.cfg["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}
    ]);
    c.validate(&["devices"])?;
    c.sh("head -c 4 /dev/hc-dir/hc-zero | od -An -tx1");
    let o = c.run()?;
    ensure!(
        o.ok() && o.stdout.split_whitespace().collect::<Vec<_>>() == ["00", "00", "00", "00"],
        "reading the configured /dev/hc-dir/hc-zero: {}",
        o.describe()
    );
    Ok(Outcome::Pass)
}

fn devices_mismatch(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: if a file already exists at path that does not match the requested
    // device, the runtime MUST generate an error.
    fs::write(c.rootfs.join("etc/hc-not-a-device"), "regular file")
        .context("write rootfs/etc/hc-not-a-device")?;
    c.cfg["root"]["readonly"] = json!(false);
    c.cfg["linux"]["devices"] = json!([{"path": "/etc/hc-not-a-device", "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
    c.sh("true");
    let o = c.run()?;
    ensure!(
        o.code != 0,
        "a device path that is an existing regular file was accepted"
    );
    let content = fs::read_to_string(c.rootfs.join("etc/hc-not-a-device")).unwrap_or_default();
    ensure!(content == "regular file", "the existing file was replaced");
    Ok(Outcome::Pass)
}

fn masked(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["root"]["readonly"] = json!(false);
    fs::write(c.rootfs.join("etc/hc-secret"), "secret").context("write rootfs/etc/hc-secret")?;
    crate::bundle::mkdir_mode(&c.rootfs.join("hc-secret-dir"), 0o755)?;
    fs::write(c.rootfs.join("hc-secret-dir/file"), "secret")
        .context("write rootfs/hc-secret-dir/file")?;
    if let Some(a) = c.cfg["linux"]["maskedPaths"].as_array_mut() {
        a.push(json!("/etc/hc-secret"));
        a.push(json!("/hc-secret-dir"));
        a.push(json!("/hc-does-not-exist"));
    }
    c.validate(&["masked"])
}

fn readonly(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["root"]["readonly"] = json!(false);
    crate::bundle::mkdir_mode(&c.rootfs.join("hc-ro-dir"), 0o755)?;
    fs::write(c.rootfs.join("etc/hc-ro-file"), "ro").context("write rootfs/etc/hc-ro-file")?;
    if let Some(a) = c.cfg["linux"]["readonlyPaths"].as_array_mut() {
        a.push(json!("/hc-ro-dir"));
        a.push(json!("/etc/hc-ro-file"));
        a.push(json!("/hc-does-not-exist"));
    }
    c.validate(&["readonly", "root"])
}

fn no_pivot(c: &mut Ctx<'_>) -> CaseResult {
    c.set_args(&[VALIDATOR_PATH]);
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let o = c.rt(&["run", "--no-pivot", "--bundle", &b, &id])?;
    validator_verdict(&o)
}
