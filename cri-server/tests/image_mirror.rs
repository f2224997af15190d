//! Registry mirrors from a hosts.toml directory (containerd's `config_path` format): an image
//! named `registry.k8s.io/...` is pulled from a loopback docker-registry (Debian's, started here
//! with its own config and storage) that holds it under the same repository path, and keeps its
//! own name and digest in the store and in the CRI ImageService (husk-cri's gRPC server, run in
//! this process with `registry_config_dir`). Also: mirrors tried in order, a mirror without the
//! image or without `resolve` passed over, a dead one skipped, and errors naming every host.
//! Needs root (layer ownership) and docker-registry, skopeo and umoci, which it says when missing.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use husk_cri::image::{ImageError, ImageStore, StoreOptions};
use husk_cri::server::{serve, Config};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

const NAME: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const REPO: &str = "registry.k8s.io/e2e-test-images/busybox";

fn require_tools() {
    for t in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/umoci",
    ] {
        assert!(
            Path::new(t).exists(),
            "{t} is not installed (apt-get install docker-registry skopeo umoci)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "pulling images unpacks layers with their owners: run this test as root"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("addr: {e}"))
}

fn tmpdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// A docker-registry child process (access log on), killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let dir = tmpdir("husk-mirror-registry");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, config).unwrap_or_else(|e| panic!("write config: {e}"));
        let log = fs::File::create(dir.path().join("registry.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn docker-registry: {e}"));
        let mut reg = Registry { child, dir, port };
        for _ in 0..400 {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", reg.log());
            }
            if ureq::get(&format!("http://{}/v2/", reg.host()))
                .call()
                .is_ok()
            {
                return reg;
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!("docker-registry did not come up: {}", reg.log());
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digest the registry serves for `path:tag` (an OCI manifest, as skopeo pushed it).
    fn manifest_digest(&self, path: &str, tag: &str) -> String {
        let resp = ureq::get(&format!("http://{}/v2/{path}/manifests/{tag}", self.host()))
            .set("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .unwrap_or_else(|e| panic!("GET manifest {path}:{tag}: {e}"));
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)
            .unwrap_or_else(|e| panic!("read manifest: {e}"));
        let hex: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox OCI layout (hack/mkimage.sh), pushed to `registry` as `path:tag`; returns the
/// image's config digest (its ID).
fn push_busybox(registry: &Registry, path_tag: &str) -> String {
    let dir = tmpdir("husk-mirror-oci");
    let layout = dir.path().join("oci");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/mkimage.sh");
    run(Command::new(&script).arg("--oci-dir").arg(&layout));
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/{path_tag}", registry.host())));
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.join("index.json")).unwrap_or_else(|e| panic!("index.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("index.json: {e}"));
    let m = index["manifests"][0]["digest"].as_str().unwrap_or_default();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.join("blobs/sha256").join(&m["sha256:".len()..]))
            .unwrap_or_else(|e| panic!("manifest: {e}")),
    )
    .unwrap_or_else(|e| panic!("manifest: {e}"));
    manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn write_hosts(dir: &Path, registry_host: &str, text: &str) {
    let d = dir.join(registry_host);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    fs::write(d.join("hosts.toml"), text).unwrap_or_else(|e| panic!("hosts.toml: {e}"));
}

fn store_with(hosts: &Path, root: &Path) -> ImageStore {
    ImageStore::open_with(
        root,
        StoreOptions {
            registry_config_dir: Some(hosts.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open store: {e}"))
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    free_port()
}

#[test]
fn pull_through_mirror_keeps_the_name() {
    require_tools();
    let reg = Registry::start();
    let id = push_busybox(&reg, "e2e-test-images/busybox:1.29-2");
    let digest = reg.manifest_digest("e2e-test-images/busybox", "1.29-2");
    let tmp = tmpdir("husk-mirror-store");
    let hosts = tmp.path().join("certs.d");
    // The upstream is unreachable (a dead loopback port), so only the mirror can serve it.
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!(
            "server = \"http://127.0.0.1:{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            dead_port(),
            reg.host()
        ),
    );
    let store = store_with(&hosts, &tmp.path().join("store"));
    let rec = store
        .pull(NAME, None)
        .unwrap_or_else(|e| panic!("pull {NAME}: {e}"));
    assert_eq!(rec.id, id);
    assert_eq!(rec.repo_tags, vec![NAME.to_string()]);
    assert_eq!(rec.repo_digests, vec![format!("{REPO}@{digest}")]);
    // found by its name, its digest reference and its ID; never under the mirror's name
    for name in [NAME.to_string(), format!("{REPO}@{digest}"), id.clone()] {
        let found = store
            .status(&name)
            .unwrap_or_else(|e| panic!("status {name}: {e}"));
        assert_eq!(found.map(|r| r.id), Some(id.clone()), "{name}");
    }
    let mirror_name = format!("{}/e2e-test-images/busybox:1.29-2", reg.host());
    assert_eq!(store.status(&mirror_name).ok().flatten(), None);
    // The mirror was asked with the namespace of the original registry, as containerd does.
    let log = reg.log();
    assert!(
        log.contains("/v2/e2e-test-images/busybox/manifests/1.29-2?ns=registry.k8s.io"),
        "registry access log lacks the ns query: {log}"
    );
    // A pull by digest goes through the mirror as well.
    store.remove(NAME).unwrap_or_else(|e| panic!("remove: {e}"));
    let by_digest = format!("{REPO}@{digest}");
    let rec = store
        .pull(&by_digest, None)
        .unwrap_or_else(|e| panic!("pull {by_digest}: {e}"));
    assert_eq!(rec.repo_digests, vec![by_digest.clone()]);
    assert!(rec.repo_tags.is_empty(), "{:?}", rec.repo_tags);
    store
        .remove(&by_digest)
        .unwrap_or_else(|e| panic!("remove: {e}"));
}

#[test]
fn mirrors_in_order_and_fallbacks() {
    require_tools();
    let good = Registry::start();
    let empty = Registry::start();
    let id = push_busybox(&good, "e2e-test-images/busybox:1.29-2");
    let tmp = tmpdir("husk-mirror-order");
    let hosts = tmp.path().join("certs.d");
    // first a dead mirror, then one without the image, then one that may not resolve tags,
    // then the good one; the upstream (the good registry again, as `server`) is never needed
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!(
            "server = \"http://{good}\"\n\
             [host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{empty}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{good}/\"]\n  capabilities = [\"pull\"]\n\
             [host.\"http://{good}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            good = good.host(),
            empty = empty.host(),
            dead = dead_port(),
        ),
    );
    let store = store_with(&hosts, &tmp.path().join("store"));
    let rec = store
        .pull(NAME, None)
        .unwrap_or_else(|e| panic!("pull {NAME}: {e}"));
    assert_eq!(rec.id, id);
    assert_eq!(rec.repo_tags, vec![NAME.to_string()]);
    let empty_log = empty.log();
    assert!(
        empty_log.contains("/v2/e2e-test-images/busybox/manifests/1.29-2?ns=registry.k8s.io"),
        "the mirror without the image was not asked first: {empty_log}"
    );

    // Missing everywhere: NotFound (every host answered 404).
    let missing = "registry.k8s.io/e2e-test-images/none:1";
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n",
            good.host(),
            empty.host()
        ),
    );
    match store.pull(missing, None) {
        Err(e @ ImageError::NotFound { .. }) => assert!(e.is_not_found()),
        other => panic!("pull {missing}: want NotFound, got {other:?}"),
    }
    // A dead mirror and a dead upstream: one error naming both.
    let (d1, d2) = (dead_port(), dead_port());
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!("server = \"http://127.0.0.1:{d1}\"\n[host.\"http://127.0.0.1:{d2}\"]\n"),
    );
    let e = store
        .pull(missing, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("pull {missing} with dead hosts succeeded"));
    assert!(
        e.contains(&format!("127.0.0.1:{d1}")) && e.contains(&format!("127.0.0.1:{d2}")),
        "{e}"
    );
    // A broken hosts.toml is an error naming the file.
    write_hosts(
        &hosts,
        "registry.k8s.io",
        "[host.\"http://x\"]\ncapabilities = 3\n",
    );
    let e = store
        .pull(NAME, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("registry.k8s.io/hosts.toml"), "{e}");
    // Only pull capability everywhere: a tag cannot be resolved, and the error says why.
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!(
            "server = \"http://{0}\"\ncapabilities = [\"pull\"]\n[host.\"http://{0}\"]\ncapabilities = [\"pull\"]\n",
            good.host()
        ),
    );
    let e = store
        .pull("registry.k8s.io/e2e-test-images/busybox:other", None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("resolve"), "{e}");
    store.remove(NAME).unwrap_or_else(|e| panic!("remove: {e}"));
}

async fn image_client(sock: &Path) -> ImageServiceClient<Channel> {
    for _ in 0..400 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let path: PathBuf = sock.to_path_buf();
    let ch = Endpoint::try_from("http://[::1]:1")
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to husk-cri: {e}"));
    ImageServiceClient::new(ch)
}

/// husk-cri with `registry_config_dir`: PullImage, ImageStatus and ListImages show the name the
/// kubelet asked for, with its digest, and the image's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_image_service_through_mirror() {
    require_tools();
    let reg = Registry::start();
    let id = push_busybox(&reg, "e2e-test-images/busybox:1.29-2");
    let digest = reg.manifest_digest("e2e-test-images/busybox", "1.29-2");
    let tmp = tmpdir("husk-mirror-cri");
    let hosts = tmp.path().join("certs.d");
    write_hosts(
        &hosts,
        "registry.k8s.io",
        &format!(
            "server = \"https://registry.k8s.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host()
        ),
    );
    let cfg = Config {
        listen: tmp.path().join("cri.sock"),
        root: tmp.path().join("root"),
        state_dir: tmp.path().join("state"),
        registry_config_dir: hosts.clone(),
        ..Config::default()
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(cfg.clone(), async {
        let _ = rx.await;
    }));
    let mut c = image_client(&cfg.listen).await;
    let spec = |image: &str| {
        Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        })
    };
    let pulled = c
        .pull_image(cri::PullImageRequest {
            image: spec(NAME),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage {NAME}: {e}"))
        .into_inner();
    assert_eq!(pulled.image_ref, id);
    let status = c
        .image_status(cri::ImageStatusRequest {
            image: spec(NAME),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus: {e}"))
        .into_inner()
        .image
        .unwrap_or_else(|| panic!("ImageStatus {NAME}: no image"));
    assert_eq!(status.id, id);
    assert_eq!(status.repo_tags, vec![NAME.to_string()]);
    assert_eq!(status.repo_digests, vec![format!("{REPO}@{digest}")]);
    // busybox from mkimage.sh has no USER: root, as a uid
    assert_eq!(status.uid, Some(cri::Int64Value { value: 0 }));
    assert_eq!(status.username, "");
    let list = c
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap_or_else(|e| panic!("ListImages: {e}"))
        .into_inner()
        .images;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].repo_tags, vec![NAME.to_string()]);
    assert_eq!(list[0].repo_digests, vec![format!("{REPO}@{digest}")]);
    c.remove_image(cri::RemoveImageRequest { image: spec(NAME) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage: {e}"));
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("husk-cri: {e}"),
        Err(e) => panic!("server task: {e}"),
    }
}
