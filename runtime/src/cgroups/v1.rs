//! cgroup v1 (and hybrid) resource application.

use super::fsutil::{read, read_u64, write};
use super::{devices, v2, CgroupError, CgroupState, Mode, Result, WAIT_LIMIT};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxNetwork, LinuxResources};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory of v1 controller `ctrl`, or an error saying `resource` needs it.
pub(crate) fn dir<'a>(st: &'a CgroupState, ctrl: &str, resource: &str) -> Result<&'a Path> {
    st.v1
        .get(ctrl)
        .map(PathBuf::as_path)
        .ok_or_else(|| CgroupError::ControllerUnavailable {
            resource: resource.to_string(),
            controller: ctrl.to_string(),
            detail: format!("no cgroup v1 hierarchy with the {ctrl} controller is mounted"),
        })
}

/// Write a limit file; a missing file means the kernel lacks the feature, reported as such.
fn set(dir: &Path, file: &str, value: &str, resource: &str, ctrl: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(CgroupError::ControllerUnavailable {
            resource: resource.to_string(),
            controller: ctrl.to_string(),
            detail: format!(
                "{} does not exist (this kernel does not offer it), cannot write {value:?}",
                path.display()
            ),
        });
    }
    write(dir, file, value)
}

/// New v1 cpuset cgroups start with empty cpus/mems and refuse tasks: copy them down from the first
/// ancestor that has them, top-down (as runc does).
pub(crate) fn init_cpuset_chain(leaf: &Path) -> Result<()> {
    let chain: Vec<&Path> = leaf
        .ancestors()
        .take_while(|a| a.join("cpuset.cpus").exists())
        .collect();
    for pair in chain.windows(2).rev() {
        let (child, parent) = (pair[0], pair[1]);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(child, f)?.is_empty() {
                let v = read(parent, f)?;
                write(child, f, &v)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn apply(st: &CgroupState, r: &LinuxResources) -> Result<()> {
    if let Some(cpu) = r.cpu() {
        apply_cpuset(st, cpu)?;
    }
    // The spec's device rules, then the default allowed set. Without rules nothing is written: a new
    // cgroup inherits its parent's (usually allow-all) list, and an update leaves the list alone.
    if r.devices().is_some() {
        let rules = devices::rules(r.devices().as_ref())?;
        let d = dir(st, "devices", "linux.resources.devices")?;
        for rule in rules {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(d, file, &rule.v1_line())?;
        }
    }
    if let Some(m) = r.memory() {
        apply_memory(st, m)?;
    }
    if let Some(cpu) = r.cpu() {
        apply_cpu(st, cpu)?;
    }
    if let Some(p) = r.pids() {
        let d = dir(st, "pids", "linux.resources.pids.limit")?;
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        set(d, "pids.max", &v, "linux.resources.pids.limit", "pids")?;
    }
    if let Some(b) = r.block_io() {
        apply_blkio(st, b)?;
    }
    if let Some(h) = r.hugepage_limits() {
        for (i, l) in h.iter().enumerate() {
            let res = format!("linux.resources.hugepageLimits[{i}] ({})", l.page_size());
            check_page_size(l.page_size(), &res)?;
            let limit = l.limit().to_string();
            if let Some(d) = st.v1.get("hugetlb") {
                let f = format!("hugetlb.{}.limit_in_bytes", l.page_size());
                set(d, &f, &limit, &res, "hugetlb")?;
                let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", l.page_size());
                if d.join(&rsvd).exists() {
                    write(d, &rsvd, &limit)?;
                }
            } else {
                let u = unified_for(st, "hugetlb", &res)?;
                v2::set_hugetlb(u, l.page_size(), l.limit(), &res)?;
            }
        }
    }
    if let Some(n) = r.network() {
        apply_network(st, n)?;
    }
    if let Some(rdma) = r.rdma() {
        if !rdma.is_empty() {
            let d = dir(st, "rdma", "linux.resources.rdma")?;
            for (dev, l) in rdma {
                let v = v2::rdma_line(dev, l);
                set(d, "rdma.max", &v, "linux.resources.rdma", "rdma")?;
            }
        }
    }
    if let Some(u) = r.unified() {
        for (k, v) in u {
            let res = format!("linux.resources.unified[{k:?}]");
            let ctrl = v2::unified_key_controller(k, &res)?;
            let d = unified_for(st, ctrl, &res)?;
            v2::write_unified(d, k, v, &res)?;
        }
    }
    Ok(())
}

/// On a hybrid host: the container's cgroup2 directory with `ctrl` enabled (enabling it on the
/// ancestors when the mount offers it).
fn unified_for<'a>(st: &'a CgroupState, ctrl: &str, resource: &str) -> Result<&'a Path> {
    let Some(u) = st.unified.as_deref() else {
        let detail = match st.mode {
            Mode::Hybrid => "the container has no directory on the cgroup2 mount".to_string(),
            _ => format!("no v1 {ctrl} hierarchy and no cgroup2 mount on this host"),
        };
        return Err(CgroupError::ControllerUnavailable {
            resource: resource.to_string(),
            controller: ctrl.to_string(),
            detail,
        });
    };
    if ctrl != "cgroup" {
        v2::enable_controller(u, ctrl, resource)?;
    }
    Ok(u)
}

/// Page sizes look like "2MB", "1GB", "64KB".
pub(crate) fn check_page_size(s: &str, resource: &str) -> Result<()> {
    let ok = s.len() > 2
        && (s.ends_with("KB") || s.ends_with("MB") || s.ends_with("GB"))
        && s[..s.len() - 2].chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidValue {
            field: resource.to_string(),
            detail: format!("page size {s:?} is not of the form <number>KB|MB|GB"),
        })
    }
}

fn apply_cpuset(st: &CgroupState, cpu: &LinuxCpu) -> Result<()> {
    for (val, file, field) in [
        (cpu.cpus(), "cpuset.cpus", "linux.resources.cpu.cpus"),
        (cpu.mems(), "cpuset.mems", "linux.resources.cpu.mems"),
    ] {
        if let Some(v) = val.as_deref().filter(|v| !v.is_empty()) {
            let d = dir(st, "cpuset", field)?;
            set(d, file, v, field, "cpuset")?;
        }
    }
    Ok(())
}

fn apply_memory(st: &CgroupState, m: &LinuxMemory) -> Result<()> {
    let res = "linux.resources.memory";
    let d = dir(st, "memory", res)?;
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    if m.check_before_update() == Some(true) && limit > 0 {
        let usage = read_u64(d, "memory.usage_in_bytes")?;
        if (limit as u64) < usage {
            return Err(CgroupError::InvalidValue {
                field: "linux.resources.memory.limit".into(),
                detail: format!(
                    "{limit} is below the current usage {usage} of {} (checkBeforeUpdate)",
                    d.display()
                ),
            });
        }
    }
    let memsw = "memory.memsw.limit_in_bytes";
    let has_memsw = d.join(memsw).exists();
    if limit == -1 && swap == 0 && has_memsw {
        // unlimited memory with swap not given: unlimited memory+swap too
        swap = -1;
    }
    if swap != 0 && swap != -1 && limit > 0 && swap < limit {
        return Err(CgroupError::InvalidValue {
            field: "linux.resources.memory.swap".into(),
            detail: format!("memory+swap limit {swap} is lower than the memory limit {limit}"),
        });
    }
    let lim_file = "memory.limit_in_bytes";
    if limit != 0 && swap != 0 {
        // The kernel keeps memsw >= limit at every step: when raising, move memsw first.
        let cur = read_u64(d, lim_file)?;
        if swap == -1 || cur < swap as u64 {
            set(
                d,
                memsw,
                &swap.to_string(),
                "linux.resources.memory.swap",
                "memory",
            )?;
            set(
                d,
                lim_file,
                &limit.to_string(),
                "linux.resources.memory.limit",
                "memory",
            )?;
        } else {
            set(
                d,
                lim_file,
                &limit.to_string(),
                "linux.resources.memory.limit",
                "memory",
            )?;
            set(
                d,
                memsw,
                &swap.to_string(),
                "linux.resources.memory.swap",
                "memory",
            )?;
        }
    } else {
        if limit != 0 {
            set(
                d,
                lim_file,
                &limit.to_string(),
                "linux.resources.memory.limit",
                "memory",
            )?;
        }
        if swap != 0 {
            set(
                d,
                memsw,
                &swap.to_string(),
                "linux.resources.memory.swap",
                "memory",
            )?;
        }
    }
    if let Some(v) = m.reservation().filter(|v| *v != 0) {
        set(
            d,
            "memory.soft_limit_in_bytes",
            &v.to_string(),
            "linux.resources.memory.reservation",
            "memory",
        )?;
    }
    // kernel / kernelTCP: ignored (validate::warn_kernel_memory said so), as runc and crun do:
    // Linux 6.x takes writes to memory.kmem.limit_in_bytes and ignores them.
    if let Some(v) = m.swappiness() {
        if v > 100 {
            return Err(CgroupError::InvalidValue {
                field: "linux.resources.memory.swappiness".into(),
                detail: format!("{v} is outside 0..=100"),
            });
        }
        set(
            d,
            "memory.swappiness",
            &v.to_string(),
            "linux.resources.memory.swappiness",
            "memory",
        )?;
    }
    if let Some(v) = m.disable_oom_killer() {
        set(
            d,
            "memory.oom_control",
            if v { "1" } else { "0" },
            "linux.resources.memory.disableOOMKiller",
            "memory",
        )?;
    }
    if let Some(v) = m.use_hierarchy() {
        set(
            d,
            "memory.use_hierarchy",
            if v { "1" } else { "0" },
            "linux.resources.memory.useHierarchy",
            "memory",
        )?;
    }
    Ok(())
}

fn apply_cpu(st: &CgroupState, c: &LinuxCpu) -> Result<()> {
    let wants_cpu = c.shares().is_some_and(|v| v != 0)
        || c.quota().is_some_and(|v| v != 0)
        || c.period().is_some_and(|v| v != 0)
        || c.burst().is_some()
        || c.realtime_runtime().is_some_and(|v| v != 0)
        || c.realtime_period().is_some_and(|v| v != 0)
        || c.idle().is_some();
    if !wants_cpu {
        return Ok(());
    }
    let d = dir(st, "cpu", "linux.resources.cpu")?;
    if let Some(shares) = c.shares().filter(|v| *v != 0) {
        let res = "linux.resources.cpu.shares";
        set(d, "cpu.shares", &shares.to_string(), res, "cpu")?;
        // The kernel clamps silently; a clamped value is an error, not a different limit.
        let got = read_u64(d, "cpu.shares")?;
        if got != shares {
            return Err(CgroupError::InvalidValue {
                field: res.into(),
                detail: format!(
                    "{shares} is outside what the kernel accepts ({} holds {got})",
                    d.join("cpu.shares").display()
                ),
            });
        }
    }
    let period = c.period().filter(|v| *v != 0);
    let quota = c.quota().filter(|v| *v != 0);
    if let Some(p) = period {
        let res = "linux.resources.cpu.period";
        match set(d, "cpu.cfs_period_us", &p.to_string(), res, "cpu") {
            Ok(()) => {}
            // A shorter period can be refused under the current quota: set the quota first.
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                if let Some(q) = quota {
                    set(
                        d,
                        "cpu.cfs_quota_us",
                        &q.to_string(),
                        "linux.resources.cpu.quota",
                        "cpu",
                    )?;
                }
                set(d, "cpu.cfs_period_us", &p.to_string(), res, "cpu")?;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = quota {
        set(
            d,
            "cpu.cfs_quota_us",
            &q.to_string(),
            "linux.resources.cpu.quota",
            "cpu",
        )?;
    }
    if let Some(b) = c.burst() {
        set(
            d,
            "cpu.cfs_burst_us",
            &b.to_string(),
            "linux.resources.cpu.burst",
            "cpu",
        )?;
    }
    if let Some(p) = c.realtime_period().filter(|v| *v != 0) {
        set(
            d,
            "cpu.rt_period_us",
            &p.to_string(),
            "linux.resources.cpu.realtimePeriod",
            "cpu",
        )?;
    }
    if let Some(rt) = c.realtime_runtime().filter(|v| *v != 0) {
        set(
            d,
            "cpu.rt_runtime_us",
            &rt.to_string(),
            "linux.resources.cpu.realtimeRuntime",
            "cpu",
        )?;
    }
    if let Some(i) = c.idle() {
        set(
            d,
            "cpu.idle",
            &i.to_string(),
            "linux.resources.cpu.idle",
            "cpu",
        )?;
    }
    Ok(())
}

fn apply_blkio(st: &CgroupState, b: &LinuxBlockIo) -> Result<()> {
    let any = b.weight().is_some_and(|v| v != 0)
        || b.leaf_weight().is_some_and(|v| v != 0)
        || [
            b.weight_device().as_ref().map(|v| v.len()),
            b.throttle_read_bps_device().as_ref().map(|v| v.len()),
            b.throttle_write_bps_device().as_ref().map(|v| v.len()),
            b.throttle_read_iops_device().as_ref().map(|v| v.len()),
            b.throttle_write_iops_device().as_ref().map(|v| v.len()),
        ]
        .iter()
        .any(|n| n.unwrap_or(0) > 0);
    if !any {
        return Ok(());
    }
    let d = dir(st, "blkio", "linux.resources.blockIO")?;
    // CFQ's blkio.weight is gone from current kernels; BFQ offers blkio.bfq.weight (same range).
    let (wfile, wdev) = if d.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight().filter(|v| *v != 0) {
        set(
            d,
            wfile,
            &w.to_string(),
            "linux.resources.blockIO.weight",
            "blkio",
        )?;
    }
    if let Some(w) = b.leaf_weight().filter(|v| *v != 0) {
        set(
            d,
            "blkio.leaf_weight",
            &w.to_string(),
            "linux.resources.blockIO.leafWeight (CFQ only)",
            "blkio",
        )?;
    }
    if let Some(devs) = b.weight_device() {
        for (i, wd) in devs.iter().enumerate() {
            if let Some(w) = wd.weight().filter(|v| *v != 0) {
                let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                let res = format!("linux.resources.blockIO.weightDevice[{i}]");
                set(d, wdev, &v, &res, "blkio")?;
            }
            if let Some(w) = wd.leaf_weight().filter(|v| *v != 0) {
                let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                let res =
                    format!("linux.resources.blockIO.weightDevice[{i}].leafWeight (CFQ only)");
                set(d, "blkio.leaf_weight_device", &v, &res, "blkio")?;
            }
        }
    }
    for (list, file, name) in [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "throttleWriteIOPSDevice",
        ),
    ] {
        for (i, t) in list.iter().flatten().enumerate() {
            let v = format!("{}:{} {}", t.major(), t.minor(), t.rate());
            let res = format!("linux.resources.blockIO.{name}[{i}]");
            set(d, file, &v, &res, "blkio")?;
        }
    }
    Ok(())
}

fn apply_network(st: &CgroupState, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        let res = "linux.resources.network.classID";
        let d = dir(st, "net_cls", res)?;
        set(d, "net_cls.classid", &id.to_string(), res, "net_cls")?;
    }
    if let Some(prios) = n.priorities() {
        if !prios.is_empty() {
            let res = "linux.resources.network.priorities";
            let d = dir(st, "net_prio", res)?;
            for p in prios {
                let v = format!("{} {}", p.name(), p.priority());
                set(d, "net_prio.ifpriomap", &v, res, "net_prio")?;
            }
        }
    }
    Ok(())
}

/// v1 freezer: write FROZEN/THAWED and wait until freezer.state reports it.
pub(crate) fn set_frozen(d: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    write(d, "freezer.state", want)?;
    let start = Instant::now();
    let mut delay = Duration::from_micros(200);
    let mut n = 0u32;
    loop {
        let s = read(d, "freezer.state")?;
        if s == want {
            return Ok(());
        }
        if start.elapsed() > WAIT_LIMIT {
            if frozen {
                // don't leave it half-frozen
                let _ = write(d, "freezer.state", "THAWED");
            }
            return Err(CgroupError::Timeout {
                path: d.join("freezer.state"),
                state: want.into(),
                secs: WAIT_LIMIT.as_secs(),
            });
        }
        n += 1;
        // A task that raced into the cgroup can keep it FREEZING; writing again retries it.
        if frozen && n >= 50 {
            n = 0;
            write(d, "freezer.state", want)?;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub(crate) fn is_frozen(d: &Path) -> Result<bool> {
    Ok(read(d, "freezer.state")? == "FROZEN")
}
