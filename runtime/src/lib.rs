//! Husk: an OCI runtime library. The `husk` binary is a thin clap front-end over this crate.
//!
//! One module per kernel concern; see docs/ARCHITECTURE.md.
pub mod capabilities;
pub mod cgroup_ops;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod exec;
pub mod exe;
pub mod hooks;
pub mod logging;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod seccomp_glue;
pub mod spec;
pub mod state;
pub mod sys;
pub mod tty;

pub use error::{Error, Result};
