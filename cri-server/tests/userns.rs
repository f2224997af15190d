//! Pod user namespaces through husk-cri (issue 12): `userns_options` mode POD with one uid and
//! one gid range, as kubelet sends for `hostUsers: false`.
//! - Status advertises user namespaces for the default handler;
//! - what containerd refuses is refused (two ranges, a range not starting at container id 0,
//!   modes CONTAINER and TARGET, the node's network namespace), and leaves nothing behind;
//! - the containers of the pod share one user namespace with the pod's mapping; the image's
//!   files owned by host root show as root inside (idmapped layers), files the container
//!   writes land in its writable layer owned by the mapped ids, the shared layers stay owned
//!   by host root; the pod's network namespace is owned by its user namespace;
//! - a husk-cri killed and started again starts more containers in the pod;
//! - after RemovePodSandbox no pin, idmapped mount or network namespace is left.
//!
//! husk-cri runs as a child process (the release binaries: HUSK_CRI, SHIM_BIN, HUSK_RUNTIME,
//! by default <target>/release) with a CNI bridge of its own (no traffic leaves the host);
//! the image is the busybox of hack/mkimage.sh on a docker-registry on 127.0.0.1. Needs root.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

mod common;
use common::{binary, build_image, push, CniNet, CriServer, Registry};
use husk_cri::sandbox::SHIM_NAMESPACE;
use husk_cri::shim::{Shim, ShimConfig};

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn pod_config(name: &str, userns: Option<cri::UserNamespace>) -> cri::PodSandboxConfig {
    let name = format!("{name}-{}", std::process::id());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name,
            namespace: "husk-cri-test".into(),
            attempt: 0,
        }),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: userns,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_userns(host_id: u32, length: u32) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![mapping(0, host_id, length)],
        gids: vec![mapping(0, host_id, length)],
    }
}

/// On the way out (also when an assertion fails): every task this test made is deleted through
/// `shim delete` (husk kills and deletes it, unmounting what it mounted).
struct Guard {
    dir: PathBuf,
    shim: ShimConfig,
    ids: std::sync::Mutex<Vec<(String, &'static str)>>,
}

impl Guard {
    fn add(&self, id: &str, kind: &'static str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.to_string(), kind));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for (id, kind) in ids.iter().rev() {
            let bundle = self.dir.join("state").join(kind).join(id);
            if bundle.exists() {
                let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, &bundle);
            }
        }
    }
}

struct Cx {
    rt: RuntimeServiceClient<Channel>,
}

impl Cx {
    async fn new(srv: &mut CriServer) -> Cx {
        let ch = srv.channel().await;
        Cx {
            rt: RuntimeServiceClient::new(ch),
        }
    }

    async fn run_pod(&mut self, cfg: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        Ok(self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn run(
        &mut self,
        guard: &Guard,
        pod: &str,
        pod_cfg: &cri::PodSandboxConfig,
        image: &str,
        name: &str,
    ) -> String {
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
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: pod_cfg
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        guard.add(&id, "containers");
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        let st = self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(st.state, RUNNING, "{name}: {st:?}");
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

    /// The stdout of a command that must succeed.
    async fn out(&mut self, id: &str, cmd: &[&str]) -> String {
        let (code, out, err) = self.exec(id, cmd).await;
        assert_eq!(code, 0, "{cmd:?} in {id}: {out}{err}");
        out
    }

    async fn remove_pod(&mut self, pod: &str) {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            })
            .await
            .expect("StopPodSandbox");
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.to_string(),
            })
            .await
            .expect("RemovePodSandbox");
    }
}

/// Mount points below `dir` (from our mountinfo).
fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// The inode of the user namespace that owns the network namespace pinned at `netns`
/// (ioctl NS_GET_USERNS).
fn owner_userns_ino(netns: &Path) -> u64 {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let f = std::fs::File::open(netns).expect("open netns pin");
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_USERNS) };
    assert!(
        fd >= 0,
        "NS_GET_USERNS on {}: {}",
        netns.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd the kernel gave us.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(owned)
        .metadata()
        .expect("fstat userns")
        .ino()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_user_namespace_with_idmapped_layers() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs pods in user namespaces: run it as root"
    );
    if let Some(t) = common::tools_missing() {
        panic!("{t} is not installed (apt-get install docker-registry skopeo umoci)");
    }
    let reg = Registry::start("");
    let image = format!("{}/husk/userns-{}:latest", reg.host(), std::process::id());
    push(&build_image(), &image, &[]);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-cri-userns-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    // As /var/lib and /run are: the pod's root (an unprivileged uid on the host) must be able
    // to reach its rootfs below husk-cri's dirs.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    let net = CniNet::new(&dir);
    let flags = [
        "--cni-conf-dir".to_string(),
        net.conf_dir.display().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut srv = CriServer::start(&dir, &flags);
    let guard = Guard {
        dir: dir.clone(),
        shim: ShimConfig {
            shim_bin: binary("SHIM_BIN", "containerd-shim-husk-v2"),
            runtime: Some(binary("HUSK_RUNTIME", "husk")),
            address: srv.sock(),
            events: dir.join("state").join("events.sock"),
        },
        ids: std::sync::Mutex::new(Vec::new()),
    };
    let mut cx = Cx::new(&mut srv).await;
    ImageServiceClient::new(srv.channel().await)
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");

    // Advertised for the default handler.
    let status = cx
        .rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(
        status
            .runtime_handlers
            .iter()
            .any(|h| h.name.is_empty() && h.features.as_ref().is_some_and(|f| f.user_namespaces)),
        "{:?}",
        status.runtime_handlers
    );

    // Refused, as containerd refuses them, leaving nothing.
    let sandboxes = dir.join("state").join("sandboxes");
    let count = |p: &Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let before = count(&sandboxes);
    let base = 0x0010_0000 + (std::process::id() % 2000) * 0x1_0000;
    let two = cri::UserNamespace {
        uids: vec![mapping(0, base, 10), mapping(10, base + 100, 10)],
        ..pod_userns(base, 65536)
    };
    let not_zero = cri::UserNamespace {
        uids: vec![mapping(1, base, 65536)],
        gids: vec![mapping(1, base, 65536)],
        ..pod_userns(base, 65536)
    };
    let mode = |m: cri::NamespaceMode| cri::UserNamespace {
        mode: m as i32,
        uids: vec![],
        gids: vec![],
    };
    let mut host_net = pod_config("userns-hostnet", Some(pod_userns(base, 65536)));
    if let Some(ns) = host_net
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = cri::NamespaceMode::Node as i32;
    }
    for (what, cfg) in [
        ("two ranges", pod_config("userns-two", Some(two))),
        ("container id 1", pod_config("userns-one", Some(not_zero))),
        (
            "mode CONTAINER",
            pod_config("userns-ctr", Some(mode(cri::NamespaceMode::Container))),
        ),
        (
            "mode TARGET",
            pod_config("userns-tgt", Some(mode(cri::NamespaceMode::Target))),
        ),
        ("host network", host_net),
    ] {
        let e = cx.run_pod(&cfg).await.expect_err(what);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains("userns_options"), "{what}: {e}");
    }
    // A state dir its root cannot reach: refused, naming the directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |m| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m));
        set(0o700).expect("chmod");
        let e = cx
            .run_pod(&pod_config("userns-700", Some(pod_userns(base, 65536))))
            .await;
        set(0o711).expect("chmod");
        let e = e.expect_err("a pod whose root cannot reach its rootfs");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(e.message().contains(&dir.display().to_string()), "{e}");
    }
    assert_eq!(
        count(&sandboxes),
        before,
        "a refused sandbox left its bundle"
    );
    assert_eq!(
        net.veths(),
        Vec::<String>::new(),
        "a refused sandbox left a veth"
    );

    // A pod in its own user namespace.
    let pod_cfg = pod_config("userns", Some(pod_userns(base, 65536)));
    let pod = cx.run_pod(&pod_cfg).await.expect("RunPodSandbox");
    guard.add(&pod, "sandboxes");
    let a = cx.run(&guard, &pod, &pod_cfg, &image, "a").await;
    let b = cx.run(&guard, &pod, &pod_cfg, &image, "b").await;
    let expect_map = vec!["0".to_string(), base.to_string(), "65536".to_string()];
    for c in [&a, &b] {
        assert_eq!(
            words(&cx.out(c, &["cat", "/proc/self/uid_map"]).await),
            expect_map
        );
        assert_eq!(
            words(&cx.out(c, &["cat", "/proc/self/gid_map"]).await),
            expect_map
        );
        // The image's files (owned by host root) and the rootfs's top show as root's.
        assert_eq!(
            words(
                &cx.out(
                    c,
                    &["stat", "-c", "%u:%g", "/", "/bin/busybox", "/etc/passwd"]
                )
                .await
            ),
            vec!["0:0", "0:0", "0:0"]
        );
        assert_eq!(cx.out(c, &["id", "-u"]).await.trim(), "0");
    }
    assert_eq!(
        cx.out(&a, &["readlink", "/proc/self/ns/user"]).await,
        cx.out(&b, &["readlink", "/proc/self/ns/user"]).await,
        "the containers of a pod share its user namespace"
    );
    // Writes: a new file and a copied-up one, owned by the pod's root = host `base`.
    cx.out(
        &a,
        &[
            "sh",
            "-c",
            "echo new > /etc/newfile && echo x >> /etc/passwd && mkdir /made",
        ],
    )
    .await;
    assert_eq!(
        words(
            &cx.out(
                &a,
                &[
                    "stat",
                    "-c",
                    "%u:%g",
                    "/etc/newfile",
                    "/etc/passwd",
                    "/made"
                ]
            )
            .await
        ),
        vec!["0:0", "0:0", "0:0"]
    );
    let upper = dir.join("root").join("snapshots").join(&a).join("upper");
    for f in ["etc/newfile", "etc/passwd", "made"] {
        let md = std::fs::metadata(upper.join(f))
            .unwrap_or_else(|e| panic!("{f} in {}: {e}", upper.display()));
        assert_eq!(
            (md.uid(), md.gid()),
            (base, base),
            "{f} in the writable layer"
        );
    }
    // The shared layers stay host root's, untouched by b's view (a's write is a's own).
    assert_ne!(cx.exec(&b, &["test", "-e", "/etc/newfile"]).await.0, 0);
    let passwd_b = cx.out(&b, &["cat", "/etc/passwd"]).await;
    assert!(!passwd_b.ends_with("x\n"), "{passwd_b}");
    // Its bundle is searchable (the runtime sets it up as the pod's root), its records not
    // readable by others.
    {
        use std::os::unix::fs::PermissionsExt;
        let bundle = dir.join("state").join("containers").join(&a);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&bundle), 0o711);
        assert_eq!(mode(&bundle.join("config.json")) & 0o077, 0, "config.json");
        assert_eq!(
            mode(&bundle.join("container.json")) & 0o077,
            0,
            "container.json"
        );
    }
    // The idmapped layer mounts went once the overlays were mounted.
    let mounts = mounts_below(&dir);
    assert!(
        !mounts.iter().any(|m| m.contains("/idmapped/")),
        "idmapped layers still attached: {mounts:?}"
    );
    // The pod's network namespace is owned by its user namespace.
    let user_pin = dir
        .join("state")
        .join("sandboxes")
        .join(&pod)
        .join("userns");
    let net_pin: PathBuf = {
        let st = cx
            .rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(st.info.get("info").expect("verbose info")).expect("json");
        PathBuf::from(info["netns"].as_str().expect("the pod's netns pin"))
    };
    assert_eq!(
        owner_userns_ino(&net_pin),
        std::fs::metadata(&user_pin).expect("userns pin").ino(),
        "the pod's netns {} is not owned by its user namespace",
        net_pin.display()
    );
    // The pod has its address on the CNI bridge, and sysfs shows its interfaces.
    let ifaces = cx.out(&a, &["ls", "/sys/class/net"]).await;
    assert!(words(&ifaces).contains(&"eth0".to_string()), "{ifaces}");

    // A restarted husk-cri starts another container in the pod.
    srv.kill_and_restart();
    let mut cx = Cx::new(&mut srv).await;
    let c = cx.run(&guard, &pod, &pod_cfg, &image, "c").await;
    assert_eq!(
        words(&cx.out(&c, &["cat", "/proc/self/uid_map"]).await),
        expect_map
    );
    assert_eq!(
        cx.out(&c, &["stat", "-c", "%u:%g", "/bin/busybox"])
            .await
            .trim(),
        "0:0"
    );

    cx.remove_pod(&pod).await;
    assert!(!user_pin.exists(), "{} is left", user_pin.display());
    assert!(!net_pin.exists(), "{} is left", net_pin.display());
    let mounts = mounts_below(&dir);
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    assert_eq!(net.veths(), Vec::<String>::new(), "a veth is left");
    drop(srv);
}
