//! Container cases: what kubelet relies on and critest does not look at, from the CRI v1
//! contract (kubernetes/cri-api api.proto) and what containerd's CRI plugin does where CRI is
//! silent. Every container lives in a sandbox of the case (`Cri::pods`), and removing the
//! sandboxes after the case removes the containers too (RemovePodSandbox: "If there are any
//! running containers in the sandbox, they must be forcibly terminated and removed").
//!
//! The cases look at containers from the host as the sandbox cases do (/proc/PID, the cgroup
//! files, log files in a temp dir): run them as root on the endpoint's machine.

use super::{pod_config, spec, Cri};
use anyhow::{anyhow, bail, ensure, Context, Result};
use k8s_cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

/// A host directory for the case's log files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("hc-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod of a case: its id and the config it was run with (CreateContainer sends it again, as
/// kubelet does).
struct Pod {
    id: String,
    config: cri::PodSandboxConfig,
}

/// A container config named `name` running `cmd` in the suite's image.
fn ctr_config(image: &str, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: spec(image),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        labels: [("hc-ctr".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        // kubelet's default (no shareProcessNamespace): the container's own pid namespace,
        // its command is pid 1 there. CRI's zero value would be the pod's.
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

fn resources(cfg: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    cfg.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) -> Result<tonic::Status> {
    match r {
        Ok(v) => bail!("{what} succeeded: {v:?}"),
        Err(s) => Ok(s),
    }
}

impl Cri {
    /// A pod sandbox for the case (the image is pulled first: containers need it).
    async fn ctr_pod(&mut self, cfg: cri::PodSandboxConfig) -> Result<Pod> {
        let image = self.image.clone();
        self.pull(&image)
            .await
            .with_context(|| format!("PullImage {image}"))?;
        let id = self.pod(cfg.clone()).await?;
        Ok(Pod { id, config: cfg })
    }
    async fn create_ctr(
        &mut self,
        pod: &Pod,
        cfg: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        Ok(self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod.config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }
    async fn ctr(&mut self, pod: &Pod, cfg: cri::ContainerConfig) -> Result<String> {
        let name = cfg.metadata.as_ref().map(|m| m.name.clone());
        let id = self
            .create_ctr(pod, cfg)
            .await
            .with_context(|| format!("CreateContainer {name:?}"))?;
        ensure!(!id.is_empty(), "CreateContainer {name:?}: empty id");
        Ok(id)
    }
    async fn start_ctr(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
    }
    /// A created and started container.
    async fn started(&mut self, pod: &Pod, cfg: cri::ContainerConfig) -> Result<String> {
        let id = self.ctr(pod, cfg).await?;
        self.start_ctr(&id)
            .await
            .with_context(|| format!("StartContainer {id}"))?;
        Ok(id)
    }
    async fn stop_ctr(&mut self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .map(|_| ())
    }
    async fn remove_ctr(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
    }
    async fn ctr_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, tonic::Status> {
        Ok(self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose,
            })
            .await?
            .into_inner())
    }
    async fn cstatus(&mut self, id: &str) -> Result<cri::ContainerStatus> {
        self.ctr_status(id, false)
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .status
            .ok_or_else(|| anyhow!("ContainerStatus {id}: no status"))
    }
    /// The container's init on the host, from the verbose status's info["info"] JSON ("pid",
    /// as containerd has it).
    async fn ctr_pid(&mut self, id: &str) -> Result<u32> {
        let r = self
            .ctr_status(id, true)
            .await
            .with_context(|| format!("ContainerStatus {id} verbose"))?;
        let info = r
            .info
            .get("info")
            .ok_or_else(|| anyhow!("verbose status has no info[\"info\"]: {:?}", r.info))?;
        let v: serde_json::Value =
            serde_json::from_str(info).with_context(|| format!("info[\"info\"] {info}"))?;
        let pid = v["pid"].as_u64().unwrap_or(0) as u32;
        ensure!(pid > 0, "no container pid in info[\"info\"]: {info}");
        Ok(pid)
    }
    /// Polls ContainerStatus until the container has exited.
    async fn wait_exited(&mut self, id: &str, within: Duration) -> Result<cri::ContainerStatus> {
        let until = Instant::now() + within;
        loop {
            let st = self.cstatus(id).await?;
            if st.state == EXITED {
                return Ok(st);
            }
            ensure!(
                Instant::now() < until,
                "container {id} still in state {} after {within:?}",
                st.state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        // Up to 16 MiB per stream: more than tonic's default 4 MiB limit of a message.
        let mut rt = self.rt.clone().max_decoding_message_size(64 << 20);
        Ok(rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }
    async fn list_ctrs(&mut self, filter: cri::ContainerFilter) -> Result<Vec<String>> {
        let items = self
            .rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter.clone()),
            })
            .await
            .with_context(|| format!("ListContainers {filter:?}"))?
            .into_inner()
            .containers;
        let mut ids: Vec<String> = items.into_iter().map(|c| c.id).collect();
        ids.sort();
        Ok(ids)
    }
    async fn ctr_stats(&mut self, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
        self.rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.to_string(),
            })
            .await?
            .into_inner()
            .stats
            .ok_or_else(|| tonic::Status::internal("ContainerStats: no stats"))
    }
}

fn in_pod(pod: &str) -> cri::ContainerFilter {
    cri::ContainerFilter {
        pod_sandbox_id: pod.to_string(),
        ..Default::default()
    }
}

fn proc_alive(pid: u32) -> bool {
    // A zombie is not alive (its parent may not have reaped it yet).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while proc_alive(pid) {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

// ---- lifecycle ----

/// create → CREATED; start → RUNNING with a pid; stop with a grace period → EXITED (the init
/// ignores SIGTERM: it is pid 1 of its pid namespace without a handler, so SIGKILL after the
/// timeout: 137); remove → gone from the list, status NotFound naming the id.
pub async fn lifecycle(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("clife")).await?;
    let image = c.image.clone();
    let cfg = ctr_config(&image, "life", &["sleep", "1000"]);
    let id = c.ctr(&pod, cfg.clone()).await?;
    let st = c.cstatus(&id).await?;
    ensure!(st.id == id, "status id {:?} != {id}", st.id);
    ensure!(
        st.state == CREATED,
        "state {} after CreateContainer",
        st.state
    );
    ensure!(
        st.metadata == cfg.metadata,
        "metadata {:?} != {:?}",
        st.metadata,
        cfg.metadata
    );
    ensure!(st.created_at > 0, "created_at {}", st.created_at);
    ensure!(
        st.started_at == 0 && st.finished_at == 0,
        "a created container has started_at {} finished_at {}",
        st.started_at,
        st.finished_at
    );
    ensure!(
        st.image.as_ref().is_some_and(|i| i.image == image),
        "status image {:?}, want {image}",
        st.image
    );
    ensure!(!st.image_ref.is_empty(), "empty image_ref");
    ensure!(st.labels == cfg.labels, "labels {:?}", st.labels);
    let listed = c.list_ctrs(in_pod(&pod.id)).await?;
    ensure!(
        listed == [id.clone()],
        "ListContainers in the pod: {listed:?}"
    );

    c.start_ctr(&id)
        .await
        .with_context(|| format!("StartContainer {id}"))?;
    let st = c.cstatus(&id).await?;
    ensure!(
        st.state == RUNNING,
        "state {} after StartContainer",
        st.state
    );
    ensure!(
        st.started_at >= st.created_at,
        "started_at {} < created_at {}",
        st.started_at,
        st.created_at
    );
    let pid = c.ctr_pid(&id).await?;
    ensure!(proc_alive(pid), "container pid {pid} is not running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    ensure!(
        cmdline == b"sleep\x001000\x00",
        "pid {pid} runs {:?}, not the container's command",
        String::from_utf8_lossy(&cmdline)
    );
    if let Ok(s) = c.start_ctr(&id).await.map(|_| "ok") {
        bail!("StartContainer of a running container answered {s}");
    }

    let t0 = Instant::now();
    c.stop_ctr(&id, 2)
        .await
        .with_context(|| format!("StopContainer {id} timeout 2"))?;
    let took = t0.elapsed();
    let st = c.cstatus(&id).await?;
    ensure!(st.state == EXITED, "state {} after StopContainer", st.state);
    ensure!(
        st.exit_code == 137 || st.exit_code == 143,
        "exit code {} after StopContainer, want 137 or 143",
        st.exit_code
    );
    if st.exit_code == 137 {
        ensure!(
            took >= Duration::from_millis(1500),
            "SIGKILLed after {took:?}: the 2 s grace period was not given"
        );
    }
    ensure!(
        st.finished_at >= st.started_at && st.finished_at > 0,
        "finished_at {} started_at {}",
        st.finished_at,
        st.started_at
    );
    ensure!(
        wait_gone(pid, Duration::from_secs(5)).await,
        "pid {pid} still runs after StopContainer"
    );
    c.stop_ctr(&id, 2)
        .await
        .context("StopContainer of an exited container must succeed (idempotent)")?;

    c.remove_ctr(&id)
        .await
        .with_context(|| format!("RemoveContainer {id}"))?;
    match c.ctr_status(&id, false).await {
        Ok(s) => bail!("ContainerStatus after RemoveContainer: {:?}", s.status),
        Err(s) => ensure!(
            s.code() == tonic::Code::NotFound && s.message().contains(&id),
            "ContainerStatus after remove: want NotFound naming {id}, got {s:?}"
        ),
    }
    let all = c.list_ctrs(cri::ContainerFilter::default()).await?;
    ensure!(!all.contains(&id), "ListContainers still lists {id}");
    c.remove_ctr(&id)
        .await
        .context("RemoveContainer of a removed container must succeed (idempotent)")?;
    Ok(())
}

/// Exit code and reason as kubelet shows them: 0 "Completed", non-zero "Error".
pub async fn exit_reasons(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cexit")).await?;
    let image = c.image.clone();
    let ok = c
        .started(&pod, ctr_config(&image, "zero", &sh("exit 0")))
        .await?;
    let three = c
        .started(&pod, ctr_config(&image, "three", &sh("exit 3")))
        .await?;
    for (id, code, reason) in [(ok, 0, "Completed"), (three, 3, "Error")] {
        let st = c.wait_exited(&id, Duration::from_secs(30)).await?;
        ensure!(
            st.exit_code == code && st.reason == reason,
            "exit code {} reason {:?}, want {code} {reason:?}",
            st.exit_code,
            st.reason
        );
        // Both husk-cri and containerd 1.6 stamp started_at when Start returns: a command that
        // exits at once may read a finished_at a few microseconds before it. Not checked.
        ensure!(
            st.started_at > 0 && st.finished_at > 0,
            "started_at {} finished_at {}",
            st.started_at,
            st.finished_at
        );
    }
    Ok(())
}

/// A container that allocates past its 16 MiB memory limit is OOM-killed: 137, "OOMKilled".
pub async fn oom_killed(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("coom")).await?;
    let image = c.image.clone();
    let mut cfg = ctr_config(
        &image,
        "oom",
        &sh("x=0123456789abcdef; while :; do x=$x$x; done"),
    );
    resources(&mut cfg).memory_limit_in_bytes = 16 << 20;
    let id = c.started(&pod, cfg).await?;
    let st = c.wait_exited(&id, Duration::from_secs(60)).await?;
    ensure!(
        st.exit_code == 137 && st.reason == "OOMKilled",
        "exit code {} reason {:?}, want 137 \"OOMKilled\"",
        st.exit_code,
        st.reason
    );
    Ok(())
}

// ---- logs ----

/// One record of a CRI log file: `TIMESTAMP STREAM P|F CONTENT`.
#[derive(Debug)]
struct Record {
    stream: String,
    partial: bool,
    content: String,
}

/// RFC3339Nano as kubelet parses it: `2006-01-02T15:04:05.999999999Z07:00`.
fn is_rfc3339_nano(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if !(b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || {
        let z = rest.as_bytes();
        z.len() == 6
            && (z[0] == b'+' || z[0] == b'-')
            && z[1..3].iter().all(u8::is_ascii_digit)
            && z[3] == b':'
            && z[4..6].iter().all(u8::is_ascii_digit)
    }
}

fn parse_log(path: &Path) -> Result<Vec<Record>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in data.lines().enumerate() {
        let mut f = line.splitn(4, ' ');
        let (ts, stream, tag) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        let content = f.next().unwrap_or("");
        ensure!(
            is_rfc3339_nano(ts),
            "{} line {}: timestamp {ts:?} is not RFC3339Nano: {line:?}",
            path.display(),
            n + 1
        );
        ensure!(
            stream == "stdout" || stream == "stderr",
            "{} line {}: stream {stream:?}",
            path.display(),
            n + 1
        );
        ensure!(
            tag == "P" || tag == "F",
            "{} line {}: tag {tag:?}",
            path.display(),
            n + 1
        );
        out.push(Record {
            stream: stream.into(),
            partial: tag == "P",
            content: content.into(),
        });
    }
    ensure!(
        data.is_empty() || data.ends_with('\n'),
        "{}: the last record has no newline",
        path.display()
    );
    Ok(out)
}

/// The pod config with a log directory (kubelet's /var/log/pods/<ns>_<name>_<uid>).
fn logged_pod(tag: &str, dir: &TempDir) -> cri::PodSandboxConfig {
    let mut cfg = pod_config(tag);
    cfg.log_directory = dir.0.display().to_string();
    cfg
}

/// The CRI log file at log_directory/log_path: `TIMESTAMP STREAM F line` records for both
/// streams, a line longer than 16 KiB cut into `P` records ending in an `F` one, and output
/// left without a newline at exit as a `P` record (containerd's redirectLogs, kubelet's reader).
pub async fn log_format(c: &mut Cri) -> Result<()> {
    let dir = TempDir::new("clog")?;
    let pod = c.ctr_pod(logged_pod("clog", &dir)).await?;
    let image = c.image.clone();
    let mut cfg = ctr_config(
        &image,
        "log",
        &sh(
            "echo out-line; echo err-line >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; \
             printf no-newline",
        ),
    );
    cfg.log_path = "log/0.log".into();
    std::fs::create_dir_all(dir.0.join("log"))?;
    let id = c.started(&pod, cfg).await?;
    let st = c.wait_exited(&id, Duration::from_secs(30)).await?;
    ensure!(st.exit_code == 0, "exit code {}", st.exit_code);
    let path = dir.0.join("log/0.log");
    ensure!(
        st.log_path == path.display().to_string(),
        "status log_path {:?}, want {}",
        st.log_path,
        path.display()
    );
    // The file may be completed by the logger after the exit is reported: poll briefly.
    let mut recs = Vec::new();
    for _ in 0..50 {
        recs = parse_log(&path)?;
        if recs.iter().any(|r| r.content == "no-newline") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let has = |stream: &str, partial: bool, content: &str| {
        recs.iter()
            .any(|r| r.stream == stream && r.partial == partial && r.content == content)
    };
    let show = || {
        recs.iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.stream,
                    if r.partial { "P" } else { "F" },
                    r.content.chars().take(20).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
    };
    ensure!(
        has("stdout", false, "out-line"),
        "no `stdout F out-line`: {:?}",
        show()
    );
    ensure!(
        has("stderr", false, "err-line"),
        "no `stderr F err-line`: {:?}",
        show()
    );
    ensure!(
        has("stdout", true, "no-newline"),
        "no `stdout P no-newline` for output without a newline at exit: {:?}",
        show()
    );
    // The long line: P records joined up to the F record that ends it.
    let out: Vec<&Record> = recs.iter().filter(|r| r.stream == "stdout").collect();
    let start = out
        .iter()
        .position(|r| r.content.starts_with('x'))
        .ok_or_else(|| anyhow!("no record of the 40000-byte line: {:?}", show()))?;
    let mut joined = String::new();
    let mut parts = 0;
    for r in &out[start..] {
        joined.push_str(&r.content);
        parts += 1;
        if !r.partial {
            break;
        }
    }
    ensure!(
        parts >= 3 && out[start].partial,
        "a 40000-byte line in {parts} record(s), want P records of at most 16 KiB: {:?}",
        show()
    );
    ensure!(
        joined.len() == 40000 && joined.bytes().all(|b| b == b'x'),
        "the long line joined from its records is {} bytes",
        joined.len()
    );
    Ok(())
}

/// kubelet's log rotation: it renames the file, then ReopenContainerLog; what the container
/// writes afterwards lands in a new file at the log path, and nothing is lost in between.
pub async fn log_reopen(c: &mut Cri) -> Result<()> {
    let dir = TempDir::new("creopen")?;
    let pod = c.ctr_pod(logged_pod("creopen", &dir)).await?;
    let image = c.image.clone();
    let mut cfg = ctr_config(
        &image,
        "reopen",
        &sh("i=0; while :; do echo line-$i; i=$((i+1)); sleep 0.1; done"),
    );
    cfg.log_path = "reopen.log".into();
    let id = c.started(&pod, cfg).await?;
    let path = dir.0.join("reopen.log");
    let rotated = dir.0.join("reopen.log.1");
    let until = Instant::now() + Duration::from_secs(15);
    while parse_log(&path).map(|r| r.len()).unwrap_or(0) < 3 {
        ensure!(
            Instant::now() < until,
            "no output in {} after 15 s",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::rename(&path, &rotated).context("rename the log file")?;
    c.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .with_context(|| format!("ReopenContainerLog {id}"))?;
    let until = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let r = parse_log(&path).unwrap_or_default();
        if r.len() >= 3 {
            break r;
        }
        ensure!(
            Instant::now() < until,
            "no new file with output at {} 15 s after ReopenContainerLog",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old = parse_log(&rotated)?;
    let num = |r: &Record| {
        r.content
            .strip_prefix("line-")
            .and_then(|n| n.parse::<u64>().ok())
    };
    let last_old = old.iter().filter_map(num).max();
    let first_new = new.iter().filter_map(num).min();
    ensure!(
        matches!((last_old, first_new), (Some(a), Some(b)) if b == a + 1),
        "the renamed file ends at line {last_old:?}, the new file starts at {first_new:?}: \
         lines lost or written twice"
    );
    // Reopening the log of a container that does not run is an error.
    c.stop_ctr(&id, 0).await.context("StopContainer")?;
    let s = code_of(
        c.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await,
        "ReopenContainerLog of an exited container",
    )?;
    ensure!(!s.message().is_empty(), "error without a message: {s:?}");
    Ok(())
}

// ---- ExecSync ----

/// A pod with a running `sleep` container for exec and stats cases.
async fn sleeper(c: &mut Cri, tag: &str) -> Result<(Pod, String)> {
    let pod = c.ctr_pod(pod_config(tag)).await?;
    let image = c.image.clone();
    let id = c
        .started(&pod, ctr_config(&image, "sleeper", &["sleep", "100000"]))
        .await?;
    Ok((pod, id))
}

pub async fn exec_sync(c: &mut Cri) -> Result<()> {
    let (_pod, id) = sleeper(c, "cexec").await?;
    let r = c
        .exec(&id, &sh("echo hello; echo oops >&2; exit 5"), 0)
        .await
        .with_context(|| format!("ExecSync {id}"))?;
    ensure!(
        r.stdout == b"hello\n" && r.stderr == b"oops\n" && r.exit_code == 5,
        "stdout {:?} stderr {:?} exit {}, want \"hello\\n\" \"oops\\n\" 5",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr),
        r.exit_code
    );
    let r = c
        .exec(&id, &sh("echo in-time"), 10)
        .await
        .context("ExecSync with a timeout it meets")?;
    ensure!(
        r.stdout == b"in-time\n" && r.exit_code == 0,
        "stdout {:?} exit {}",
        String::from_utf8_lossy(&r.stdout),
        r.exit_code
    );
    // A command that cannot run is an error or a failure, never a success.
    if let Ok(r) = c.exec(&id, &["/no/such/binary"], 10).await {
        ensure!(
            r.exit_code != 0,
            "ExecSync of a missing binary: exit code 0"
        );
    }
    Ok(())
}

/// CVE-2022-31030 (and CVE-2022-1708): ExecSync output is capped at 16 MiB per stream, the
/// rest discarded, and the command goes on to its end without error. 20 MB on each stream
/// then exit 7: both streams are exactly 16 MiB and the exit code is 7.
///
/// containerd 1.6 caps the same way but cannot send the answer: its gRPC server's send limit
/// is 16 MiB (defaults.DefaultMaxSendMsgSize), so it answers ResourceExhausted (kubelet's
/// receive limit is 16 MiB as well).
pub async fn exec_sync_cap_cve_2022_31030(c: &mut Cri) -> Result<()> {
    let (_pod, id) = sleeper(c, "ccap").await?;
    let r = c
        .exec(
            &id,
            &sh("head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2; exit 7"),
            60,
        )
        .await
        .with_context(|| format!("ExecSync {id} with 20 MB on each stream"))?;
    ensure!(
        r.stdout.len() == 16 << 20 && r.stderr.len() == 16 << 20 && r.exit_code == 7,
        "stdout {} bytes, stderr {} bytes, exit code {}: want 16 MiB each and 7",
        r.stdout.len(),
        r.stderr.len(),
        r.exit_code
    );
    Ok(())
}

/// ExecSync past its timeout: an error (DeadlineExceeded), soon after the timeout, and the
/// command is gone from the container.
pub async fn exec_sync_timeout(c: &mut Cri) -> Result<()> {
    let (_pod, id) = sleeper(c, "ctimeout").await?;
    let t0 = Instant::now();
    let r = c.exec(&id, &["sleep", "4321"], 1).await;
    let took = t0.elapsed();
    let s = code_of(r, "ExecSync `sleep 4321` with a 1 s timeout")?;
    ensure!(
        took < Duration::from_secs(30),
        "ExecSync with a 1 s timeout took {took:?}"
    );
    ensure!(
        s.code() == tonic::Code::DeadlineExceeded,
        "ExecSync past its timeout: want DeadlineExceeded, got {s:?}"
    );
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = c
            .exec(&id, &["ps", "-o", "pid,args"], 10)
            .await
            .context("ExecSync ps")?;
        let out = String::from_utf8_lossy(&ps.stdout).into_owned();
        if !out.contains("sleep 4321") {
            break;
        }
        ensure!(
            Instant::now() < until,
            "the timed-out command still runs 10 s later: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

// ---- bad input ----

/// Calls on an unknown container id: NotFound, except StopContainer and RemoveContainer,
/// which CRI makes idempotent (api.proto: "If the container has already been stopped, the
/// runtime MUST not return an error"; "If the container has already been removed, the runtime
/// MUST not return an error"; critest and containerd 2.x treat an unknown id so). containerd
/// 1.6 still answers NotFound for StopContainer of an unknown id and fails here.
pub async fn unknown_id(c: &mut Cri) -> Result<()> {
    let id = format!("{:0>64}", format!("c{:x}", std::process::id()));
    let nf = |what: &str, r: Result<(), tonic::Status>| -> Result<()> {
        match r {
            Ok(()) => bail!("{what} of an unknown id succeeded"),
            Err(s) => ensure!(
                s.code() == tonic::Code::NotFound,
                "{what} of an unknown id: want NotFound, got {s:?}"
            ),
        }
        Ok(())
    };
    let r = c.start_ctr(&id).await;
    nf("StartContainer", r)?;
    let r = c.ctr_status(&id, false).await.map(|_| ());
    nf("ContainerStatus", r)?;
    let r = c.exec(&id, &["true"], 5).await.map(|_| ());
    nf("ExecSync", r)?;
    let r =
        c.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|_| ());
    nf("UpdateContainerResources", r)?;
    let r = c.ctr_stats(&id).await.map(|_| ());
    nf("ContainerStats", r)?;
    c.remove_ctr(&id)
        .await
        .context("RemoveContainer of an unknown id must succeed")?;
    c.stop_ctr(&id, 0)
        .await
        .context("StopContainer of an unknown id must succeed")?;
    Ok(())
}

/// (name, attempt) is unique in a sandbox until the container is removed (api.proto,
/// ContainerMetadata); another sandbox may use it.
pub async fn same_name(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cname")).await?;
    let other = c.ctr_pod(pod_config("cname2")).await?;
    let image = c.image.clone();
    let cfg = ctr_config(&image, "twin", &["sleep", "1000"]);
    let first = c.ctr(&pod, cfg.clone()).await?;
    if let Ok(second) = c.create_ctr(&pod, cfg.clone()).await {
        bail!("a second CreateContainer with the same metadata succeeded: {second}");
    }
    c.start_ctr(&first).await.context("StartContainer")?;
    c.stop_ctr(&first, 0).await.context("StopContainer")?;
    if let Ok(second) = c.create_ctr(&pod, cfg.clone()).await {
        bail!("the name of an exited (not removed) container was reused: {second}");
    }
    let elsewhere = c
        .ctr(&other, cfg.clone())
        .await
        .context("the same name in another sandbox")?;
    ensure!(elsewhere != first, "the same id in two sandboxes");
    let mut next = cfg.clone();
    if let Some(m) = next.metadata.as_mut() {
        m.attempt = 1;
    }
    c.ctr(&pod, next)
        .await
        .context("the same name, attempt 1")?;
    c.remove_ctr(&first).await.context("RemoveContainer")?;
    let again = c.ctr(&pod, cfg).await.context("the name after removal")?;
    ensure!(again != first, "the same id {again} again");
    Ok(())
}

/// CreateContainer of an image the node does not have fails, and leaves no container.
pub async fn missing_image(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cnoimg")).await?;
    let missing = format!(
        "{}:hc-not-pulled-{}",
        super::repo_of(&c.image)?,
        std::process::id()
    );
    let s = code_of(
        c.create_ctr(&pod, ctr_config(&missing, "noimg", &["true"]))
            .await,
        &format!("CreateContainer of image {missing} (never pulled)"),
    )?;
    ensure!(!s.message().is_empty(), "error without a message: {s:?}");
    let left = c.list_ctrs(in_pod(&pod.id)).await?;
    ensure!(left.is_empty(), "a failed CreateContainer left {left:?}");
    Ok(())
}

/// run_as_username naming a user the image's /etc/passwd lacks: CreateContainer (or, at the
/// latest, StartContainer) fails; nothing runs.
pub async fn unknown_user(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cuser")).await?;
    let image = c.image.clone();
    let mut cfg = ctr_config(&image, "nouser", &["sleep", "1000"]);
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .run_as_username = "nosuchuser".into();
    let id = match c.create_ctr(&pod, cfg).await {
        Err(s) => {
            ensure!(!s.message().is_empty(), "error without a message: {s:?}");
            return Ok(());
        }
        Ok(id) => id,
    };
    match c.start_ctr(&id).await {
        Ok(()) => {
            bail!("a container running as the unknown user \"nosuchuser\" was created and started")
        }
        Err(s) => {
            let st = c.cstatus(&id).await?;
            ensure!(
                st.state != RUNNING,
                "StartContainer failed ({s:?}) but the container is RUNNING"
            );
        }
    }
    Ok(())
}

pub async fn unknown_sandbox(c: &mut Cri) -> Result<()> {
    let image = c.image.clone();
    c.pull(&image)
        .await
        .with_context(|| format!("PullImage {image}"))?;
    let sid = format!("{:0>64}", format!("5{:x}", std::process::id()));
    let pod = Pod {
        id: sid.clone(),
        config: pod_config("cnopod"),
    };
    let s = code_of(
        c.create_ctr(&pod, ctr_config(&image, "orphan", &["true"]))
            .await,
        "CreateContainer in an unknown sandbox",
    )?;
    ensure!(
        s.code() == tonic::Code::NotFound,
        "CreateContainer in an unknown sandbox: want NotFound, got {s:?}"
    );
    Ok(())
}

// ---- ListContainers ----

pub async fn list_filters(c: &mut Cri) -> Result<()> {
    let run = format!("hc-clist-{}", std::process::id());
    let pa = c.ctr_pod(pod_config("clist-a")).await?;
    let pb = c.ctr_pod(pod_config("clist-b")).await?;
    let image = c.image.clone();
    let mk = |name: &str, which: &str| {
        let mut cfg = ctr_config(&image, name, &["sleep", "1000"]);
        cfg.labels.insert("hc-run".into(), run.clone());
        cfg.labels.insert("which".into(), which.into());
        cfg
    };
    let (ca, cb, cc) = (mk("a", "a"), mk("b", "b"), mk("c", "c"));
    let a = c.started(&pa, ca).await?;
    let b = c.ctr(&pa, cb).await?;
    let cid = c.ctr(&pb, cc).await?;
    let by_label = |kv: &[(&str, &str)]| cri::ContainerFilter {
        label_selector: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = c.list_ctrs(cri::ContainerFilter::default()).await?;
    ensure!(
        [&a, &b, &cid].iter().all(|i| all.contains(i)),
        "unfiltered list {all:?}"
    );
    let l = c.list_ctrs(by_label(&[("hc-run", &run)])).await?;
    ensure!(
        l == sorted(vec![a.clone(), b.clone(), cid.clone()]),
        "by label hc-run: {l:?}"
    );
    let l = c
        .list_ctrs(by_label(&[("hc-run", &run), ("which", "b")]))
        .await?;
    ensure!(l == [b.clone()], "by labels hc-run and which=b: {l:?}");
    let l = c
        .list_ctrs(by_label(&[("hc-run", &run), ("which", "z")]))
        .await?;
    ensure!(l.is_empty(), "by which=z: {l:?}");
    let l = c.list_ctrs(in_pod(&pa.id)).await?;
    ensure!(
        l == sorted(vec![a.clone(), b.clone()]),
        "by sandbox {}: {l:?}",
        pa.id
    );
    let l = c.list_ctrs(in_pod(&pb.id)).await?;
    ensure!(l == [cid.clone()], "by sandbox {}: {l:?}", pb.id);
    for id in [a.clone(), a[..12].to_string()] {
        let f = cri::ContainerFilter {
            id,
            ..Default::default()
        };
        let l = c.list_ctrs(f.clone()).await?;
        ensure!(l == [a.clone()], "by id {:?}: {l:?}", f.id);
    }
    for (state, want) in [
        (RUNNING, vec![a.clone()]),
        (CREATED, sorted(vec![b.clone(), cid.clone()])),
    ] {
        let mut f = by_label(&[("hc-run", &run)]);
        f.state = Some(cri::ContainerStateValue { state });
        let l = c.list_ctrs(f).await?;
        ensure!(l == want, "by state {state}: {l:?}");
    }
    c.stop_ctr(&a, 0).await.context("StopContainer")?;
    let mut f = in_pod(&pa.id);
    f.state = Some(cri::ContainerStateValue { state: EXITED });
    f.label_selector.insert("which".into(), "a".into());
    let l = c.list_ctrs(f).await?;
    ensure!(
        l == [a.clone()],
        "by sandbox, state EXITED and label: {l:?}"
    );
    Ok(())
}

// ---- UpdateContainerResources ----

/// Which cgroup hierarchy a container's files are read from.
enum Cgroup {
    /// v1: one directory per controller.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
    },
    V2(PathBuf),
}

/// The mount point of the host's cgroup hierarchy holding `controller` (v1) or of cgroup2
/// (`controller` ""), from /proc/self/mountinfo.
fn cgroup_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (root, mnt) = (pre.get(3)?, pre.get(4)?);
        let (fstype, opts) = (post.first()?, post.get(2).copied().unwrap_or(""));
        let hit = if controller.is_empty() {
            *fstype == "cgroup2"
        } else {
            *fstype == "cgroup" && opts.split(',').any(|o| o == controller)
        };
        (hit && *root == "/").then(|| PathBuf::from(mnt))
    })
}

fn cgroup_of(pid: u32) -> Result<Cgroup> {
    let p = format!("/proc/{pid}/cgroup");
    let data = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    let path_for = |controller: &str| {
        data.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            };
            hit.then(|| path.trim_start_matches('/').to_string())
        })
    };
    let under = |controller: &str| -> Option<PathBuf> {
        Some(cgroup_mount(controller)?.join(path_for(controller)?))
    };
    if let (Some(cpu), Some(memory)) = (under("cpu"), under("memory")) {
        return Ok(Cgroup::V1 { cpu, memory });
    }
    under("")
        .map(Cgroup::V2)
        .ok_or_else(|| anyhow!("no cpu/memory or unified cgroup of pid {pid} in {data:?}"))
}

fn read_trim(p: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("read {}", p.display()))?
        .trim()
        .to_string())
}

/// The container's cpu shares, quota, period and memory limit as the kernel has them (v2:
/// cpu.weight converted back is not exact, so shares is reported as the weight runc writes).
fn cgroup_resources(cg: &Cgroup) -> Result<(String, String, String, String)> {
    match cg {
        Cgroup::V1 { cpu, memory } => Ok((
            read_trim(&cpu.join("cpu.shares"))?,
            read_trim(&cpu.join("cpu.cfs_quota_us"))?,
            read_trim(&cpu.join("cpu.cfs_period_us"))?,
            read_trim(&memory.join("memory.limit_in_bytes"))?,
        )),
        Cgroup::V2(d) => {
            let max = read_trim(&d.join("cpu.max"))?;
            let (q, p) = max.split_once(' ').unwrap_or((&max, ""));
            Ok((
                read_trim(&d.join("cpu.weight"))?,
                q.to_string(),
                p.to_string(),
                read_trim(&d.join("memory.max"))?,
            ))
        }
    }
}

/// runc's (and the kernel docs') cpu.shares → cpu.weight conversion.
fn weight_of(shares: i64) -> i64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares - 2) * 9999) / 262142
}

/// UpdateContainerResources on a running container reaches its cgroup (found from the host
/// through /proc/PID/cgroup) and ContainerStatus.resources (containerd 1.6.20 reports both).
pub async fn update_resources(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cupdate")).await?;
    let image = c.image.clone();
    let mut cfg = ctr_config(&image, "update", &["sleep", "100000"]);
    let r = resources(&mut cfg);
    r.cpu_shares = 512;
    r.cpu_period = 100_000;
    r.cpu_quota = 200_000;
    r.memory_limit_in_bytes = 64 << 20;
    let id = c.started(&pod, cfg).await?;
    let pid = c.ctr_pid(&id).await?;
    let cg = cgroup_of(pid)?;
    let v2 = matches!(cg, Cgroup::V2(_));
    let want = |shares: i64, quota: i64, period: i64, mem: i64| {
        let s = if v2 { weight_of(shares) } else { shares };
        (
            s.to_string(),
            quota.to_string(),
            period.to_string(),
            mem.to_string(),
        )
    };
    let got = cgroup_resources(&cg)?;
    ensure!(
        got == want(512, 200_000, 100_000, 64 << 20),
        "cgroup (shares, quota, period, memory) {got:?} as created"
    );
    let new = cri::LinuxContainerResources {
        cpu_shares: 1024,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    };
    c.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(new.clone()),
        ..Default::default()
    })
    .await
    .with_context(|| format!("UpdateContainerResources {id}"))?;
    let got = cgroup_resources(&cg)?;
    ensure!(
        got == want(1024, 50_000, 100_000, 128 << 20),
        "cgroup (shares, quota, period, memory) {got:?} after the update"
    );
    let st = c.cstatus(&id).await?;
    let r = st
        .resources
        .and_then(|r| r.linux)
        .ok_or_else(|| anyhow!("ContainerStatus has no resources.linux after the update"))?;
    ensure!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ) == (1024, 50_000, 100_000, 128 << 20),
        "ContainerStatus resources after the update: shares {} quota {} period {} memory {}",
        r.cpu_shares,
        r.cpu_quota,
        r.cpu_period,
        r.memory_limit_in_bytes
    );
    Ok(())
}

// ---- stats ----

/// ContainerStats of a running container: cpu used by a busy loop, a working set, and a
/// writable layer that grows when the container writes a file. containerd refreshes the
/// writable layer's usage every 10 s (stats_collect_period): polled for up to 45 s.
pub async fn stats(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cstats")).await?;
    let image = c.image.clone();
    let id = c
        .started(
            &pod,
            ctr_config(
                &image,
                "stats",
                &sh("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 100000"),
            ),
        )
        .await?;
    // The busy loop ends with the exec of sleep.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = c.exec(&id, &["cat", "/proc/1/cmdline"], 10).await;
        if ps.is_ok_and(|r| r.stdout.starts_with(b"sleep")) {
            break;
        }
        ensure!(Instant::now() < until, "the busy loop did not end in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = c
        .ctr_stats(&id)
        .await
        .with_context(|| format!("ContainerStats {id}"))?;
    ensure!(
        s.attributes.as_ref().is_some_and(|a| a.id == id),
        "attributes {:?}",
        s.attributes
    );
    let cpu = s
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    ensure!(
        cpu > 0,
        "cpu usage_core_nano_seconds {cpu} after a busy loop: {:?}",
        s.cpu
    );
    let ws = s
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    ensure!(ws > 0, "memory working_set_bytes {ws}: {:?}", s.memory);
    let used = |s: &cri::ContainerStats| {
        s.writable_layer
            .as_ref()
            .and_then(|w| w.used_bytes.as_ref())
            .map(|v| v.value)
    };
    let before =
        used(&s).ok_or_else(|| anyhow!("no writable_layer.used_bytes: {:?}", s.writable_layer))?;
    let r = c
        .exec(
            &id,
            &[
                "dd",
                "if=/dev/zero",
                "of=/hc-fill",
                "bs=1048576",
                "count=8",
                "conv=fsync",
            ],
            30,
        )
        .await
        .context("ExecSync dd")?;
    ensure!(
        r.exit_code == 0,
        "dd in the container: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let until = Instant::now() + Duration::from_secs(45);
    loop {
        let s = c.ctr_stats(&id).await.context("ContainerStats")?;
        let after = used(&s).unwrap_or(0);
        if after >= before + (4 << 20) {
            break;
        }
        ensure!(
            Instant::now() < until,
            "writable layer used_bytes {before} before writing 8 MiB, {after} 45 s after"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

// ---- events ----

/// GetContainerEvents (kubelet's evented PLEG) streams CREATED, STARTED, STOPPED and DELETED
/// for a container, in that order, each with the container's status. containerd 1.6 does not
/// implement GetContainerEvents (1.7 does): it answers Unimplemented and fails here.
pub async fn events(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cevents")).await?;
    let mut stream =
        c.rt.get_container_events(cri::GetEventsRequest {})
            .await
            .context("GetContainerEvents")?
            .into_inner();
    let image = c.image.clone();
    let id = c
        .started(&pod, ctr_config(&image, "events", &["sleep", "1000"]))
        .await?;
    c.stop_ctr(&id, 0).await.context("StopContainer")?;
    c.remove_ctr(&id).await.context("RemoveContainer")?;
    use cri::ContainerEventType as T;
    let want = [
        T::ContainerCreatedEvent as i32,
        T::ContainerStartedEvent as i32,
        T::ContainerStoppedEvent as i32,
        T::ContainerDeletedEvent as i32,
    ];
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while got.last() != Some(&want[3]) {
        let left = until.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, stream.message()).await {
            Err(_) => bail!("events of {id} after 20 s: {got:?}, want {want:?}"),
            Ok(r) => r
                .context("GetContainerEvents stream")?
                .ok_or_else(|| anyhow!("the event stream ended; events so far {got:?}"))?,
        };
        if ev.container_id != id {
            continue;
        }
        ensure!(ev.created_at > 0, "event without created_at: {ev:?}");
        ensure!(
            ev.pod_sandbox_status
                .as_ref()
                .is_some_and(|s| s.id == pod.id),
            "event {} without its sandbox's status",
            ev.container_event_type
        );
        got.push(ev.container_event_type);
    }
    ensure!(
        got == want,
        "events of {id}: {got:?}, want {want:?} (created, started, stopped, deleted)"
    );
    Ok(())
}

// ---- sandbox teardown ----

/// StopPodSandbox stops the sandbox's running containers (api.proto: "If there are any running
/// containers in the sandbox, they must be forcibly terminated"); RemovePodSandbox removes all
/// of its containers.
pub async fn sandbox_teardown(c: &mut Cri) -> Result<()> {
    let pod = c.ctr_pod(pod_config("cteardown")).await?;
    let image = c.image.clone();
    let run = c
        .started(&pod, ctr_config(&image, "running", &["sleep", "1000"]))
        .await?;
    let pid = c.ctr_pid(&run).await?;
    let created = c
        .ctr(&pod, ctr_config(&image, "created", &["sleep", "1000"]))
        .await?;
    c.stop_pod(&pod.id)
        .await
        .with_context(|| format!("StopPodSandbox {}", pod.id))?;
    let st = c.cstatus(&run).await?;
    ensure!(
        st.state == EXITED,
        "the running container is in state {} after StopPodSandbox",
        st.state
    );
    ensure!(
        wait_gone(pid, Duration::from_secs(5)).await,
        "its process {pid} still runs after StopPodSandbox"
    );
    c.remove_pod(&pod.id)
        .await
        .with_context(|| format!("RemovePodSandbox {}", pod.id))?;
    let left = c.list_ctrs(in_pod(&pod.id)).await?;
    ensure!(
        left.is_empty(),
        "containers left after RemovePodSandbox: {left:?}"
    );
    for id in [run, created] {
        match c.ctr_status(&id, false).await {
            Ok(s) => bail!(
                "ContainerStatus {id} after RemovePodSandbox: {:?}",
                s.status
            ),
            Err(s) => ensure!(
                s.code() == tonic::Code::NotFound,
                "ContainerStatus {id} after RemovePodSandbox: {s:?}"
            ),
        }
    }
    Ok(())
}
