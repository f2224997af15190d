//! config-linux.md "Namespaces", config.md "Hostname"/"Domainname": checked from inside by the
//! validator, which compares /proc/self/ns/* inodes with the host's (or the joined path's).

use super::{case, Case};
use crate::ctx::{wait_for, CaseResult, Ctx, Outcome};
use crate::proc;
use anyhow::Context;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn cases() -> Vec<Case> {
    vec![
        case("config.base-runc-spec", |c| c.validate(&[])),
        case("ns.defaults-pid-net-ipc-uts-mount", |c| {
            c.validate(&["namespaces"])
        }),
        case("ns.cgroup-new", |c| with_ns(c, "cgroup")),
        case("ns.time-new", time_ns),
        case("ns.time-offsets", time_offsets),
        case("ns.user-with-mappings", user_ns),
        case("ns.host-except-mount", host_except_mount),
        case("ns.no-mount-namespace", no_mount_ns),
        case("ns.join-network-by-path", join_netns),
        case("ns.join-uts-ipc-of-process", join_uts_ipc),
        case("ns.hostname", hostname),
        case("ns.domainname", domainname),
    ]
}

fn add_ns(c: &mut Ctx<'_>, ns: serde_json::Value) {
    if let Some(a) = c.cfg["linux"]["namespaces"].as_array_mut() {
        a.push(ns);
    }
}

fn with_ns(c: &mut Ctx<'_>, ty: &str) -> CaseResult {
    add_ns(c, json!({ "type": ty }));
    c.validate(&[])
}

fn time_ns(c: &mut Ctx<'_>) -> CaseResult {
    if !Path::new("/proc/self/ns/time").exists() {
        return Ok(Outcome::Skip("kernel without time namespaces".into()));
    }
    with_ns(c, "time")
}

/// A host id range for the user-namespace case, distinct per runner process.
fn host_range() -> u32 {
    100_000 + (std::process::id() % 400) * 65_536
}

fn time_offsets(c: &mut Ctx<'_>) -> CaseResult {
    if !Path::new("/proc/self/timens_offsets").exists() {
        return Ok(Outcome::Skip("kernel without time namespaces".into()));
    }
    add_ns(c, json!({"type": "time"}));
    c.cfg["linux"]["timeOffsets"] = json!({
        "monotonic": {"secs": 86400, "nanosecs": 0},
        "boottime": {"secs": 172800, "nanosecs": 500}
    });
    c.validate(&["namespaces"])
}

fn user_ns(c: &mut Ctx<'_>) -> CaseResult {
    if !Path::new("/proc/self/ns/user").exists() {
        return Ok(Outcome::Skip("kernel without user namespaces".into()));
    }
    let h = host_range();
    // The container's root owns its rootfs (a private copy, not the shared hard links).
    c.private_rootfs_owned_by(h, h)?;
    add_ns(c, json!({"type": "user"}));
    c.cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": h, "size": 65536}]);
    c.cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": h, "size": 65536}]);
    // Process-level check that the mapping is the configured one.
    c.share();
    c.sh("cat /proc/self/uid_map > /shared/uid_map; cat /proc/self/gid_map > /shared/gid_map; id -u > /shared/id");
    let o = c.run()?;
    anyhow::ensure!(o.ok(), "{}", o.describe());
    let norm = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let uid_map = norm(std::fs::read_to_string(c.shared.join("uid_map")).unwrap_or_default());
    let gid_map = norm(std::fs::read_to_string(c.shared.join("gid_map")).unwrap_or_default());
    let want = format!("0 {h} 65536");
    anyhow::ensure!(uid_map == want, "uid_map {uid_map:?}, want {want:?}");
    anyhow::ensure!(gid_map == want, "gid_map {gid_map:?}, want {want:?}");
    c.cfg["mounts"]
        .as_array_mut()
        .context("mounts")?
        .retain(|m| m["destination"] != "/shared");
    c.validate(&[])
}

fn host_except_mount(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["namespaces"] = json!([{"type": "mount"}]);
    // No private UTS namespace: do not touch the host's hostname. Without a private network
    // namespace, sysfs cannot be mounted fresh; bind the host's.
    if let Some(o) = c.cfg.as_object_mut() {
        o.remove("hostname");
    }
    for m in c.cfg["mounts"].as_array_mut().context("mounts")? {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "bind", "source": "/sys",
                        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
    }
    c.validate(&[])
}

/// config-linux.md: without a mount namespace in the config, the container shares the
/// runtime's. Checked from inside like the base config (its root is the rootfs, its mounts and
/// masked/read-only paths are in place, its mount namespace is the host's); the after-case check
/// then requires that nothing is left mounted under the bundle once the container is deleted
/// (runc 1.1 leaves every mount it made there).
fn no_mount_ns(c: &mut Ctx<'_>) -> CaseResult {
    if let Some(a) = c.cfg["linux"]["namespaces"].as_array_mut() {
        a.retain(|n| n["type"] != "mount");
    }
    c.validate(&[])
}

fn join_netns(c: &mut Ctx<'_>) -> CaseResult {
    if c.host("ip", &["-V"]).map(|o| !o.ok()).unwrap_or(true) {
        return Ok(Outcome::Skip("iproute2 `ip` not available".into()));
    }
    let name = format!("{}-net", c.id);
    c.host_ok("ip", &["netns", "add", &name])?;
    c.cleanup_cmds.push(vec![
        "ip".into(),
        "netns".into(),
        "del".into(),
        name.clone(),
    ]);
    let path = format!("/run/netns/{name}");
    let ino = std::fs::metadata(&path)
        .with_context(|| format!("stat {path}"))?
        .ino();
    for n in c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "network" {
            *n = json!({"type": "network", "path": path});
        }
    }
    c.expect.push(format!("nspath net {ino}"));
    c.validate(&[])
}

fn join_uts_ipc(c: &mut Ctx<'_>) -> CaseResult {
    let pid = proc::spawn_helper("unshare", &["--uts", "--ipc", "sleep", "1000"])?;
    c.helpers.push(pid);
    let host_uts = std::fs::metadata("/proc/self/ns/uts")
        .context("stat /proc/self/ns/uts")?
        .ino();
    let uts = format!("/proc/{pid}/ns/uts");
    wait_for("the unshare helper to enter its namespaces", || {
        std::fs::metadata(&uts)
            .map(|m| m.ino() != host_uts)
            .unwrap_or(false)
            && std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().contains("sleep"))
                .unwrap_or(false)
    })?;
    let ipc = format!("/proc/{pid}/ns/ipc");
    let uts_ino = std::fs::metadata(&uts)
        .with_context(|| format!("stat {uts}"))?
        .ino();
    let ipc_ino = std::fs::metadata(&ipc)
        .with_context(|| format!("stat {ipc}"))?
        .ino();
    for n in c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "uts" {
            *n = json!({"type": "uts", "path": uts});
        } else if n["type"] == "ipc" {
            *n = json!({"type": "ipc", "path": ipc});
        }
    }
    c.expect.push(format!("nspath uts {uts_ino}"));
    c.expect.push(format!("nspath ipc {ipc_ino}"));
    c.validate(&[])
}

fn hostname(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["hostname"] = json!("hc-hostname");
    c.validate(&["hostname", "namespaces"])
}

fn domainname(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["hostname"] = json!("hc-hostname");
    c.cfg["domainname"] = json!("hc.example.org");
    c.validate(&["hostname", "namespaces"])
}
