//! CheckpointContainer (issue 12.10) against the real husk-cri, shim, husk and CRIU: a running
//! container of a pod is checkpointed into an archive kubelet's checkpoint API would get; the
//! archive holds CRIU's images, the container's identity, spec and filesystem changes (a new
//! file in rootfs-diff.tar, a deleted image file in deleted.files), is private (0600), and the
//! container goes on running. Bad requests get clear errors: unknown id (NotFound), no or a
//! relative location (InvalidArgument), an exited container (FailedPrecondition). Nothing is
//! left behind: no work dir, no partial archive.
//!
//! Needs root, CRIU (hack/setup.sh installs one that works on this kernel), docker-registry,
//! skopeo and umoci.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

mod common;
use common::{build_image, push, tools_missing, CriServer, Registry};

type Rt = RuntimeServiceClient<Channel>;

/// A container config without a CRI log (the checkpoint archive is what the test reads).
fn ctr_config(image: &str, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        log_path: String::new(),
        ..common::ctr_config(image, name, cmd)
    }
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

async fn state(rt: &mut Rt, id: &str) -> i32 {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .map(|s| s.state)
    .unwrap_or(-1)
}

/// The archive's entries: name -> content (files only).
fn entries(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(archive).expect("open archive");
    let mut a = tar::Archive::new(f);
    let mut out = Vec::new();
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("entry path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.push((name, data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_container_writes_an_archive_and_the_container_goes_on() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    if let Some(tool) = tools_missing() {
        panic!("{tool} is not installed: bash hack/setup.sh installs it");
    }
    let reg = Registry::start("");
    let oci = build_image();
    let image = format!("{}/husk-test/ckpt:latest", reg.host());
    push(&oci, &image, &[]);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-ckpt-{}-", std::process::id()))
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let mut srv = CriServer::start(&dir, &[]);
    let ch = srv.channel().await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    ImageServiceClient::new(ch)
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    let name = format!("ckpt-{}", std::process::id());
    let pod_cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "husk-cri-test".into(),
            attempt: 0,
        }),
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
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", srv.log()))
        .into_inner()
        .pod_sandbox_id;
    let create = |rt: &mut Rt, cfg: cri::ContainerConfig| {
        let mut rt = rt.clone();
        let pod = pod.clone();
        let pod_cfg = pod_cfg.clone();
        async move {
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod,
                config: Some(cfg),
                sandbox_config: Some(pod_cfg),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id
        }
    };
    // A counter that keeps counting, a new file and a deleted image file.
    let script = "echo made > /new-file; rm /etc/group; i=0; \
                  while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";
    let id = create(
        &mut rt,
        ctr_config(&image, "counter", &["sh", "-c", script]),
    )
    .await;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    let mut before = 0u64;
    for _ in 0..200 {
        before = exec(
            &mut rt,
            &id,
            &["sh", "-c", "cat /tmp/count 2>/dev/null || echo 0"],
        )
        .await
        .parse()
        .unwrap_or(0);
        if before > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(before > 0, "the counter never counted");

    let location = dir.join("checkpoint-counter.tar");
    rt.checkpoint_container(cri::CheckpointContainerRequest {
        container_id: id.clone(),
        location: location.display().to_string(),
        timeout: 120,
    })
    .await
    .unwrap_or_else(|e| panic!("CheckpointContainer: {e}\n{}", srv.log()));

    // The archive: complete, private, with what containerd's and CRI-O's archives hold.
    let md = std::fs::metadata(&location).expect("the archive exists");
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "archive mode");
    let ents = entries(&location);
    let get = |n: &str| {
        ents.iter()
            .find(|(name, _)| name.trim_end_matches('/') == n)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| {
                panic!(
                    "{n} is not in the archive: {:?}",
                    ents.iter().map(|e| &e.0).collect::<Vec<_>>()
                )
            })
    };
    assert!(
        !get("checkpoint/inventory.img").is_empty(),
        "CRIU's inventory"
    );
    assert!(
        ents.iter()
            .any(|(n, d)| n.starts_with("checkpoint/pages-") && !d.is_empty()),
        "CRIU's memory pages"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&get("config.dump")).expect("config.dump is JSON");
    assert_eq!(config["id"], id.as_str(), "{config}");
    assert_eq!(config["name"], "counter", "{config}");
    assert_eq!(config["rootfsImageName"], image.as_str(), "{config}");
    assert_eq!(config["runtime"], "husk", "{config}");
    let spec: serde_json::Value =
        serde_json::from_slice(&get("spec.dump")).expect("spec.dump is JSON");
    assert_eq!(spec["process"]["args"][2], script, "{spec}");
    let deleted: Vec<String> =
        serde_json::from_slice(&get("deleted.files")).expect("deleted.files is JSON");
    assert_eq!(deleted, vec!["/etc/group".to_string()]);
    let mut diff = tar::Archive::new(std::io::Cursor::new(get("rootfs-diff.tar")));
    let mut new_file = None;
    for e in diff.entries().expect("rootfs-diff entries") {
        let mut e = e.expect("rootfs-diff entry");
        if e.path().expect("path").display().to_string() == "new-file" {
            let mut s = String::new();
            e.read_to_string(&mut s).expect("new-file");
            new_file = Some(s);
        }
    }
    assert_eq!(
        new_file.as_deref(),
        Some("made\n"),
        "new-file in rootfs-diff.tar"
    );

    // The container goes on (--leave-running), still counting.
    assert_eq!(
        state(&mut rt, &id).await,
        cri::ContainerState::ContainerRunning as i32
    );
    let mut after = 0u64;
    for _ in 0..200 {
        after = exec(&mut rt, &id, &["cat", "/tmp/count"])
            .await
            .parse()
            .unwrap_or(0);
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        after > before,
        "the counter stopped at {before} after the checkpoint"
    );

    // Nothing left: no work dir, no partial archive.
    let work = dir.join("state/checkpoints");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "checkpoint work dirs left: {left:?}");
    let partial: Vec<_> = std::fs::read_dir(&dir)
        .expect("read test dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".husk-partial"))
        .collect();
    assert!(partial.is_empty(), "partial archive left: {partial:?}");

    // Bad requests.
    let code = |r: Result<tonic::Response<cri::CheckpointContainerResponse>, tonic::Status>| {
        r.err().map(|e| (e.code(), e.message().to_string()))
    };
    let r = rt
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "no-such-container".into(),
            location: dir.join("x.tar").display().to_string(),
            timeout: 10,
        })
        .await;
    let (c, msg) = code(r).expect("unknown id must fail");
    assert_eq!(c, tonic::Code::NotFound, "{msg}");
    assert!(msg.contains("no-such-container"), "{msg}");
    for bad in ["", "relative.tar"] {
        let r = rt
            .checkpoint_container(cri::CheckpointContainerRequest {
                container_id: id.clone(),
                location: bad.into(),
                timeout: 10,
            })
            .await;
        let (c, msg) = code(r).expect("bad location must fail");
        assert_eq!(c, tonic::Code::InvalidArgument, "{bad:?}: {msg}");
        assert!(msg.contains("location"), "{msg}");
    }
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .expect("StopContainer");
    let r = rt
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: id.clone(),
            location: dir.join("exited.tar").display().to_string(),
            timeout: 10,
        })
        .await;
    let (c, msg) = code(r).expect("an exited container must fail");
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("not running"), "{msg}");
    assert!(!dir.join("exited.tar").exists());

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("RemovePodSandbox");
    drop(srv);
}
