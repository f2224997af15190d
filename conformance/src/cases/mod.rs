//! The cases. Each one is derived from a runtime-spec requirement (config.md, config-linux.md,
//! runtime.md, runtime-linux.md) and asserts something observable; a case that cannot run on
//! this machine returns Skip with the reason.

use crate::ctx::{CaseResult, Ctx};

mod cgroups;
mod cli;
mod errors;
mod hooks;
mod lifecycle;
mod linux_ext;
mod mounts;
mod namespaces;
mod process;
mod seccomp;
mod security;

pub struct Case {
    pub name: &'static str,
    pub run: fn(&mut Ctx<'_>) -> CaseResult,
    /// Runs alone (no other case of the same runtime in parallel).
    pub serial: bool,
}

pub const fn case(name: &'static str, run: fn(&mut Ctx<'_>) -> CaseResult) -> Case {
    Case {
        name,
        run,
        serial: false,
    }
}

pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(lifecycle::cases());
    v.extend(errors::cases());
    v.extend(namespaces::cases());
    v.extend(mounts::cases());
    v.extend(process::cases());
    v.extend(cgroups::cases());
    v.extend(hooks::cases());
    v.extend(cli::cases());
    v.extend(seccomp::cases());
    v.extend(security::cases());
    v.extend(linux_ext::cases());
    v
}
