//! Idmapped mounts: a bind mount's file ownership is seen through the mount's uid/gid mapping,
//! with and without a container user namespace.
mod common;
use common::*;

fn host_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("husk-it-idmap-src-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(d.path().join("root-owned"), b"").expect("write");
    std::fs::write(d.path().join("u1000"), b"").expect("write");
    std::os::unix::fs::chown(d.path().join("u1000"), Some(1000), Some(1000)).expect("chown");
    d
}

/// `ls -ln` lines as (owner uid, name).
fn owners(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 9).then(|| (f[2].to_string(), f[8].to_string()))
        })
        .collect()
}

#[test]
fn idmapped_bind_mount_shows_mapped_owners() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let src = host_dir();
    let mut e = Env::new("idmap");
    let map = |h: u32, n: u32| serde_json::json!([{"containerID": 0, "hostID": h, "size": n}]);

    // No user namespace: on-disk uid 0 appears as 1000 through the mapping 0 -> 1000.
    let id = e.id("idmap1");
    let mut c = e.config();
    c["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/idm", "type": "bind", "source": src.path(), "options": ["bind", "ro"],
            "uidMappings": map(1000, 1), "gidMappings": map(1000, 1)
        }));
    c["process"]["args"] =
        serde_json::json!(["sh", "-c", "ls -ln /idm; touch /idm/x 2>&1 || true"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let out = e.ok(&["run", "--bundle", &b, &id]);
    let o = owners(&out);
    assert!(o.contains(&("1000".into(), "root-owned".into())), "{out}");
    assert!(o.contains(&("65534".into(), "u1000".into())), "{out}");

    // With a user namespace mapping 0 -> 100000 and the same mapping on the mount ("idmap"
    // option: the container's mappings), the container sees the host's root files as its root's.
    let id = e.id("idmap2");
    let mut c = e.config();
    c["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(serde_json::json!({"type": "user"}));
    c["linux"]["uidMappings"] = map(100000, 65536);
    c["linux"]["gidMappings"] = map(100000, 65536);
    c["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/idm", "type": "bind", "source": src.path(), "options": ["bind", "idmap"]
    }));
    c["process"]["args"] = serde_json::json!(["sh", "-c", "ls -ln /idm"]);
    e.write_config(&c);
    let out = e.ok(&["run", "--bundle", &b, &id]);
    let o = owners(&out);
    assert!(o.contains(&("0".into(), "root-owned".into())), "{out}");
    assert!(o.contains(&("1000".into(), "u1000".into())), "{out}");
    // The host's files are untouched.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(src.path().join("root-owned"))
            .expect("stat")
            .uid(),
        0
    );
}

#[test]
fn idmap_on_a_non_bind_mount_is_refused_and_leaves_nothing() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("idmapbad");
    let id = e.id("idmapbad");
    let mut c = e.config();
    c["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    }));
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["create", "--bundle", &b, &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bind mounts"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !e.root.join(&id).exists(),
        "state left after a refused create"
    );
}
