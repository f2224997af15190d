//! Husk: an OCI runtime library. The `husk` binary is a thin clap front-end over `ops`.
//!
//! One module per kernel concern; see docs/ARCHITECTURE.md.
pub mod cgroups;
pub mod seccomp;
