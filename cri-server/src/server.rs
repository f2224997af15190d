//! The gRPC server: CRI v1 RuntimeService and ImageService on a unix socket.

use crate::container::{ContainerError, Containers};
use crate::events::EventHub;
use crate::image::ImageStore;
use crate::network::cni::CniSettings;
use crate::network::Network;
use crate::sandbox::Sandboxes;
use crate::shim::{EventServer, ShimConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where husk-cri keeps things.
#[derive(Debug, Clone)]
pub struct Config {
    /// The CRI socket kubelet connects to.
    pub listen: PathBuf,
    /// Persistent data: images (content store, unpacked layers).
    pub root: PathBuf,
    /// Runtime state (pods, containers, shim sockets); gone at reboot.
    pub state_dir: PathBuf,
    /// containerd-shim-husk-v2
    pub shim_bin: PathBuf,
    /// The OCI runtime the shims run (their HUSK_RUNTIME).
    pub runtime: PathBuf,
    /// Registry mirrors and TLS settings: `DIR/<registry>/hosts.toml` in containerd's format
    /// (its `config_path`); a missing directory means none.
    pub registry_config_dir: PathBuf,
    /// CNI network configurations (the first valid one is used; default /etc/cni/net.d).
    pub cni_conf_dir: PathBuf,
    /// CNI plugin search path (default /opt/cni/bin and /usr/lib/cni, Debian's).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// A CNI conflist written to the conf dir with the pod CIDR of UpdateRuntimeConfig.
    pub cni_conf_template: Option<PathBuf>,
    /// The streaming server (Exec/Attach/PortForward URLs): its address; port 0 = ephemeral.
    pub stream_address: std::net::IpAddr,
    pub stream_port: u16,
}

/// `name` next to this executable, else found on PATH, else the bare name (the error when it is
/// run names it).
pub fn sibling_or_path(name: &str) -> PathBuf {
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
    {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: PathBuf::from("/run/husk-cri/husk-cri.sock"),
            root: PathBuf::from("/var/lib/husk-cri"),
            state_dir: PathBuf::from("/run/husk-cri"),
            shim_bin: sibling_or_path("containerd-shim-husk-v2"),
            runtime: sibling_or_path("husk"),
            registry_config_dir: PathBuf::from("/etc/husk-cri/certs.d"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_conf_template: None,
            stream_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            stream_port: 0,
        }
    }
}

/// State shared by the services.
pub struct State {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub sandboxes: Arc<Sandboxes>,
    pub containers: Arc<Containers>,
    pub events: EventHub,
    pub network: Arc<Network>,
    pub streaming: Arc<crate::streaming::StreamServer>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image store {path}: {source}")]
    Images {
        path: PathBuf,
        source: crate::image::ImageError,
    },
    #[error("{0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("{0}")]
    Shim(#[from] crate::shim::ShimError),
    #[error("{0}")]
    Container(#[from] ContainerError),
    #[error("gRPC server on {path}: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

fn mkdir(p: &Path, mode: u32) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|source| ServerError::Io {
            what: "mkdir",
            path: p.to_path_buf(),
            source,
        })
}

/// Binds the socket (a stale socket file from a dead server is replaced; a live server's is
/// refused), then serves until `shutdown` resolves. The socket file is removed on return.
pub async fn serve(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    mkdir(&cfg.root, 0o711)?;
    mkdir(&cfg.state_dir, 0o711)?;
    if let Some(dir) = cfg.listen.parent() {
        mkdir(dir, 0o711)?;
    }
    let images_root = cfg.root.join("images");
    let store = ImageStore::open_with(
        &images_root,
        crate::image::StoreOptions {
            registry_config_dir: Some(cfg.registry_config_dir.clone()),
            ..Default::default()
        },
    )
    .map_err(|source| ServerError::Images {
        path: images_root.clone(),
        source,
    })?;

    if cfg.listen.exists() {
        if std::os::unix::net::UnixStream::connect(&cfg.listen).is_ok() {
            return Err(ServerError::Io {
                what: "listen on",
                path: cfg.listen.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening there",
                ),
            });
        }
        std::fs::remove_file(&cfg.listen).map_err(|source| ServerError::Io {
            what: "remove stale socket",
            path: cfg.listen.clone(),
            source,
        })?;
    }
    let listener =
        tokio::net::UnixListener::bind(&cfg.listen).map_err(|source| ServerError::Io {
            what: "bind",
            path: cfg.listen.clone(),
            source,
        })?;
    // Only root may talk to the runtime.
    std::fs::set_permissions(
        &cfg.listen,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|source| ServerError::Io {
        what: "chmod",
        path: cfg.listen.clone(),
        source,
    })?;
    tracing::info!("husk-cri listening on {}", cfg.listen.display());

    // Shims publish their events (TaskExit, ...) to this socket (their TTRPC_ADDRESS).
    let events_sock = cfg.state_dir.join("events.sock");
    let (events, rx) = EventServer::start(&events_sock)?;
    let shim_cfg = ShimConfig {
        shim_bin: cfg.shim_bin.clone(),
        runtime: Some(cfg.runtime.clone()),
        address: cfg.listen.clone(),
        events: events_sock,
    };
    let store = Arc::new(store);
    let hub = EventHub::new();
    let network = Arc::new(Network::new(
        CniSettings {
            conf_dir: cfg.cni_conf_dir.clone(),
            bin_dirs: cfg.cni_bin_dirs.clone(),
            // Persistent: host-local's IP allocations outlive a reboot, so must what DEL needs.
            cache_dir: cfg.root.join("cni"),
            timeout: std::time::Duration::from_secs(60),
        },
        &cfg.state_dir,
        cfg.cni_conf_template.clone(),
    ));
    let sandboxes = Arc::new(Sandboxes::new(
        shim_cfg.clone(),
        network.clone(),
        &cfg.root,
        &cfg.state_dir,
    )?);
    let containers = Arc::new(Containers::new(
        shim_cfg,
        &cfg.root,
        &cfg.state_dir,
        store.clone(),
        sandboxes.clone(),
        hub.clone(),
    )?);
    containers.watch_running();
    // Work dirs of checkpoints a killed husk-cri left (none can be in progress yet).
    let ckpt = crate::container::checkpoint::work_root(&cfg.state_dir);
    if let Err(e) = std::fs::remove_dir_all(&ckpt) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("remove {}: {e}", ckpt.display());
        }
    }
    {
        let sandboxes = sandboxes.clone();
        let containers = containers.clone();
        // Ends when the EventServer is dropped (its sender goes with it).
        std::thread::Builder::new()
            .name("shim-events".into())
            .spawn(move || {
                while let Ok(ev) = rx.recv() {
                    sandboxes.on_event(&ev);
                    containers.on_event(&ev);
                }
            })
            .map_err(|source| ServerError::Io {
                what: "spawn the shim events thread for",
                path: cfg.state_dir.clone(),
                source,
            })?;
    }
    let stream_addr = std::net::SocketAddr::new(cfg.stream_address, cfg.stream_port);
    let streaming =
        crate::streaming::StreamServer::start(stream_addr, containers.clone(), sandboxes.clone())
            .map_err(|source| ServerError::Io {
            what: "streaming server: listen on",
            path: PathBuf::from(stream_addr.to_string()),
            source,
        })?;
    let state = Arc::new(State {
        root: cfg.root.clone(),
        state_dir: cfg.state_dir.clone(),
        sandboxes,
        containers,
        events: hub,
        network,
        streaming,
    });

    let runtime = crate::runtime_service::Runtime::new(state);
    let images = crate::image_service::Images::new(store);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let r = tonic::transport::Server::builder()
        .add_service(
            k8s_cri::v1::runtime_service_server::RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(16 << 20),
        )
        .add_service(
            k8s_cri::v1::image_service_server::ImageServiceServer::new(images)
                .max_decoding_message_size(16 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(&cfg.listen);
    // Running sandboxes keep running (their shims are not husk-cri's children), as with
    // containerd; the next husk-cri with this state dir reloads them.
    drop(events);
    r.map_err(|source| ServerError::Serve {
        path: cfg.listen.clone(),
        source,
    })
}
