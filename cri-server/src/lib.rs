//! husk-cri: a CRI v1 server for kubelet.
//!
//! - `server`: the gRPC server on a unix socket, shared state, configuration.
//! - `runtime_service`: CRI RuntimeService (version, status, runtime config; pods and containers
//!   through containerd-shim-husk-v2 are the next milestone and answer UNIMPLEMENTED until then).
//! - `image_service`: CRI ImageService over `image`.
//! - `image`: registry pulls (OCI distribution), the content store, unpacked overlayfs layers.
//! - `shim`: starting containerd-shim-husk-v2 and its ttrpc Task API; the Events service.
pub mod image;
pub mod image_service;
pub mod runtime_service;
pub mod server;
pub mod shim;
