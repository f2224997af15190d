//! cgroup v2 resource application (pure v2 hosts, and the unified side of hybrid hosts).

use super::convert::{blkio_weight_to_io_weight, cpu_shares_to_weight, memory_swap_to_v2, v2_num};
use super::fsutil::{keyed, read, read_flat_keyed, read_u64, write};
use super::{devices, CgroupError, Result, WAIT_LIMIT};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxRdma, LinuxResources};
use std::path::Path;
use std::time::{Duration, Instant};

const HIER: &str = "cgroup v2";

fn unsupported(resource: &str, detail: &str) -> CgroupError {
    CgroupError::Unsupported {
        resource: resource.to_string(),
        hierarchy: HIER.to_string(),
        detail: detail.to_string(),
    }
}

/// The controllers a directory can use (its cgroup.controllers).
pub(crate) fn controllers(dir: &Path) -> Result<Vec<String>> {
    Ok(read(dir, "cgroup.controllers")?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Write a limit file; when it is missing, say which controller is missing in this cgroup.
fn set(dir: &Path, file: &str, value: &str, resource: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        let ctrl = file.split('.').next().unwrap_or(file).to_string();
        let have = controllers(dir).map(|c| c.join(" ")).unwrap_or_default();
        return Err(CgroupError::ControllerUnavailable {
            resource: resource.to_string(),
            controller: ctrl,
            detail: format!(
                "{} does not exist, cannot write {value:?} (controllers enabled in {}: {:?})",
                path.display(),
                dir.display(),
                have
            ),
        });
    }
    write(dir, file, value)
}

/// Ancestors of `leaf` that are cgroup2 directories, top-down (the mount root first, `leaf` excluded).
fn ancestors_top_down(leaf: &Path) -> Vec<&Path> {
    let mut v: Vec<&Path> = leaf
        .ancestors()
        .skip(1)
        .filter(|a| a.join("cgroup.controllers").exists())
        .collect();
    v.reverse();
    v
}

/// Enable every available controller on the ancestors of `leaf` (as runc does on v2 hosts). A
/// controller the kernel refuses to enable somewhere is skipped; a limit needing it fails later with
/// the missing file named.
pub(crate) fn enable_all_controllers(leaf: &Path) -> Result<()> {
    for a in ancestors_top_down(leaf) {
        let avail = controllers(a)?;
        let enabled = read(a, "cgroup.subtree_control")?;
        for c in avail {
            if enabled.split_whitespace().any(|e| e == c) {
                continue;
            }
            if let Err(e) = write(a, "cgroup.subtree_control", &format!("+{c}")) {
                tracing::debug!(error = %e, "controller not enabled");
            }
        }
    }
    Ok(())
}

/// Enable `ctrl` on every ancestor of `leaf` (needed before the leaf gets its files).
pub(crate) fn enable_controller(leaf: &Path, ctrl: &str, resource: &str) -> Result<()> {
    for a in ancestors_top_down(leaf) {
        let enabled = read(a, "cgroup.subtree_control")?;
        if enabled.split_whitespace().any(|e| e == ctrl) {
            continue;
        }
        let avail = controllers(a)?;
        if !avail.iter().any(|c| c == ctrl) {
            return Err(CgroupError::ControllerUnavailable {
                resource: resource.to_string(),
                controller: ctrl.to_string(),
                detail: format!(
                    "{} lists only {:?}",
                    a.join("cgroup.controllers").display(),
                    avail.join(" ")
                ),
            });
        }
        write(a, "cgroup.subtree_control", &format!("+{ctrl}"))?;
    }
    Ok(())
}

pub(crate) fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(cpu) = r.cpu() {
        apply_cpu(dir, cpu)?;
    }
    if let Some(devs) = r.devices() {
        // no devices.allow/deny in v2: the rules become an eBPF program attached to the cgroup
        let rules = devices::rules(Some(devs))?;
        super::ebpf::apply(dir, &rules)?;
    }
    if let Some(m) = r.memory() {
        apply_memory(dir, m)?;
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        set(dir, "pids.max", &v, "linux.resources.pids.limit")?;
    }
    if let Some(b) = r.block_io() {
        apply_io(dir, b)?;
    }
    if let Some(h) = r.hugepage_limits() {
        for (i, l) in h.iter().enumerate() {
            let res = format!("linux.resources.hugepageLimits[{i}] ({})", l.page_size());
            super::v1::check_page_size(l.page_size(), &res)?;
            set_hugetlb(dir, l.page_size(), l.limit(), &res)?;
        }
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(unsupported(
                "linux.resources.network",
                "net_cls/net_prio do not exist in cgroup v2",
            ));
        }
    }
    if let Some(rdma) = r.rdma() {
        for (dev, l) in rdma {
            set(dir, "rdma.max", &rdma_line(dev, l), "linux.resources.rdma")?;
        }
    }
    if let Some(u) = r.unified() {
        for (k, v) in u {
            let res = format!("linux.resources.unified[{k:?}]");
            unified_key_controller(k, &res)?;
            write_unified(dir, k, v, &res)?;
        }
    }
    Ok(())
}

fn apply_cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0) {
        return Err(unsupported(
            "linux.resources.cpu.realtimeRuntime/realtimePeriod",
            "cgroup v2 has no realtime group scheduling",
        ));
    }
    if let Some(s) = c.shares().filter(|v| *v != 0) {
        let w = cpu_shares_to_weight(s);
        set(
            dir,
            "cpu.weight",
            &w.to_string(),
            "linux.resources.cpu.shares",
        )?;
    }
    let quota = c.quota().filter(|v| *v != 0);
    let period = c.period().filter(|v| *v != 0);
    if quota.is_some() || period.is_some() {
        let mut v = match quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        if let Some(p) = period {
            v.push(' ');
            v.push_str(&p.to_string());
        }
        set(dir, "cpu.max", &v, "linux.resources.cpu.quota/period")?;
    }
    if let Some(b) = c.burst() {
        set(
            dir,
            "cpu.max.burst",
            &b.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    if let Some(i) = c.idle() {
        set(dir, "cpu.idle", &i.to_string(), "linux.resources.cpu.idle")?;
    }
    if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
        set(dir, "cpuset.cpus", v, "linux.resources.cpu.cpus")?;
    }
    if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
        set(dir, "cpuset.mems", v, "linux.resources.cpu.mems")?;
    }
    Ok(())
}

fn apply_memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    // kernel / kernelTCP: ignored (validate::warn_kernel_memory said so); cgroup v2 accounts
    // kernel memory with user memory and has no separate limit.
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
    if m.use_hierarchy() == Some(false) {
        return Err(unsupported(
            "linux.resources.memory.useHierarchy=false",
            "cgroup v2 accounting is always hierarchical",
        ));
    }
    if m.check_before_update() == Some(true) && limit > 0 {
        let usage = read_u64(dir, "memory.current")?;
        if (limit as u64) < usage {
            return Err(CgroupError::InvalidValue {
                field: "linux.resources.memory.limit".into(),
                detail: format!(
                    "{limit} is below the current usage {usage} of {} (checkBeforeUpdate)",
                    dir.display()
                ),
            });
        }
    }
    if let Some(sw) = memory_swap_to_v2(swap, limit)? {
        let v = v2_num(sw);
        if dir.join("memory.swap.max").exists() {
            write(dir, "memory.swap.max", &v)?;
        } else if sw != -1 {
            // no swap accounting: only "unlimited" can be honoured
            return Err(CgroupError::ControllerUnavailable {
                resource: "linux.resources.memory.swap".into(),
                controller: "memory (swap accounting)".into(),
                detail: format!(
                    "{} does not exist, cannot write {v:?}",
                    dir.join("memory.swap.max").display()
                ),
            });
        }
    }
    if limit != 0 {
        set(
            dir,
            "memory.max",
            &v2_num(limit),
            "linux.resources.memory.limit",
        )?;
    }
    if let Some(r) = m.reservation().filter(|v| *v != 0) {
        set(
            dir,
            "memory.low",
            &v2_num(r),
            "linux.resources.memory.reservation",
        )?;
    }
    Ok(())
}

fn apply_io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    if b.leaf_weight().is_some_and(|v| v != 0)
        || b.weight_device()
            .iter()
            .flatten()
            .any(|d| d.leaf_weight().is_some_and(|v| v != 0))
    {
        return Err(unsupported(
            "linux.resources.blockIO.leafWeight",
            "leaf weights existed only in the v1 CFQ scheduler",
        ));
    }
    // BFQ's io.bfq.weight takes the v1 range as is; io.weight needs the conversion.
    let bfq = dir.join("io.bfq.weight").exists();
    if let Some(w) = b.weight().filter(|v| *v != 0) {
        let res = "linux.resources.blockIO.weight";
        if bfq {
            write(dir, "io.bfq.weight", &w.to_string())?;
        } else {
            let v = blkio_weight_to_io_weight(w);
            set(dir, "io.weight", &format!("default {v}"), res)?;
        }
    }
    for (i, wd) in b.weight_device().iter().flatten().enumerate() {
        if let Some(w) = wd.weight().filter(|v| *v != 0) {
            let res = format!("linux.resources.blockIO.weightDevice[{i}]");
            if bfq {
                let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                write(dir, "io.bfq.weight", &v)?;
            } else {
                let v = format!(
                    "{}:{} {}",
                    wd.major(),
                    wd.minor(),
                    blkio_weight_to_io_weight(w)
                );
                set(dir, "io.weight", &v, &res)?;
            }
        }
    }
    for (list, key, name) in [
        (
            b.throttle_read_bps_device(),
            "rbps",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "wbps",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "riops",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "wiops",
            "throttleWriteIOPSDevice",
        ),
    ] {
        for (i, t) in list.iter().flatten().enumerate() {
            // v1 uses 0 to remove a limit; v2 spells that "max"
            let rate = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            let v = format!("{}:{} {key}={rate}", t.major(), t.minor());
            set(
                dir,
                "io.max",
                &v,
                &format!("linux.resources.blockIO.{name}[{i}]"),
            )?;
        }
    }
    Ok(())
}

/// hugetlb.<size>.max, and the reservation limit when the kernel has it.
pub(crate) fn set_hugetlb(dir: &Path, size: &str, limit: i64, resource: &str) -> Result<()> {
    let v = v2_num(limit);
    set(dir, &format!("hugetlb.{size}.max"), &v, resource)?;
    let rsvd = format!("hugetlb.{size}.rsvd.max");
    if dir.join(&rsvd).exists() {
        write(dir, &rsvd, &v)?;
    }
    Ok(())
}

/// "mlx4_0 hca_handle=2 hca_object=2000" (unset fields are "max").
pub(crate) fn rdma_line(dev: &str, l: &LinuxRdma) -> String {
    let f = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "max".into());
    format!(
        "{dev} hca_handle={} hca_object={}",
        f(l.hca_handles()),
        f(l.hca_objects())
    )
}

/// The controller of a `unified` key ("memory.high" → "memory"); keys must be plain file names.
pub(crate) fn unified_key_controller<'a>(key: &'a str, resource: &str) -> Result<&'a str> {
    let bad = |d: &str| CgroupError::InvalidValue {
        field: resource.to_string(),
        detail: d.to_string(),
    };
    if key.is_empty() || key.contains('/') || key.starts_with('.') || key.contains("..") {
        return Err(bad(
            "a unified key must be a cgroup file name like \"memory.high\"",
        ));
    }
    let Some((ctrl, _)) = key.split_once('.') else {
        return Err(bad("a unified key must be <controller>.<file>"));
    };
    if matches!(
        key,
        "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control"
    ) {
        return Err(bad("this file is managed by the runtime"));
    }
    Ok(ctrl)
}

pub(crate) fn write_unified(dir: &Path, key: &str, value: &str, resource: &str) -> Result<()> {
    set(dir, key, value, resource)
}

/// cgroup.freeze, then wait for cgroup.events to report the state.
pub(crate) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let v = if frozen { "1" } else { "0" };
    set(
        dir,
        "cgroup.freeze",
        v,
        if frozen { "pause" } else { "resume" },
    )?;
    let start = Instant::now();
    let mut delay = Duration::from_micros(200);
    loop {
        let ev = read_flat_keyed(dir, "cgroup.events")?;
        if keyed(&ev, "frozen") == Some(u64::from(frozen)) {
            return Ok(());
        }
        if start.elapsed() > WAIT_LIMIT {
            if frozen {
                let _ = write(dir, "cgroup.freeze", "0");
            }
            return Err(CgroupError::Timeout {
                path: dir.join("cgroup.events"),
                state: format!("frozen {v}"),
                secs: WAIT_LIMIT.as_secs(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool> {
    let ev = read_flat_keyed(dir, "cgroup.events")?;
    Ok(keyed(&ev, "frozen") == Some(1))
}
