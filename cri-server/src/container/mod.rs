//! Containers in pod sandboxes, as containerd's CRI plugin runs them.
//!
//! - `spec`: the OCI spec of a CRI container (image config + CRI request + sandbox).
//! - `user`: image users and groups resolved from the image's /etc/passwd and /etc/group.
//! - `record`: what husk-cri remembers of a container (container.json) and its CRI views.
//! - `store`: all containers: create, start, stop, remove, status, list, exit handling, reload.
//! - `exec_sync`: ExecSync through the shim's Exec, output bounded.
//! - `checkpoint`: CheckpointContainer, a running container's checkpoint archive (CRIU).
//! - `stats`: cgroup and writable-layer statistics.
//!
//! A container is its record and bundle under `<state>/containers/<id>/` (config.json,
//! container.json, the `rootfs` mount point) and its writable layer under
//! `<root>/snapshots/<id>/` (overlayfs upper and work dirs over the image's unpacked layers).
//! CreateContainer writes those; StartContainer starts a containerd-shim-husk-v2 for it (which
//! mounts the overlay and runs `husk create` + `husk start`); the shim writes the container's
//! output straight to its CRI log file. When the process exits, the shim's TaskExit event
//! records the exit and the task and shim are deleted (the shim unmounts the rootfs); the
//! writable layer stays until RemoveContainer.
pub mod checkpoint;
pub mod exec_sync;
pub mod record;
pub mod spec;
pub mod stats;
pub mod store;
pub mod user;
pub mod volumes;

pub use record::{Record, RunState};
pub use store::Containers;

use std::path::PathBuf;

/// Everything a container call can fail with; each variant names the container or the path.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("container name {name:?} is reserved for {id}")]
    NameReserved { name: String, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("{0}")]
    Spec(#[from] spec::SpecError),
    #[error("image {image:?}: {source}")]
    Image {
        image: String,
        source: crate::image::ImageError,
    },
    #[error("image {0:?} not found: pull it first")]
    ImageNotFound(String),
    #[error("container {id}: {source}")]
    Shim {
        id: String,
        source: Box<crate::shim::ShimError>,
    },
    #[error("container {id}: {source}")]
    UserNamespace {
        id: String,
        source: crate::sandbox::userns::UsernsError,
    },
    #[error("container {id}: exec timed out after {secs} s (the process was killed)")]
    ExecTimeout { id: String, secs: i64 },
    #[error("container {id}: cgroup statistics: {source}")]
    Stats {
        id: String,
        source: husk::cgroups::CgroupError,
    },
    #[error("container {id}: {what}: {source}")]
    Task {
        id: String,
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

impl From<ContainerError> for tonic::Status {
    fn from(e: ContainerError) -> tonic::Status {
        let msg = e.to_string();
        match e {
            ContainerError::NotFound(_) | ContainerError::ImageNotFound(_) => {
                tonic::Status::not_found(msg)
            }
            ContainerError::NameReserved { .. } => tonic::Status::already_exists(msg),
            ContainerError::Invalid(_) | ContainerError::Ambiguous(_) => {
                tonic::Status::invalid_argument(msg)
            }
            ContainerError::Precondition(_) => tonic::Status::failed_precondition(msg),
            ContainerError::ExecTimeout { .. } => tonic::Status::deadline_exceeded(msg),
            ContainerError::Sandbox(e) => e.into(),
            ContainerError::Spec(e) => e.into(),
            _ => tonic::Status::internal(msg),
        }
    }
}

pub(crate) fn io_err(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { what, path, source }
}

/// Runs `f` on tokio's blocking pool (shim calls and file work block).
pub async fn blocking<T: Send + 'static>(
    id: &str,
    what: &'static str,
    f: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ContainerError::Task {
            id: id.to_string(),
            what,
            source,
        })?
}
