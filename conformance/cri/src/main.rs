//! `husk-cri-conformance --image REF [--endpoint NAME=unix:///SOCKET]... [--filter S] [--list]`
//!
//! The sandbox cases run pod sandboxes (the endpoint's pause container) and look at them from the
//! host (/proc/PID/ns/*, nsenter): run them as root on the endpoint's machine. Every sandbox a case
//! creates is removed after it, passed or not.
//! CRI v1 cases from the API's contract (kubernetes/cri-api api.proto), run against every endpoint
//! given (husk-cri, containerd's CRI plugin, ...) and printed side by side. The first endpoint is
//! the one under test: its results are TAP lines and decide the exit status; the others are printed
//! as `# NAME: ...` comments for comparison. REF is an image in a registry the endpoints can reach
//! (hack/cri-conformance.sh starts one on loopback and pushes a busybox image to it).

use anyhow::{anyhow, bail, ensure, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

mod containers;

struct Opts {
    image: String,
    endpoints: Vec<(String, String)>,
    filter: Option<String>,
    list: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        image: String::new(),
        endpoints: Vec::new(),
        filter: None,
        list: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |f: &str| args.next().with_context(|| format!("{f} needs a value"));
        match a.as_str() {
            "--image" => o.image = val("--image")?,
            "--endpoint" => {
                let v = val("--endpoint")?;
                let (name, ep) = v
                    .split_once('=')
                    .with_context(|| format!("--endpoint {v:?}: want NAME=unix:///SOCKET"))?;
                o.endpoints.push((name.to_string(), ep.to_string()));
            }
            "--filter" => o.filter = Some(val("--filter")?),
            "--list" => o.list = true,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !o.list {
        ensure!(!o.image.is_empty(), "--image REF is required");
        ensure!(
            !o.endpoints.is_empty(),
            "at least one --endpoint is required"
        );
    }
    Ok(o)
}

/// Clients of one endpoint.
#[derive(Clone)]
struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    image: String,
    /// Sandboxes the running case created: removed after it.
    pods: Vec<String>,
}

async fn connect(endpoint: &str) -> Result<Channel> {
    let path = endpoint
        .strip_prefix("unix://")
        .with_context(|| format!("endpoint {endpoint:?}: only unix:// endpoints are supported"))?
        .to_string();
    // The URI is a placeholder: the connector dials the unix socket.
    Endpoint::try_from("http://[::1]:1")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

type CaseFn = for<'a> fn(
    &'a mut Cri,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

macro_rules! case {
    ($name:expr, $f:path) => {
        ($name, {
            fn w<'a>(
                c: &'a mut Cri,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
                Box::pin($f(c))
            }
            w as CaseFn
        })
    };
}

fn cases() -> Vec<(&'static str, CaseFn)> {
    vec![
        case!("runtime.version", version),
        case!("runtime.status-runtime-ready", status_ready),
        case!("image.status-of-unknown-is-empty", status_unknown),
        case!("image.pull-by-tag", pull_by_tag),
        case!("image.pull-again-is-the-same-image", pull_again),
        case!("image.list-contains-pulled", list_contains),
        case!("image.list-filter-by-tag", list_filter),
        case!("image.status-by-id-and-digest", status_by_id_and_digest),
        case!("image.pull-by-digest", pull_by_digest),
        case!("image.pull-unknown-tag-fails", pull_unknown_tag),
        case!("image.pull-invalid-reference-fails", pull_invalid),
        case!("image.fs-info-reports-usage", fs_info),
        case!("image.remove-then-gone-and-idempotent", remove),
        case!("sandbox.run-status-stop-remove", sandbox_lifecycle),
        case!(
            "sandbox.hostname-and-labels-in-status",
            sandbox_hostname_labels
        ),
        case!("sandbox.list-filters", sandbox_list_filters),
        case!("sandbox.stop-and-remove-are-idempotent", sandbox_idempotent),
        case!(
            "sandbox.unknown-id-status-fails-stop-and-remove-succeed",
            sandbox_unknown
        ),
        case!(
            "sandbox.same-name-is-refused-until-removed",
            sandbox_same_name
        ),
        case!("sandbox.host-network", sandbox_host_network),
        case!("sandbox.own-namespaces", sandbox_own_namespaces),
        case!("sandbox.pod-network-ip-through-cni", sandbox_pod_ip),
        case!("sandbox.pause-exit-makes-it-notready", sandbox_pause_exit),
        case!("sandbox.pod-user-and-groups", sandbox_user),
        case!("container.lifecycle", containers::lifecycle),
        case!("container.exit-code-and-reason", containers::exit_reasons),
        case!("container.oom-killed", containers::oom_killed),
        case!("container.log-file-cri-format", containers::log_format),
        case!("container.log-reopen-after-rename", containers::log_reopen),
        case!("container.exec-sync", containers::exec_sync),
        case!(
            "container.exec-sync-output-capped-CVE-2022-31030",
            containers::exec_sync_cap_cve_2022_31030
        ),
        case!(
            "container.exec-sync-timeout-kills-the-command",
            containers::exec_sync_timeout
        ),
        case!(
            "container.unknown-id-not-found-stop-and-remove-succeed",
            containers::unknown_id
        ),
        case!(
            "container.same-name-is-refused-until-removed",
            containers::same_name
        ),
        case!(
            "container.create-missing-image-fails",
            containers::missing_image
        ),
        case!(
            "container.create-unknown-image-user-fails",
            containers::unknown_user
        ),
        case!(
            "container.create-in-unknown-sandbox-not-found",
            containers::unknown_sandbox
        ),
        case!("container.list-filters", containers::list_filters),
        case!(
            "container.update-resources-reach-the-cgroup",
            containers::update_resources
        ),
        case!("container.stats", containers::stats),
        case!("container.events-stream", containers::events),
        case!(
            "container.sandbox-stop-and-remove-take-its-containers",
            containers::sandbox_teardown
        ),
    ]
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

impl Cri {
    async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        let r = self
            .img
            .pull_image(cri::PullImageRequest {
                image: spec(image),
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().image_ref)
    }
    async fn status(&mut self, image: &str) -> Result<Option<cri::Image>> {
        let r = self
            .img
            .image_status(cri::ImageStatusRequest {
                image: spec(image),
                verbose: false,
            })
            .await
            .with_context(|| format!("ImageStatus {image}"))?;
        Ok(r.into_inner().image)
    }
    async fn list(&mut self, filter: Option<&str>) -> Result<Vec<cri::Image>> {
        let r = self
            .img
            .list_images(cri::ListImagesRequest {
                filter: filter.map(|f| cri::ImageFilter { image: spec(f) }),
            })
            .await
            .context("ListImages")?;
        Ok(r.into_inner().images)
    }
    async fn pulled(&mut self) -> Result<cri::Image> {
        let image = self.image.clone();
        let id = self
            .pull(&image)
            .await
            .with_context(|| format!("PullImage {image}"))?;
        ensure!(!id.is_empty(), "PullImage {image}: empty image_ref");
        let st = self
            .status(&image)
            .await?
            .ok_or_else(|| anyhow!("ImageStatus {image}: no image after a pull"))?;
        ensure!(
            st.id == id,
            "ImageStatus id {:?} != PullImage image_ref {id:?}",
            st.id
        );
        Ok(st)
    }
}

async fn version(c: &mut Cri) -> Result<()> {
    let v =
        c.rt.version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .context("Version")?
        .into_inner();
    ensure!(
        v.runtime_api_version == "v1",
        "runtime_api_version {:?}",
        v.runtime_api_version
    );
    ensure!(
        !v.runtime_name.is_empty() && !v.runtime_version.is_empty(),
        "{v:?}"
    );
    Ok(())
}

async fn status_ready(c: &mut Cri) -> Result<()> {
    let s =
        c.rt.status(cri::StatusRequest { verbose: false })
            .await
            .context("Status")?
            .into_inner();
    let conds = s.status.map(|s| s.conditions).unwrap_or_default();
    let ready = conds.iter().find(|c| c.r#type == "RuntimeReady");
    ensure!(ready.is_some_and(|r| r.status), "RuntimeReady: {conds:?}");
    ensure!(
        conds.iter().any(|c| c.r#type == "NetworkReady"),
        "no NetworkReady condition: {conds:?}"
    );
    Ok(())
}

async fn status_unknown(c: &mut Cri) -> Result<()> {
    let name = format!("{}:hc-no-such-{}", repo_of(&c.image)?, std::process::id());
    let st = c.status(&name).await?;
    ensure!(
        st.is_none(),
        "ImageStatus of an unknown image returned {st:?}"
    );
    Ok(())
}

/// The repository part of a tagged reference (host:port/a/b:tag → host:port/a/b).
fn repo_of(image: &str) -> Result<&str> {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => Ok(repo),
        _ => bail!("--image {image}: want a reference with a tag"),
    }
}

async fn pull_by_tag(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    ensure!(st.id.starts_with("sha256:"), "image id {:?}", st.id);
    ensure!(
        st.repo_tags.contains(&c.image),
        "repo_tags {:?} lack {}",
        st.repo_tags,
        c.image
    );
    ensure!(
        st.repo_digests.iter().any(|d| d.contains("@sha256:")),
        "repo_digests {:?}",
        st.repo_digests
    );
    ensure!(st.size > 0, "size 0");
    Ok(())
}

async fn pull_again(c: &mut Cri) -> Result<()> {
    let a = c.pulled().await?;
    let b = c.pulled().await?;
    ensure!(a.id == b.id, "{} then {}", a.id, b.id);
    let n = c.list(None).await?.iter().filter(|i| i.id == a.id).count();
    ensure!(n == 1, "the image is listed {n} times after two pulls");
    Ok(())
}

async fn list_contains(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    let all = c.list(None).await?;
    ensure!(
        all.iter().any(|i| i.id == st.id),
        "ListImages lacks {}",
        st.id
    );
    Ok(())
}

async fn list_filter(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    let image = c.image.clone();
    let f = c.list(Some(&image)).await?;
    ensure!(
        f.len() == 1 && f[0].id == st.id,
        "ListImages filtered by {image}: {:?}",
        f.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
    Ok(())
}

async fn status_by_id_and_digest(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    let by_id = c.status(&st.id).await?;
    ensure!(
        by_id.as_ref().is_some_and(|i| i.id == st.id),
        "ImageStatus by id: {by_id:?}"
    );
    let digest = st
        .repo_digests
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no repo digest"))?;
    let by_digest = c.status(&digest).await?;
    ensure!(
        by_digest.as_ref().is_some_and(|i| i.id == st.id),
        "ImageStatus by {digest}: {by_digest:?}"
    );
    Ok(())
}

async fn pull_by_digest(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    let digest = st
        .repo_digests
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no repo digest"))?;
    let id = c
        .pull(&digest)
        .await
        .with_context(|| format!("PullImage {digest}"))?;
    ensure!(id == st.id, "pull by digest gave {id}, by tag {}", st.id);
    Ok(())
}

async fn pull_unknown_tag(c: &mut Cri) -> Result<()> {
    let name = format!("{}:hc-missing-{}", repo_of(&c.image)?, std::process::id());
    match c.pull(&name).await {
        Ok(id) => bail!("PullImage {name} of a tag the registry lacks succeeded: {id}"),
        Err(s) => ensure!(!s.message().is_empty(), "error without a message: {s:?}"),
    }
    ensure!(
        c.status(&name).await?.is_none(),
        "a failed pull left an image"
    );
    Ok(())
}

async fn pull_invalid(c: &mut Cri) -> Result<()> {
    for bad in ["UPPER/Case:tag", "a/b:tag with space", "x@sha256:123"] {
        if let Ok(id) = c.pull(bad).await {
            bail!("PullImage {bad:?} succeeded: {id}")
        }
    }
    Ok(())
}

async fn fs_info(c: &mut Cri) -> Result<()> {
    c.pulled().await?;
    let r = c
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .context("ImageFsInfo")?
        .into_inner();
    let fs = r
        .image_filesystems
        .first()
        .ok_or_else(|| anyhow!("no image filesystem"))?;
    ensure!(
        fs.fs_id.as_ref().is_some_and(|f| !f.mountpoint.is_empty()),
        "no mountpoint: {fs:?}"
    );
    ensure!(
        fs.used_bytes.as_ref().is_some_and(|u| u.value > 0),
        "used_bytes: {fs:?}"
    );
    Ok(())
}

async fn remove(c: &mut Cri) -> Result<()> {
    let st = c.pulled().await?;
    c.img
        .remove_image(cri::RemoveImageRequest {
            image: spec(&st.id),
        })
        .await
        .context("RemoveImage")?;
    let after = c.status(&st.id).await?;
    ensure!(after.is_none(), "ImageStatus after RemoveImage: {after:?}");
    let image = c.image.clone();
    ensure!(
        c.status(&image).await?.is_none(),
        "the tag survived RemoveImage"
    );
    c.img
        .remove_image(cri::RemoveImageRequest {
            image: spec(&st.id),
        })
        .await
        .context("RemoveImage of a removed image must succeed (idempotent)")?;
    Ok(())
}

// ---- pod sandboxes ----

const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOTREADY: i32 = cri::PodSandboxState::SandboxNotready as i32;

/// A sandbox config with unique metadata (case tag and pid) and a label naming it.
fn pod_config(tag: &str) -> cri::PodSandboxConfig {
    let name = format!("hc-{tag}-{}", std::process::id());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("uid-{name}"),
            namespace: "husk-cri-conformance".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        labels: [("hc-pod".to_string(), name)].into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn set_network(cfg: &mut cri::PodSandboxConfig, mode: cri::NamespaceMode) {
    let linux = cfg.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.namespace_options
        .get_or_insert_with(Default::default)
        .network = mode as i32;
}

impl Cri {
    async fn run_pod(&mut self, cfg: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        let id = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Ok(id)
    }
    async fn pod(&mut self, cfg: cri::PodSandboxConfig) -> Result<String> {
        let name = cfg.metadata.as_ref().map(|m| m.name.clone());
        let id = self
            .run_pod(cfg)
            .await
            .with_context(|| format!("RunPodSandbox {name:?}"))?;
        ensure!(!id.is_empty(), "RunPodSandbox: empty id");
        Ok(id)
    }
    async fn pod_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
        Ok(self
            .rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose,
            })
            .await?
            .into_inner())
    }
    async fn status_of(&mut self, id: &str) -> Result<cri::PodSandboxStatus> {
        self.pod_status(id, false)
            .await
            .with_context(|| format!("PodSandboxStatus {id}"))?
            .status
            .ok_or_else(|| anyhow!("PodSandboxStatus {id}: no status"))
    }
    /// The pause process, from the verbose status's info["info"] JSON ("pid").
    async fn pause_pid(&mut self, id: &str) -> Result<u32> {
        let r = self
            .pod_status(id, true)
            .await
            .with_context(|| format!("PodSandboxStatus {id} verbose"))?;
        let info = r
            .info
            .get("info")
            .ok_or_else(|| anyhow!("verbose status has no info[\"info\"]: {:?}", r.info))?;
        let v: serde_json::Value =
            serde_json::from_str(info).with_context(|| format!("info[\"info\"] {info}"))?;
        let pid = v["pid"].as_u64().unwrap_or(0) as u32;
        ensure!(pid > 0, "no pause pid in info[\"info\"]: {info}");
        Ok(pid)
    }
    async fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(|_| ())
    }
    async fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(|_| ())
    }
    async fn list_pods(&mut self, filter: cri::PodSandboxFilter) -> Result<Vec<String>> {
        let items = self
            .rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter.clone()),
            })
            .await
            .with_context(|| format!("ListPodSandbox {filter:?}"))?
            .into_inner()
            .items;
        let mut ids: Vec<String> = items.into_iter().map(|p| p.id).collect();
        ids.sort();
        Ok(ids)
    }
    /// Removes every sandbox the case created (RemovePodSandbox stops it first).
    async fn cleanup_pods(&mut self) -> Result<()> {
        let mut first_err = None;
        for id in std::mem::take(&mut self.pods) {
            if let Err(e) = self.remove_pod(&id).await {
                first_err.get_or_insert(anyhow!("RemovePodSandbox {id}: {}", e.message()));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A pod's namespace as seen from the host (the target of /proc/PID/ns/KIND).
fn ns_of(pid: u32, kind: &str) -> Result<String> {
    let p = format!("/proc/{pid}/ns/{kind}");
    Ok(std::fs::read_link(&p)
        .with_context(|| format!("readlink {p}"))?
        .display()
        .to_string())
}

async fn sandbox_lifecycle(c: &mut Cri) -> Result<()> {
    let cfg = pod_config("life");
    let meta = cfg.metadata.clone();
    let id = c.pod(cfg).await?;
    let st = c.status_of(&id).await?;
    ensure!(st.id == id, "status id {:?} != {id}", st.id);
    ensure!(
        st.metadata == meta,
        "metadata {:?} != {meta:?}",
        st.metadata
    );
    ensure!(st.state == READY, "state {} after RunPodSandbox", st.state);
    ensure!(st.created_at > 0, "created_at {}", st.created_at);
    let pid = c.pause_pid(&id).await?;
    ensure!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pause pid {pid} is not running"
    );
    c.stop_pod(&id)
        .await
        .with_context(|| format!("StopPodSandbox {id}"))?;
    let st = c.status_of(&id).await?;
    ensure!(
        st.state == NOTREADY,
        "state {} after StopPodSandbox",
        st.state
    );
    c.remove_pod(&id)
        .await
        .with_context(|| format!("RemovePodSandbox {id}"))?;
    match c.pod_status(&id, false).await {
        Ok(s) => bail!("PodSandboxStatus after RemovePodSandbox: {:?}", s.status),
        Err(s) => ensure!(
            s.code() == tonic::Code::NotFound,
            "PodSandboxStatus after remove: {s:?}"
        ),
    }
    let all = c.list_pods(cri::PodSandboxFilter::default()).await?;
    ensure!(!all.contains(&id), "ListPodSandbox still lists {id}");
    Ok(())
}

async fn sandbox_hostname_labels(c: &mut Cri) -> Result<()> {
    let mut cfg = pod_config("host");
    cfg.labels.insert("app".into(), "hc".into());
    cfg.annotations
        .insert("hc.example/note".into(), "annotated".into());
    let hostname = cfg.hostname.clone();
    let id = c.pod(cfg.clone()).await?;
    let st = c.status_of(&id).await?;
    ensure!(st.labels == cfg.labels, "labels {:?}", st.labels);
    ensure!(
        st.annotations == cfg.annotations,
        "annotations {:?}",
        st.annotations
    );
    let pid = c.pause_pid(&id).await?;
    let out = tokio::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--uts", "hostname"])
        .output()
        .await
        .context("run nsenter --uts hostname")?;
    ensure!(
        out.status.success(),
        "nsenter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        got == hostname,
        "hostname in the pod {got:?} != {hostname:?}"
    );
    Ok(())
}

async fn sandbox_list_filters(c: &mut Cri) -> Result<()> {
    let run = format!("hc-list-{}", std::process::id());
    let mut ids = Vec::new();
    for which in ["a", "b"] {
        let mut cfg = pod_config(&format!("list-{which}"));
        cfg.labels.insert("hc-run".into(), run.clone());
        cfg.labels.insert("which".into(), which.into());
        ids.push(c.pod(cfg).await?);
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    let by_label = |kv: &[(&str, &str)]| cri::PodSandboxFilter {
        label_selector: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let all = c.list_pods(cri::PodSandboxFilter::default()).await?;
    ensure!(
        all.contains(&a) && all.contains(&b),
        "unfiltered list {all:?}"
    );
    let l = c.list_pods(by_label(&[("hc-run", &run)])).await?;
    ensure!(l == both, "by label hc-run: {l:?}");
    let l = c
        .list_pods(by_label(&[("hc-run", &run), ("which", "a")]))
        .await?;
    ensure!(l == [a.clone()], "by labels hc-run and which=a: {l:?}");
    let l = c
        .list_pods(by_label(&[("hc-run", &run), ("which", "c")]))
        .await?;
    ensure!(l.is_empty(), "by which=c: {l:?}");
    for id in [a.clone(), a[..12].to_string()] {
        let f = cri::PodSandboxFilter {
            id,
            ..Default::default()
        };
        let l = c.list_pods(f.clone()).await?;
        ensure!(l == [a.clone()], "by id {:?}: {l:?}", f.id);
    }
    c.stop_pod(&b)
        .await
        .with_context(|| format!("StopPodSandbox {b}"))?;
    for (state, want) in [(READY, &a), (NOTREADY, &b)] {
        let mut f = by_label(&[("hc-run", &run)]);
        f.state = Some(cri::PodSandboxStateValue { state });
        let l = c.list_pods(f).await?;
        ensure!(l == [want.clone()], "by state {state}: {l:?}");
    }
    Ok(())
}

async fn sandbox_idempotent(c: &mut Cri) -> Result<()> {
    let id = c.pod(pod_config("idem")).await?;
    for n in 1..=2 {
        c.stop_pod(&id)
            .await
            .with_context(|| format!("StopPodSandbox #{n}"))?;
    }
    for n in 1..=2 {
        c.remove_pod(&id)
            .await
            .with_context(|| format!("RemovePodSandbox #{n}"))?;
    }
    Ok(())
}

async fn sandbox_unknown(c: &mut Cri) -> Result<()> {
    let id = format!("{:0>64}", format!("{:x}", std::process::id()));
    match c.pod_status(&id, false).await {
        Ok(s) => bail!("PodSandboxStatus of an unknown id: {:?}", s.status),
        Err(s) => ensure!(s.code() == tonic::Code::NotFound, "PodSandboxStatus: {s:?}"),
    }
    // CRI (and critest's Idempotence spec, containerd 2.x, CRI-O): stopping a sandbox that
    // does not exist is not an error. containerd 1.6 still answers NotFound and fails here.
    c.stop_pod(&id)
        .await
        .context("StopPodSandbox of an unknown id must succeed")?;
    c.remove_pod(&id)
        .await
        .context("RemovePodSandbox of an unknown id must succeed")?;
    Ok(())
}

async fn sandbox_same_name(c: &mut Cri) -> Result<()> {
    let cfg = pod_config("name");
    let first = c.pod(cfg.clone()).await?;
    if let Ok(second) = c.run_pod(cfg.clone()).await {
        bail!("a second RunPodSandbox with the same metadata succeeded: {second}");
    }
    c.stop_pod(&first).await.context("StopPodSandbox")?;
    if let Ok(second) = c.run_pod(cfg.clone()).await {
        bail!("the name of a stopped (not removed) sandbox was reused: {second}");
    }
    c.remove_pod(&first).await.context("RemovePodSandbox")?;
    let again = c.pod(cfg).await.context("the name after removal")?;
    ensure!(again != first, "the same id {again} again");
    Ok(())
}

async fn sandbox_host_network(c: &mut Cri) -> Result<()> {
    let mut cfg = pod_config("hostnet");
    set_network(&mut cfg, cri::NamespaceMode::Node);
    // A host-network pod has the node's UTS namespace: kubelet sends no hostname for it, and a
    // hostname is refused.
    if let Ok(id) = c.run_pod(cfg.clone()).await {
        bail!("RunPodSandbox of a host-network pod with a hostname succeeded: {id}");
    }
    cfg.hostname.clear();
    let id = c.pod(cfg).await?;
    let st = c.status_of(&id).await?;
    let net = st
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .map(|o| o.network);
    ensure!(
        net == Some(cri::NamespaceMode::Node as i32),
        "status namespace options network {net:?}, want NODE"
    );
    let pid = c.pause_pid(&id).await?;
    let (pod, host) = (ns_of(pid, "net")?, ns_of(std::process::id(), "net")?);
    ensure!(
        pod == host,
        "host-network pod in {pod}, the host is in {host}"
    );
    Ok(())
}

async fn sandbox_own_namespaces(c: &mut Cri) -> Result<()> {
    let id = c.pod(pod_config("ns")).await?;
    let st = c.status_of(&id).await?;
    let opts = st
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .ok_or_else(|| anyhow!("status has no linux.namespaces.options"))?;
    ensure!(
        opts.network == cri::NamespaceMode::Pod as i32,
        "network mode {}",
        opts.network
    );
    let pid = c.pause_pid(&id).await?;
    let me = std::process::id();
    for kind in ["net", "ipc", "uts", "mnt"] {
        let (pod, host) = (ns_of(pid, kind)?, ns_of(me, kind)?);
        ensure!(
            pod != host,
            "the pod shares the host's {kind} namespace {host}"
        );
    }
    Ok(())
}

/// With a CNI network configured (the harness gives every endpoint a bridge network), the
/// runtime says NetworkReady, a pod gets an IP in PodSandboxStatus, and that address is on eth0
/// in the pod's network namespace.
async fn sandbox_pod_ip(c: &mut Cri) -> Result<()> {
    let s =
        c.rt.status(cri::StatusRequest { verbose: false })
            .await
            .context("Status")?
            .into_inner();
    let conds = s.status.map(|s| s.conditions).unwrap_or_default();
    ensure!(
        conds.iter().any(|c| c.r#type == "NetworkReady" && c.status),
        "NetworkReady with a CNI network configured: {conds:?}"
    );
    let id = c.pod(pod_config("podip")).await?;
    let st = c.status_of(&id).await?;
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| anyhow!("PodSandboxStatus network.ip {ip:?} is not an address"))?;
    let pid = c.pause_pid(&id).await?;
    let out = std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .context("nsenter ip addr")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(&format!(" {addr}/")),
        "eth0 in the pod's network namespace does not have {addr}: {text}"
    );
    Ok(())
}

/// The pod-level runAsUser/runAsGroup/supplementalGroups reach the pause process (api.proto,
/// LinuxSandboxSecurityContext: "List of groups applied to the first process run in the
/// sandbox, in addition to the sandbox's primary GID").
async fn sandbox_user(c: &mut Cri) -> Result<()> {
    let mut cfg = pod_config("user");
    let sc = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    sc.run_as_group = Some(cri::Int64Value { value: 1001 });
    sc.supplemental_groups = vec![2000];
    let id = c.pod(cfg).await?;
    let pid = c.pause_pid(&id).await?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (uid, gid, groups) = (field("Uid:"), field("Gid:"), field("Groups:"));
    ensure!(uid.first() == Some(&"1000"), "pause Uid: {uid:?}");
    ensure!(gid.first() == Some(&"1001"), "pause Gid: {gid:?}");
    ensure!(groups.contains(&"2000"), "pause Groups: {groups:?}");
    Ok(())
}

async fn sandbox_pause_exit(c: &mut Cri) -> Result<()> {
    let id = c.pod(pod_config("exit")).await?;
    let pid = c.pause_pid(&id).await?;
    let st = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .context("run kill")?;
    ensure!(st.success(), "kill -KILL {pid}: {st}");
    // The runtime learns of the exit asynchronously (TaskExit): poll for it.
    let mut state = READY;
    for _ in 0..600 {
        state = c.status_of(&id).await?.state;
        if state == NOTREADY {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(
        state == NOTREADY,
        "still READY after its pause process was killed"
    );
    c.stop_pod(&id)
        .await
        .context("StopPodSandbox of a sandbox whose pause exited")?;
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn run(o: Opts) -> Result<i32> {
    let all = cases();
    let selected: Vec<_> = all
        .iter()
        .filter(|(n, _)| o.filter.as_deref().is_none_or(|f| n.contains(f)))
        .collect();
    if o.list {
        for (n, _) in &selected {
            println!("{n}");
        }
        return Ok(0);
    }
    let mut summary = Vec::new();
    let mut exit = 0;
    for (k, (name, ep)) in o.endpoints.iter().enumerate() {
        let primary = k == 0;
        let ch = connect(ep).await?;
        let mut c = Cri {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            image: o.image.clone(),
            pods: Vec::new(),
        };
        println!("# endpoint {name} ({ep})");
        if primary {
            println!("1..{}", selected.len());
        }
        let (mut pass, mut fail) = (0, 0);
        for (i, (case, f)) in selected.iter().enumerate() {
            let r = tokio::time::timeout(std::time::Duration::from_secs(120), f(&mut c))
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out after 120 s")));
            let r = match (r, c.cleanup_pods().await) {
                (Ok(()), Err(e)) => Err(e.context("removing the case's sandboxes")),
                (r, _) => r,
            };
            let n = i + 1;
            match (&r, primary) {
                (Ok(()), true) => println!("ok {n} - {case}"),
                (Err(e), true) => println!("not ok {n} - {case}: {}", one_line(&format!("{e:#}"))),
                (Ok(()), false) => println!("# {name}: ok {n} {case}"),
                (Err(e), false) => {
                    println!("# {name}: FAIL {n} {case}: {}", one_line(&format!("{e:#}")))
                }
            }
            if r.is_ok() {
                pass += 1;
            } else {
                fail += 1;
                if primary {
                    exit = 1;
                }
            }
        }
        summary.push(format!("# {name}: {pass} passed, {fail} failed"));
    }
    println!("# summary");
    for s in summary {
        println!("{s}");
    }
    Ok(exit)
}

fn main() {
    let code = parse().and_then(|o| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(run(o))
    });
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("husk-cri-conformance: {e:#}");
            std::process::exit(2);
        }
    }
}
