//! Helpers shared by husk-cri's integration tests: the repository's binaries, and a real
//! registry (Debian's docker-registry as a child process) with a busybox image built by
//! hack/mkimage.sh (umoci) and pushed with skopeo.
#![allow(dead_code)]

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A release binary of this workspace: `$ENV` if set, else `<target>/release/NAME`.
pub fn binary(env: &str, name: &str) -> PathBuf {
    match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo().join("target"));
            target.join("release").join(name)
        }
    }
}

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn tools_missing() -> Option<&'static str> {
    [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/umoci",
    ]
    .into_iter()
    .find(|t| !Path::new(t).exists())
}

#[allow(unused_macros)]
macro_rules! require_tools {
    () => {
        if let Some(t) = $crate::common::tools_missing() {
            panic!("{t} is not installed: bash hack/setup.sh (apt-get install docker-registry skopeo umoci)");
        }
    };
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

pub fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

pub fn run(cmd: &mut Command) -> String {
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

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("addr: {e}"))
}

/// A docker-registry child process with its own config and storage, killed on drop.
pub struct Registry {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Registry {
    pub fn start(auth_yaml: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix(&format!("husk-registry-{}-", std::process::id()))
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
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
        // Readiness: /v2/ answers (200, or 401 with token auth).
        for _ in 0..400 {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", reg.log());
            }
            match ureq::get(&format!("http://{}/v2/", reg.host())).call() {
                Ok(_) | Err(ureq::Error::Status(401, _)) => return reg,
                Err(_) => thread::sleep(Duration::from_millis(25)),
            }
        }
        panic!("docker-registry did not come up: {}", reg.log());
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = &digest["sha256:".len()..];
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn upload_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let resp = ureq::post(&format!("http://{}/v2/{repo}/blobs/uploads/", self.host()))
            .call()
            .unwrap_or_else(|e| panic!("start upload: {e}"));
        let loc = resp.header("location").unwrap_or_default().to_string();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("http://{}{loc}", self.host())
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{url}{sep}digest={digest}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .unwrap_or_else(|e| panic!("upload blob: {e}"));
        digest
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        ureq::put(&format!(
            "http://{}/v2/{repo}/manifests/{reference}",
            self.host()
        ))
        .set("Content-Type", media_type)
        .send_bytes(bytes)
        .unwrap_or_else(|e| panic!("put manifest {repo}:{reference}: {e}"));
    }

    pub fn get_json(&self, repo: &str, what: &str, accept: &str) -> (Vec<u8>, Value) {
        let resp = ureq::get(&format!("http://{}/v2/{repo}/{what}", self.host()))
            .set("Accept", accept)
            .call()
            .unwrap_or_else(|e| panic!("GET {repo}/{what}: {e}"));
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let v = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("json: {e}"));
        (body, v)
    }

    pub fn manifest_digest(&self, repo: &str, tag: &str) -> String {
        let (body, _) = self.get_json(repo, &format!("manifests/{tag}"), MT_OCI_MANIFEST);
        digest_of(&body)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox image as an OCI layout, with what the tests check against.
pub struct OciImage {
    pub _dir: tempfile::TempDir,
    pub layout: PathBuf,
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    pub diff_id: String,
}

pub fn build_image() -> OciImage {
    let dir = tempfile::Builder::new()
        .prefix(&format!("husk-oci-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let layout = dir.path().join("oci");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/mkimage.sh");
    let out = run(Command::new(&script).arg("--oci-dir").arg(&layout));
    assert_eq!(out.trim(), format!("oci:{}:latest", layout.display()));
    let read_json = |p: PathBuf| -> Value {
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let blob = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let index = read_json(layout.join("index.json"));
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = read_json(blob(&mdigest));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap_or_default();
    let config = read_json(blob(&config_digest));
    let diff_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(diff_id.starts_with("sha256:"), "{config}");
    OciImage {
        _dir: dir,
        layout,
        config_digest,
        layer_digest,
        layer_size,
        diff_id,
    }
}

pub fn push(img: &OciImage, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg("--dest-tls-verify=false")
        .args(extra)
        .arg(format!("oci:{}:latest", img.layout.display()))
        .arg(format!("docker://{dest}")));
}

/// A private CNI network for one test (what hack/lib/cni.sh writes for the harnesses): Debian's
/// bridge + host-local + portmap plugins, a bridge `hcXXXXXX` that is the pods' gateway, a
/// 10.234.N.0/24 no route of this machine uses, IPAM state in the test's own dir. Dropping it
/// deletes the bridge (the plugins never do).
pub struct CniNet {
    pub conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub bridge: String,
    /// "10.234.N"
    pub prefix: String,
}

impl CniNet {
    pub fn new(dir: &Path) -> CniNet {
        let mut b = [0u8; 3];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("urandom");
        let bridge = format!("hc{:02x}{:02x}{:02x}", b[0], b[1], b[2]);
        let routes = run(Command::new("ip").args(["-4", "route", "show"]));
        let n = (0..250u32)
            .map(|i| (u32::from(b[0]) + i) % 250)
            .find(|n| !routes.contains(&format!("10.234.{n}.")))
            .expect("a free 10.234.N.0/24");
        let prefix = format!("10.234.{n}");
        let conf_dir = dir.join("cni");
        let ipam_dir = dir.join("cni-ipam");
        fs::create_dir_all(&conf_dir).expect("mkdir cni");
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("husk-{bridge}"),
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true,
                    "isDefaultGateway": true, "hairpinMode": true, "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("{prefix}.0/24")}]],
                        "dataDir": ipam_dir,
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        fs::write(
            conf_dir.join("10-husk-bridge.conflist"),
            serde_json::to_vec_pretty(&conf).expect("json"),
        )
        .expect("write conflist");
        CniNet {
            conf_dir,
            ipam_dir,
            bridge,
            prefix,
        }
    }

    /// host-local's allocations (one file per allocated IP).
    pub fn allocations(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.ipam_dir.join(self.network_name()))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&self.prefix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn network_name(&self) -> String {
        format!("husk-{}", self.bridge)
    }

    /// The host ends of pods' veths on this bridge.
    pub fn veths(&self) -> Vec<String> {
        // No bridge yet (the first ADD makes it): no veths.
        let out = Command::new("ip")
            .args(["-br", "link", "show", "master", &self.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// husk-cri (the release binary) as a child process with everything under `dir`
/// (`cri.sock`, `root`, `state`, `husk-cri.log`), extra flags appended. Dropping it kills
/// the server, the shims it started and unmounts what is left below `dir`.
pub struct CriServer {
    pub dir: PathBuf,
    pub extra: Vec<String>,
    /// Environment variables of the next husk-cri started (see [`CriServer::set_env`]).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl CriServer {
    pub fn start(dir: &Path, extra: &[&str]) -> CriServer {
        CriServer::start_with_env(dir, extra, &[])
    }

    /// [`CriServer::start`] with environment variables (e.g. HUSK_CRI_FAILPOINT).
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> CriServer {
        let mut s = CriServer {
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            child: None,
        };
        s.set_env(env);
        s.spawn();
        s
    }

    /// A CriServer on `dir` that is not running yet ([`CriServer::restart`] starts it).
    pub fn unstarted(dir: &Path, extra: &[&str]) -> CriServer {
        CriServer {
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            child: None,
        }
    }

    /// The environment of the husk-cri processes started from now on.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Starts husk-cri again (same dirs and flags, the current env) once the last one is gone.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The running husk-cri's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits up to `within` for husk-cri to exit by itself; its exit status (None: it still
    /// runs).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + within;
        loop {
            let st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = st {
                self.child = None;
                return Some(st);
            }
            if self.child.is_none() || std::time::Instant::now() > until {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("cri.sock")
    }

    pub fn log(&self) -> String {
        let s = fs::read_to_string(self.dir.join("husk-cri.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("husk-cri.log"))
            .expect("husk-cri log");
        let log2 = log.try_clone().expect("log");
        let bin = binary("HUSK_CRI", "husk-cri");
        let child = Command::new(&bin)
            .arg("--listen")
            .arg(self.sock())
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--state")
            .arg(self.dir.join("state"))
            .arg("--shim")
            .arg(binary("SHIM_BIN", "containerd-shim-husk-v2"))
            .arg("--runtime")
            .arg(binary("HUSK_RUNTIME", "husk"))
            .args(["--log-level", "info"])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// SIGKILL (as a crash), then start a new husk-cri on the same dirs.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A CRI channel once the server accepts connections.
    pub async fn channel(&mut self) -> Channel {
        for _ in 0..400 {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("husk-cri exited with {st}: {}", self.log());
                }
            }
            if tokio::net::UnixStream::connect(self.sock()).await.is_ok() {
                return uds_channel(&self.sock()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "husk-cri did not listen on {}: {}",
            self.sock().display(),
            self.log()
        );
    }
}

impl Drop for CriServer {
    fn drop(&mut self) {
        self.kill();
        let sock = self.sock().display().to_string();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim-husk-v2") && cmd.contains(&sock) {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|m| m.starts_with(&self.dir))
            .collect();
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A CRI channel over the unix socket `sock` (connected now: the server must be listening).
pub async fn uds_channel(sock: &Path) -> Channel {
    use tonic::transport::{Endpoint, Uri};
    let path = sock.to_path_buf();
    Endpoint::from_static("http://[::1]:1")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect to husk-cri")
}

/// The last lines of the husk-cri log a test's server writes to `<dir>/husk-cri.log`.
pub fn server_log(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("husk-cri.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A channel to the husk-cri child `server` at `sock` once it accepts connections (a dead
/// server's socket file may still be there: connecting is the test); fails, with the end of
/// `<dir>/husk-cri.log`, when the server exits or never listens.
pub async fn connect(sock: &Path, server: &mut Child, dir: &Path) -> Channel {
    for _ in 0..400 {
        if let Ok(Some(st)) = server.try_wait() {
            panic!("husk-cri exited with {st}: {}", server_log(dir));
        }
        if tokio::net::UnixStream::connect(sock).await.is_ok() {
            return uds_channel(sock).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("husk-cri does not accept connections: {}", server_log(dir));
}

/// A container config: `image`, metadata `name`, `cmd` as the command, the CRI log at
/// `<pod log directory>/<name>.log`.
pub fn ctr_config(image: &str, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// CreateContainer in `pod`; the new container's ID.
pub async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    cfg: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(cfg),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await?
        .into_inner()
        .container_id)
}

/// ContainerStatus (verbose): the status and husk-cri's `info` JSON (Null when absent).
pub async fn ctr_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(cri::ContainerStatus, Value), tonic::Status> {
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info = r
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(Value::Null);
    Ok((r.status.expect("ContainerStatus without status"), info))
}

/// Polls ContainerStatus until the container is in `state`; fails after `within` (a hang guard).
pub async fn wait_state(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    state: i32,
    within: Duration,
) -> cri::ContainerStatus {
    let until = Instant::now() + within;
    loop {
        let (st, _) = ctr_status(rt, id)
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e:?}"));
        if st.state == state {
            return st;
        }
        assert!(
            Instant::now() < until,
            "container {id} in state {} after {within:?}, want {state}",
            st.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
