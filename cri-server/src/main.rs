//! `husk-cri [--listen SOCKET] [--root DIR] [--state DIR] [--shim PATH] [--runtime PATH]
//! [--registry-config-dir DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR[:DIR...]]
//! [--cni-conf-template FILE] [--stream-address IP] [--stream-port PORT] [--log-level LEVEL]`
use anyhow::{bail, Context, Result};
use husk_cri::server::{serve, Config};
use std::path::PathBuf;

const USAGE: &str =
    "usage: husk-cri [--listen SOCKET] [--root DIR] [--state DIR] [--shim PATH] [--runtime PATH]
                [--registry-config-dir DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR[:DIR...]]
                [--cni-conf-template FILE] [--stream-address IP] [--stream-port PORT]
                [--log-level error|warn|info|debug|trace]

  --listen SOCKET   CRI socket (default /run/husk-cri/husk-cri.sock)
  --root DIR        images and other persistent data (default /var/lib/husk-cri)
  --state DIR       runtime state (default /run/husk-cri)
  --shim PATH       containerd-shim-husk-v2 (default: next to husk-cri, else on PATH)
  --runtime PATH    the OCI runtime the shims run (default: husk next to husk-cri, else on PATH)
  --registry-config-dir DIR
                    registry mirrors and TLS: DIR/<registry>/hosts.toml in containerd's format
                    (its config_path; default /etc/husk-cri/certs.d; a missing DIR: none)
  --cni-conf-dir DIR
                    CNI network configurations, the first valid one by name (default /etc/cni/net.d)
  --cni-bin-dir DIRS
                    CNI plugin search path (default /opt/cni/bin:/usr/lib/cni)
  --cni-conf-template FILE
                    written to the conf dir as 10-husk-cri.conflist with {{.PodCIDR}} replaced
                    when kubelet sends the pod CIDR (UpdateRuntimeConfig)
  --stream-address IP
                    where the exec/attach/port-forward URLs point (default 127.0.0.1)
  --stream-port PORT
                    their port (default 0: an ephemeral one)
  --log-level L     default info";

fn parse() -> Result<(Config, tracing::Level)> {
    let mut cfg = Config::default();
    let mut level = tracing::Level::INFO;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args
                    .next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--listen" => cfg.listen = PathBuf::from(val()?),
            "--root" => cfg.root = PathBuf::from(val()?),
            "--state" => cfg.state_dir = PathBuf::from(val()?),
            "--shim" => cfg.shim_bin = PathBuf::from(val()?),
            "--runtime" => cfg.runtime = PathBuf::from(val()?),
            "--registry-config-dir" => cfg.registry_config_dir = PathBuf::from(val()?),
            "--cni-conf-dir" => cfg.cni_conf_dir = PathBuf::from(val()?),
            "--cni-bin-dir" => {
                cfg.cni_bin_dirs = std::env::split_paths(&val()?).collect();
            }
            "--cni-conf-template" => cfg.cni_conf_template = Some(PathBuf::from(val()?)),
            "--stream-address" => {
                let v = val()?;
                cfg.stream_address = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--stream-address {v:?}: not an IP address"))?
            }
            "--stream-port" => {
                let v = val()?;
                cfg.stream_port = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--stream-port {v:?}: not a port"))?
            }
            "--log-level" => {
                let v = val()?;
                level = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--log-level {v:?}: not a level"))?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-v" => {
                // `husk --version`'s shape (runc's); commit and compiler from build.rs.
                print!(
                    "husk-cri version {}\ncommit: {}\ncri: v1\nrust: {}\n",
                    env!("CARGO_PKG_VERSION"),
                    env!("HUSK_GIT_COMMIT"),
                    env!("HUSK_RUSTC_VERSION"),
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok((cfg, level))
}

fn main() -> Result<()> {
    let (cfg, level) = parse()?;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("SIGTERM handler: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
        };
        serve(cfg, shutdown).await
    })
    .context("husk-cri")?;
    Ok(())
}
