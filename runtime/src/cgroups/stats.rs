//! Container statistics in runc's `events --stats` JSON format (runc 1.1 `types.Stats`).

use super::fsutil::{keyed, parse_list, parse_u64, read, read_flat_keyed, read_u64};
use super::{CgroupError, CgroupState, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub cpuset: CpuSetStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    pub hugetlb: BTreeMap<String, HugetlbStats>,
    pub intel_rdt: serde_json::Map<String, serde_json::Value>,
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HugetlbStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlkioStats {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "ioQueueRecursive"
    )]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PidsStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// CPU time in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSetStats {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Read an optional file: missing → None (feature absent), other errors propagate.
fn opt_u64(dir: &Path, file: &str) -> Result<Option<u64>> {
    match read_u64(dir, file) {
        Ok(v) => Ok(Some(v)),
        Err(CgroupError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn opt_read(dir: &Path, file: &str) -> Result<Option<String>> {
    match read(dir, file) {
        Ok(v) => Ok(Some(v)),
        Err(CgroupError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn num_list(dir: &Path, file: &str) -> Result<Vec<u64>> {
    let Some(s) = opt_read(dir, file)? else {
        return Ok(Vec::new());
    };
    s.split_whitespace()
        .map(|x| {
            x.parse::<u64>().map_err(|_| CgroupError::Parse {
                path: dir.join(file),
                content: s.clone(),
            })
        })
        .collect()
}

/// Hugepage sizes of this machine as cgroup names ("2MB", "1GB").
fn hugepage_sizes() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) = n
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push(if kb >= 1 << 20 && kb % (1 << 20) == 0 {
                    format!("{}GB", kb >> 20)
                } else if kb >= 1 << 10 && kb % (1 << 10) == 0 {
                    format!("{}MB", kb >> 10)
                } else {
                    format!("{kb}KB")
                });
            }
        }
    }
    out.sort();
    out
}

const UNLIMITED_V1: u64 = 0x7FFF_FFFF_FFFF_F000;

fn v1_limit(v: u64) -> u64 {
    // the v1 "unlimited" value reads back as PAGE_COUNTER_MAX * page size; report it as is (runc does)
    if v == u64::MAX {
        UNLIMITED_V1
    } else {
        v
    }
}

pub(crate) fn v1_stats(st: &CgroupState) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(d) = st.v1.get("cpuacct") {
        s.cpu.usage.total = read_u64(d, "cpuacct.usage")?;
        s.cpu.usage.percpu = num_list(d, "cpuacct.usage_percpu")?;
        s.cpu.usage.percpu_kernel = num_list(d, "cpuacct.usage_percpu_sys")?;
        s.cpu.usage.percpu_user = num_list(d, "cpuacct.usage_percpu_user")?;
        if let (Some(sys), Some(user)) = (
            opt_u64(d, "cpuacct.usage_sys")?,
            opt_u64(d, "cpuacct.usage_user")?,
        ) {
            s.cpu.usage.kernel = sys;
            s.cpu.usage.user = user;
        } else {
            let kv = read_flat_keyed(d, "cpuacct.stat")?;
            let tck = clock_ticks();
            s.cpu.usage.kernel = keyed(&kv, "system").unwrap_or(0) * 1_000_000_000 / tck;
            s.cpu.usage.user = keyed(&kv, "user").unwrap_or(0) * 1_000_000_000 / tck;
        }
    }
    if let Some(d) = st.v1.get("cpu") {
        let kv = read_flat_keyed(d, "cpu.stat")?;
        s.cpu.throttling.periods = keyed(&kv, "nr_periods").unwrap_or(0);
        s.cpu.throttling.throttled_periods = keyed(&kv, "nr_throttled").unwrap_or(0);
        s.cpu.throttling.throttled_time = keyed(&kv, "throttled_time").unwrap_or(0);
    }
    if let Some(d) = st.v1.get("cpuset") {
        s.cpuset = cpuset_stats(d, "cpuset.")?;
    }
    if let Some(d) = st.v1.get("memory") {
        let raw: BTreeMap<String, u64> = read_flat_keyed(d, "memory.stat")?.into_iter().collect();
        s.memory.cache = raw
            .get("total_cache")
            .or(raw.get("cache"))
            .copied()
            .unwrap_or(0);
        s.memory.raw = raw;
        let entry = |prefix: &str| -> Result<MemoryEntry> {
            Ok(MemoryEntry {
                limit: opt_u64(d, &format!("{prefix}.limit_in_bytes"))?
                    .map(v1_limit)
                    .unwrap_or(0),
                usage: opt_u64(d, &format!("{prefix}.usage_in_bytes"))?.unwrap_or(0),
                max: opt_u64(d, &format!("{prefix}.max_usage_in_bytes"))?.unwrap_or(0),
                failcnt: opt_u64(d, &format!("{prefix}.failcnt"))?.unwrap_or(0),
            })
        };
        s.memory.usage = entry("memory")?;
        s.memory.swap = entry("memory.memsw")?;
        s.memory.kernel = entry("memory.kmem")?;
        s.memory.kernel_tcp = entry("memory.kmem.tcp")?;
    }
    if let Some(d) = st.v1.get("pids") {
        s.pids.current = read_u64(d, "pids.current")?;
        let lim = read_u64(d, "pids.max")?;
        s.pids.limit = if lim == u64::MAX { 0 } else { lim };
    }
    if let Some(d) = st.v1.get("blkio") {
        s.blkio.io_service_bytes_recursive =
            blkio_v1(d, "blkio.throttle.io_service_bytes_recursive")?;
        s.blkio.io_serviced_recursive = blkio_v1(d, "blkio.throttle.io_serviced_recursive")?;
    }
    if let Some(d) = st.v1.get("hugetlb") {
        for size in hugepage_sizes() {
            let e = HugetlbStats {
                usage: opt_u64(d, &format!("hugetlb.{size}.usage_in_bytes"))?.unwrap_or(0),
                max: opt_u64(d, &format!("hugetlb.{size}.max_usage_in_bytes"))?.unwrap_or(0),
                failcnt: opt_u64(d, &format!("hugetlb.{size}.failcnt"))?.unwrap_or(0),
            };
            s.hugetlb.insert(size, e);
        }
    } else if let Some(u) = st.unified.as_deref() {
        s.hugetlb = hugetlb_v2(u)?;
    }
    Ok(s)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn cpuset_stats(d: &Path, p: &str) -> Result<CpuSetStats> {
    let list = |f: &str| -> Result<Vec<u16>> {
        let Some(s) = opt_read(d, &format!("{p}{f}"))? else {
            return Ok(Vec::new());
        };
        parse_list(&s).ok_or_else(|| CgroupError::Parse {
            path: d.join(format!("{p}{f}")),
            content: s,
        })
    };
    let n = |f: &str| -> Result<u64> { Ok(opt_u64(d, &format!("{p}{f}"))?.unwrap_or(0)) };
    Ok(CpuSetStats {
        cpus: list("cpus")?,
        cpu_exclusive: n("cpu_exclusive")?,
        mems: list("mems")?,
        mem_hardwall: n("mem_hardwall")?,
        mem_exclusive: n("mem_exclusive")?,
        memory_migrate: n("memory_migrate")?,
        memory_spread_page: n("memory_spread_page")?,
        memory_spread_slab: n("memory_spread_slab")?,
        memory_pressure: n("memory_pressure")?,
        sched_load_balance: n("sched_load_balance")?,
        sched_relax_domain_level: opt_read(d, &format!("{p}sched_relax_domain_level"))?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    })
}

/// "8:0 Read 4096" lines (the "Total" lines are skipped).
fn blkio_v1(d: &Path, file: &str) -> Result<Vec<BlkioEntry>> {
    let Some(s) = opt_read(d, file)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue; // "Total N"
        }
        let (Some((ma, mi)), Some(v)) = (f[0].split_once(':'), parse_u64(f[2])) else {
            return Err(CgroupError::Parse {
                path: d.join(file),
                content: line.to_string(),
            });
        };
        let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) else {
            return Err(CgroupError::Parse {
                path: d.join(file),
                content: line.to_string(),
            });
        };
        out.push(BlkioEntry {
            major,
            minor,
            op: f[1].to_string(),
            value: v,
        });
    }
    Ok(out)
}

fn hugetlb_v2(u: &Path) -> Result<BTreeMap<String, HugetlbStats>> {
    let mut out = BTreeMap::new();
    for size in hugepage_sizes() {
        let Some(usage) = opt_u64(u, &format!("hugetlb.{size}.current"))? else {
            continue;
        };
        let max = opt_u64(u, &format!("hugetlb.{size}.max"))?.unwrap_or(0);
        let failcnt = match opt_read(u, &format!("hugetlb.{size}.events"))? {
            Some(_) => keyed(
                &read_flat_keyed(u, &format!("hugetlb.{size}.events"))?,
                "max",
            )
            .unwrap_or(0),
            None => 0,
        };
        out.insert(
            size,
            HugetlbStats {
                usage,
                max: if max == u64::MAX { 0 } else { max },
                failcnt,
            },
        );
    }
    Ok(out)
}

pub(crate) fn v2_stats(d: &Path) -> Result<Stats> {
    let mut s = Stats::default();
    if opt_read(d, "cpu.stat")?.is_some() {
        let kv = read_flat_keyed(d, "cpu.stat")?;
        let us = |k: &str| keyed(&kv, k).unwrap_or(0) * 1000;
        s.cpu.usage.total = us("usage_usec");
        s.cpu.usage.user = us("user_usec");
        s.cpu.usage.kernel = us("system_usec");
        s.cpu.throttling.periods = keyed(&kv, "nr_periods").unwrap_or(0);
        s.cpu.throttling.throttled_periods = keyed(&kv, "nr_throttled").unwrap_or(0);
        s.cpu.throttling.throttled_time = us("throttled_usec");
    }
    if d.join("cpuset.cpus.effective").exists() {
        let mut c = CpuSetStats::default();
        if let Some(v) = opt_read(d, "cpuset.cpus.effective")? {
            c.cpus = parse_list(&v).unwrap_or_default();
        }
        if let Some(v) = opt_read(d, "cpuset.mems.effective")? {
            c.mems = parse_list(&v).unwrap_or_default();
        }
        s.cpuset = c;
    }
    if opt_read(d, "memory.stat")?.is_some() {
        let raw: BTreeMap<String, u64> = read_flat_keyed(d, "memory.stat")?.into_iter().collect();
        s.memory.cache = raw.get("file").copied().unwrap_or(0);
        s.memory.raw = raw;
        let failcnt = match opt_read(d, "memory.events")? {
            Some(_) => keyed(&read_flat_keyed(d, "memory.events")?, "max").unwrap_or(0),
            None => 0,
        };
        s.memory.usage = MemoryEntry {
            limit: opt_u64(d, "memory.max")?.unwrap_or(u64::MAX),
            usage: read_u64(d, "memory.current")?,
            max: opt_u64(d, "memory.peak")?.unwrap_or(0),
            failcnt,
        };
        if let Some(sw) = opt_u64(d, "memory.swap.current")? {
            // runc reports swap as memory+swap for v1 compatibility
            let swmax = opt_u64(d, "memory.swap.max")?.unwrap_or(u64::MAX);
            s.memory.swap = MemoryEntry {
                limit: swmax.saturating_add(if swmax == u64::MAX {
                    0
                } else {
                    s.memory.usage.limit
                }),
                usage: sw + s.memory.usage.usage,
                max: 0,
                failcnt: 0,
            };
        }
    }
    if let Some(cur) = opt_u64(d, "pids.current")? {
        s.pids.current = cur;
        let lim = opt_u64(d, "pids.max")?.unwrap_or(u64::MAX);
        s.pids.limit = if lim == u64::MAX { 0 } else { lim };
    }
    if let Some(io) = opt_read(d, "io.stat")? {
        for line in io.lines() {
            let mut it = line.split_whitespace();
            let Some((ma, mi)) = it.next().and_then(|x| x.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
                continue;
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(value) = v.parse::<u64>() else {
                    continue;
                };
                let (list, op) = match k {
                    "rbytes" => (&mut s.blkio.io_service_bytes_recursive, "Read"),
                    "wbytes" => (&mut s.blkio.io_service_bytes_recursive, "Write"),
                    "rios" => (&mut s.blkio.io_serviced_recursive, "Read"),
                    "wios" => (&mut s.blkio.io_serviced_recursive, "Write"),
                    _ => continue,
                };
                list.push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    s.hugetlb = hugetlb_v2(d)?;
    Ok(s)
}
