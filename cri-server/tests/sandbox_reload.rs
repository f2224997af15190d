//! husk-cri leaves running pod sandboxes running when it exits (as containerd does); the next
//! husk-cri with the same state dir reloads them, reconnects to their shims (and gets their
//! TaskExit events again), and can stop and remove them with nothing left behind.
//!
//! Needs root and the release binaries: HUSK_RUNTIME (husk) and SHIM_BIN
//! (containerd-shim-husk-v2), by default target/release/ of this repository.

use husk_cri::server::{serve, Config};
use husk_cri::shim::{Shim, ShimConfig};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

mod common;
use common::binary;

/// If the test fails half-way: kill and delete the sandbox's task through `shim delete`.
struct Cleanup {
    shim: ShimConfig,
    bundle: PathBuf,
    id: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            let _ = Shim::cleanup(&self.shim, "k8s.io", id, &self.bundle.join(id));
            let _ = std::fs::remove_dir(Path::new("/run/husk/k8s.io"));
        }
    }
}

async fn client(sock: &Path) -> RuntimeServiceClient<Channel> {
    for _ in 0..400 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    RuntimeServiceClient::new(common::uds_channel(sock).await)
}

async fn status(
    c: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(i32, u32), tonic::Status> {
    let r = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await?
        .into_inner();
    let state = r.status.map(|s| s.state).unwrap_or(-1);
    let info: serde_json::Value =
        serde_json::from_str(r.info.get("info").map(String::as_str).unwrap_or("{}"))
            .expect("info JSON");
    Ok((state, info["pid"].as_u64().unwrap_or(0) as u32))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_sandboxes_survive_a_restart_and_are_reloaded() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs pod sandboxes: run it as root"
    );
    let cfg_shim = binary("SHIM_BIN", "containerd-shim-husk-v2");
    let husk = binary("HUSK_RUNTIME", "husk");
    assert!(cfg_shim.is_file(), "{} missing", cfg_shim.display());
    assert!(husk.is_file(), "{} missing", husk.display());
    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-reload-")
        .tempdir()
        .expect("tempdir");
    let net = common::CniNet::new(tmp.path());
    let cfg = Config {
        listen: tmp.path().join("cri.sock"),
        root: tmp.path().join("root"),
        state_dir: tmp.path().join("state"),
        shim_bin: cfg_shim.clone(),
        runtime: husk.clone(),
        registry_config_dir: tmp.path().join("certs.d"),
        cni_conf_dir: net.conf_dir.clone(),
        ..Config::default()
    };
    let mut cleanup = Cleanup {
        shim: ShimConfig {
            shim_bin: cfg_shim,
            runtime: Some(husk),
            address: cfg.listen.clone(),
            events: cfg.state_dir.join("events.sock"),
        },
        bundle: cfg.state_dir.join("sandboxes"),
        id: None,
    };
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let notready = cri::PodSandboxState::SandboxNotready as i32;
    let name = format!("reload-{}", std::process::id());
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "husk-cri-test".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        ..Default::default()
    };

    // The first husk-cri runs a sandbox, then exits.
    let (stop1, rx1) = tokio::sync::oneshot::channel::<()>();
    let server1 = tokio::spawn(serve(cfg.clone(), async {
        let _ = rx1.await;
    }));
    let mut c = client(&cfg.listen).await;
    let id = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    cleanup.id = Some(id.clone());
    let (state, pid) = status(&mut c, &id).await.expect("PodSandboxStatus");
    assert_eq!(state, ready);
    assert!(pid > 0);
    drop(c);
    let _ = stop1.send(());
    server1
        .await
        .expect("join server 1")
        .expect("server 1 exits cleanly");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the pause process {pid} did not survive husk-cri's exit"
    );

    // The second husk-cri knows it, with the same pause process and the name still reserved.
    let (stop2, rx2) = tokio::sync::oneshot::channel::<()>();
    let server2 = tokio::spawn(serve(cfg.clone(), async {
        let _ = rx2.await;
    }));
    let mut c = client(&cfg.listen).await;
    assert_eq!(
        status(&mut c, &id).await.expect("status after reload"),
        (ready, pid)
    );
    let again = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await;
    assert!(
        again.is_err(),
        "the reloaded sandbox's name was not reserved: {again:?}"
    );

    // Its shim's TaskExit reaches the new husk-cri.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pause process");
    let mut state = ready;
    for _ in 0..600 {
        state = status(&mut c, &id).await.expect("status").0;
        if state == notready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, notready, "still READY after the pause process died");

    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    let gone = status(&mut c, &id).await;
    assert_eq!(
        gone.map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "status after remove"
    );
    assert!(
        !cfg.state_dir.join("sandboxes").join(&id).exists(),
        "the bundle is still there"
    );
    assert!(
        !Path::new("/run/husk/k8s.io").join(&id).exists(),
        "husk still has state for the sandbox"
    );
    // The default cgroup parent (/husk-cri) is husk-cri's: with its last sandbox gone, it is
    // gone from every hierarchy (unless something else on this machine still uses it).
    for ctrl in ["cpu", "memory", "pids"] {
        let p = Path::new("/sys/fs/cgroup").join(ctrl).join("husk-cri");
        let children = std::fs::read_dir(&p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0);
        assert!(
            !p.exists() || children > 0,
            "{} is empty and still there after the last sandbox went",
            p.display()
        );
    }
    // husk's state root for husk-cri's namespace goes with its last container (its seccomp
    // cache with it), unless something else on this machine still has a container there.
    let ns_root = Path::new("/run/husk/k8s.io");
    let others = std::fs::read_dir(ns_root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != ".seccomp-cache")
                .count()
        })
        .unwrap_or(0);
    assert!(
        !ns_root.exists() || others > 0,
        "{} is empty and still there",
        ns_root.display()
    );
    cleanup.id = None;
    drop(c);
    let _ = stop2.send(());
    server2
        .await
        .expect("join server 2")
        .expect("server 2 exits cleanly");
}
