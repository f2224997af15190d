//! Task metrics read from the container's cgroup files, in containerd's cgroup v1 / v2 metrics
//! types (what `ctr task metrics` decodes).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics,
    PidsStat, Throttle,
};
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("encode metrics: {0}")]
    Encode(String),
    #[error("{0}")]
    Cgroup(String),
}

fn read(path: &Path) -> Result<String, MetricsError> {
    fs::read_to_string(path).map_err(|source| MetricsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

pub fn is_unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The v1 cgroup directories of a process, by controller.
pub fn v1_paths(pid: u32) -> Result<HashMap<String, PathBuf>, MetricsError> {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            continue;
        }
        let mount = Path::new("/sys/fs/cgroup").join(ctrls);
        for c in ctrls.split(',') {
            let dir = mount.join(path.trim_start_matches('/'));
            out.insert(c.to_string(), dir);
        }
    }
    Ok(out)
}

fn entry(dir: &Path, prefix: &str) -> MemoryEntry {
    MemoryEntry {
        usage: read_u64(dir, &format!("{prefix}usage_in_bytes")),
        max: read_u64(dir, &format!("{prefix}max_usage_in_bytes")),
        limit: read_u64(dir, &format!("{prefix}limit_in_bytes")),
        failcnt: read_u64(dir, &format!("{prefix}failcnt")),
        ..Default::default()
    }
}

fn blkio_entries(dir: &Path, file: &str) -> Vec<BlkIOEntry> {
    let Ok(text) = fs::read_to_string(dir.join(file)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 || f[0] == "Total" {
            continue;
        }
        let Some((maj, min)) = f[0].split_once(':') else {
            continue;
        };
        let (op, value) = if f.len() == 3 {
            (f[1].to_string(), f[2])
        } else {
            (String::new(), f[1])
        };
        out.push(BlkIOEntry {
            op,
            major: maj.parse().unwrap_or(0),
            minor: min.parse().unwrap_or(0),
            value: value.parse().unwrap_or(0),
            ..Default::default()
        });
    }
    out
}

fn collect_v1(pid: u32) -> Result<Metrics, MetricsError> {
    let paths = v1_paths(pid)?;
    let mut m = Metrics::new();
    if let Some(dir) = paths.get("cpuacct") {
        let stat = fs::read_to_string(dir.join("cpuacct.stat")).unwrap_or_default();
        let stat = flat_keyed(&stat);
        // cpuacct.stat is in USER_HZ ticks (100 per second); containerd reports nanoseconds.
        let tick_ns = 10_000_000u64;
        let per_cpu = fs::read_to_string(dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let usage = CPUUsage {
            total: read_u64(dir, "cpuacct.usage"),
            user: stat.get("user").copied().unwrap_or(0) * tick_ns,
            kernel: stat.get("system").copied().unwrap_or(0) * tick_ns,
            per_cpu,
            ..Default::default()
        };
        let mut cpu = CPUStat {
            usage: MessageField::some(usage),
            ..Default::default()
        };
        if let Some(cdir) = paths.get("cpu") {
            let t = fs::read_to_string(cdir.join("cpu.stat")).unwrap_or_default();
            let t = flat_keyed(&t);
            cpu.throttling = MessageField::some(Throttle {
                periods: t.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: t.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: t.get("throttled_time").copied().unwrap_or(0),
                ..Default::default()
            });
        }
        m.cpu = MessageField::some(cpu);
    }
    if let Some(dir) = paths.get("memory") {
        let stat_text = read(&dir.join("memory.stat"))?;
        let s = flat_keyed(&stat_text);
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        m.memory = MessageField::some(MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            usage: MessageField::some(entry(dir, "memory.")),
            swap: MessageField::some(entry(dir, "memory.memsw.")),
            kernel: MessageField::some(entry(dir, "memory.kmem.")),
            kernel_tcp: MessageField::some(entry(dir, "memory.kmem.tcp.")),
            ..Default::default()
        });
        let oc = fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
        let oc = flat_keyed(&oc);
        m.memory_oom_control = MessageField::some(MemoryOomControl {
            oom_kill_disable: oc.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oc.get("under_oom").copied().unwrap_or(0),
            oom_kill: oc.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    if let Some(dir) = paths.get("pids") {
        let max = fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
        m.pids = MessageField::some(PidsStat {
            current: read_u64(dir, "pids.current"),
            limit: max.trim().parse().unwrap_or(0),
            ..Default::default()
        });
    }
    if let Some(dir) = paths.get("blkio") {
        m.blkio = MessageField::some(BlkIOStat {
            io_service_bytes_recursive: blkio_entries(dir, "blkio.throttle.io_service_bytes"),
            io_serviced_recursive: blkio_entries(dir, "blkio.throttle.io_serviced"),
            ..Default::default()
        });
    }
    Ok(m)
}

fn max_or(dir: &Path, file: &str) -> u64 {
    match fs::read_to_string(dir.join(file)) {
        Ok(v) if v.trim() == "max" => u64::MAX,
        Ok(v) => v.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn collect_v2(pid: u32) -> Result<v2::Metrics, MetricsError> {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| MetricsError::Cgroup(format!("pid {pid} has no cgroup v2 path")))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let cpu_text = fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
    let cpu = flat_keyed(&cpu_text);
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mem_text = read(&dir.join("memory.stat"))?;
    let mem = flat_keyed(&mem_text);
    let g = |k: &str| mem.get(k).copied().unwrap_or(0);
    let ev_text = fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    let ev = flat_keyed(&ev_text);
    let e = |k: &str| ev.get(k).copied().unwrap_or(0);
    Ok(v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: read_u64(&dir, "pids.current"),
            limit: max_or(&dir, "pids.max"),
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
            nr_bursts: c("nr_bursts"),
            burst_usec: c("burst_usec"),
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: g("anon"),
            file: g("file"),
            kernel_stack: g("kernel_stack"),
            slab: g("slab"),
            sock: g("sock"),
            shmem: g("shmem"),
            file_mapped: g("file_mapped"),
            file_dirty: g("file_dirty"),
            file_writeback: g("file_writeback"),
            anon_thp: g("anon_thp"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            slab_reclaimable: g("slab_reclaimable"),
            slab_unreclaimable: g("slab_unreclaimable"),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            workingset_refault: g("workingset_refault"),
            workingset_activate: g("workingset_activate"),
            workingset_nodereclaim: g("workingset_nodereclaim"),
            pgrefill: g("pgrefill"),
            pgscan: g("pgscan"),
            pgsteal: g("pgsteal"),
            pgactivate: g("pgactivate"),
            pgdeactivate: g("pgdeactivate"),
            pglazyfree: g("pglazyfree"),
            pglazyfreed: g("pglazyfreed"),
            thp_fault_alloc: g("thp_fault_alloc"),
            thp_collapse_alloc: g("thp_collapse_alloc"),
            usage: read_u64(&dir, "memory.current"),
            usage_limit: max_or(&dir, "memory.max"),
            max_usage: read_u64(&dir, "memory.peak"),
            swap_usage: read_u64(&dir, "memory.swap.current"),
            swap_limit: max_or(&dir, "memory.swap.max"),
            swap_max_usage: read_u64(&dir, "memory.swap.peak"),
            ..Default::default()
        }),
        memory_events: MessageField::some(v2::MemoryEvents {
            low: e("low"),
            high: e("high"),
            max: e("max"),
            oom: e("oom"),
            oom_kill: e("oom_kill"),
            oom_group_kill: e("oom_group_kill"),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Collects the metrics of the cgroup of `pid` as an `Any` (v1 or v2 metrics type).
pub fn collect(pid: u32) -> Result<Any, MetricsError> {
    if is_unified() {
        let m = collect_v2(pid)?;
        let value = m
            .write_to_bytes()
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        return Ok(Any {
            type_url: "io.containerd.cgroups.v2.Metrics".into(),
            value,
            ..Default::default()
        });
    }
    let m = collect_v1(pid)?;
    let value = m
        .write_to_bytes()
        .map_err(|e| MetricsError::Encode(e.to_string()))?;
    Ok(Any {
        type_url: "io.containerd.cgroups.v1.Metrics".into(),
        value,
        ..Default::default()
    })
}
