//! Husk: an OCI runtime library. The `husk` binary (src/bin/husk/) is a thin front-end over this crate, with its own small argument parser.
//!
//! One module per kernel concern; see docs/ARCHITECTURE.md.
pub mod capabilities;
pub mod cgroup_ops;
pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod copyup;
pub mod error;
pub mod exe;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod hostmounts;
pub mod idmap;
pub mod logging;
pub mod namespaces;
pub mod netdev;
pub mod procattr;
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

/// Write a line to stdout; a closed stdout (`husk ps | head`) ends the process quietly with 0
/// instead of a panic. SIGPIPE stays ignored so hooks that exit early cannot kill the runtime.
pub fn emit_str(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

#[macro_export]
macro_rules! emit {
    ($($arg:tt)*) => { $crate::emit_str(&format!("{}\n", format_args!($($arg)*))) };
}

#[macro_export]
macro_rules! emit_raw {
    ($($arg:tt)*) => { $crate::emit_str(&format!($($arg)*)) };
}
