//! runtime.md: state, lifecycle and the operations (create, start, state, kill, delete), plus
//! the runc-compatible command line (run, --detach, --pid-file, list).

use super::{case, Case};
use crate::ctx::{wait_for, CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context};
use serde_json::json;
use std::path::Path;

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "lifecycle.create-start-exit-delete",
            create_start_exit_delete,
        ),
        case("lifecycle.run-exit-code", run_exit_code),
        case("lifecycle.run-stdio-passthrough", run_stdio),
        case("lifecycle.run-stdin-passthrough", run_stdin),
        case("lifecycle.run-detach", run_detach),
        case("lifecycle.start-twice-fails", start_twice),
        case("lifecycle.kill-by-name-KILL", |c| {
            kill_and_check(c, "KILL", 137)
        }),
        case("lifecycle.kill-by-name-SIGTERM", |c| {
            kill_and_check(c, "SIGTERM", 42)
        }),
        case("lifecycle.kill-by-number-9", |c| {
            kill_and_check(c, "9", 137)
        }),
        case("lifecycle.kill-default-is-SIGTERM", |c| {
            kill_and_check(c, "", 42)
        }),
        case("lifecycle.kill-created-container", kill_created),
        case("lifecycle.kill-all", kill_all),
        case("lifecycle.delete-running-needs-force", delete_running),
        case("lifecycle.delete-created-needs-force", delete_created),
        case("lifecycle.kill-stopped-fails", kill_stopped),
        case("lifecycle.start-stopped-fails", start_stopped),
        case("lifecycle.pid-file", pid_file),
        case("lifecycle.state-fields", state_fields),
        case("lifecycle.list", list),
        case(
            "lifecycle.config-changes-after-create-ignored",
            config_after_create,
        ),
        case("cli.log-format-json", log_json),
        case("cli.spec-generates-a-runnable-config", spec_cmd),
    ]
}

/// A process that records that it started, then waits for /shared/stop.
fn waiter(c: &mut Ctx<'_>) {
    c.share();
    c.sh("echo started > /shared/started; trap 'exit 42' TERM; while [ ! -e /shared/stop ]; do sleep 0.05; done; exit 0");
}

fn started(c: &Ctx<'_>) -> bool {
    c.shared.join("started").exists()
}

fn create_start_exit_delete(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.create()?;
    let st = c.state()?;
    ensure!(
        st["status"] == "created",
        "after create: status {}, want created",
        st["status"]
    );
    let pid = st["pid"].as_i64().unwrap_or(0) as i32;
    ensure!(pid > 0, "after create: pid must be > 0, state {st}");
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "after create: process {pid} does not exist"
    );
    ensure!(
        !started(c),
        "user program ran before start (runtime.md: MUST NOT be run at create)"
    );
    c.start()?;
    wait_for("the user program to start", || started(c))?;
    c.expect_status("running")?;
    std::fs::write(c.shared.join("stop"), "").context("write stop file")?;
    let code = c.wait_exit(pid)?;
    ensure!(matches!(code, Some(0) | None), "exit code {code:?}, want 0");
    c.expect_status("stopped")?;
    c.delete()?;
    c.rt_fails(&["state", &c.id], "state after delete")?;
    Ok(Outcome::Pass)
}

fn run_exit_code(c: &mut Ctx<'_>) -> CaseResult {
    c.sh("exit 3");
    let o = c.run()?;
    ensure!(
        o.code == 3,
        "run of `sh -c 'exit 3'`: exit {} (want 3); {}",
        o.code,
        o.describe()
    );
    ensure!(!o.timed_out, "{}", o.describe());
    c.rt_fails(
        &["state", &c.id],
        "state after run (run deletes the container)",
    )?;
    Ok(Outcome::Pass)
}

fn run_stdio(c: &mut Ctx<'_>) -> CaseResult {
    c.sh("echo hc-out-marker; echo hc-err-marker >&2");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("hc-out-marker"),
        "stdout lacks the marker: {:?}",
        o.stdout
    );
    ensure!(
        o.stderr.contains("hc-err-marker"),
        "stderr lacks the marker: {:?}",
        o.stderr
    );
    ensure!(!o.stdout.contains("hc-err-marker"), "stderr went to stdout");
    Ok(Outcome::Pass)
}

fn run_detach(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.save()?;
    let b = c.bundle_str();
    c.rt_ok(&["run", "--detach", "--bundle", &b, &c.id])?;
    wait_for("the detached program to start", || started(c))?;
    c.expect_status("running")?;
    let pid = c.pid()?;
    c.rt_ok(&["kill", &c.id, "KILL"])?;
    let code = c.wait_exit(pid)?;
    ensure!(
        matches!(code, Some(137) | None),
        "exit code {code:?} after SIGKILL, want 137"
    );
    c.expect_status("stopped")?;
    c.delete()?;
    Ok(Outcome::Pass)
}

fn start_twice(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.create()?;
    c.start()?;
    wait_for("the program to start", || started(c))?;
    c.rt_fails(
        &["start", &c.id],
        "second start (runtime.md: MUST generate an error)",
    )?;
    c.expect_status("running")?;
    let pid = c.pid()?;
    std::fs::write(c.shared.join("stop"), "").context("write stop file")?;
    c.wait_exit(pid)?;
    c.delete()?;
    Ok(Outcome::Pass)
}

fn kill_and_check(c: &mut Ctx<'_>, sig: &str, want: i32) -> CaseResult {
    waiter(c);
    c.create()?;
    c.start()?;
    wait_for("the program to start", || started(c))?;
    let pid = c.pid()?;
    if sig.is_empty() {
        c.rt_ok(&["kill", &c.id])?;
    } else {
        c.rt_ok(&["kill", &c.id, sig])?;
    }
    let code = c.wait_exit(pid)?;
    ensure!(
        matches!(code, Some(x) if x == want) || code.is_none(),
        "exit code {code:?} after kill {sig:?}, want {want}"
    );
    c.expect_status("stopped")?;
    c.delete()?;
    Ok(Outcome::Pass)
}

fn kill_created(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.create()?;
    let pid = c.pid()?;
    c.rt_ok(&["kill", &c.id, "KILL"])?;
    c.wait_exit(pid)?;
    c.expect_status("stopped")?;
    ensure!(
        !started(c),
        "the user program ran although the container was never started"
    );
    c.delete()?;
    Ok(Outcome::Pass)
}

fn kill_all(c: &mut Ctx<'_>) -> CaseResult {
    c.share();
    // A child that ignores nothing: kill --all must reach every process of the container.
    c.sh("sleep 1000 & echo $! > /shared/child; echo started > /shared/started; wait");
    c.create()?;
    c.start()?;
    wait_for("the program to start", || {
        started(c) && c.shared.join("child").exists()
    })?;
    let pid = c.pid()?;
    c.rt_ok(&["kill", "--all", &c.id, "KILL"])?;
    c.wait_exit(pid)?;
    c.expect_status("stopped")?;
    c.delete()?;
    Ok(Outcome::Pass)
}

fn delete_running(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.create()?;
    c.start()?;
    wait_for("the program to start", || started(c))?;
    let pid = c.pid()?;
    c.rt_fails(
        &["delete", &c.id],
        "delete of a running container without --force",
    )?;
    c.expect_status("running")?;
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "process vanished after the refused delete"
    );
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    c.rt_fails(&["state", &c.id], "state after delete --force")?;
    Ok(Outcome::Pass)
}

fn delete_created(c: &mut Ctx<'_>) -> CaseResult {
    // runtime.md: deleting a container that is not stopped MUST have no effect and MUST
    // generate an error; --force (runc CLI) removes it anyway.
    waiter(c);
    c.create()?;
    let pid = c.pid()?;
    let o = c.rt(&["delete", &c.id])?;
    let still = c.status();
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    ensure!(
        !started(c),
        "the user program ran although the container was never started"
    );
    c.rt_fails(&["state", &c.id], "state after delete --force")?;
    ensure!(
        o.code != 0,
        "plain delete of a created (not stopped) container succeeded"
    );
    let still = still.context("the container vanished after the refused delete")?;
    ensure!(
        still == "created",
        "after the refused delete the status is {still:?}"
    );
    Ok(Outcome::Pass)
}

fn exited_container(c: &mut Ctx<'_>) -> anyhow::Result<()> {
    c.sh("true");
    c.create()?;
    let pid = c.pid()?;
    c.start()?;
    c.wait_exit(pid)?;
    c.expect_status("stopped")
}

fn kill_stopped(c: &mut Ctx<'_>) -> CaseResult {
    // runtime.md: a signal to a container that is neither created nor running MUST generate an
    // error and have no effect.
    exited_container(c)?;
    let o = c.rt(&["kill", &c.id, "KILL"])?;
    let st = c.status();
    c.delete()?;
    ensure!(o.code != 0, "kill of a stopped container succeeded");
    ensure!(
        st.ok().as_deref() == Some("stopped"),
        "the stopped container changed after kill"
    );
    Ok(Outcome::Pass)
}

fn start_stopped(c: &mut Ctx<'_>) -> CaseResult {
    exited_container(c)?;
    let o = c.rt(&["start", &c.id])?;
    let st = c.status();
    c.delete()?;
    ensure!(o.code != 0, "start of a stopped container succeeded");
    ensure!(
        st.ok().as_deref() == Some("stopped"),
        "the stopped container changed after start"
    );
    Ok(Outcome::Pass)
}

fn pid_file(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.save()?;
    let b = c.bundle_str();
    let pf = c.dir.join("container.pid");
    let pfs = pf.display().to_string();
    c.rt_ok(&["create", "--bundle", &b, "--pid-file", &pfs, &c.id])?;
    let text = std::fs::read_to_string(&pf).with_context(|| format!("read --pid-file {pfs}"))?;
    let pid = c.pid()?;
    ensure!(
        text.trim() == pid.to_string(),
        "--pid-file holds {text:?}, state pid is {pid}"
    );
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    Ok(Outcome::Pass)
}

fn state_fields(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.cfg["annotations"] = json!({"org.husk.conformance": "yes", "hc.other": "x=y"});
    c.create()?;
    let st = c.state()?;
    let pid = st["pid"].as_i64().unwrap_or(0) as i32;
    let mut errs = Vec::new();
    if !st["ociVersion"]
        .as_str()
        .map(|v| !v.is_empty())
        .unwrap_or(false)
    {
        errs.push(format!("ociVersion missing or empty: {}", st["ociVersion"]));
    }
    if st["id"] != json!(c.id) {
        errs.push(format!("id {} != {}", st["id"], c.id));
    }
    if st["status"] != "created" {
        errs.push(format!("status {}", st["status"]));
    }
    if pid <= 0 {
        errs.push(format!("pid {}", st["pid"]));
    }
    if st["bundle"] != json!(c.bundle_str()) {
        errs.push(format!("bundle {} != {:?}", st["bundle"], c.bundle_str()));
    }
    if st["annotations"] != c.cfg["annotations"] {
        errs.push(format!(
            "annotations {} != {}",
            st["annotations"], c.cfg["annotations"]
        ));
    }
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    if !errs.is_empty() {
        bail!("state JSON: {}", errs.join("; "));
    }
    Ok(Outcome::Pass)
}

fn list(c: &mut Ctx<'_>) -> CaseResult {
    waiter(c);
    c.create()?;
    let pid = c.pid()?;
    let res = (|| -> anyhow::Result<()> {
        let o = c.rt_ok(&["list"])?;
        let line = o
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c.id.as_str()));
        let line =
            line.with_context(|| format!("`list` does not show {}: {:?}", c.id, o.stdout))?;
        ensure!(
            line.contains("created"),
            "`list` line lacks status created: {line:?}"
        );
        let o = c.rt_ok(&["list", "--format", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&o.stdout)
            .with_context(|| format!("`list --format json` is not JSON: {:?}", o.stdout))?;
        let arr = v
            .as_array()
            .context("`list --format json` is not an array")?;
        let me = arr
            .iter()
            .find(|e| e["id"] == json!(c.id))
            .with_context(|| format!("`list --format json` lacks {}", c.id))?;
        ensure!(
            me["status"] == "created",
            "list json status {}",
            me["status"]
        );
        ensure!(
            me["pid"].as_i64() == Some(pid as i64),
            "list json pid {} != {pid}",
            me["pid"]
        );
        Ok(())
    })();
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    res?;
    Ok(Outcome::Pass)
}

fn config_after_create(c: &mut Ctx<'_>) -> CaseResult {
    // runtime.md: changes to config.json after create MUST NOT affect the container.
    c.share();
    c.sh("echo original > /shared/out");
    c.create()?;
    let pid = c.pid()?;
    c.sh("echo changed > /shared/out");
    c.save()?;
    c.start()?;
    c.wait_exit(pid)?;
    let out = std::fs::read_to_string(c.shared.join("out")).unwrap_or_default();
    c.delete()?;
    ensure!(
        out.trim() == "original",
        "the container ran the edited config: /shared/out = {out:?}"
    );
    Ok(Outcome::Pass)
}

fn run_stdin(c: &mut Ctx<'_>) -> CaseResult {
    let input = c.dir.join("stdin.txt");
    std::fs::write(&input, "hc-stdin-line-1\nhc-stdin-line-2\n").context("write stdin.txt")?;
    c.set_args(&["cat"]);
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let o = c.rt_io(&["run", "--bundle", &b, &id], Some(&input), None)?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout == "hc-stdin-line-1\nhc-stdin-line-2\n",
        "stdin was not passed through to the container: stdout {:?}",
        o.stdout
    );
    Ok(Outcome::Pass)
}

fn log_json(c: &mut Ctx<'_>) -> CaseResult {
    // runc CLI: --log FILE --log-format json writes one JSON object per line; a failing create
    // must log its error there.
    c.cfg["root"]["path"] = json!("no-such-rootfs");
    c.save()?;
    let log = c.dir.join("runtime-log.json");
    let logs = log.display().to_string();
    let b = c.bundle_str();
    let id = c.id.clone();
    let o = c.rt(&[
        "--log",
        &logs,
        "--log-format",
        "json",
        "create",
        "--bundle",
        &b,
        &id,
    ])?;
    ensure!(o.code != 0, "create with a missing rootfs succeeded");
    let text = std::fs::read_to_string(&log)
        .with_context(|| format!("the runtime wrote no log file {logs}"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        !lines.is_empty(),
        "the log file is empty after a failed create"
    );
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).with_context(|| format!("log line is not JSON: {l:?}"))?;
        ensure!(
            v.is_object() && v["msg"].is_string(),
            "log line without a \"msg\" string: {l}"
        );
    }
    Ok(Outcome::Pass)
}

fn spec_cmd(c: &mut Ctx<'_>) -> CaseResult {
    // `spec` writes a config.json into the current directory that runs as is (after making it
    // non-interactive) with a plain rootfs.
    std::fs::remove_file(c.bundle.join("config.json")).ok();
    let bundle = c.bundle.clone();
    c.rt_io(&["spec"], None, Some(&bundle)).and_then(|o| {
        if o.ok() {
            Ok(o)
        } else {
            anyhow::bail!("{}", o.describe())
        }
    })?;
    let text = std::fs::read_to_string(bundle.join("config.json"))
        .context("`spec` wrote no config.json")?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).context("`spec` output is not JSON")?;
    ensure!(
        cfg["ociVersion"].is_string(),
        "generated config has no ociVersion"
    );
    ensure!(
        cfg["root"]["path"] == "rootfs",
        "generated root.path is {}",
        cfg["root"]["path"]
    );
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["sh", "-c", "echo hc-spec-ok"]);
    c.cfg = cfg;
    let o = c.run()?;
    ensure!(
        o.ok() && o.stdout.trim() == "hc-spec-ok",
        "running the generated config: {}",
        o.describe()
    );
    Ok(Outcome::Pass)
}
