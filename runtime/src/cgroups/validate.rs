//! Checks of `linux.resources` that need no cgroup directory: values, and whether this host's
//! hierarchies have the controllers the requested limits need. `husk create` runs them before it
//! creates anything; `apply` still reports what only the kernel can refuse.

use super::convert::memory_swap_to_v2;
use super::{devices, v1, v2, CgroupError, CgroupState, Mode, Result};
use oci_spec::runtime::LinuxResources;

fn unsupported(resource: &str, detail: &str) -> CgroupError {
    CgroupError::Unsupported {
        resource: resource.to_string(),
        hierarchy: "cgroup v2".to_string(),
        detail: detail.to_string(),
    }
}

fn need_v1(st: &CgroupState, ctrl: &str, resource: &str) -> Result<()> {
    v1::dir(st, ctrl, resource).map(|_| ())
}

/// linux.resources.memory.kernel / kernelTCP: accepted and ignored with a warning, as runc and
/// crun do. Kernel memory is accounted with user memory on cgroup v2, and Linux 6.x no longer
/// enforces the v1 kmem limits (memory.kmem.limit_in_bytes takes a write and ignores it).
pub(crate) fn warn_kernel_memory(m: &oci_spec::runtime::LinuxMemory) {
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!(
            kernel = ?m.kernel(),
            kernel_tcp = ?m.kernel_tcp(),
            "linux.resources.memory.kernel/kernelTCP: kernel memory limits are ignored (not enforced by current kernels)"
        );
    }
}

pub(crate) fn validate(st: &CgroupState, r: &LinuxResources) -> Result<()> {
    devices::rules(r.devices().as_ref())?;
    let is_v2 = st.mode == Mode::V2;
    if r.devices().is_some() && !is_v2 {
        need_v1(st, "devices", "linux.resources.devices")?;
    }
    if let Some(m) = r.memory() {
        warn_kernel_memory(m);
        let limit = m.limit().unwrap_or(0);
        let swap = m.swap().unwrap_or(0);
        if let Some(v) = m.swappiness() {
            if v > 100 {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.memory.swappiness".into(),
                    detail: format!("{v} is outside 0..=100"),
                });
            }
        }
        if is_v2 {
            memory_swap_to_v2(swap, limit)?;
            if m.swappiness().is_some() {
                return Err(unsupported(
                    "linux.resources.memory.swappiness",
                    "cgroup v2 has no per-cgroup swappiness",
                ));
            }
            if m.disable_oom_killer() == Some(true) {
                return Err(unsupported(
                    "linux.resources.memory.disableOOMKiller",
                    "cgroup v2 cannot disable the OOM killer for a cgroup",
                ));
            }
        } else {
            if swap > 0 && limit > 0 && swap < limit {
                return Err(CgroupError::InvalidValue {
                    field: "linux.resources.memory.swap".into(),
                    detail: format!(
                        "memory+swap limit {swap} is lower than the memory limit {limit}"
                    ),
                });
            }
            need_v1(st, "memory", "linux.resources.memory")?;
        }
    }
    if let Some(c) = r.cpu() {
        let rt = c.realtime_runtime().is_some_and(|v| v != 0)
            || c.realtime_period().is_some_and(|v| v != 0);
        if is_v2 && rt {
            return Err(unsupported(
                "linux.resources.cpu.realtimeRuntime/realtimePeriod",
                "cgroup v2 has no realtime group scheduling",
            ));
        }
        if !is_v2 {
            let wants_cpu = c.shares().is_some_and(|v| v != 0)
                || c.quota().is_some_and(|v| v != 0)
                || c.period().is_some_and(|v| v != 0)
                || c.burst().is_some()
                || c.idle().is_some()
                || rt;
            if wants_cpu {
                need_v1(st, "cpu", "linux.resources.cpu")?;
            }
            if c.cpus().as_ref().is_some_and(|v| !v.is_empty())
                || c.mems().as_ref().is_some_and(|v| !v.is_empty())
            {
                need_v1(st, "cpuset", "linux.resources.cpu.cpus/mems")?;
            }
        }
    }
    if r.pids().is_some() && !is_v2 {
        need_v1(st, "pids", "linux.resources.pids")?;
    }
    if let Some(b) = r.block_io() {
        let leaf = b.leaf_weight().is_some_and(|v| v != 0)
            || b.weight_device()
                .iter()
                .flatten()
                .any(|d| d.leaf_weight().is_some_and(|v| v != 0));
        if is_v2 && leaf {
            return Err(unsupported(
                "linux.resources.blockIO.leafWeight",
                "leaf weights existed only in the v1 CFQ scheduler",
            ));
        }
    }
    if let Some(h) = r.hugepage_limits() {
        for (i, l) in h.iter().enumerate() {
            let res = format!("linux.resources.hugepageLimits[{i}] ({})", l.page_size());
            v1::check_page_size(l.page_size(), &res)?;
            if !is_v2 && !st.v1.contains_key("hugetlb") && st.unified.is_none() {
                need_v1(st, "hugetlb", &res)?;
            }
        }
    }
    if let Some(n) = r.network() {
        let prios = n.priorities().as_ref().is_some_and(|p| !p.is_empty());
        if is_v2 && (n.class_id().is_some() || prios) {
            return Err(unsupported(
                "linux.resources.network",
                "net_cls/net_prio do not exist in cgroup v2",
            ));
        }
        if n.class_id().is_some() {
            need_v1(st, "net_cls", "linux.resources.network.classID")?;
        }
        if prios {
            need_v1(st, "net_prio", "linux.resources.network.priorities")?;
        }
    }
    if let Some(rdma) = r.rdma() {
        if !rdma.is_empty() && !is_v2 {
            need_v1(st, "rdma", "linux.resources.rdma")?;
        }
    }
    if let Some(u) = r.unified() {
        for k in u.keys() {
            let res = format!("linux.resources.unified[{k:?}]");
            v2::unified_key_controller(k, &res)?;
            if st.unified.is_none() {
                return Err(CgroupError::ControllerUnavailable {
                    resource: res,
                    controller: "cgroup2".into(),
                    detail: "this host has no cgroup2 mount".into(),
                });
            }
        }
    }
    Ok(())
}
