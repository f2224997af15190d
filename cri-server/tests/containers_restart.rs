//! husk-cri killed with SIGKILL while a pod sandbox has containers (one running, one exited
//! with code 3, one created) and started again on the same state and root dirs finds every
//! container with its state, exit code, times and log file; the running one can be exec'd,
//! stopped and removed, the created one started. A container whose shim is SIGKILLed while
//! husk-cri runs is reported EXITED, and once everything is removed nothing is left: no mounts
//! below the state and root dirs, no cgroups of the containers, no shim or container processes,
//! no husk state, no bundles or writable layers.
//!
//! husk-cri runs as a child process (the release binary: HUSK_CRI, by default
//! target/release/husk-cri), with the real shim and husk (SHIM_BIN, HUSK_RUNTIME); the image is
//! a busybox built with hack/mkimage.sh and pushed to a docker-registry the test starts. Needs
//! root, docker-registry, skopeo and umoci; fails, saying so, without them.

use husk_cri::container::record::UNKNOWN_EXIT_CODE;
use husk_cri::sandbox::SHIM_NAMESPACE;
use husk_cri::shim::{Shim, ShimConfig};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod common;
use common::{
    binary, build_image, connect, create, ctr_config, ctr_status as status, push, server_log,
    wait_state, Registry,
};

const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

struct Bins {
    cri: PathBuf,
    shim: PathBuf,
    husk: PathBuf,
}

/// If the test fails half-way: husk-cri killed, every sandbox and container task deleted
/// through `shim delete`, and what is still mounted below the test's dir unmounted (before the
/// temp dir is removed).
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
    shim: ShimConfig,
    sandboxes: Vec<String>,
    containers: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let state = self.dir.join("state");
        for id in &self.containers {
            let _ = Shim::cleanup(
                &self.shim,
                SHIM_NAMESPACE,
                id,
                &state.join("containers").join(id),
            );
        }
        for id in &self.sandboxes {
            let _ = Shim::cleanup(
                &self.shim,
                SHIM_NAMESPACE,
                id,
                &state.join("sandboxes").join(id),
            );
        }
        // A shim whose task `shim delete` removed may still serve: end it by its pid.
        let sock = self.shim.address.display().to_string();
        for (pid, cmd) in processes_with("containerd-shim-husk-v2") {
            if cmd.contains(&sock) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for m in mounts_below(&self.dir) {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(Path::new("/run/husk").join(SHIM_NAMESPACE));
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort();
    v.reverse();
    v
}

/// Mount points of the host's cgroup hierarchies (v1 controllers and/or cgroup2).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            ((fstype == "cgroup" || fstype == "cgroup2") && pre.get(3) == Some(&"/"))
                .then(|| pre.get(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() {
            out.push((pid, cmd));
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

async fn gone_within(pid: u32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn start_server(b: &Bins, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("husk-cri.log"))
        .expect("husk-cri log");
    let log2 = log.try_clone().expect("log");
    Command::new(&b.cri)
        .arg("--listen")
        .arg(dir.join("cri.sock"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--shim")
        .arg(&b.shim)
        .arg("--runtime")
        .arg(&b.husk)
        .arg("--cni-conf-dir")
        .arg(dir.join("cni"))
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", b.cri.display()))
}

async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {id}: {e:?}"));
}

/// Writes to a container's stdin FIFO as Attach does (the shim is reading it).
fn write_fifo(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

async fn wait_log(path: &Path, record: &str) {
    for _ in 0..100 {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.lines().any(|l| l.ends_with(record)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} has no record ending in {record:?}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_sigkilled_husk_cri_and_a_killed_shim() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs pods and containers: run it as root"
    );
    if let Some(t) = common::tools_missing() {
        panic!("{t} is not installed: bash hack/setup.sh (apt-get install docker-registry skopeo umoci)");
    }
    let bins = Bins {
        cri: binary("HUSK_CRI", "husk-cri"),
        shim: binary("SHIM_BIN", "containerd-shim-husk-v2"),
        husk: binary("HUSK_RUNTIME", "husk"),
    };
    for b in [&bins.cri, &bins.shim, &bins.husk] {
        assert!(b.is_file(), "{} missing", b.display());
    }
    let reg = Registry::start("");
    let oci = build_image();
    let image = format!("{}/husk/busybox:latest", reg.host());
    push(&oci, &image, &[]);

    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-restart-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    // A private bridge network in <dir>/cni (start_server points husk-cri there).
    let _net = common::CniNet::new(&dir);
    let sock = dir.join("cri.sock");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir logs");
    let mut guard = Guard {
        dir: dir.clone(),
        server: None,
        shim: ShimConfig {
            shim_bin: bins.shim.clone(),
            runtime: Some(bins.husk.clone()),
            address: sock.clone(),
            events: dir.join("state").join("events.sock"),
        },
        sandboxes: Vec::new(),
        containers: Vec::new(),
    };

    // ---- the first husk-cri: a pod with a running, an exited and a created container ----
    guard.server = Some(start_server(&bins, &dir));
    let ch = connect(&sock, guard.server.as_mut().expect("server"), &dir).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("PullImage");
    let name = format!("restart-{}", std::process::id());
    let pod_cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "husk-cri-test".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    guard.sandboxes.push(pod.clone());
    let running_cfg = ctr_config(
        &image,
        "running",
        &["sh", "-c", "echo started; exec sleep 100000"],
    );
    let running = create(&mut rt, &pod, &pod_cfg, running_cfg.clone())
        .await
        .expect("CreateContainer running");
    guard.containers.push(running.clone());
    start(&mut rt, &running).await;
    let three = create(
        &mut rt,
        &pod,
        &pod_cfg,
        ctr_config(&image, "three", &["sh", "-c", "echo bye; exit 3"]),
    )
    .await
    .expect("CreateContainer three");
    guard.containers.push(three.clone());
    start(&mut rt, &three).await;
    let created = create(
        &mut rt,
        &pod,
        &pod_cfg,
        ctr_config(
            &image,
            "created",
            &["sh", "-c", "echo late; exec sleep 100000"],
        ),
    )
    .await
    .expect("CreateContainer created");
    guard.containers.push(created.clone());
    // A container reading its stdin (what Attach writes to husk-cri's FIFO of it): its stdin
    // must outlive husk-cri (the shim holds the FIFO), and take input again after the restart.
    let mut reader_cfg = ctr_config(
        &image,
        "reader",
        &[
            "sh",
            "-c",
            "while read l; do echo got-$l; done; echo stdin-closed; exec sleep 100000",
        ],
    );
    reader_cfg.stdin = true;
    let reader = create(&mut rt, &pod, &pod_cfg, reader_cfg)
        .await
        .expect("CreateContainer reader");
    guard.containers.push(reader.clone());
    start(&mut rt, &reader).await;
    let reader_fifo = dir
        .join("state")
        .join("containers")
        .join(&reader)
        .join("stdin");
    write_fifo(&reader_fifo, b"one\n");
    wait_log(&logs.join("reader.log"), " stdout F got-one").await;
    let three_before = wait_state(&mut rt, &three, EXITED, Duration::from_secs(30)).await;
    assert_eq!(
        (three_before.exit_code, three_before.reason.as_str()),
        (3, "Error")
    );
    wait_log(&logs.join("running.log"), " stdout F started").await;
    wait_log(&logs.join("three.log"), " stdout F bye").await;
    let mut before = Vec::new();
    let mut cgroups = Vec::new();
    for id in [&running, &three, &created] {
        let (st, info) = status(&mut rt, id).await.expect("ContainerStatus");
        let cg = info["runtimeSpec"]["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!cg.is_empty(), "container {id}: no cgroupsPath in {info}");
        cgroups.push(cg);
        before.push(st);
    }
    assert_eq!(before[0].state, RUNNING);
    let (_, info) = status(&mut rt, &running).await.expect("ContainerStatus");
    let pid = info["pid"].as_u64().unwrap_or(0) as u32;
    assert!(pid > 0 && alive(pid), "running container pid {pid}: {info}");
    drop(rt);
    drop(img);

    // ---- SIGKILL ----
    let mut server = guard.server.take().expect("server");
    server.kill().expect("SIGKILL husk-cri");
    let _ = server.wait();
    assert!(
        alive(pid),
        "the container's process {pid} did not survive husk-cri's SIGKILL"
    );

    // ---- the second husk-cri finds them all ----
    guard.server = Some(start_server(&bins, &dir));
    let ch = connect(&sock, guard.server.as_mut().expect("server"), &dir).await;
    let mut rt = RuntimeServiceClient::new(ch);
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let mut states: Vec<(String, i32)> = listed.iter().map(|c| (c.id.clone(), c.state)).collect();
    states.sort();
    let mut want = vec![
        (running.clone(), RUNNING),
        (reader.clone(), RUNNING),
        (three.clone(), EXITED),
        (created.clone(), CREATED),
    ];
    want.sort();
    assert_eq!(states, want, "ListContainers after the restart");
    for (id, b) in [&running, &three, &created].into_iter().zip(&before) {
        let (st, _) = status(&mut rt, id)
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id} after the restart: {e:?}"));
        assert_eq!(
            (
                st.state,
                st.exit_code,
                st.reason.as_str(),
                st.created_at,
                st.started_at,
                st.finished_at,
                st.log_path.as_str(),
            ),
            (
                b.state,
                b.exit_code,
                b.reason.as_str(),
                b.created_at,
                b.started_at,
                b.finished_at,
                b.log_path.as_str(),
            ),
            "container {id}: (state, exit code, reason, created/started/finished, log path) \
             after the restart"
        );
    }
    let (_, info) = status(&mut rt, &running).await.expect("ContainerStatus");
    assert_eq!(
        info["pid"].as_u64(),
        Some(u64::from(pid)),
        "pid after reload: {info}"
    );
    let dup = create(&mut rt, &pod, &pod_cfg, running_cfg.clone()).await;
    assert!(
        dup.is_err(),
        "the reloaded container's name was not reserved: {dup:?}"
    );
    // The reader's stdin is still open and takes input.
    write_fifo(&reader_fifo, b"two\n");
    wait_log(&logs.join("reader.log"), " stdout F got-two").await;
    let reader_log = std::fs::read_to_string(logs.join("reader.log")).unwrap_or_default();
    assert!(
        !reader_log.contains("stdin-closed"),
        "the reader's stdin closed with husk-cri: {reader_log}"
    );

    // The running one: exec, stop, remove.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: running.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo hi; exit 4".into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync in the reloaded container")
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.exit_code),
        (&b"hi\n"[..], 4),
        "ExecSync output and exit code"
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: running.clone(),
        timeout: 1,
    })
    .await
    .expect("StopContainer of the reloaded container");
    let st = wait_state(&mut rt, &running, EXITED, Duration::from_secs(5)).await;
    assert!(
        st.exit_code == 137 || st.exit_code == 143,
        "exit code {} after StopContainer",
        st.exit_code
    );
    assert!(
        gone_within(pid, Duration::from_secs(5)).await,
        "pid {pid} still runs after StopContainer"
    );
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: running.clone(),
    })
    .await
    .expect("RemoveContainer of the reloaded container");

    // The created one starts under the new husk-cri; then its shim is SIGKILLed.
    start(&mut rt, &created).await;
    wait_log(&logs.join("created.log"), " stdout F late").await;
    let (_, info) = status(&mut rt, &created).await.expect("ContainerStatus");
    let cpid = info["pid"].as_u64().unwrap_or(0) as u32;
    assert!(
        cpid > 0 && alive(cpid),
        "created container pid {cpid}: {info}"
    );
    let shim_pid_file = dir
        .join("state")
        .join("containers")
        .join(&created)
        .join("shim.pid");
    let shim_pid: i32 = std::fs::read_to_string(&shim_pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", shim_pid_file.display()))
        .trim()
        .parse()
        .expect("shim.pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the shim");
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < Duration::from_secs(30) {
        let (st, _) = status(&mut rt, &created).await.expect("ContainerStatus");
        if st.state == EXITED {
            last = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = last.unwrap_or_else(|| {
        panic!(
            "container {created} is not reported EXITED 30 s after its shim was SIGKILLed: {}",
            server_log(&dir)
        )
    });
    assert!(
        st.exit_code == UNKNOWN_EXIT_CODE || st.exit_code == 137,
        "exit code {} after the shim was killed, want {UNKNOWN_EXIT_CODE} (unknown) or 137",
        st.exit_code
    );
    assert!(st.finished_at > 0, "finished_at {}", st.finished_at);

    // Everything removed: nothing left.
    for id in [&created, &three] {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e:?}"));
    }
    assert!(
        gone_within(cpid, Duration::from_secs(10)).await,
        "the process {cpid} of the container whose shim was killed still runs after removal"
    );
    for id in [&running, &three, &created] {
        let r = status(&mut rt, id).await.map(|_| ()).map_err(|s| s.code());
        assert_eq!(
            r,
            Err(tonic::Code::NotFound),
            "ContainerStatus {id} after removal"
        );
    }
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
    let left = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert!(left.is_empty(), "containers left: {left:?}");

    let mounts = mounts_below(&dir);
    assert!(
        mounts.is_empty(),
        "mounts left below {}: {mounts:?}",
        dir.display()
    );
    for cg in &cgroups {
        for m in cgroup_mounts() {
            let p = m.join(cg.trim_start_matches('/'));
            assert!(!p.exists(), "cgroup {} is left", p.display());
        }
    }
    for id in [&running, &three, &created] {
        let p = Path::new("/run/husk").join(SHIM_NAMESPACE).join(id);
        assert!(!p.exists(), "husk state {} is left", p.display());
        let bundle = dir.join("state").join("containers").join(id);
        assert!(!bundle.exists(), "bundle {} is left", bundle.display());
        let snap = dir.join("root").join("snapshots").join(id);
        assert!(!snap.exists(), "writable layer {} is left", snap.display());
    }
    guard.containers.clear();
    guard.sandboxes.clear();

    // husk-cri ends on SIGTERM.
    let mut server = guard.server.take().expect("server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM husk-cri");
    let t0 = Instant::now();
    while server.try_wait().ok().flatten().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = server.kill();
            panic!("husk-cri did not exit 20 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No shim of this test is left once husk-cri has exited (not husk-cri itself, whose --shim
    // flag names the shim binary).
    let our_shims = || -> Vec<(u32, String)> {
        processes_with("containerd-shim-husk-v2")
            .into_iter()
            .filter(|(pid, cmd)| {
                alive(*pid)
                    && cmd
                        .split(' ')
                        .next()
                        .is_some_and(|a0| a0.ends_with("containerd-shim-husk-v2"))
                    && [&running, &three, &created]
                        .iter()
                        .any(|id| cmd.contains(id.as_str()))
            })
            .collect()
    };
    let mut shims = our_shims();
    for _ in 0..100 {
        if shims.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        shims = our_shims();
    }
    // A container whose task ended while husk-cri was down keeps a live shim until its removal
    // asks that shim (not only `shim delete`) to delete and shut down (issue 12).
    if !shims.is_empty() {
        for (pid, _) in &shims {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for t in /proc/{pid}/task/*; do echo \"== $t $(cat $t/comm) $(cat $t/wchan)\"; done; ls -l /proc/{pid}/fd"
                ))
                .status();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!(
            "shim processes left after removal: {shims:?}\n{}",
            server_log(&dir)
        );
    }
    drop(guard);
    drop(reg);
}
