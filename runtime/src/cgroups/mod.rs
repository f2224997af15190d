//! cgroups for Husk containers: `linux.cgroupsPath` placement and `linux.resources`, on cgroup v1,
//! hybrid (v1 controllers + a cgroup2 mount) and pure cgroup v2 hosts, behind one [`CgroupManager`].
//!
//! Files are written directly (not through cgroups-rs) so that every error names the file and the value.
//!
//! Life cycle, as used by `husk create`/`delete`/`kill`/`pause`/`ps`/`update`/`events`:
//! ```text
//! let host = Host::detect()?;
//! let mut cg = CgroupManager::new(&host, &CgroupOptions { cgroups_path, id, systemd: false })?;
//! cg.create()?;                 // mkdir (records what it created)
//! cg.apply(&resources)?;        // every requested limit, or an error naming it
//! cg.add_task(child_pid)?;      // parent writes the child's pid before it runs container code
//! state.cgroup = cg.save();     // serde, into state.json
//! ... later: let mut cg = CgroupManager::load(state.cgroup); cg.freeze()?; cg.procs()?; cg.destroy()?;
//! ```
//!
//! Placement rules: see [`placement`] (runc's cgroupfs rules; empty path → `<own cgroup>/<id>`).
//!
//! Hybrid hosts: the v1 controllers do all the work; the container also gets a directory with the same
//! placement on the cgroup2 mount (its processes join it), used for `hugepageLimits` when hugetlb is
//! only available there (as on the build machine) and for `unified` keys whose controller exists there.
//! Controllers are enabled on the cgroup2 ancestors only when such a limit asks for them, and are left
//! enabled by `destroy()` (other cgroups may use them).
//!
//! What is applied where (a requested limit that can't be applied is an error naming it):
//!
//! | resource | v1 (and hybrid) | v2 |
//! |---|---|---|
//! | memory limit / swap | memory.limit_in_bytes / memory.memsw.limit_in_bytes (order: raise memsw first) | memory.max / memory.swap.max (= swap − limit) |
//! | memory reservation, swappiness, disableOOMKiller, useHierarchy | soft_limit_in_bytes, swappiness, oom_control, use_hierarchy | memory.low; the others are errors |
//! | memory kernel / kernelTCP | ignored with a warning, as runc and crun (kernels ≥ 6 do not enforce kmem limits) | ignored with a warning |
//! | checkBeforeUpdate | compared with memory.usage_in_bytes | compared with memory.current |
//! | cpu shares / quota+period / burst / idle | cpu.shares (read back) / cfs_quota_us+cfs_period_us / cfs_burst_us / cpu.idle | cpu.weight (runc/crun quadratic mapping) / cpu.max / cpu.max.burst / cpu.idle |
//! | cpu realtime runtime/period | cpu.rt_runtime_us / cpu.rt_period_us | error |
//! | cpus / mems | cpuset.cpus / cpuset.mems (new cgroups inherit the parent's first) | same names |
//! | pids.limit (≤ 0 = max) | pids.max | pids.max |
//! | blockIO weight / weightDevice | blkio.weight or blkio.bfq.weight (+_device) | io.bfq.weight, else io.weight (converted) |
//! | blockIO leafWeight | blkio.leaf_weight (CFQ; gone from current kernels → error) | error |
//! | blockIO throttles | blkio.throttle.{read,write}_{bps,iops}_device | io.max rbps/wbps/riops/wiops |
//! | hugepageLimits | v1 hugetlb.<size>.limit_in_bytes; hybrid without v1 hugetlb: the unified mount's hugetlb.<size>.max | hugetlb.<size>.max (+ .rsvd.max) |
//! | network classID / priorities | net_cls.classid / net_prio.ifpriomap | error |
//! | rdma | rdma.max | rdma.max |
//! | devices | devices.allow / devices.deny, then runc's default allow list | an eBPF cgroup device program (see `ebpf.rs`) |
//! | unified | hybrid: written on the unified mount when its controller exists there | written as given |

mod convert;
mod devices;
mod ebpf;
mod fsutil;
mod host;
mod oom;
mod placement;
mod stats;
mod v1;
mod v2;
mod validate;

pub use convert::{blkio_weight_to_io_weight, cpu_shares_to_weight, memory_swap_to_v2};
pub use devices::default_allowed_devices;
pub(crate) use host::unescape as unescape_mountinfo;
pub use host::{Host, Mode, Mount};
pub use oom::{OomEvent, OomWatcher};
pub use placement::{expand_slice, parse_systemd_path, placement, Placement, SystemdPath};
pub use stats::{
    BlkioEntry, BlkioStats, CpuSetStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry,
    MemoryStats, PidsStats, Stats, Throttling,
};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of the cgroups layer; each names the file, value, field or path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cgroup: reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: unexpected content {content:?} in {path}")]
    Parse { path: PathBuf, content: String },
    #[error("cgroup: creating directory {path}: {source}")]
    Mkdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: removing directory {path}: {source}")]
    Rmdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cgroup: {resource} needs the {controller} controller, which is not available: {detail}"
    )]
    ControllerUnavailable {
        resource: String,
        controller: String,
        detail: String,
    },
    #[error("cgroup: {resource} is not supported on {hierarchy}: {detail}")]
    Unsupported {
        resource: String,
        hierarchy: String,
        detail: String,
    },
    #[error("cgroup: invalid {field}: {detail}")]
    InvalidValue { field: String, detail: String },
    #[error("cgroup: invalid cgroupsPath {path:?}: {detail}")]
    InvalidPath { path: String, detail: String },
    #[error("cgroup: systemd cgroup driver (unit {unit}): {detail}")]
    Systemd { unit: String, detail: String },
    #[error("cgroup: {0}")]
    NoCgroupFs(String),
    #[error("cgroup: timed out after {secs}s waiting for {path} to report {state}")]
    Timeout {
        path: PathBuf,
        state: String,
        secs: u64,
    },
    #[error("cgroup: {op}: {source}")]
    Sys { op: String, source: nix::Error },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

/// What `create` knows about the container's cgroup.
#[derive(Debug, Clone, Copy)]
pub struct CgroupOptions<'a> {
    /// `linux.cgroupsPath` from the spec.
    pub cgroups_path: Option<&'a Path>,
    /// Container id (default cgroup name).
    pub id: &'a str,
    /// `--systemd-cgroup`.
    pub systemd: bool,
}

/// Serializable record of a container's cgroups (goes into state.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupState {
    /// Host layout at creation.
    pub mode: Mode,
    /// v1: directory per controller (co-mounted controllers share a directory).
    #[serde(default)]
    pub v1: BTreeMap<String, PathBuf>,
    /// cgroup2 directory (pure v2, or the unified mount on hybrid hosts).
    #[serde(default)]
    pub unified: Option<PathBuf>,
    /// Directories this container created, parents before children; `destroy` removes exactly these.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

/// The cgroups of one container.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    st: CgroupState,
}

fn open_w(p: &Path) -> Result<std::os::fd::OwnedFd> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|source| CgroupError::Write {
            path: p.to_path_buf(),
            value: "0".into(),
            source,
        })
}

/// How long freeze/thaw wait for the kernel before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How long destroy waits for exiting processes to leave a cgroup.
const RMDIR_WAIT: Duration = Duration::from_secs(2);

impl CgroupManager {
    /// Compute the container's cgroup directories (nothing is created yet).
    ///
    /// With `systemd: true` the `slice:prefix:name` path is parsed and checked, then an error explains
    /// that the systemd driver needs a running systemd (Husk talks to cgroupfs only).
    pub fn new(host: &Host, opts: &CgroupOptions<'_>) -> Result<Self> {
        if opts.systemd {
            let sp = parse_systemd_path(opts.cgroups_path, opts.id)?;
            let running = Path::new("/run/systemd/system").is_dir();
            let detail = if running {
                "Husk implements only the cgroupfs driver; run without --systemd-cgroup".to_string()
            } else {
                "the systemd driver needs a running systemd reachable over D-Bus and none runs on \
                 this host (no /run/systemd/system); run without --systemd-cgroup"
                    .to_string()
            };
            return Err(CgroupError::Systemd {
                unit: format!("{} in {}", sp.unit_name(), sp.slice),
                detail,
            });
        }
        let pl = placement(opts.cgroups_path, opts.id)?;
        let dir_in = |key: &str, mount: &Mount| -> PathBuf {
            match &pl {
                Placement::Absolute(p) => host::join_rel(&mount.mountpoint, p),
                Placement::Relative(p) => host::join_rel(&host.own_dir(key, mount), p),
            }
        };
        let mut v1 = BTreeMap::new();
        for (ctrl, mount) in &host.v1 {
            v1.insert(ctrl.clone(), dir_in(ctrl, mount));
        }
        let unified = host.unified.as_ref().map(|m| dir_in("", m));
        Ok(CgroupManager {
            st: CgroupState {
                mode: host.mode(),
                v1,
                unified,
                created: Vec::new(),
            },
        })
    }

    /// Reopen a container's cgroups from its saved state.
    pub fn load(state: CgroupState) -> Self {
        CgroupManager { st: state }
    }

    /// The state to store in state.json.
    pub fn save(&self) -> CgroupState {
        self.st.clone()
    }

    /// Host layout.
    pub fn mode(&self) -> Mode {
        self.st.mode
    }

    /// v1 directories by controller.
    pub fn v1_paths(&self) -> &BTreeMap<String, PathBuf> {
        &self.st.v1
    }

    /// The cgroup2 directory (pure v2, or the unified mount on hybrid hosts).
    pub fn unified_path(&self) -> Option<&Path> {
        self.st.unified.as_deref()
    }

    /// The directory to pass to clone3(CLONE_INTO_CGROUP): only on pure v2 hosts, where it places the
    /// child in all its cgroups at once.
    pub fn clone_into_cgroup_dir(&self) -> Option<&Path> {
        match self.st.mode {
            Mode::V2 => self.st.unified.as_deref(),
            _ => None,
        }
    }

    /// The membership files a process writes "0" to in order to join every cgroup of the
    /// container itself (v1 `tasks`, and cgroup2 `cgroup.procs` when `unified`), opened for
    /// writing. For a single-threaded process this is much cheaper in the kernel than another
    /// process writing its pid into `cgroup.procs`. The cgroup2 write still waits for an RCU
    /// grace period (~10 ms): callers clone into that directory instead and pass `unified`
    /// false (`process::fork_into_cgroup`).
    pub fn join_fds(&self, unified: bool) -> Result<Vec<std::os::fd::OwnedFd>> {
        let mut out = Vec::new();
        let mut seen: Vec<&Path> = Vec::new();
        for d in self.st.v1.values() {
            if seen.contains(&d.as_path()) {
                continue;
            }
            seen.push(d);
            out.push(open_w(&d.join("tasks"))?);
        }
        if let Some(u) = self.st.unified.as_ref().filter(|_| unified) {
            out.push(open_w(&u.join("cgroup.procs"))?);
        }
        Ok(out)
    }

    /// Every distinct directory of the container (v1 controllers, then cgroup2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for d in self.st.v1.values() {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        if let Some(u) = &self.st.unified {
            if !out.contains(u) {
                out.push(u.clone());
            }
        }
        out
    }

    /// Create the directories (and missing parents), recording which ones this call created.
    /// v1 cpuset directories get their parent's cpus/mems so tasks can join them.
    /// On failure, what this call created is removed again before the error is returned.
    pub fn create(&mut self) -> Result<()> {
        let before = self.st.created.len();
        let res = self.create_dirs();
        if res.is_err() {
            let mut undo = CgroupManager {
                st: CgroupState {
                    created: self.st.created.split_off(before),
                    ..self.st.clone()
                },
            };
            if let Err(e) = undo.destroy() {
                tracing::warn!(error = %e, "cleaning up after a failed cgroup create");
                self.st.created.extend(undo.st.created);
            }
        }
        res
    }

    fn create_dirs(&mut self) -> Result<()> {
        let v1_dirs: Vec<PathBuf> = {
            let mut v: Vec<PathBuf> = Vec::new();
            for d in self.st.v1.values() {
                if !v.contains(d) {
                    v.push(d.clone());
                }
            }
            v
        };
        for d in &v1_dirs {
            self.mkdir_tracked(d)?;
        }
        if let Some(cs) = self.st.v1.get("cpuset").cloned() {
            v1::init_cpuset_chain(&cs)?;
        }
        if let Some(u) = self.st.unified.clone() {
            match self.st.mode {
                Mode::V2 => {
                    self.mkdir_tracked(&u)?;
                    v2::enable_all_controllers(&u)?;
                }
                _ => {
                    // Hybrid: the cgroup2 side is only an extra; a host where it can't be used still
                    // works, and a limit that needs it fails later with a clear error.
                    if let Err(e) = self.mkdir_tracked(&u) {
                        tracing::warn!(error = %e, "hybrid host: not using the cgroup2 mount");
                        self.st.unified = None;
                    }
                }
            }
        }
        Ok(())
    }

    fn mkdir_tracked(&mut self, dir: &Path) -> Result<()> {
        // Missing ancestors, top-down. Retried: another container's destroy may remove a shared
        // parent between our mkdirs.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let missing: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            let mut retry = false;
            for d in missing.iter().rev() {
                match std::fs::create_dir(d) {
                    Ok(()) => {
                        tracing::debug!(dir = %d.display(), "created cgroup");
                        self.st.created.push(d.clone());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 5 => {
                        retry = true;
                        break;
                    }
                    Err(source) => {
                        return Err(CgroupError::Mkdir {
                            path: d.clone(),
                            source,
                        })
                    }
                }
            }
            if !retry {
                return Ok(());
            }
        }
    }

    /// Check `linux.resources` without touching the kernel: values, and that this host has the
    /// controllers the requested limits need. Call it before [`create`](Self::create) so a bad
    /// config fails with nothing created; [`apply`](Self::apply) reports what only the kernel refuses.
    pub fn validate(&self, r: &LinuxResources) -> Result<()> {
        validate::validate(&self.st, r)
    }

    /// Apply `linux.resources`. Every requested limit is written or an error names it.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        match self.st.mode {
            Mode::V2 => {
                let dir = self.v2_dir()?;
                v2::apply(dir, r)
            }
            Mode::V1 | Mode::Hybrid => v1::apply(&self.st, r),
        }
    }

    /// `husk update`: same as [`apply`](Self::apply) (memory limit vs swap ordering is handled so
    /// raising and lowering both work).
    pub fn update(&self, r: &LinuxResources) -> Result<()> {
        self.apply(r)
    }

    fn v2_dir(&self) -> Result<&Path> {
        self.st
            .unified
            .as_deref()
            .ok_or_else(|| CgroupError::NoCgroupFs("no cgroup2 directory recorded".into()))
    }

    /// Move process `pid` into every cgroup of the container (cgroup.procs of each directory).
    pub fn add_task(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write_procs(&d, pid)?;
        }
        Ok(())
    }

    /// The directory whose cgroup.procs lists the container's processes.
    fn procs_dir(&self) -> Result<PathBuf> {
        if self.st.mode == Mode::V2 {
            return self.v2_dir().map(Path::to_path_buf);
        }
        for c in ["freezer", "pids", "memory", "cpu", "devices"] {
            if let Some(d) = self.st.v1.get(c) {
                return Ok(d.clone());
            }
        }
        self.dirs()
            .into_iter()
            .next()
            .ok_or_else(|| CgroupError::NoCgroupFs("the container has no cgroup directory".into()))
    }

    /// Pids of all processes in the container's cgroup and its sub-cgroups (for `kill --all`, `ps`).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let d = self.procs_dir()?;
        let mut pids = match fsutil::read_pids(&d) {
            Ok(p) => p,
            // The cgroup is gone already (removed by someone else once it was empty): it holds
            // no process, and `delete --force` must still clean the container up.
            Err(CgroupError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        for sub in fsutil::subdirs_deepest_first(&d)? {
            match fsutil::read_pids(&sub) {
                Ok(p) => pids.extend(p),
                // a sub-cgroup removed while we walk
                Err(CgroupError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Freeze all processes, returning once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        match self.st.mode {
            Mode::V2 => v2::set_frozen(self.v2_dir()?, true),
            _ => v1::set_frozen(self.v1_dir("freezer", "pause (freezer)")?, true),
        }
    }

    /// Thaw, returning once the kernel reports the cgroup thawed.
    pub fn thaw(&self) -> Result<()> {
        match self.st.mode {
            Mode::V2 => v2::set_frozen(self.v2_dir()?, false),
            _ => v1::set_frozen(self.v1_dir("freezer", "resume (freezer)")?, false),
        }
    }

    /// Whether the cgroup is frozen (fully; a cgroup still freezing reads as not frozen).
    pub fn is_frozen(&self) -> Result<bool> {
        match self.st.mode {
            Mode::V2 => v2::is_frozen(self.v2_dir()?),
            _ => v1::is_frozen(self.v1_dir("freezer", "freezer state")?),
        }
    }

    pub(crate) fn v1_dir(&self, ctrl: &str, resource: &str) -> Result<&Path> {
        v1::dir(&self.st, ctrl, resource)
    }

    /// Statistics in runc's `events --stats` JSON format.
    pub fn stats(&self) -> Result<Stats> {
        match self.st.mode {
            Mode::V2 => stats::v2_stats(self.v2_dir()?),
            _ => stats::v1_stats(&self.st),
        }
    }

    /// A watcher that blocks until the container's memory cgroup records an OOM.
    pub fn oom_watcher(&self) -> Result<OomWatcher> {
        match self.st.mode {
            Mode::V2 => OomWatcher::v2(self.v2_dir()?),
            _ => OomWatcher::v1(self.v1_dir("memory", "OOM notification")?),
        }
    }

    /// Remove the directories this container created (sub-cgroups the container made inside them
    /// included), deepest first. Parents it created that are still used by other cgroups are left.
    /// Waits briefly for exiting processes; fails naming the directory if processes remain.
    pub fn destroy(&mut self) -> Result<()> {
        let leaves = self.dirs();
        let mut first_err = None;
        let mut remaining = Vec::new();
        for d in self.st.created.iter().rev() {
            let res = if leaves.contains(d) {
                remove_tree(d)
            } else {
                // shared parent: remove only if empty
                match std::fs::remove_dir(d) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EBUSY) | Some(libc::ENOTEMPTY)
                        ) =>
                    {
                        if remaining.iter().any(|r: &PathBuf| r.starts_with(d)) {
                            // our own leaf below failed: keep it recorded for a later retry
                            remaining.push(d.clone());
                        } else {
                            tracing::debug!(dir = %d.display(), "cgroup parent still in use, kept");
                        }
                        Ok(())
                    }
                    Err(source) => Err(CgroupError::Rmdir {
                        path: d.clone(),
                        source,
                    }),
                }
            };
            if let Err(e) = res {
                remaining.push(d.clone());
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        remaining.reverse();
        self.st.created = remaining;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Write a pid to dir/cgroup.procs; EINVAL (task still in TASK_NEW) is retried as runc does.
fn write_procs(dir: &Path, pid: i32) -> Result<()> {
    let value = pid.to_string();
    let mut tries = 0;
    loop {
        match fsutil::write(dir, "cgroup.procs", &value) {
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && tries < 5 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// rmdir a cgroup and its sub-cgroups (deepest first), retrying while processes exit.
fn remove_tree(dir: &Path) -> Result<()> {
    let mut subs = fsutil::subdirs_deepest_first(dir)?;
    subs.push(dir.to_path_buf());
    for d in subs {
        let start = Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < RMDIR_WAIT => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(source) => return Err(CgroupError::Rmdir { path: d, source }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
