//! husk-cri-bench: pods through CRI endpoints side by side (husk-cri, containerd's CRI plugin).
//!
//! Over each endpoint's unix socket, as kubelet does (image already present):
//!   start     RunPodSandbox + CreateContainer + StartContainer of one pod (busybox `sleep`),
//!             measured until StartContainer answers (the container is running then)
//!   teardown  StopContainer (timeout 0) + StopPodSandbox + RemovePodSandbox
//!   N pods    N pods started concurrently (wall time until the last one runs, and each pod's
//!             own start time), then torn down concurrently
//!   memory    with N pods running: RSS (and PSS) of the daemon (husk-cri / containerd), every
//!             shim serving the endpoint and the pause and workload processes below each shim
//!
//! Single-pod iterations alternate the endpoints, rotating which goes first; each concurrency
//! level runs every endpoint once, in rotated order. Only the run is timed; nothing is asserted.
use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

const USAGE: &str = "usage: husk-cri-bench --image REF --endpoint NAME=unix:///SOCKET:PID
    [--endpoint ...] [--pull REF]... [--runs N] [--warmup N] [--levels 1,10,50] [--host-network]
    [--out FILE.md] [--command-line TEXT]

  --endpoint NAME=unix:///SOCKET:PID  a CRI endpoint and the pid of its daemon (husk-cri or
                     containerd); its shims are the processes whose `-address` argument is
                     SOCKET's directory or below it (the first endpoint is the one ratios are
                     computed for)
  --image REF        image the pods run (already pulled; pulled once here if not)
  --pull REF         another image every endpoint pulls before timing (repeatable: containerd's
                     sandbox image)
  --runs N           single-pod start/teardown iterations per endpoint (default 20)
  --warmup N         untimed single-pod iterations first (default 2)
  --levels L         concurrency levels, comma-separated (default 1,10,50)
  --host-network     pods in the host's network namespace (default: pod network through CNI)
  --out FILE         markdown report (also printed)";

struct Opts {
    image: String,
    pull: Vec<String>,
    endpoints: Vec<Ep>,
    runs: usize,
    warmup: usize,
    levels: Vec<usize>,
    host_network: bool,
    out: Option<String>,
    command_line: Option<String>,
}

#[derive(Clone)]
struct Ep {
    name: String,
    socket: String,
    pid: i32,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        image: String::new(),
        pull: Vec::new(),
        endpoints: Vec::new(),
        runs: 20,
        warmup: 2,
        levels: vec![1, 10, 50],
        host_network: false,
        out: None,
        command_line: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |f: &str| args.next().with_context(|| format!("{f} needs a value"));
        match a.as_str() {
            "--image" => o.image = val("--image")?,
            "--pull" => o.pull.push(val("--pull")?),
            "--endpoint" => {
                let v = val("--endpoint")?;
                let (name, rest) = v
                    .split_once('=')
                    .with_context(|| format!("--endpoint {v:?}: want NAME=unix:///SOCKET:PID"))?;
                let (ep, pid) = rest
                    .rsplit_once(':')
                    .with_context(|| format!("--endpoint {v:?}: want NAME=unix:///SOCKET:PID"))?;
                let socket = ep
                    .strip_prefix("unix://")
                    .with_context(|| format!("--endpoint {v:?}: only unix:// endpoints"))?;
                o.endpoints.push(Ep {
                    name: name.to_string(),
                    socket: socket.to_string(),
                    pid: pid
                        .parse()
                        .with_context(|| format!("--endpoint {v:?}: pid"))?,
                });
            }
            "--runs" => o.runs = val("--runs")?.parse().context("--runs")?,
            "--warmup" => o.warmup = val("--warmup")?.parse().context("--warmup")?,
            "--levels" => {
                o.levels = val("--levels")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().context("--levels"))
                    .collect::<Result<_>>()?
            }
            "--host-network" => o.host_network = true,
            "--out" => o.out = Some(val("--out")?),
            "--command-line" => o.command_line = Some(val("--command-line")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(!o.image.is_empty(), "--image REF is required\n{USAGE}");
    ensure!(!o.endpoints.is_empty(), "--endpoint is required\n{USAGE}");
    Ok(o)
}

async fn connect(socket: &str) -> Result<Channel> {
    let path = socket.to_string();
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
        .with_context(|| format!("connect to {socket}"))
}

type Rt = RuntimeServiceClient<Channel>;

fn pod_config(name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let ns = cri::NamespaceOption {
        network: if host_network {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        },
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "husk-cri-bench".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        labels: [("husk-cri-bench".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(ns),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ctr_config(image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
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

struct Pod {
    pod: String,
    ctr: String,
}

/// RunPodSandbox + CreateContainer + StartContainer.
async fn start_pod(rt: &mut Rt, name: &str, image: &str, host_network: bool) -> Result<Pod> {
    let cfg = pod_config(name, host_network);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .into_inner()
        .pod_sandbox_id;
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ctr_config(image)),
            sandbox_config: Some(cfg),
        })
        .await
        .with_context(|| format!("CreateContainer in {name}"))?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .with_context(|| format!("StartContainer in {name}"))?;
    Ok(Pod { pod, ctr })
}

/// StopContainer (timeout 0: SIGKILL) + StopPodSandbox + RemovePodSandbox.
async fn stop_pod(rt: &mut Rt, p: &Pod) -> Result<()> {
    rt.stop_container(cri::StopContainerRequest {
        container_id: p.ctr.clone(),
        timeout: 0,
    })
    .await
    .with_context(|| format!("StopContainer {}", p.ctr))?;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: p.pod.clone(),
    })
    .await
    .with_context(|| format!("StopPodSandbox {}", p.pod))?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: p.pod.clone(),
    })
    .await
    .with_context(|| format!("RemovePodSandbox {}", p.pod))?;
    Ok(())
}

/// Removes every pod of this benchmark still on the endpoint (a failed earlier run).
async fn sweep(rt: &mut Rt) -> Result<()> {
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("husk-cri-bench".to_string(), "1".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    for p in pods {
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: p.id,
        })
        .await?;
    }
    Ok(())
}

async fn ensure_image(ch: &Channel, image: &str) -> Result<()> {
    let mut img = k8s_cri::v1::image_service_client::ImageServiceClient::new(ch.clone());
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    if st.image.is_none() {
        img.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("pull {image}"))?;
    }
    Ok(())
}

// ---- memory: /proc ----

#[derive(Default, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    pss_kb: u64,
    procs: usize,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss_kb += o.rss_kb;
        self.pss_kb += o.pss_kb;
        self.procs += o.procs;
    }
}

fn proc_mem(pid: i32) -> Mem {
    let mut m = Mem::default();
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        for l in s.lines() {
            let kb = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if l.starts_with("Rss:") {
                m.rss_kb = kb(l);
            } else if l.starts_with("Pss:") {
                m.pss_kb = kb(l);
            }
        }
        m.procs = 1;
    }
    m
}

struct ProcInfo {
    ppid: i32,
    comm: String,
    cmdline: Vec<String>,
}

fn processes() -> HashMap<i32, ProcInfo> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            pid,
            ProcInfo {
                ppid,
                comm,
                cmdline,
            },
        );
    }
    out
}

/// Memory of an endpoint: its daemon, its shims (a `-address` argument under the socket's
/// directory, and "shim" in the name: containerd-shim-runc-v2, husk's renames itself husk-shim), the
/// pause processes (a shim's child named like a pause binary) and everything else below shims.
#[derive(Default, Clone, Copy)]
struct EpMem {
    daemon: Mem,
    shims: Mem,
    pause: Mem,
    workload: Mem,
}

fn is_pause(comm: &str) -> bool {
    matches!(comm, "pause" | "catatonit")
}

fn endpoint_mem(ep: &Ep) -> EpMem {
    let dir = std::path::Path::new(&ep.socket)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let procs = processes();
    let mut m = EpMem {
        daemon: proc_mem(ep.pid),
        ..Default::default()
    };
    let shims: Vec<i32> = procs
        .iter()
        .filter(|(pid, p)| {
            **pid != ep.pid
                && p.cmdline.windows(2).any(|w| {
                    w[0] == "-address" && w[1].trim_start_matches("unix://").starts_with(&dir)
                })
                && (p.comm.contains("shim")
                    || p.cmdline
                        .first()
                        .is_some_and(|a| a.rsplit('/').next().is_some_and(|b| b.contains("shim"))))
        })
        .map(|(pid, _)| *pid)
        .collect();
    for s in &shims {
        m.shims += proc_mem(*s);
    }
    // descendants of the shims
    for (pid, p) in &procs {
        if shims.contains(pid) {
            continue;
        }
        let mut up = p.ppid;
        let mut depth = 0;
        let mut below = false;
        let mut direct = false;
        while up > 1 && depth < 64 {
            if shims.contains(&up) {
                below = true;
                direct = depth == 0;
                break;
            }
            up = procs.get(&up).map(|q| q.ppid).unwrap_or(0);
            depth += 1;
        }
        if !below {
            continue;
        }
        if direct && is_pause(&p.comm) {
            m.pause += proc_mem(*pid);
        } else {
            m.workload += proc_mem(*pid);
        }
    }
    m
}

// ---- statistics ----

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Level {
    wall_start: f64,
    pod_start_median: f64,
    pod_start_max: f64,
    wall_teardown: f64,
    mem: EpMem,
    baseline: EpMem,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let o = parse()?;
    let mut rts = Vec::new();
    for ep in &o.endpoints {
        let ch = connect(&ep.socket).await?;
        for img in std::iter::once(&o.image).chain(&o.pull) {
            ensure_image(&ch, img)
                .await
                .with_context(|| format!("{}: image {img}", ep.name))?;
        }
        let mut rt = Rt::new(ch);
        sweep(&mut rt).await?;
        rts.push(rt);
    }
    let n_ep = o.endpoints.len();
    let tag = std::process::id();
    let mut seq = 0usize;

    // single pods, alternating
    let mut starts: Vec<Vec<f64>> = vec![Vec::new(); n_ep];
    let mut stops: Vec<Vec<f64>> = vec![Vec::new(); n_ep];
    let mut pairs: Vec<(f64, f64)> = Vec::new(); // (start ratio, teardown ratio) of each round
    for it in 0..o.warmup + o.runs {
        let mut round_start = vec![0.0; n_ep];
        let mut round_stop = vec![0.0; n_ep];
        for k in 0..n_ep {
            let i = (it + k) % n_ep;
            seq += 1;
            let name = format!("hcb-{tag}-{seq}");
            let t = Instant::now();
            let p = start_pod(&mut rts[i], &name, &o.image, o.host_network)
                .await
                .with_context(|| o.endpoints[i].name.clone())?;
            let st = ms(t.elapsed());
            let t = Instant::now();
            stop_pod(&mut rts[i], &p)
                .await
                .with_context(|| o.endpoints[i].name.clone())?;
            let sp = ms(t.elapsed());
            round_start[i] = st;
            round_stop[i] = sp;
        }
        if it >= o.warmup {
            for (v, x) in starts.iter_mut().zip(&round_start) {
                v.push(*x);
            }
            for (v, x) in stops.iter_mut().zip(&round_stop) {
                v.push(*x);
            }
            if n_ep > 1 {
                pairs.push((
                    round_start[0] / round_start[1],
                    round_stop[0] / round_stop[1],
                ));
            }
        }
        eprintln!(
            "husk-cri-bench: single {}/{}{}",
            it + 1,
            o.warmup + o.runs,
            if it < o.warmup { " (warm-up)" } else { "" }
        );
    }

    // concurrency levels
    let mut levels: BTreeMap<usize, Vec<Option<Level>>> = BTreeMap::new();
    for (li, &n) in o.levels.iter().enumerate() {
        let mut row: Vec<Option<Level>> = (0..n_ep).map(|_| None).collect();
        for k in 0..n_ep {
            let i = (li + k) % n_ep;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let baseline = endpoint_mem(&o.endpoints[i]);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..n {
                seq += 1;
                let name = format!("hcb-{tag}-{seq}");
                let mut rt = rts[i].clone();
                let image = o.image.clone();
                let hn = o.host_network;
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = start_pod(&mut rt, &name, &image, hn).await;
                    (r, ms(t.elapsed()))
                }));
            }
            let mut pods = Vec::new();
            let mut each = Vec::new();
            let mut err = None;
            for t in tasks {
                let (r, d) = t.await?;
                match r {
                    Ok(p) => {
                        pods.push(p);
                        each.push(d);
                    }
                    Err(e) => err = Some(e),
                }
            }
            let wall_start = ms(t0.elapsed());
            // let the shims and daemons settle (the pause and workload processes are running)
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let mem = endpoint_mem(&o.endpoints[i]);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for p in pods {
                let mut rt = rts[i].clone();
                tasks.push(tokio::spawn(async move { stop_pod(&mut rt, &p).await }));
            }
            for t in tasks {
                if let Err(e) = t.await? {
                    err.get_or_insert(e);
                }
            }
            let wall_teardown = ms(t0.elapsed());
            if let Some(e) = err {
                return Err(e.context(format!("{}: {n} concurrent pods", o.endpoints[i].name)));
            }
            row[i] = Some(Level {
                wall_start,
                pod_start_median: median(&each),
                pod_start_max: each.iter().cloned().fold(0.0, f64::max),
                wall_teardown,
                mem,
                baseline,
            });
            eprintln!(
                "husk-cri-bench: {} x{n}: {wall_start:.0} ms up, {wall_teardown:.0} ms down",
                o.endpoints[i].name
            );
        }
        levels.insert(n, row);
    }

    let report = report(&o, &starts, &stops, &pairs, &levels)?;
    print!("{report}");
    if let Some(out) = &o.out {
        if let Some(d) = std::path::Path::new(out).parent() {
            std::fs::create_dir_all(d).ok();
        }
        std::fs::write(out, &report).with_context(|| format!("write {out}"))?;
    }
    Ok(())
}

fn report(
    o: &Opts,
    starts: &[Vec<f64>],
    stops: &[Vec<f64>],
    pairs: &[(f64, f64)],
    levels: &BTreeMap<usize, Vec<Option<Level>>>,
) -> Result<String> {
    let mut r = String::new();
    let names: Vec<&str> = o.endpoints.iter().map(|e| e.name.as_str()).collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    writeln!(r, "# CRI pod benchmark")?;
    writeln!(r)?;
    if let Some(c) = &o.command_line {
        writeln!(r, "Command: `{c}`  ")?;
    }
    writeln!(
        r,
        "Image `{}`; pod = sandbox + one container (`sleep 3600`), {}; {} single-pod runs per \
         endpoint after {} warm-up, alternating; load average at the end: {}  ",
        o.image,
        if o.host_network {
            "host network"
        } else {
            "pod network through CNI (bridge)"
        },
        o.runs,
        o.warmup,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(r)?;
    writeln!(r, "## One pod at a time (ms, median [min-max])")?;
    writeln!(r)?;
    writeln!(r, "| endpoint | start (RunPodSandbox+Create+Start) | teardown (StopContainer+StopPodSandbox+RemovePodSandbox) |")?;
    writeln!(r, "| --- | --- | --- |")?;
    for (i, n) in names.iter().enumerate() {
        let mm = |v: &[f64]| {
            format!(
                "{:.1} [{:.1}-{:.1}]",
                median(v),
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(0.0, f64::max)
            )
        };
        writeln!(r, "| {n} | {} | {} |", mm(&starts[i]), mm(&stops[i]))?;
    }
    if !pairs.is_empty() {
        let s: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let t: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        writeln!(
            r,
            "| **{}/{}** (median of per-round ratios) | **{:.2}** | **{:.2}** |",
            names[0],
            names[1],
            median(&s),
            median(&t)
        )?;
    }
    writeln!(r)?;
    writeln!(r, "## N pods started concurrently")?;
    writeln!(r)?;
    writeln!(r, "Wall: from the first RunPodSandbox to the last StartContainer answer; per pod: each pod's own start; `wall / (N x single)` divides by N times the median single-pod start above (1 = linear, below 1 = better than linear).")?;
    writeln!(r)?;
    writeln!(
        r,
        "| endpoint | N | wall start ms | per-pod median ms | per-pod max ms | wall / (N x single) | wall teardown ms |"
    )?;
    writeln!(r, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for (n, row) in levels {
        for (i, l) in row.iter().enumerate() {
            let Some(l) = l else { continue };
            let single = median(&starts[i]);
            writeln!(
                r,
                "| {} | {n} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} |",
                names[i],
                l.wall_start,
                l.pod_start_median,
                l.pod_start_max,
                l.wall_start / (*n as f64 * single),
                l.wall_teardown
            )?;
        }
    }
    writeln!(r)?;
    writeln!(r, "## Memory with N pods running (MiB)")?;
    writeln!(r)?;
    writeln!(r, "RSS summed over processes (shared pages counted in each; PSS in parentheses splits them). Per pod = (everything with N pods - the daemon before the level) / N; the workload (`sleep`) is the same binary for both and is left out of per pod.")?;
    writeln!(r)?;
    writeln!(r, "| endpoint | N | daemon before | daemon | shims (count) | pause (count) | workload | per pod RSS (PSS) |")?;
    writeln!(r, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    let mut per_pod: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (n, row) in levels {
        for (i, l) in row.iter().enumerate() {
            let Some(l) = l else { continue };
            let m = l.mem;
            let tot_rss = m.daemon.rss_kb + m.shims.rss_kb + m.pause.rss_kb;
            let tot_pss = m.daemon.pss_kb + m.shims.pss_kb + m.pause.pss_kb;
            let pp_rss = mb(tot_rss.saturating_sub(l.baseline.daemon.rss_kb)) / *n as f64;
            let pp_pss = mb(tot_pss.saturating_sub(l.baseline.daemon.pss_kb)) / *n as f64;
            per_pod.entry(*n).or_default().push(pp_rss);
            writeln!(
                r,
                "| {} | {n} | {:.1} | {:.1} | {:.1} ({}) | {:.1} ({}) | {:.1} | {:.2} ({:.2}) |",
                names[i],
                mb(l.baseline.daemon.rss_kb),
                mb(m.daemon.rss_kb),
                mb(m.shims.rss_kb),
                m.shims.procs,
                mb(m.pause.rss_kb),
                m.pause.procs,
                mb(m.workload.rss_kb),
                pp_rss,
                pp_pss
            )?;
        }
    }
    if names.len() > 1 {
        writeln!(r)?;
        for (n, v) in &per_pod {
            if v.len() >= 2 {
                writeln!(
                    r,
                    "Per-pod RSS {}/{} at N={n}: **{:.2}**  ",
                    names[0],
                    names[1],
                    v[0] / v[1]
                )?;
            }
        }
        for (n, row) in levels {
            if let (Some(Some(a)), Some(Some(b))) = (row.first(), row.get(1)) {
                writeln!(
                    r,
                    "Wall start {}/{} at N={n}: **{:.2}**  ",
                    names[0],
                    names[1],
                    a.wall_start / b.wall_start
                )?;
            }
        }
    }
    Ok(r)
}
