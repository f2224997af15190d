//! ImageStore against a real registry: Debian's docker-registry (distribution 2.8) runs as a child
//! process on a free loopback port with its own storage; images are built from busybox-static
//! with hack/mkimage.sh (umoci) and pushed with skopeo. Indexes and extra manifests are pushed
//! with plain HTTP requests. Needs root (layer ownership, device nodes, trusted xattrs).
//! Skips, saying so, only when docker-registry, skopeo or umoci is not installed.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use husk_cri::image::{ImageError, ImageStore, PullAuth};
use serde_json::{json, Value};

#[macro_use]
mod common;
use common::{build_image, digest_of, free_port, push, run, Registry, MT_OCI_MANIFEST};

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("husk-images-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = ImageStore::open(&dir.path().join("store")).unwrap_or_else(|e| panic!("open: {e}"));
    (dir, store)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

fn pull_err(store: &ImageStore, reference: &str, auth: Option<&PullAuth>) -> ImageError {
    match store.pull(reference, auth) {
        Ok(r) => panic!("pull {reference} succeeded: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn pull_inspect_reuse_and_remove() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let host = reg.host();
    let tag = format!("{host}/husk/busybox:latest");
    push(&img, &tag, &[]);
    let manifest_digest = reg.manifest_digest("husk/busybox", "latest");

    let (_tmp, store) = new_store();
    let (rec, stats) = store
        .pull_with_stats(&tag, None)
        .unwrap_or_else(|e| panic!("pull: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(rec.repo_tags, vec![tag.clone()]);
    assert_eq!(
        rec.repo_digests,
        vec![format!("{host}/husk/busybox@{manifest_digest}")]
    );
    assert_eq!(rec.layers, vec![img.diff_id.clone()]);
    assert_eq!(rec.size, img.layer_size);
    assert_eq!(rec.config.cmd, vec!["/bin/sh"]);
    assert!(
        rec.config
            .env
            .contains(&"PATH=/bin:/sbin:/usr/bin:/usr/sbin".to_string()),
        "{:?}",
        rec.config.env
    );
    assert_eq!(rec.config.architecture, "amd64");
    assert_eq!(
        (stats.blobs_fetched, stats.layers_unpacked),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(
        stats.bytes_fetched,
        img.layer_size
            + fs::metadata(store.blob_path(&rec.id).unwrap_or_default())
                .map(|m| m.len())
                .unwrap_or(0)
    );

    // The unpacked layer.
    let dirs = store
        .layer_dirs(&rec.id)
        .unwrap_or_else(|e| panic!("layer_dirs: {e}"));
    assert_eq!(dirs.len(), 1);
    let bb = fs::symlink_metadata(dirs[0].join("bin/busybox"))
        .unwrap_or_else(|e| panic!("bin/busybox: {e}"));
    assert!(bb.is_file());
    assert_eq!(
        bb.len(),
        fs::metadata("/bin/busybox").map(|m| m.len()).unwrap_or(0)
    );
    assert_eq!(bb.mode() & 0o111, 0o111, "busybox is executable");
    assert_eq!(
        fs::read_link(dirs[0].join("bin/sh")).unwrap_or_default(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(dirs[0].join("etc/passwd")).unwrap_or_default(),
        "root:x:0:0:root:/root:/bin/sh\n"
    );

    // Lookups.
    assert_eq!(store.list().unwrap_or_default(), vec![rec.clone()]);
    let hex = &rec.id["sha256:".len()..];
    for name in [
        tag.clone(),
        format!("{host}/husk/busybox"),
        rec.id.clone(),
        hex.to_string(),
        hex[..12].to_string(),
        format!("{host}/husk/busybox@{manifest_digest}"),
    ] {
        let got = store
            .status(&name)
            .unwrap_or_else(|e| panic!("status {name}: {e}"));
        assert_eq!(got.as_ref().map(|r| &r.id), Some(&rec.id), "status({name})");
    }
    for unknown in [
        format!("{host}/husk/nope:latest"),
        "busybox".to_string(),
        "0123456789ab".to_string(),
    ] {
        assert_eq!(
            store.status(&unknown).unwrap_or_else(|e| panic!("{e}")),
            None,
            "{unknown}"
        );
    }

    // A second pull downloads and unpacks nothing; the files are the same ones.
    let layer_blob = store.blob_path(&img.layer_digest).unwrap_or_default();
    let before = fs::metadata(&layer_blob).unwrap_or_else(|e| panic!("{e}"));
    let dir_before = fs::metadata(&dirs[0]).unwrap_or_else(|e| panic!("{e}"));
    let (rec2, stats2) = store
        .pull_with_stats(&tag, None)
        .unwrap_or_else(|e| panic!("pull 2: {e}"));
    assert_eq!(rec2, rec);
    assert_eq!(
        (
            stats2.blobs_fetched,
            stats2.bytes_fetched,
            stats2.layers_unpacked
        ),
        (0, 0, 0),
        "{stats2:?}"
    );
    let after = fs::metadata(&layer_blob).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec())
    );
    let dir_after = fs::metadata(&dirs[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dir_before.ino(), dir_after.ino());

    // By digest, and under a second name: one image with both names.
    let by_digest = format!("{host}/husk/busybox@{manifest_digest}");
    let (rec3, stats3) = store
        .pull_with_stats(&by_digest, None)
        .unwrap_or_else(|e| panic!("pull by digest: {e}"));
    assert_eq!(rec3.id, rec.id);
    assert_eq!(stats3.blobs_fetched, 0);
    let other = format!("{host}/husk/other:v1");
    push(&img, &other, &[]);
    let rec4 = store
        .pull(&other, None)
        .unwrap_or_else(|e| panic!("pull other: {e}"));
    assert_eq!(rec4.id, rec.id);
    let mut want_tags = vec![tag.clone(), other.clone()];
    want_tags.sort();
    assert_eq!(rec4.repo_tags, want_tags);
    assert_eq!(rec4.repo_digests.len(), 2, "{:?}", rec4.repo_digests);
    assert_eq!(store.list().map(|l| l.len()).unwrap_or(0), 1);

    // Usage of the store's file system.
    let usage = store.fs_usage().unwrap_or_else(|e| panic!("fs_usage: {e}"));
    assert!(usage.used_bytes >= img.layer_size + bb.len(), "{usage:?}");
    // The same numbers as du (which also counts hard links once).
    let du = |arg: &str| -> u64 {
        let out = run(Command::new("du").args(["-s", arg]).arg(store.root()));
        out.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(usage.used_bytes, du("-B1"), "{usage:?}");
    assert_eq!(usage.inodes_used, du("--inodes"), "{usage:?}");
    let canon = fs::canonicalize(store.root()).unwrap_or_default();
    assert!(canon.starts_with(&usage.mountpoint), "{usage:?}");

    // Remove: every name is gone, and blobs and layers are collected.
    store
        .remove(&other)
        .unwrap_or_else(|e| panic!("remove: {e}"));
    for name in [&tag, &other, &rec.id] {
        assert_eq!(store.status(name).unwrap_or_else(|e| panic!("{e}")), None);
    }
    let root = store.root();
    assert_eq!(entries(&root.join("blobs/sha256")), Vec::<String>::new());
    assert_eq!(entries(&root.join("layers")), Vec::<String>::new());
    assert_eq!(entries(&root.join("images")), Vec::<String>::new());
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new());
    store
        .remove(&tag)
        .unwrap_or_else(|e| panic!("remove twice: {e}"));
    match store.layer_dirs(&rec.id) {
        Err(ImageError::UnknownImage { reference }) => assert_eq!(reference, rec.id),
        other => panic!("layer_dirs of a removed image: {other:?}"),
    }
}

fn host_and_foreign_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "arm64"),
        "aarch64" => ("arm64", "amd64"),
        other => panic!("this test knows amd64 and arm64 hosts, not {other}"),
    }
}

#[test]
fn multi_arch_index_resolves_to_host_arch() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let host = reg.host();
    let repo = "husk/multi";
    push(&img, &format!("{host}/{repo}:base"), &[]);
    let (_, base) = reg.get_json(repo, "manifests/base", MT_OCI_MANIFEST);
    let (_, config) = reg.get_json(repo, &format!("blobs/{}", img.config_digest), "*/*");
    let (native, foreign) = host_and_foreign_arch();

    // One config and manifest per architecture, sharing the layer.
    let manifest_for = |arch: &str| -> (String, usize) {
        let mut c = config.clone();
        c["architecture"] = json!(arch);
        c["config"]["Cmd"] = json!([format!("/bin/{arch}-marker")]);
        let cbytes = serde_json::to_vec(&c).unwrap_or_default();
        let cdigest = reg.upload_blob(repo, &cbytes);
        let mut m = base.clone();
        m["config"]["digest"] = json!(cdigest);
        m["config"]["size"] = json!(cbytes.len());
        let mbytes = serde_json::to_vec(&m).unwrap_or_default();
        let mdigest = digest_of(&mbytes);
        reg.put_manifest(repo, &mdigest, MT_OCI_MANIFEST, &mbytes);
        (mdigest, mbytes.len())
    };
    let (native_m, native_size) = manifest_for(native);
    let (foreign_m, foreign_size) = manifest_for(foreign);
    let native_config_digest = {
        let (_, m) = reg.get_json(repo, &format!("manifests/{native_m}"), MT_OCI_MANIFEST);
        m["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let entry = |d: &str, size: usize, arch: &str, variant: Option<&str>| {
        let mut p = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        json!({"mediaType": MT_OCI_MANIFEST, "digest": d, "size": size, "platform": p})
    };
    // The foreign image first, and an amd64 v3 build that a baseline host must not take.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            entry(&foreign_m, foreign_size, foreign, None),
            entry(&foreign_m, foreign_size, "amd64", Some("v3")),
            entry(&native_m, native_size, native, None),
        ]
    });
    let ibytes = serde_json::to_vec(&index).unwrap_or_default();
    reg.put_manifest(repo, "multi", MT_OCI_INDEX, &ibytes);
    let only_foreign = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [entry(&foreign_m, foreign_size, foreign, None)]
    });
    reg.put_manifest(
        repo,
        "foreign",
        MT_OCI_INDEX,
        &serde_json::to_vec(&only_foreign).unwrap_or_default(),
    );

    let (_tmp, store) = new_store();
    let reference = format!("{host}/{repo}:multi");
    let rec = store
        .pull(&reference, None)
        .unwrap_or_else(|e| panic!("pull index: {e}"));
    assert_eq!(rec.id, native_config_digest);
    assert_eq!(rec.config.architecture, native);
    assert_eq!(rec.config.cmd, vec![format!("/bin/{native}-marker")]);
    // The repo digest is the index's, as containerd records it.
    assert_eq!(
        rec.repo_digests,
        vec![format!("{host}/{repo}@{}", digest_of(&ibytes))]
    );
    assert_eq!(rec.layers, vec![img.diff_id.clone()]);
    let dirs = store
        .layer_dirs(&reference)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(dirs[0].join("bin/busybox").is_file());
    // The index and the chosen manifest are kept; the foreign manifest is not fetched.
    assert!(store
        .blob_path(&digest_of(&ibytes))
        .map(|p| p.is_file())
        .unwrap_or(false));
    assert!(store
        .blob_path(&native_m)
        .map(|p| p.is_file())
        .unwrap_or(false));
    assert!(!store
        .blob_path(&foreign_m)
        .map(|p| p.exists())
        .unwrap_or(true));

    let err = pull_err(&store, &format!("{host}/{repo}:foreign"), None);
    let msg = err.to_string();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("linux/{native}")) && msg.contains(&format!("linux/{foreign}")),
        "{msg}"
    );
    assert!(msg.contains(&format!("{repo}:foreign")), "{msg}");
}

#[test]
fn retag_moves_the_tag_and_gc_keeps_shared_layers() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let host = reg.host();
    let repo = "husk/app";
    let tag = format!("{host}/{repo}:latest");
    push(&img, &tag, &[]);
    let old_manifest = reg.manifest_digest(repo, "latest");
    let (tmp, store) = new_store();
    let v1 = store
        .pull(&tag, None)
        .unwrap_or_else(|e| panic!("pull v1: {e}"));

    // v2: another config on the same layer, pushed under the same tag.
    let (_, base) = reg.get_json(repo, "manifests/latest", MT_OCI_MANIFEST);
    let (_, mut config) = reg.get_json(repo, &format!("blobs/{}", img.config_digest), "*/*");
    config["config"]["Cmd"] = json!(["/bin/v2"]);
    let cbytes = serde_json::to_vec(&config).unwrap_or_default();
    let cdigest = reg.upload_blob(repo, &cbytes);
    let mut m = base.clone();
    m["config"]["digest"] = json!(cdigest);
    m["config"]["size"] = json!(cbytes.len());
    let mbytes = serde_json::to_vec(&m).unwrap_or_default();
    reg.put_manifest(repo, "latest", MT_OCI_MANIFEST, &mbytes);

    let (v2, stats) = store
        .pull_with_stats(&tag, None)
        .unwrap_or_else(|e| panic!("pull v2: {e}"));
    assert_eq!(v2.id, cdigest);
    assert_eq!(v2.config.cmd, vec!["/bin/v2"]);
    assert_eq!(
        (stats.blobs_fetched, stats.layers_unpacked),
        (1, 0),
        "only the new config: {stats:?}"
    );
    assert_eq!(v2.repo_tags, vec![tag.clone()]);
    // v1 lost the tag but keeps its digest, as in containerd.
    let old = store
        .status(&v1.id)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("v1 vanished"));
    assert!(old.repo_tags.is_empty(), "{old:?}");
    assert_eq!(
        old.repo_digests,
        vec![format!("{host}/{repo}@{old_manifest}")]
    );
    assert_eq!(
        store.status(&tag).unwrap_or_default().map(|r| r.id),
        Some(v2.id.clone())
    );
    assert_eq!(store.list().map(|l| l.len()).unwrap_or(0), 2);
    let shared = store.layer_dirs(&v2.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.layer_dirs(&v1.id).unwrap_or_default(), shared);

    // Removing v1 keeps what v2 uses.
    store
        .remove(&v1.id)
        .unwrap_or_else(|e| panic!("remove v1: {e}"));
    assert!(
        shared[0].join("bin/busybox").is_file(),
        "the shared layer survived"
    );
    let exists = |d: &str| store.blob_path(d).map(|p| p.exists()).unwrap_or(false);
    assert!(exists(&v2.id) && exists(&digest_of(&mbytes)) && exists(&img.layer_digest));
    assert!(
        !exists(&v1.id) && !exists(&old_manifest),
        "v1's config and manifest are collected"
    );

    // Leftovers of a pull that died are cleaned when the store is opened again.
    let leftover = store.root().join("tmp").join("blob-dead-1-1");
    fs::write(&leftover, b"half").unwrap_or_else(|e| panic!("{e}"));
    let reopened = ImageStore::open(store.root()).unwrap_or_else(|e| panic!("reopen: {e}"));
    assert!(!leftover.exists());
    assert_eq!(reopened.list().unwrap_or_default(), vec![v2.clone()]);

    reopened
        .remove(&tag)
        .unwrap_or_else(|e| panic!("remove v2: {e}"));
    assert_eq!(
        entries(&store.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(entries(&store.root().join("layers")), Vec::<String>::new());
    drop(tmp);
}

#[test]
fn pull_failures_are_clear() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let host = reg.host();
    push(&img, &format!("{host}/husk/busybox:latest"), &[]);
    let (_tmp, store) = new_store();

    // Unknown tag and unknown repository.
    for reference in [
        format!("{host}/husk/busybox:nope"),
        format!("{host}/husk/missing:latest"),
    ] {
        let err = pull_err(&store, &reference, None);
        let msg = err.to_string();
        assert!(err.is_not_found(), "{msg}");
        assert!(
            msg.contains(&reference) && msg.contains("not found"),
            "{msg}"
        );
    }
    // An invalid reference never reaches the network.
    let err = pull_err(&store, &format!("{host}/Husk/BusyBox:latest"), None);
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");
    // A registry that is not there: the error names the URL.
    let dead = format!("127.0.0.1:{}/husk/busybox:latest", free_port());
    let msg = pull_err(&store, &dead, None).to_string();
    assert!(
        msg.contains("http://127.0.0.1:") && msg.contains("/v2/husk/busybox/manifests/latest"),
        "{msg}"
    );

    // A layer blob corrupted in the registry's storage (same size): digest mismatch.
    let data = reg.blob_data(&img.layer_digest);
    let mut bytes = fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let good = bytes.clone();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    fs::write(&data, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let err = pull_err(&store, &format!("{host}/husk/busybox:latest"), None);
    match &err {
        ImageError::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            assert_eq!(expected, &img.layer_digest);
            assert_eq!(actual, &digest_of(&bytes));
            assert!(what.contains(&img.layer_digest), "{what}");
        }
        other => panic!("corrupt blob: {other}"),
    }
    let root = store.root();
    assert!(!root
        .join("blobs/sha256")
        .join(&img.layer_digest["sha256:".len()..])
        .exists());
    assert_eq!(entries(&root.join("layers")), Vec::<String>::new());
    assert_eq!(entries(&root.join("images")), Vec::<String>::new());
    assert_eq!(
        entries(&root.join("tmp")),
        Vec::<String>::new(),
        "no half blob left"
    );

    // Truncated: a size mismatch.
    fs::write(&data, &good[..good.len() - 100]).unwrap_or_else(|e| panic!("{e}"));
    let err = pull_err(&store, &format!("{host}/husk/busybox:latest"), None);
    match &err {
        ImageError::SizeMismatch { what, expected, .. } => {
            assert_eq!(*expected, img.layer_size);
            assert!(what.contains(&img.layer_digest), "{what}");
        }
        other => panic!("truncated blob: {other}"),
    }
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new());

    // Repaired: the pull works, the config fetched earlier is reused.
    fs::write(&data, &good).unwrap_or_else(|e| panic!("{e}"));
    let (rec, stats) = store
        .pull_with_stats(&format!("{host}/husk/busybox:latest"), None)
        .unwrap_or_else(|e| panic!("pull after repair: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(
        (stats.blobs_fetched, stats.layers_unpacked),
        (1, 1),
        "{stats:?}"
    );
}

#[test]
fn zstd_layers() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let host = reg.host();
    // skopeo keeps an already compressed layer as it is: go through an uncompressed copy.
    let plain = tempfile::Builder::new()
        .prefix(&format!("husk-dirimg-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let dirimg = plain.path().join("img");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-decompress"])
        .arg(format!("oci:{}:latest", img.layout.display()))
        .arg(format!("dir:{}", dirimg.display())));
    let reference = format!("{host}/husk/zstd:latest");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
        ])
        .arg(format!("dir:{}", dirimg.display()))
        .arg(format!("docker://{reference}")));
    let (_, m) = reg.get_json("husk/zstd", "manifests/latest", MT_OCI_MANIFEST);
    assert_eq!(
        m["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "skopeo did not push a zstd layer: {m}"
    );
    let (_tmp, store) = new_store();
    let rec = store
        .pull(&reference, None)
        .unwrap_or_else(|e| panic!("pull zstd: {e}"));
    assert_eq!(
        rec.layers,
        vec![img.diff_id.clone()],
        "same diff_id as the gzip layer"
    );
    let dirs = store.layer_dirs(&rec.id).unwrap_or_else(|e| panic!("{e}"));
    let bb = fs::metadata(dirs[0].join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bb.len(),
        fs::metadata("/bin/busybox").map(|m| m.len()).unwrap_or(0)
    );
}

#[test]
fn concurrent_pulls_of_one_image() {
    require_tools!();
    let reg = Registry::start("");
    let img = build_image();
    let reference = format!("{}/husk/busybox:latest", reg.host());
    push(&img, &reference, &[]);
    let (_tmp, store) = new_store();
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (store, barrier, reference) = (store.clone(), barrier.clone(), reference.clone());
            thread::spawn(move || {
                barrier.wait();
                store
                    .pull_with_stats(&reference, None)
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut fetched = 0;
    let mut unpacked = 0;
    for h in handles {
        let (rec, stats) = h
            .join()
            .unwrap_or_else(|_| panic!("puller panicked"))
            .unwrap_or_else(|e| panic!("concurrent pull: {e}"));
        assert_eq!(rec.id, img.config_digest);
        fetched += stats.blobs_fetched;
        unpacked += stats.layers_unpacked;
    }
    assert_eq!(
        (fetched, unpacked),
        (2, 1),
        "each blob fetched once, the layer unpacked once"
    );
    let list = store.list().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repo_tags, vec![reference.clone()]);
    assert_eq!(entries(&store.root().join("tmp")), Vec::<String>::new());
    let dirs = store
        .layer_dirs(&reference)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(dirs[0].join("bin/busybox").is_file());
}

// ---- Token authentication: a token server for the registry's `auth: token` mode ----

fn b64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            _ => 63,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const USER: &str = "husk";
const PASSWORD: &str = "s3cret";
const REFRESH_TOKEN: &str = "husk-refresh-token";
const SERVICE: &str = "husk-registry";
const ISSUER: &str = "husk-token-issuer";

/// A token server (docker token spec): GET with basic auth, or the OAuth2 refresh-token POST;
/// tokens are JWTs signed (RS256) by openssl with a throwaway key.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    issued: Arc<std::sync::atomic::AtomicU32>,
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=husk-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| panic!("openssl x509: {e}"))
            .stdout;
        let x5c = b64(&der, false);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop2, issued2) = (stop.clone(), issued.clone());
        let handle = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve_token(conn, &key, &x5c, &issued2);
                }
            }
        });
        TokenServer {
            port,
            stop,
            handle: Some(handle),
            issued,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn respond(mut conn: TcpStream, status: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve_token(conn: TcpStream, key: &Path, x5c: &str, issued: &std::sync::atomic::AtomicU32) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = v.trim().to_string(),
                "content-length" => content_length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let query = if method == "POST" {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        target
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default()
    };
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let user_ok = if method == "POST" {
        get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(REFRESH_TOKEN)
    } else {
        match authorization.strip_prefix("Basic ") {
            Some(b) => b64_decode(b) == format!("{USER}:{PASSWORD}").into_bytes(),
            None => false,
        }
    };
    if !user_ok {
        respond(
            conn,
            "401 Unauthorized",
            r#"{"details":"incorrect username or password"}"#,
        );
        return;
    }
    if get("service").as_deref() != Some(SERVICE) {
        respond(conn, "400 Bad Request", r#"{"details":"unknown service"}"#);
        return;
    }
    let access: Vec<Value> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|s| {
            let mut it = s.splitn(3, ':');
            let (kind, name, actions) = (it.next()?, it.next()?, it.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 10,
        "iat": now - 10, "jti": format!("{now}-{}", issued.load(Ordering::SeqCst)), "access": access
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), true),
        b64(claims.to_string().as_bytes(), true)
    );
    let mut child = match Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return respond(conn, "500 Internal Server Error", "{}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(signing_input.as_bytes());
    }
    let sig = match child.wait_with_output() {
        Ok(o) if o.status.success() => o.stdout,
        _ => return respond(conn, "500 Internal Server Error", "{}"),
    };
    let token = format!("{signing_input}.{}", b64(&sig, true));
    issued.fetch_add(1, Ordering::SeqCst);
    let body = if method == "POST" {
        json!({"access_token": token, "expires_in": 600}).to_string()
    } else {
        json!({"token": token, "expires_in": 600}).to_string()
    };
    respond(conn, "200 OK", &body);
}

#[test]
fn bearer_token_auth() {
    require_tools!();
    let keys = tempfile::Builder::new()
        .prefix(&format!("husk-token-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let tokens = TokenServer::start(keys.path());
    let reg = Registry::start(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
         rootcertbundle: {}\n",
        tokens.port,
        keys.path().join("token.crt").display()
    ));
    let img = build_image();
    let reference = format!("{}/husk/private:latest", reg.host());
    push(
        &img,
        &reference,
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
    );
    let (_tmp, store) = new_store();

    // Anonymous and wrong credentials: refused by the token server, said clearly.
    let err = pull_err(&store, &reference, None);
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{}/token", tokens.port)) && msg.contains("401"),
        "{msg}"
    );
    let wrong = PullAuth {
        username: USER.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull_err(&store, &reference, Some(&wrong));
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");

    // User name and password, through the token flow.
    let auth = PullAuth {
        username: USER.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let before = tokens.issued.load(Ordering::SeqCst);
    let (rec, stats) = store
        .pull_with_stats(&reference, Some(&auth))
        .unwrap_or_else(|e| panic!("pull with credentials: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst) - before,
        1,
        "one token for the whole pull"
    );
    assert!(stats.requests >= 5, "{stats:?}"); // 401, token, manifest, config, layer
    store.remove(&rec.id).unwrap_or_else(|e| panic!("{e}"));

    // An identity (refresh) token, traded at the realm.
    let identity = PullAuth {
        identity_token: Some(REFRESH_TOKEN.into()),
        ..Default::default()
    };
    let rec = store
        .pull(&reference, Some(&identity))
        .unwrap_or_else(|e| panic!("pull with identity token: {e}"));
    assert_eq!(rec.id, img.config_digest);
    let bad_identity = PullAuth {
        identity_token: Some("nope".into()),
        ..Default::default()
    };
    let (_tmp2, store2) = new_store();
    assert!(matches!(
        pull_err(&store2, &reference, Some(&bad_identity)),
        ImageError::Unauthorized { .. }
    ));

    // A registry token, sent as is: no token request at all.
    let resp = ureq::get(&format!(
        "http://127.0.0.1:{}/token?service={SERVICE}&scope=repository:husk/private:pull",
        tokens.port
    ))
    .set(
        "Authorization",
        &format!(
            "Basic {}",
            b64(format!("{USER}:{PASSWORD}").as_bytes(), false)
        ),
    )
    .call()
    .unwrap_or_else(|e| panic!("get token: {e}"));
    let v: Value = resp.into_json().unwrap_or_else(|e| panic!("{e}"));
    let token = v["token"].as_str().unwrap_or_default().to_string();
    let (_tmp3, store3) = new_store();
    let before = tokens.issued.load(Ordering::SeqCst);
    let registry_token = PullAuth {
        registry_token: Some(token),
        ..Default::default()
    };
    let rec = store3
        .pull(&reference, Some(&registry_token))
        .unwrap_or_else(|e| panic!("pull with registry token: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst),
        before,
        "the registry token was used as is"
    );
}
