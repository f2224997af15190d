//! `husk-cri-conformance --image REF [--endpoint NAME=unix:///SOCKET]... [--filter S] [--list]`
//!
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
    ($name:expr, $f:ident) => {
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
