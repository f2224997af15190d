//! husk-cri: a CRI v1 server for kubelet.
//!
//! - `server`: the gRPC server on a unix socket, shared state, configuration.
//! - `runtime_service`: CRI RuntimeService (version, status, runtime config, pod sandboxes;
//!   containers are the next milestone and answer UNIMPLEMENTED until then).
//! - `sandbox`: pod sandboxes (a catatonit pause container per pod through the shim).
//! - `image_service`: CRI ImageService over `image`.
//! - `image`: registry pulls (OCI distribution), the content store, unpacked overlayfs layers.
//! - `shim`: starting containerd-shim-husk-v2 and its ttrpc Task API; the Events service.
pub mod container;
pub mod events;
pub mod image;
pub mod image_service;
pub mod records;
pub mod runtime_service;
pub mod sandbox;
pub mod security;
pub mod server;
pub mod shim;
