//! The commands that act on a running container's cgroups: pause, resume, ps, update, events.
use crate::container::{cgroup_manager, state};
use crate::error::{Context, Error, Result};
use crate::state::{Root, Status};
use std::time::Duration;

fn manager(
    root: &Root,
    id: &str,
) -> Result<(crate::state::ContainerState, crate::cgroups::CgroupManager)> {
    let st = state(root, id)?;
    let cg = cgroup_manager(&st)
        .ok_or_else(|| Error::container(format!("container {id} has no cgroups")))?;
    Ok((st, cg))
}

pub fn pause(root: &Root, id: &str) -> Result<()> {
    let locked = root.lock(id)?;
    let st = locked.load()?;
    match st.status() {
        Status::Running | Status::Created => {}
        s => {
            return Err(Error::container(format!(
                "cannot pause container {id}: it is {s}"
            )))
        }
    }
    let cg = cgroup_manager(&st)
        .ok_or_else(|| Error::container(format!("container {id} has no cgroups")))?;
    cg.freeze()?;
    Ok(())
}

pub fn resume(root: &Root, id: &str) -> Result<()> {
    let locked = root.lock(id)?;
    let st = locked.load()?;
    if st.status() != Status::Paused {
        return Err(Error::container(format!(
            "cannot resume container {id}: it is not paused ({})",
            st.status()
        )));
    }
    let cg = cgroup_manager(&st)
        .ok_or_else(|| Error::container(format!("container {id} has no cgroups")))?;
    cg.thaw()?;
    Ok(())
}

/// Pids of the container's processes.
pub fn pids(root: &Root, id: &str) -> Result<Vec<i32>> {
    let (_, cg) = manager(root, id)?;
    let mut p = cg.procs()?;
    p.sort_unstable();
    Ok(p)
}

/// runc's `ps`: run `ps ARGS` on the host and keep the header and the container's rows.
pub fn ps_table(root: &Root, id: &str, ps_args: &[String]) -> Result<String> {
    let pids = pids(root, id)?;
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .ctx(|| "run ps".into())?;
    if !out.status.success() {
        return Err(Error::container(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| {
            Error::container(format!(
                "ps {}: no PID column in its output",
                args.join(" ")
            ))
        })?;
    let mut res = format!("{header}\n");
    for l in lines {
        if let Some(pid) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&pid) {
                res.push_str(l);
                res.push('\n');
            }
        }
    }
    Ok(res)
}

/// runc's update flags, in the order runc documents them.
#[derive(Debug, Default)]
pub struct UpdateFlags {
    pub resources: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub l3_cache_schema: Option<String>,
    pub mem_bw_schema: Option<String>,
}

/// Parse a size like runc/docker ("512m", "1g", "-1", "1024").
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.trim_end_matches('b').len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 30),
        Some('t') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 40),
        _ => (t.trim_end_matches('b'), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::config(format!("invalid size {s:?}")))?;
    Ok((n * mult as f64) as i64)
}

pub fn update(root: &Root, id: &str, f: &UpdateFlags) -> Result<()> {
    if f.l3_cache_schema.is_some() || f.mem_bw_schema.is_some() {
        return Err(Error::Unsupported(
            "update: Intel RDT (--l3-cache-schema/--mem-bw-schema) is not available on this host"
                .into(),
        ));
    }
    let locked = root.lock(id)?;
    let mut st = locked.load()?;
    if st.status() == Status::Stopped {
        return Err(Error::container(format!(
            "cannot update container {id}: it is stopped"
        )));
    }
    let mut v: serde_json::Value = match &f.resources {
        Some(p) if p == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .ctx(|| "read resources from stdin".into())?;
            serde_json::from_str(&s).map_err(|e| Error::config(format!("--resources -: {e}")))?
        }
        Some(p) => {
            let s = std::fs::read_to_string(p).ctx(|| format!("read --resources {p}"))?;
            serde_json::from_str(&s).map_err(|e| Error::config(format!("--resources {p}: {e}")))?
        }
        None => serde_json::json!({}),
    };
    let set = |v: &mut serde_json::Value, sect: &str, key: &str, val: serde_json::Value| {
        if !v[sect].is_object() {
            v[sect] = serde_json::json!({});
        }
        v[sect][key] = val;
    };
    if let Some(m) = &f.memory {
        set(&mut v, "memory", "limit", parse_bytes(m)?.into());
    }
    if let Some(m) = &f.memory_reservation {
        set(&mut v, "memory", "reservation", parse_bytes(m)?.into());
    }
    if let Some(m) = &f.memory_swap {
        set(&mut v, "memory", "swap", parse_bytes(m)?.into());
    }
    if let Some(x) = f.cpu_shares {
        set(&mut v, "cpu", "shares", x.into());
    }
    if let Some(x) = f.cpu_quota {
        set(&mut v, "cpu", "quota", x.into());
    }
    if let Some(x) = f.cpu_period {
        set(&mut v, "cpu", "period", x.into());
    }
    if let Some(x) = f.cpu_rt_period {
        set(&mut v, "cpu", "realtimePeriod", x.into());
    }
    if let Some(x) = f.cpu_rt_runtime {
        set(&mut v, "cpu", "realtimeRuntime", x.into());
    }
    if let Some(x) = &f.cpuset_cpus {
        set(&mut v, "cpu", "cpus", x.clone().into());
    }
    if let Some(x) = &f.cpuset_mems {
        set(&mut v, "cpu", "mems", x.clone().into());
    }
    if let Some(x) = f.pids_limit {
        set(&mut v, "pids", "limit", x.into());
    }
    if let Some(x) = f.blkio_weight {
        set(&mut v, "blockIO", "weight", x.into());
    }
    let r: oci_spec::runtime::LinuxResources =
        serde_json::from_value(v).map_err(|e| Error::config(format!("update resources: {e}")))?;
    let cg = cgroup_manager(&st)
        .ok_or_else(|| Error::container(format!("container {id} has no cgroups")))?;
    cg.update(&r)?;
    // Keep the recorded config in step, so a later exec or restore sees the new limits.
    if let Some(linux) = st.config.linux_mut() {
        linux.set_resources(Some(r));
    }
    locked.save(&st)
}

fn stats_event(id: &str, cg: &crate::cgroups::CgroupManager) -> Result<serde_json::Value> {
    let s = cg.stats()?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": s}))
}

/// `events --stats` prints one stats object; otherwise a stream of stats every `interval` and OOM
/// events as they happen, until the container stops.
pub fn events(root: &Root, id: &str, stats_once: bool, interval: Duration) -> Result<()> {
    let (st, cg) = manager(root, id)?;
    if stats_once {
        crate::emit!("{}", stats_event(id, &cg)?);
        return Ok(());
    }
    let mut oom = cg.oom_watcher().ok();
    let mut next = std::time::Instant::now();
    loop {
        if st.status() == Status::Stopped {
            return Ok(());
        }
        let now = std::time::Instant::now();
        if now >= next {
            match stats_event(id, &cg) {
                Ok(ev) => crate::emit!("{ev}"),
                Err(_) if st.status() == Status::Stopped => return Ok(()),
                Err(e) => return Err(e),
            }
            next = now + interval;
        }
        let wait = next
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_millis(500));
        if let Some(w) = &mut oom {
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(w.as_raw_fd()) };
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let ms = nix::poll::PollTimeout::try_from(wait.as_millis() as i32)
                .unwrap_or(nix::poll::PollTimeout::NONE);
            if matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0) {
                match w.try_wait()? {
                    Some(crate::cgroups::OomEvent::Oom { .. }) => {
                        crate::emit!("{}", serde_json::json!({"type": "oom", "id": id}));
                    }
                    Some(crate::cgroups::OomEvent::CgroupRemoved) => oom = None,
                    None => {}
                }
            }
        } else {
            std::thread::sleep(wait);
        }
    }
}
