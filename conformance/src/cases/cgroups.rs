//! config-linux.md "Control groups": cgroupsPath, resources (memory, pids, cpu, devices),
//! observed from the host through /proc/<pid>/cgroup of the created container's process, plus
//! enforcement observed from inside.

use super::{case, Case};
use crate::ctx::{CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::path::PathBuf;

pub fn cases() -> Vec<Case> {
    vec![
        case("cgroups.path-absolute", path_absolute),
        case("cgroups.memory-limit", memory),
        case("cgroups.pids-limit", pids),
        case("cgroups.cpu-shares-quota", cpu),
        case("cgroups.devices-unlisted-node-denied", devices_denied),
        case("cgroups.removed-on-delete", removed_on_delete),
        case("cgroups.memory-limit-enforced-oom-kill", memory_oom),
        case("cgroups.memory-reservation-swap", memory_more),
        case("cgroups.cpuset", cpuset),
    ]
}

/// Path of the container process's cgroup for `controller` on the host. Works for cgroup v1
/// (`N:ctrl[,ctrl]:/path`) and v2 (`0::/path`).
fn cgroup_dir(pid: i32, controller: &str) -> Result<PathBuf> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    for l in s.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            // v1 mount dir is named after the (possibly co-mounted) controllers.
            for dir in [controller.to_string(), ctrls.to_string()] {
                let p = PathBuf::from("/sys/fs/cgroup")
                    .join(&dir)
                    .join(path.trim_start_matches('/'));
                if p.is_dir() {
                    return Ok(p);
                }
            }
        }
    }
    for l in s.lines() {
        if let Some(path) = l.strip_prefix("0::") {
            let unified = if PathBuf::from("/sys/fs/cgroup/unified").is_dir() {
                "/sys/fs/cgroup/unified"
            } else {
                "/sys/fs/cgroup"
            };
            let p = PathBuf::from(unified).join(path.trim_start_matches('/'));
            if p.join(format!("{controller}.max")).exists() || p.join("memory.max").exists() {
                return Ok(p);
            }
        }
    }
    bail!("no {controller} cgroup for pid {pid} in /proc/{pid}/cgroup: {s:?}")
}

fn read_trim(p: PathBuf) -> Result<String> {
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("read {}", p.display()))?
        .trim()
        .to_string())
}

/// create, run `f` with the container's pid, always clean up.
fn with_created(c: &mut Ctx<'_>, f: impl FnOnce(&Ctx<'_>, i32) -> Result<()>) -> CaseResult {
    c.sh("sleep 1000");
    c.create()?;
    let pid = c.pid()?;
    let r = f(c, pid);
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    r?;
    Ok(Outcome::Pass)
}

fn path_absolute(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: an absolute cgroupsPath is relative to the cgroups mount point.
    let cg = format!("/{}-cg", c.id);
    c.cfg["linux"]["cgroupsPath"] = json!(cg);
    with_created(c, |_, pid| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .context("read /proc/<pid>/cgroup")?;
        for ctrl in ["pids", "devices", "freezer"] {
            if let Some(l) = s.lines().find(|l| {
                l.split(':')
                    .nth(1)
                    .map(|c| c.split(',').any(|x| x == ctrl))
                    .unwrap_or(false)
            }) {
                let path = l.splitn(3, ':').nth(2).unwrap_or("");
                ensure!(
                    path == cg,
                    "{ctrl} cgroup of the container is {path:?}, want {cg:?}"
                );
            }
        }
        Ok(())
    })
}

fn memory(c: &mut Ctx<'_>) -> CaseResult {
    let limit: u64 = 96 * 1024 * 1024;
    c.cfg["linux"]["resources"]["memory"] = json!({"limit": limit});
    with_created(c, |_, pid| {
        let d = cgroup_dir(pid, "memory")?;
        let v1 = d.join("memory.limit_in_bytes");
        let got = if v1.exists() {
            read_trim(v1)?
        } else {
            read_trim(d.join("memory.max"))?
        };
        ensure!(
            got == limit.to_string(),
            "memory limit in {}: {got}, want {limit}",
            d.display()
        );
        Ok(())
    })
}

fn pids(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["resources"]["pids"] = json!({"limit": 7});
    c.share();
    // The limit is enforced: the 8th concurrent process cannot be forked.
    c.sh(
        "i=0; while [ $i -lt 10 ]; do sleep 30 & i=$((i+1)); done 2>/shared/err; echo forked; true",
    );
    let o = c.run()?;
    let err = std::fs::read_to_string(c.shared.join("err")).unwrap_or_default();
    ensure!(
        err.contains("Resource temporarily unavailable") || err.contains("can't fork"),
        "forking 10 processes under pids.limit=7 did not fail: stderr {err:?}, {}",
        o.describe()
    );
    c.cfg["mounts"]
        .as_array_mut()
        .context("mounts")?
        .retain(|m| m["destination"] != "/shared");
    with_created(c, |_, pid| {
        let d = cgroup_dir(pid, "pids")?;
        let got = read_trim(d.join("pids.max"))?;
        ensure!(got == "7", "pids.max in {}: {got}, want 7", d.display());
        Ok(())
    })
}

fn cpu(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 50000, "period": 100000});
    with_created(c, |_, pid| {
        let d = cgroup_dir(pid, "cpu")?;
        if d.join("cpu.shares").exists() {
            let shares = read_trim(d.join("cpu.shares"))?;
            let quota = read_trim(d.join("cpu.cfs_quota_us"))?;
            let period = read_trim(d.join("cpu.cfs_period_us"))?;
            ensure!(shares == "512", "cpu.shares {shares}, want 512");
            ensure!(
                quota == "50000" && period == "100000",
                "cfs quota/period {quota}/{period}, want 50000/100000"
            );
        } else {
            let max = read_trim(d.join("cpu.max"))?;
            ensure!(
                max == "50000 100000",
                "cpu.max {max:?}, want \"50000 100000\""
            );
        }
        Ok(())
    })
}

fn devices_denied(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: containers MAY NOT access device nodes neither in linux.devices nor
    // default devices. A char 1:5 node the runner put into the rootfs is denied by the
    // deny-all allow list of the base config (EPERM from the device cgroup), and usable once
    // an allow rule for it is added.
    // A device outside the default set whose open needs no privilege: /dev/fuse (10:229).
    // (Not tun 10:200: runc allows it by default.)
    let (maj, min) = (10u32, 229u32);
    if !std::path::Path::new(&format!("/sys/dev/char/{maj}:{min}")).exists() {
        return Ok(Outcome::Skip(
            "no char device 10:229 (fuse) on this kernel to probe with".into(),
        ));
    }
    let node = c.rootfs.join("etc/hc-dev");
    let cpath = std::ffi::CString::new(node.display().to_string()).context("node path")?;
    // SAFETY: mknod with a valid C string; creates a char device node in the case's rootfs.
    let rc = unsafe {
        libc::mknod(
            cpath.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(maj, min),
        )
    };
    if rc != 0 {
        bail!(
            "mknod {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        );
    }
    let script = "if (exec 3</etc/hc-dev) 2>/tmp/err; then echo opened; else cat /tmp/err; fi; (exec 3</dev/zero) && echo default-ok";
    c.cfg["root"]["readonly"] = json!(false);
    c.sh(script);
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("Operation not permitted") && o.stdout.contains("default-ok"),
        "an unlisted device node under a deny-all allow list: {:?}, want EPERM and the default devices usable",
        o.stdout
    );
    if let Some(a) = c.cfg["linux"]["resources"]["devices"].as_array_mut() {
        a.push(json!({"allow": true, "type": "c", "major": maj, "minor": min, "access": "rwm"}));
    }
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("opened"),
        "with an allow rule for c 10:229 the node is still unusable: {:?}",
        o.stdout
    );
    Ok(Outcome::Pass)
}

fn removed_on_delete(c: &mut Ctx<'_>) -> CaseResult {
    let cg = format!("/{}-cg", c.id);
    c.cfg["linux"]["cgroupsPath"] = json!(cg);
    c.sh("sleep 1000");
    c.create()?;
    let pid = c.pid()?;
    let dirs = crate::ctx::cgroups_named(&c.id);
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    ensure!(
        !dirs.is_empty(),
        "no cgroup directory named after cgroupsPath {cg} while the container existed"
    );
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    ensure!(left.is_empty(), "cgroups left after delete: {left:?}");
    Ok(Outcome::Pass)
}

fn memory_oom(c: &mut Ctx<'_>) -> CaseResult {
    // An allocation beyond memory.limit is OOM-killed (exit 137): `sort` holds its whole input,
    // one 96 MiB line of zero bytes, under a 32 MiB limit.
    c.cfg["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    c.sh("head -c 100663296 /dev/zero | sort > /dev/null; echo status=$?");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.trim() == "status=137",
        "sort of 96 MiB under a 32 MiB memory limit: {:?}, want status=137 (OOM kill)",
        o.stdout.trim()
    );
    Ok(Outcome::Pass)
}

fn memory_more(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["resources"]["memory"] =
        json!({"limit": 134217728, "reservation": 67108864, "swap": 268435456});
    with_created(c, |_, pid| {
        let d = cgroup_dir(pid, "memory")?;
        if d.join("memory.soft_limit_in_bytes").exists() {
            let r = read_trim(d.join("memory.soft_limit_in_bytes"))?;
            ensure!(
                r == "67108864",
                "memory.soft_limit_in_bytes {r}, want 67108864"
            );
            let sw = d.join("memory.memsw.limit_in_bytes");
            if sw.exists() {
                let v = read_trim(sw)?;
                ensure!(
                    v == "268435456",
                    "memory.memsw.limit_in_bytes {v}, want 268435456 (limit+swap)"
                );
            }
        } else {
            let low = read_trim(d.join("memory.low"))?;
            ensure!(low == "67108864", "memory.low {low}, want 67108864");
            let sw = read_trim(d.join("memory.swap.max"))?;
            ensure!(
                sw == "134217728",
                "memory.swap.max {sw}, want 134217728 (swap - limit)"
            );
        }
        Ok(())
    })
}

fn cpuset(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["resources"]["cpu"] = json!({"cpus": "0", "mems": "0"});
    with_created(c, |_, pid| {
        let d = cgroup_dir(pid, "cpuset")?;
        let (cpus, mems) = if d.join("cpuset.cpus").exists() {
            (
                read_trim(d.join("cpuset.cpus"))?,
                read_trim(d.join("cpuset.mems"))?,
            )
        } else {
            bail!("no cpuset.cpus in {}", d.display())
        };
        ensure!(
            cpus == "0" && mems == "0",
            "cpuset cpus {cpus:?} mems {mems:?}, want \"0\" \"0\""
        );
        let allowed = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        ensure!(
            allowed == "0",
            "Cpus_allowed_list of the container process: {allowed:?}, want \"0\""
        );
        Ok(())
    })
}
