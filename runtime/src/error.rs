//! The runtime's error type. Every variant names what failed: the syscall and path, the config field,
//! or the container, so a user reading one line knows where to look.
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall failed; `what` names the call and its argument (path, fd, pid).
    #[error("{what}: {err}")]
    Sys { what: String, err: io::Error },
    /// config.json is malformed or asks for something invalid; names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// A container-level precondition was not met (wrong status, ...).
    #[error("{0}")]
    Container(String),
    /// No container with this ID under the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// The container's init reported an error during set-up.
    #[error("container process set-up: {0}")]
    Init(String),
    #[error("hook {phase} {path}: {reason}")]
    Hook {
        phase: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

impl Error {
    pub fn sys(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            what: what.into(),
            err: source.into(),
        }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub fn container(msg: impl Into<String>) -> Self {
        Error::Container(msg.into())
    }
}

/// Attach "what failed" to io::Result / nix::Result values.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), io::Error::from_raw_os_error(e as i32)))
    }
}
