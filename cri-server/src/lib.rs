//! husk-cri: a CRI v1 server for kubelet.
//!
//! - `server`: the gRPC server on a unix socket, shared state, configuration.
//! - `runtime_service`: CRI RuntimeService, a thin layer over `sandbox` and `container`.
//! - `container`: containers (store, CRI config → OCI spec, ExecSync, stats).
//! - `sandbox`: pod sandboxes (a catatonit pause container per pod through the shim).
//! - `image_service`: CRI ImageService over `image`.
//! - `image`: registry pulls (OCI distribution), the content store, unpacked overlayfs layers.
//! - `network`: pod network namespaces and the CNI executor.
//! - `streaming`: the HTTP server behind Exec, Attach and PortForward (SPDY, WebSocket).
//! - `shim`: starting containerd-shim-husk-v2 and its ttrpc Task API; the Events service.
//! - `failpoint`: test-only crash points (`HUSK_CRI_FAILPOINT`).
pub mod container;
pub mod events;
pub mod failpoint;
pub mod image;
pub mod image_service;
pub mod network;
pub mod records;
pub mod runtime_service;
pub mod sandbox;
pub mod security;
pub mod server;
pub mod shim;
pub mod streaming;
