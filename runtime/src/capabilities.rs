//! Capabilities: the five sets exactly as config.json gives them, nothing more.
use crate::error::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

/// Convert the spec's names to the `caps` crate's, skipping (with a warning) capabilities this
/// kernel does not know, as runc does.
fn convert(set: &Option<Capabilities>, which: &str) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        match Capability::from_str(&name) {
            Ok(cap) if supported.contains(&cap) => {
                out.insert(cap);
            }
            _ => tracing::warn!(
                "capabilities.{which}: {name} is not supported by this kernel, ignored"
            ),
        }
    }
    out
}

/// The converted sets, computed before clone so the child only makes syscalls.
#[derive(Debug, Clone, Default)]
pub struct CapPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub permitted: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapPlan {
    pub fn new(c: &LinuxCapabilities) -> CapPlan {
        CapPlan {
            bounding: convert(c.bounding(), "bounding"),
            effective: convert(c.effective(), "effective"),
            inheritable: convert(c.inheritable(), "inheritable"),
            permitted: convert(c.permitted(), "permitted"),
            ambient: convert(c.ambient(), "ambient"),
        }
    }

    /// Drop every capability not in the bounding set (needs CAP_SETPCAP: done before the uid change).
    pub fn apply_bounding(&self) -> Result<()> {
        for cap in caps::runtime::thread_all_supported() {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                    Error::sys(
                        format!("drop {cap} from the bounding set"),
                        std::io::Error::other(e.to_string()),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Set inheritable, effective, permitted (in an order the kernel accepts), then ambient.
    pub fn apply_sets(&self) -> Result<()> {
        let set = |which: CapSet, v: &CapsHashSet, name: &str| {
            caps::set(None, which, v).map_err(|e| {
                Error::sys(
                    format!("capset {name} {v:?}"),
                    std::io::Error::other(e.to_string()),
                )
            })
        };
        set(CapSet::Inheritable, &self.inheritable, "inheritable")?;
        set(CapSet::Effective, &self.effective, "effective")?;
        set(CapSet::Permitted, &self.permitted, "permitted")?;
        caps::clear(None, CapSet::Ambient).map_err(|e| {
            Error::sys(
                "clear ambient capabilities",
                std::io::Error::other(e.to_string()),
            )
        })?;
        for cap in &self.ambient {
            // The kernel only raises an ambient capability that is also permitted and inheritable;
            // like runc, a config that asks for more gets a warning, and the set stays smaller.
            if !self.inheritable.contains(cap) || !self.permitted.contains(cap) {
                tracing::debug!("capabilities.ambient: {cap} is not in both permitted and inheritable, not raised");
                continue;
            }
            caps::raise(None, CapSet::Ambient, *cap).map_err(|e| {
                Error::sys(
                    format!("raise ambient {cap}"),
                    std::io::Error::other(e.to_string()),
                )
            })?;
        }
        Ok(())
    }
}
