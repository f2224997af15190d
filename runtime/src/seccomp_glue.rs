//! Connects the `seccomp` compiler to container creation: compile once per profile (cached by
//! content hash under the state root), install in the init.
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxSeccomp;
use std::path::Path;

pub struct Filter(crate::seccomp::CompiledFilter);

/// Compile (or load from the cache) the container's filter.
pub fn compile(s: &LinuxSeccomp, state_root: &Path) -> Result<Filter> {
    let cache = crate::seccomp::FilterCache::new(state_root.join(".seccomp-cache"));
    let (f, outcome) = cache.compile(s)?;
    tracing::debug!(?outcome, "seccomp filter");
    if f.uses_notify() && s.listener_path().is_none() {
        return Err(Error::config(
            "linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath",
        ));
    }
    Ok(Filter(f))
}

impl crate::process::SeccompInstall for Filter {
    fn install(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        Ok(self.0.install()?)
    }
    fn uses_notify(&self) -> bool {
        self.0.uses_notify()
    }
}

/// Hand a notify listener fd received from the container to the seccomp agent at
/// `linux.seccomp.listenerPath`, with the container state, as runc does.
pub fn forward_to_listener(
    spec: &oci_spec::runtime::Spec,
    fd: &std::os::fd::OwnedFd,
    pid: i32,
    state_json: &str,
) -> Result<()> {
    let Some(sec) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Err(Error::container(
            "seccomp listener fd received without a seccomp profile",
        ));
    };
    let Some(path) = sec.listener_path() else {
        return Err(Error::config(
            "linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath",
        ));
    };
    let state: oci_spec::runtime::State = serde_json::from_str(state_json)
        .map_err(|e| Error::container(format!("container state for the seccomp agent: {e}")))?;
    crate::seccomp::send_to_listener(
        path,
        sec.listener_metadata().as_deref(),
        std::os::fd::AsFd::as_fd(fd),
        pid,
        &state,
    )?;
    Ok(())
}
