//! The rest of runc's command line that container managers use (not runtime-spec operations,
//! but part of the contract husk implements): exec, pause/resume, ps, update, events, features.

use super::{case, Case};
use crate::bundle::VALIDATOR_PATH;
use crate::ctx::{validator_verdict, wait_for, CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::MetadataExt;

pub fn cases() -> Vec<Case> {
    vec![
        case("cli.exec-process-json-validated", exec_validated),
        case("cli.exec-args-and-exit-code", exec_args),
        case("cli.exec-detach-pid-file", exec_detach),
        case("cli.exec-in-stopped-container-fails", exec_stopped),
        case("cli.pause-resume", pause_resume),
        case("cli.ps-json", ps_json),
        case("cli.update-memory-pids", update),
        case("cli.events-stats", events_stats),
        case("cli.features", features),
    ]
}

/// A started container whose process waits for /shared/stop; returns the init pid.
fn running(c: &mut Ctx<'_>) -> Result<i32> {
    c.share();
    c.sh("echo started > /shared/started; while [ ! -e /shared/stop ]; do sleep 0.05; done");
    c.create()?;
    let pid = c.pid()?;
    c.start()?;
    wait_for("the container to start", || {
        c.shared.join("started").exists()
    })?;
    Ok(pid)
}

/// Stop the waiter, reap it, delete the container.
fn finish(c: &Ctx<'_>, pid: i32) -> Result<()> {
    fs::write(c.shared.join("stop"), "").context("write stop file")?;
    c.wait_exit(pid)?;
    c.rt_ok(&["delete", &c.id])?;
    Ok(())
}

/// Run `body` against a running container and always tear it down.
fn with_running(c: &mut Ctx<'_>, body: impl FnOnce(&mut Ctx<'_>, i32) -> CaseResult) -> CaseResult {
    let pid = running(c)?;
    let r = body(c, pid);
    let _ = fs::write(c.shared.join("stop"), "");
    let _ = c.rt(&["delete", "--force", &c.id]);
    let _ = c.wait_exit(pid);
    r
}

fn exec_validated(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        // The validator reads an "exec config": the container's config with the exec process and
        // every namespace pointing at the init's (the exec'd process must join them all).
        let mut cfg = c.cfg.clone();
        let caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        let process = json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [1001]},
            "args": [VALIDATOR_PATH],
            "env": ["PATH=/bin:/usr/bin", "HC_EXEC=yes", format!("HC_ID={}", c.id),
                    "OCI_VALIDATE_CONFIG=/.oci-validate/exec.json"],
            "cwd": "/etc",
            "capabilities": {"bounding": caps, "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512}],
            "noNewPrivileges": true
        });
        cfg["process"] = process.clone();
        let map = [
            ("mount", "mnt"),
            ("uts", "uts"),
            ("ipc", "ipc"),
            ("pid", "pid"),
            ("network", "net"),
        ];
        for n in cfg["linux"]["namespaces"]
            .as_array_mut()
            .context("namespaces")?
        {
            let ty = n["type"].as_str().unwrap_or("").to_string();
            if let Some((_, p)) = map.iter().find(|(t, _)| *t == ty) {
                let path = format!("/proc/{pid}/ns/{p}");
                let ino = fs::metadata(&path)
                    .with_context(|| format!("stat {path}"))?
                    .ino();
                c.expect.push(format!("nspath {p} {ino}"));
                n["path"] = json!(path);
            }
        }
        let vdir = c.rootfs.join(".oci-validate");
        fs::write(vdir.join("exec.json"), serde_json::to_string_pretty(&cfg)?)
            .context("write exec.json")?;
        c.save()?;
        let pfile = c.dir.join("process.json");
        fs::write(&pfile, serde_json::to_string_pretty(&process)?).context("write process.json")?;
        let p = pfile.display().to_string();
        let id = c.id.clone();
        let o = c.rt(&["exec", "--process", &p, &id])?;
        validator_verdict(&o)?;
        c.expect_status("running")?;
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn exec_args(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        let id = c.id.clone();
        let o = c.rt(&["exec", &id, "sh", "-c", "exit 5"])?;
        ensure!(
            o.code == 5 && !o.timed_out,
            "exec of `sh -c 'exit 5'`: {}",
            o.describe()
        );
        let o = c.rt(&["exec", &id, "sh", "-c", "echo $0-ok; echo err >&2", "hc"])?;
        ensure!(
            o.ok() && o.stdout.trim() == "hc-ok",
            "exec output: {}",
            o.describe()
        );
        ensure!(
            o.stderr.contains("err"),
            "exec stderr not passed through: {:?}",
            o.stderr
        );
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn exec_detach(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        let id = c.id.clone();
        let pf = c.dir.join("exec.pid");
        let pfs = pf.display().to_string();
        c.rt_ok(&[
            "exec",
            "--detach",
            "--pid-file",
            &pfs,
            &id,
            "sh",
            "-c",
            "echo x > /shared/execd; sleep 1000",
        ])?;
        wait_for("the detached exec process", || {
            c.shared.join("execd").exists()
        })?;
        let text = fs::read_to_string(&pf).with_context(|| format!("read --pid-file {pfs}"))?;
        let epid: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("--pid-file holds {text:?}"))?;
        for ns in ["pid", "mnt", "net"] {
            let a = fs::metadata(format!("/proc/{pid}/ns/{ns}"))
                .map(|m| m.ino())
                .ok();
            let b = fs::metadata(format!("/proc/{epid}/ns/{ns}"))
                .map(|m| m.ino())
                .ok();
            ensure!(
                a.is_some() && a == b,
                "exec'd process {epid} is not in the container's {ns} namespace"
            );
        }
        // delete --force must take the exec'd process with it.
        c.rt_ok(&["delete", "--force", &id])?;
        c.wait_exit(pid)?;
        c.wait_exit(epid)?;
        Ok(Outcome::Pass)
    })
}

fn exec_stopped(c: &mut Ctx<'_>) -> CaseResult {
    c.sh("true");
    c.create()?;
    let pid = c.pid()?;
    c.start()?;
    c.wait_exit(pid)?;
    let id = c.id.clone();
    let o = c.rt(&["exec", &id, "true"])?;
    c.delete()?;
    ensure!(o.code != 0, "exec into a stopped container succeeded");
    Ok(Outcome::Pass)
}

fn freezer_state(pid: i32) -> Result<String> {
    let cg =
        fs::read_to_string(format!("/proc/{pid}/cgroup")).context("read /proc/<pid>/cgroup")?;
    for l in cg.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|x| x == "freezer") {
            let p = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            return Ok(fs::read_to_string(&p)
                .with_context(|| format!("read {p}"))?
                .trim()
                .to_string());
        }
    }
    for l in cg.lines() {
        if let Some(path) = l.strip_prefix("0::") {
            for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                let p = format!("{base}{path}/cgroup.freeze");
                if let Ok(v) = fs::read_to_string(&p) {
                    return Ok(if v.trim() == "1" {
                        "FROZEN".into()
                    } else {
                        "THAWED".into()
                    });
                }
            }
        }
    }
    bail!("no freezer for pid {pid}: {cg:?}")
}

fn pause_resume(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        let id = c.id.clone();
        c.rt_ok(&["pause", &id])?;
        let st = c.status()?;
        let fz = freezer_state(pid)?;
        let resumed = c.rt(&["resume", &id])?;
        ensure!(st == "paused", "status after pause: {st:?}, want paused");
        ensure!(fz == "FROZEN", "freezer after pause: {fz}, want FROZEN");
        ensure!(resumed.ok(), "{}", resumed.describe());
        c.expect_status("running")?;
        let fz = freezer_state(pid)?;
        ensure!(fz == "THAWED", "freezer after resume: {fz}, want THAWED");
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn ps_json(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        let id = c.id.clone();
        let o = c.rt_ok(&["ps", "--format", "json", &id])?;
        let v: Value = serde_json::from_str(&o.stdout)
            .with_context(|| format!("`ps --format json` is not JSON: {:?}", o.stdout))?;
        let pids: Vec<i64> = v
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
            .unwrap_or_default();
        ensure!(
            pids.contains(&(pid as i64)),
            "`ps --format json` {pids:?} lacks the init pid {pid}"
        );
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn cgroup_file(pid: i32, ctrl: &str, file: &str) -> Result<String> {
    let cg =
        fs::read_to_string(format!("/proc/{pid}/cgroup")).context("read /proc/<pid>/cgroup")?;
    for l in cg.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|x| x == ctrl) {
            let p = format!("/sys/fs/cgroup/{ctrl}{path}/{file}");
            return Ok(fs::read_to_string(&p)
                .with_context(|| format!("read {p}"))?
                .trim()
                .to_string());
        }
    }
    bail!("no {ctrl} cgroup for pid {pid}")
}

fn update(c: &mut Ctx<'_>) -> CaseResult {
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        return Ok(Outcome::Skip(
            "cgroup v1 memory hierarchy not mounted (check written for v1)".into(),
        ));
    }
    with_running(c, |c, pid| {
        let id = c.id.clone();
        c.rt_ok(&["update", "--memory", "134217728", "--pids-limit", "77", &id])?;
        let mem = cgroup_file(pid, "memory", "memory.limit_in_bytes")?;
        let pids = cgroup_file(pid, "pids", "pids.max")?;
        ensure!(
            mem == "134217728",
            "memory.limit_in_bytes after update: {mem}"
        );
        ensure!(pids == "77", "pids.max after update: {pids}");
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn events_stats(c: &mut Ctx<'_>) -> CaseResult {
    with_running(c, |c, pid| {
        let id = c.id.clone();
        let o = c.rt_ok(&["events", "--stats", &id])?;
        let line = o
            .stdout
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("`events --stats` is not JSON: {:?}", o.stdout))?;
        ensure!(v["type"] == "stats", "events type {}", v["type"]);
        ensure!(v["id"] == json!(id), "events id {}", v["id"]);
        ensure!(
            v["data"].is_object(),
            "events without a data object: {line}"
        );
        finish(c, pid)?;
        Ok(Outcome::Pass)
    })
}

fn features(c: &mut Ctx<'_>) -> CaseResult {
    // features.md: the runtime's features document.
    let o = c.rt_ok(&["features"])?;
    let v: Value = serde_json::from_str(&o.stdout)
        .with_context(|| format!("`features` is not JSON: {:?}", o.stdout))?;
    ensure!(
        v["ociVersionMin"].is_string() && v["ociVersionMax"].is_string(),
        "features without ociVersionMin/Max"
    );
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    for want in ["mount", "pid", "network", "ipc", "uts"] {
        ensure!(
            ns.contains(&want),
            "features.linux.namespaces {ns:?} lacks {want}"
        );
    }
    ensure!(
        v["hooks"].is_array() && v["mountOptions"].is_array(),
        "features without hooks/mountOptions arrays"
    );
    Ok(Outcome::Pass)
}
