//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: cgroup figures
//! read with the runtime library's cgroup code (the same reader `husk events --stats` uses),
//! the writable layer's usage, and the pod network namespace's interface counters.

use super::record::{Record, RunState};
use super::store::Containers;
use super::ContainerError;
use crate::sandbox::{now_ns, SandboxInfo};
use husk::cgroups::{CgroupManager, CgroupOptions, Host, Stats};
use k8s_cri::v1 as cri;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

/// The host's cgroup layout, read once.
fn host() -> Result<&'static Host, husk::cgroups::CgroupError> {
    static HOST: OnceLock<Host> = OnceLock::new();
    if let Some(h) = HOST.get() {
        return Ok(h);
    }
    let h = Host::detect()?;
    Ok(HOST.get_or_init(|| h))
}

/// The statistics of the cgroup at `cgroups_path` (absolute, as in the spec).
pub fn cgroup_stats(id: &str, cgroups_path: &str) -> Result<Stats, ContainerError> {
    let err = |source| ContainerError::Stats {
        id: id.to_string(),
        source,
    };
    let host = host().map_err(err)?;
    let mgr = CgroupManager::new(
        host,
        &CgroupOptions {
            cgroups_path: Some(Path::new(cgroups_path)),
            id,
            systemd: false,
        },
    )
    .map_err(err)?;
    mgr.stats().map_err(err)
}

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// CPU usage; usage_nano_cores is left for kubelet to derive (it does from two samples when
/// the runtime leaves it unset, as containerd 1.6 does for ListContainerStats).
fn cpu(s: &Stats, ts: i64) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: u64v(s.cpu.usage.total),
        usage_nano_cores: None,
    }
}

/// Memory as kubelet reads it: working set = usage - inactive file pages.
fn memory(s: &Stats, ts: i64) -> cri::MemoryUsage {
    let raw = &s.memory.raw;
    let inactive = raw
        .get("total_inactive_file")
        .or_else(|| raw.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    let usage = s.memory.usage.usage;
    let limit = s.memory.usage.limit;
    let rss = raw
        .get("total_rss")
        .or_else(|| raw.get("anon"))
        .copied()
        .unwrap_or(0);
    let working = usage.saturating_sub(inactive);
    // "no limit" reads as a huge number on v1 and as 0 (max) in our v2 reader.
    let available = (limit > 0 && limit < (1u64 << 62)).then(|| limit.saturating_sub(working));
    cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u64v(working),
        available_bytes: available.and_then(u64v),
        usage_bytes: u64v(usage),
        rss_bytes: u64v(rss),
        page_faults: u64v(
            raw.get("total_pgfault")
                .or_else(|| raw.get("pgfault"))
                .copied()
                .unwrap_or(0),
        ),
        major_page_faults: u64v(
            raw.get("total_pgmajfault")
                .or_else(|| raw.get("pgmajfault"))
                .copied()
                .unwrap_or(0),
        ),
    }
}

/// Bytes and inodes under `dir` (hard links counted once); never crosses into another file
/// system (a mount left below it).
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        bytes += md.blocks() * 512;
        inodes += 1;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

fn writable_layer(r: &Record, ts: i64) -> cri::FilesystemUsage {
    let upper = r.snapshot.join("upper");
    let (bytes, inodes) = dir_usage(&upper);
    cri::FilesystemUsage {
        timestamp: ts,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: upper.display().to_string(),
        }),
        used_bytes: u64v(bytes),
        inodes_used: u64v(inodes),
    }
}

/// One container's stats: cgroup figures while it runs (an exited container has only its
/// writable layer).
pub fn container_stats(r: &Record) -> Result<cri::ContainerStats, ContainerError> {
    let ts = now_ns();
    let mut out = cri::ContainerStats {
        attributes: Some(r.attributes()),
        writable_layer: Some(writable_layer(r, ts)),
        ..Default::default()
    };
    if r.state == RunState::Running {
        let s = cgroup_stats(&r.id, &r.cgroups_path)?;
        out.cpu = Some(cpu(&s, ts));
        out.memory = Some(memory(&s, ts));
        out.swap = Some(cri::SwapUsage {
            timestamp: ts,
            swap_available_bytes: None,
            swap_usage_bytes: u64v(s.memory.swap.usage.saturating_sub(s.memory.usage.usage)),
        });
    }
    Ok(out)
}

impl Containers {
    /// ContainerStats.
    pub fn stats(&self, id: &str) -> Result<cri::ContainerStats, ContainerError> {
        let (_, c) = self.find(id)?;
        let r = c.lock().record.clone();
        container_stats(&r)
    }

    /// ListContainerStats: id, sandbox (full or prefix) and labels filter.
    pub fn list_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let f = filter.unwrap_or_default();
        let mut records: Vec<Record> = self
            .records()
            .into_iter()
            .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
            .filter(|r| f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|r| {
                f.label_selector
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .collect();
        records.sort_by_key(|r| r.created_at);
        records
            .iter()
            .filter_map(|r| match container_stats(r) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!("stats of {}: {e}", r.id);
                    None
                }
            })
            .collect()
    }

    /// PodSandboxStats for one sandbox: the pod cgroup (kubelet's pod-level cgroup parent),
    /// its processes, network counters of the pod's namespace, and its containers.
    pub fn sandbox_stats(&self, sb: &SandboxInfo) -> Result<cri::PodSandboxStats, ContainerError> {
        let ts = now_ns();
        let mut linux = cri::LinuxPodSandboxStats::default();
        if sb.ready {
            let s = cgroup_stats(&sb.id, &sb.cgroup_parent)?;
            linux.cpu = Some(cpu(&s, ts));
            linux.memory = Some(memory(&s, ts));
            linux.process = Some(cri::ProcessUsage {
                timestamp: ts,
                process_count: u64v(s.pids.current),
            });
            if sb.pid != 0 && sb.namespaces.network != cri::NamespaceMode::Node as i32 {
                linux.network = network(sb.pid, ts);
            }
        }
        linux.containers = self
            .records()
            .iter()
            .filter(|r| r.sandbox_id == sb.id)
            .filter_map(|r| container_stats(r).ok())
            .collect();
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(linux),
            windows: None,
        })
    }
}

/// Interface counters from /proc/<pid>/net/dev (the pod's network namespace); `lo` is left
/// out, the first other interface is the default one (as kubelet's eth0).
fn network(pid: u32, ts: i64) -> Option<cri::NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut ifaces = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 12 {
            continue;
        }
        ifaces.push(cri::NetworkInterfaceUsage {
            name: name.to_string(),
            rx_bytes: u64v(f[0]),
            rx_errors: u64v(f[2]),
            tx_bytes: u64v(f[8]),
            tx_errors: u64v(f[10]),
        });
    }
    let default = ifaces.first().cloned();
    Some(cri::NetworkUsage {
        timestamp: ts,
        default_interface: default,
        interfaces: ifaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_usage_counts_hard_links_once() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a"), vec![1u8; 8192]).expect("write");
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).expect("link");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        let (bytes, inodes) = dir_usage(d.path());
        // the dir, a (b is the same inode), sub
        assert_eq!(inodes, 3);
        assert!(bytes >= 8192, "{bytes}");
    }

    #[test]
    fn working_set_excludes_inactive_file_pages() {
        let mut s = Stats::default();
        s.memory.usage.usage = 100 << 20;
        s.memory.usage.limit = 200 << 20;
        s.memory.raw.insert("total_inactive_file".into(), 30 << 20);
        let m = memory(&s, 1);
        assert_eq!(m.working_set_bytes.map(|v| v.value), Some(70 << 20));
        assert_eq!(m.available_bytes.map(|v| v.value), Some(130 << 20));
        assert_eq!(m.usage_bytes.map(|v| v.value), Some(100 << 20));
    }
}
