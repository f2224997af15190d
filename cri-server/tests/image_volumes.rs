//! Image VOLUMEs and image removal while containers use the image, through husk-cri (issue 12):
//! - an image with `VOLUME /data` holding files: each container gets a directory of its own
//!   under its bundle (`volumes/<n>`) with a copy of the image's content (modes and owners
//!   kept), bound read-write at /data; two containers do not share it; it goes with
//!   RemoveContainer;
//! - hostile image configs (CVE-2022-23648 class): a volume `/../../../../tmp/<unique>` and
//!   volumes through symlinks of the image to a host directory (absolute and relative) make
//!   nothing outside the container's state dir and read nothing of the host: as containerd
//!   after its fix, the paths are cleaned and resolved inside the rootfs, so creation succeeds
//!   with the volumes inside the rootfs (and the image's own content there); a volume that is a
//!   file in the image is refused with an error naming it;
//! - RemoveImage of an image a running container uses succeeds; the container keeps running
//!   and reading its files (also across a husk-cri restart); its layers are collected once
//!   the container is removed.
//!
//! husk-cri runs as a child process (the release binaries: HUSK_CRI, SHIM_BIN, HUSK_RUNTIME,
//! by default <target>/release), the images are the busybox of hack/mkimage.sh plus a layer
//! and config this file writes, pushed with skopeo to a docker-registry on 127.0.0.1. Pods use
//! the host network (no CNI, no traffic). Needs root.

use husk_cri::sandbox::SHIM_NAMESPACE;
use husk_cri::shim::{Shim, ShimConfig};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::transport::Channel;

mod common;
use common::{binary, build_image, digest_of, push, run, CriServer, OciImage, Registry};

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// One entry of the extra layer.
enum Ent<'a> {
    Dir(&'a str, u32, u64),
    File(&'a str, &'a str, u32, u64),
    Symlink(&'a str, &'a str),
}

/// The busybox image `base` plus one gzip layer of `entries` (owner uid = gid as given) and
/// the config's `Volumes` set to `volumes`: an OCI layout written as umoci would.
fn image_with(base: &OciImage, entries: &[Ent<'_>], volumes: &[&str]) -> OciImage {
    let dir = tempfile::Builder::new()
        .prefix(&format!("husk-volimg-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir");
    let layout = dir.path().join("oci");
    run(Command::new("cp").arg("-a").arg(&base.layout).arg(&layout));
    let blob = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json")
    };
    let put = |bytes: &[u8]| -> String {
        let d = digest_of(bytes);
        std::fs::write(blob(&d), bytes).expect("write blob");
        d
    };
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        let (name, data): (&str, &[u8]) = match e {
            Ent::Dir(n, mode, id) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*id);
                h.set_gid(*id);
                (n, b"")
            }
            Ent::File(n, content, mode, id) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*id);
                h.set_gid(*id);
                (n, content.as_bytes())
            }
            Ent::Symlink(n, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).expect("link name");
                h.set_mode(0o777);
                h.set_uid(0);
                h.set_gid(0);
                (n, b"")
            }
        };
        h.set_path(name).expect("name");
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append(&h, data).expect("append");
    }
    let tar = tar.into_inner().expect("tar");
    let diff_id = digest_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let layer_digest = put(&gz);

    let mut index = read(layout.join("index.json"));
    let mut manifest = read(blob(
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ));
    let mut config = read(blob(manifest["config"]["digest"].as_str().expect("digest")));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(json!(diff_id));
    if let Some(h) = config["history"].as_array_mut() {
        h.push(json!({"created_by": "husk-cri image_volumes test"}));
    }
    let vols: BTreeMap<&str, Value> = volumes.iter().map(|v| (*v, json!({}))).collect();
    config["config"]["Volumes"] = json!(vols);
    let config_bytes = serde_json::to_vec(&config).expect("json");
    let config_digest = put(&config_bytes);
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"]
        .as_array_mut()
        .expect("layers")
        .push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": gz.len(),
        }));
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    index["manifests"][0]["digest"] = json!(put(&manifest_bytes));
    index["manifests"][0]["size"] = json!(manifest_bytes.len());
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index.json");
    OciImage {
        _dir: dir,
        layout,
        config_digest,
        layer_digest,
        layer_size: gz.len() as u64,
        diff_id,
    }
}

/// On the way out (also when an assertion fails): every container and sandbox task deleted
/// through `shim delete` (it kills and deletes with husk, unmounting what it mounted).
struct Guard {
    dir: PathBuf,
    shim: ShimConfig,
    ids: Vec<(String, &'static str)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (id, kind) in self.ids.iter().rev() {
            let bundle = self.dir.join("state").join(kind).join(id);
            if bundle.exists() {
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, &bundle);
            }
        }
    }
}

struct Cx {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    dir: PathBuf,
    pod: String,
    pod_cfg: cri::PodSandboxConfig,
    guard: Guard,
    server: CriServer,
    _tmp: tempfile::TempDir,
}

impl Cx {
    async fn new(what: &str) -> Cx {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs pods and containers: run it as root"
        );
        if let Some(t) = common::tools_missing() {
            panic!("{t} is not installed (apt-get install docker-registry skopeo umoci)");
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("husk-cri-vol-{what}-{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut server = CriServer::start(&dir, &[]);
        let ch = server.channel().await;
        let guard = Guard {
            dir: dir.clone(),
            shim: ShimConfig {
                shim_bin: binary("SHIM_BIN", "containerd-shim-husk-v2"),
                runtime: Some(binary("HUSK_RUNTIME", "husk")),
                address: server.sock(),
                events: dir.join("state").join("events.sock"),
            },
            ids: Vec::new(),
        };
        let name = format!("vol-{what}-{}", std::process::id());
        let pod_cfg = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: name,
                namespace: "husk-cri-test".into(),
                attempt: 0,
            }),
            // A host-network pod has the node's hostname.
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut cx = Cx {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            dir,
            pod: String::new(),
            pod_cfg,
            guard,
            server,
            _tmp: tmp,
        };
        cx.pod = cx
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cx.pod_cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        cx.guard.ids.push((cx.pod.clone(), "sandboxes"));
        cx
    }

    async fn reconnect(&mut self) {
        let ch = self.server.channel().await;
        self.rt = RuntimeServiceClient::new(ch.clone());
        self.img = ImageServiceClient::new(ch);
    }

    async fn pull(&mut self, image: &str) -> String {
        self.img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("PullImage")
            .into_inner()
            .image_ref
    }

    async fn create(&mut self, image: &str, name: &str) -> Result<String, tonic::Status> {
        let cfg = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "100000".into()],
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(self.pod_cfg.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        self.guard.ids.push((id.clone(), "containers"));
        Ok(id)
    }

    /// CreateContainer + StartContainer of `sleep`.
    async fn run(&mut self, image: &str, name: &str) -> String {
        let id = self.create(image, name).await.expect("CreateContainer");
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        id
    }

    /// ExecSync: (exit code, stdout, stderr).
    async fn exec(&mut self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 60,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"))
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    async fn state(&mut self, id: &str) -> i32 {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status")
            .state
    }

    async fn remove(&mut self, id: &str) {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: 0,
            })
            .await
            .expect("StopContainer");
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .expect("RemoveContainer");
    }

    async fn remove_image(&mut self, image: &str) {
        self.img
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .expect("RemoveImage");
    }

    async fn finish(mut self) {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: self.pod.clone(),
            })
            .await
            .expect("StopPodSandbox");
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: self.pod.clone(),
            })
            .await
            .expect("RemovePodSandbox");
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("state/containers").join(id)
    }

    fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.dir
            .join("root/images/layers")
            .join(&diff_id["sha256:".len()..])
    }

    /// The bind mounts of the container's spec: destination -> (source, options).
    fn binds(&self, id: &str) -> BTreeMap<String, (PathBuf, Vec<String>)> {
        let spec: Value = serde_json::from_slice(
            &std::fs::read(self.bundle(id).join("config.json")).expect("config.json"),
        )
        .expect("json");
        spec["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| m["type"] == "bind")
            .map(|m| {
                (
                    m["destination"].as_str().unwrap_or_default().to_string(),
                    (
                        PathBuf::from(m["source"].as_str().unwrap_or_default()),
                        m["options"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|o| o.as_str().map(str::to_string))
                            .collect(),
                    ),
                )
            })
            .collect()
    }
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volume_content_per_container_and_gone_with_it() {
    let reg = Registry::start("");
    let base = build_image();
    let oci = image_with(
        &base,
        &[
            Ent::Dir("data/", 0o755, 0),
            Ent::File("data/file", "image content\n", 0o644, 0),
            Ent::Dir("data/sub/", 0o750, 1000),
            Ent::File("data/sub/deep", "deep\n", 0o640, 1000),
        ],
        &["/data"],
    );
    let image = format!("{}/husk/vol-{}:latest", reg.host(), std::process::id());
    push(&oci, &image, &[]);
    let mut cx = Cx::new("content").await;
    cx.pull(&image).await;
    let c1 = cx.run(&image, "one").await;
    let c2 = cx.run(&image, "two").await;

    // The image's content, with its owners and modes, in a read-write volume.
    for c in [&c1, &c2] {
        assert_eq!(
            cx.exec(c, &["cat", "/data/file"]).await,
            (0, "image content\n".into(), String::new())
        );
        let (code, out, err) = cx
            .exec(
                c,
                &["stat", "-c", "%u:%g %a", "/data/sub", "/data/sub/deep"],
            )
            .await;
        assert_eq!(
            (code, out.as_str()),
            (0, "1000:1000 750\n1000:1000 640\n"),
            "{err}"
        );
    }
    let (code, _, err) = cx
        .exec(
            &c1,
            &["sh", "-c", "echo one > /data/file && echo c1 > /data/mine"],
        )
        .await;
    assert_eq!(code, 0, "writing to the volume: {err}");
    // c2 has its own copy.
    assert_eq!(
        cx.exec(&c2, &["cat", "/data/file"]).await.1,
        "image content\n"
    );
    assert_ne!(cx.exec(&c2, &["test", "-e", "/data/mine"]).await.0, 0);
    // It is a bind of a directory in each container's bundle.
    let (s1, o1) = cx
        .binds(&c1)
        .remove("/data")
        .expect("a /data bind in c1's spec");
    let (s2, _) = cx
        .binds(&c2)
        .remove("/data")
        .expect("a /data bind in c2's spec");
    assert!(s1.starts_with(cx.bundle(&c1).join("volumes")), "{s1:?}");
    assert!(s2.starts_with(cx.bundle(&c2).join("volumes")), "{s2:?}");
    assert!(
        o1.contains(&"rbind".to_string()) && o1.contains(&"rw".to_string()),
        "{o1:?}"
    );
    assert_eq!(
        std::fs::read_to_string(s1.join("mine")).expect("c1's volume"),
        "c1\n"
    );
    assert_eq!(names(&s2), ["file", "sub"]);

    cx.remove(&c1).await;
    assert!(!cx.bundle(&c1).exists(), "c1's bundle (and volume) is left");
    assert!(!s1.exists());
    assert_eq!(
        cx.exec(&c2, &["cat", "/data/file"]).await.1,
        "image content\n"
    );
    cx.remove(&c2).await;
    assert!(!s2.exists());
    cx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_volume_paths_stay_inside_the_rootfs() {
    let u = format!("husk-vol-{}", std::process::id());
    // The host directory the image's symlinks point to, and the path `..` would reach.
    let host_dir = PathBuf::from(format!("/tmp/{u}-host"));
    let reached = PathBuf::from(format!("/tmp/{u}"));
    let _ = std::fs::remove_dir_all(&host_dir);
    let _ = std::fs::remove_dir_all(&reached);
    std::fs::create_dir(&host_dir).expect("mkdir host dir");
    struct Rm(Vec<PathBuf>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let _rm = Rm(vec![host_dir.clone(), reached.clone()]);
    std::fs::write(host_dir.join("secret"), "host secret").expect("write");

    let reg = Registry::start("");
    let base = build_image();
    let (d1, f1) = (format!("tmp/{u}/"), format!("tmp/{u}/inimage"));
    let (d2, f2) = (format!("tmp/{u}-host/"), format!("tmp/{u}-host/inimage2"));
    let (d3, f3) = (
        format!("tmp/{u}-host/sub/"),
        format!("tmp/{u}-host/sub/inimage3"),
    );
    let abs = host_dir.display().to_string();
    let rel = format!("../../../../../..{}", host_dir.display());
    let v1 = format!("/../../../../tmp/{u}");
    let oci = image_with(
        &base,
        &[
            Ent::Dir(&d1, 0o755, 0),
            Ent::File(&f1, "one\n", 0o644, 0),
            Ent::Dir(&d2, 0o755, 0),
            Ent::File(&f2, "two\n", 0o644, 0),
            Ent::Dir(&d3, 0o755, 0),
            Ent::File(&f3, "three\n", 0o644, 0),
            Ent::Symlink("evil", &abs),
            Ent::Symlink("evil2", &rel),
        ],
        &[&v1, "/evil", "/evil2/sub"],
    );
    let image = format!("{}/husk/hostile-{}:latest", reg.host(), std::process::id());
    push(&oci, &image, &[]);
    let file_vol = image_with(&base, &[], &["/bin/busybox"]);
    let image2 = format!("{}/husk/filevol-{}:latest", reg.host(), std::process::id());
    push(&file_vol, &image2, &[]);

    let mut cx = Cx::new("hostile").await;
    cx.pull(&image).await;
    cx.pull(&image2).await;
    // As containerd after its CVE-2022-23648 fix: the paths are cleaned and resolved inside
    // the rootfs, so creation succeeds, with the volumes (and the image's content at those
    // paths) inside the rootfs.
    let c = cx.run(&image, "hostile").await;
    assert_eq!(
        cx.exec(&c, &["cat", &format!("/tmp/{u}/inimage")]).await.1,
        "one\n"
    );
    assert_eq!(cx.exec(&c, &["cat", "/evil/inimage2"]).await.1, "two\n");
    assert_eq!(
        cx.exec(&c, &["cat", "/evil2/sub/inimage3"]).await.1,
        "three\n"
    );
    assert_ne!(cx.exec(&c, &["cat", "/evil/secret"]).await.0, 0);
    // Nothing of the host was read or made.
    assert!(
        !reached.exists(),
        "{} was created on the host",
        reached.display()
    );
    assert_eq!(names(&host_dir), ["secret"], "the host dir changed");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("secret")).expect("read"),
        "host secret"
    );
    let binds = cx.binds(&c);
    let vols = cx.bundle(&c).join("volumes");
    for dst in [format!("/tmp/{u}"), "/evil".into(), "/evil2/sub".into()] {
        let (src, _) = binds
            .get(&dst)
            .unwrap_or_else(|| panic!("no bind at {dst}: {binds:?}"));
        assert!(src.starts_with(&vols), "{dst} bound from {}", src.display());
    }
    assert_eq!(names(&vols), ["0", "1", "2"]);
    for p in walk(&vols) {
        assert_ne!(
            p.file_name().and_then(|n| n.to_str()),
            Some("secret"),
            "a host file was copied: {}",
            p.display()
        );
    }
    // A volume that is a file in the image: refused, naming it; nothing left behind.
    let err = cx
        .create(&image2, "filevol")
        .await
        .expect_err("a file as a volume");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/bin/busybox"), "{}", err.message());
    assert_eq!(
        names(&cx.dir.join("state/containers")),
        std::slice::from_ref(&c)
    );

    cx.remove(&c).await;
    assert!(!vols.exists());
    assert!(!reached.exists());
    assert_eq!(names(&host_dir), ["secret"]);
    cx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_image_in_use_keeps_its_layers_until_the_container_goes() {
    let reg = Registry::start("");
    let base = build_image();
    let content = format!("in use {}\n", std::process::id());
    let oci = image_with(&base, &[Ent::File("inuse", &content, 0o644, 0)], &[]);
    let image = format!("{}/husk/inuse-{}:latest", reg.host(), std::process::id());
    push(&oci, &image, &[]);
    let mut cx = Cx::new("inuse").await;
    let id = cx.pull(&image).await;
    let c = cx.run(&image, "inuse").await;
    let layers = [cx.layer_dir(&base.diff_id), cx.layer_dir(&oci.diff_id)];
    for l in &layers {
        assert!(l.is_dir(), "{} missing", l.display());
    }

    cx.remove_image(&image).await;
    let listed = cx
        .img
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(listed.iter().all(|i| i.id != id), "{listed:?}");
    assert_eq!(cx.state(&c).await, RUNNING);
    assert_eq!(cx.exec(&c, &["cat", "/inuse"]).await.1, content);
    for l in &layers {
        assert!(l.is_dir(), "{} went while a container uses it", l.display());
    }

    // husk-cri killed and started again: the layers are held again from the container's
    // record (its startup gc keeps them).
    cx.server.kill_and_restart();
    cx.reconnect().await;
    assert_eq!(cx.state(&c).await, RUNNING);
    for l in &layers {
        assert!(l.is_dir(), "{} went at a restart", l.display());
    }
    assert_eq!(cx.exec(&c, &["cat", "/inuse"]).await.1, content);

    cx.remove(&c).await;
    let left = names(&cx.dir.join("root/images/layers"));
    assert!(
        left.is_empty(),
        "layer dirs left after the last user went: {left:?}"
    );
    cx.finish().await;
}
