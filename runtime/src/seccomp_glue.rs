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
    if f.uses_notify() {
        return Err(Error::Unsupported(
            "linux.seccomp: the NOTIFY action (listenerPath) is not supported by husk yet".into(),
        ));
    }
    Ok(Filter(f))
}

impl crate::process::SeccompInstall for Filter {
    fn install(&self) -> Result<()> {
        self.0.install()?;
        Ok(())
    }
}
