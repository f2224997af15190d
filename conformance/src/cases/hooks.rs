//! config.md "POSIX-platform Hooks" and runtime.md "Lifecycle": which hooks run when, in what
//! order, with the state on stdin, their args/env, failures and timeouts.

use super::{case, Case};
use crate::ctx::{CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "hooks.create-runs-prestart-createRuntime-createContainer",
            |c| order(c, Check::Create),
        ),
        case("hooks.start-runs-startContainer-then-poststart", |c| {
            order(c, Check::Start)
        }),
        case("hooks.delete-runs-poststop", |c| order(c, Check::Delete)),
        case("hooks.args-env-and-state-on-stdin", |c| {
            order(c, Check::Payload)
        }),
        case(
            "hooks.createRuntime-failure-aborts-create",
            create_runtime_fails,
        ),
        case("hooks.prestart-failure-aborts-create", prestart_fails),
        case("hooks.timeout-enforced", timeout),
        case("hooks.poststop-failure-is-ignored", poststop_fails),
    ]
}

/// A hook that appends `NAME $0 $HC_HOOKVAR <state JSON>` to the shared log. It runs either in
/// the runtime namespace (host paths) or in the container's (then /shared is the same dir).
fn hook(c: &Ctx<'_>, name: &str) -> Value {
    let log = c.shared.join("hooks.log").display().to_string();
    let shared = c.shared.display().to_string();
    let script = format!(
        "f='{log}'; [ -d '{shared}' ] || f=/shared/hooks.log; s=$(cat | tr -d '\\n'); echo \"{name} $0 $HC_HOOKVAR $s\" >> \"$f\""
    );
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", script, "hc-arg0"],
        "env": [format!("HC_ID={}", c.id), "HC_HOOKVAR=hc-env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

fn log_lines(c: &Ctx<'_>) -> Vec<String> {
    std::fs::read_to_string(c.shared.join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn names(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split(' ').next().map(String::from))
        .collect()
}

#[derive(PartialEq, Clone, Copy)]
enum Check {
    Create,
    Start,
    Delete,
    Payload,
}

/// Run the full lifecycle with one marker hook per stage; assert one aspect of it.
fn order(c: &mut Ctx<'_>, check: Check) -> CaseResult {
    c.share();
    let mut hooks = serde_json::Map::new();
    for n in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        hooks.insert(n.into(), json!([hook(c, n)]));
    }
    c.cfg["hooks"] = Value::Object(hooks);
    c.sh("true");
    c.create()?;
    let pid = c.pid()?;
    let after_create = names(&log_lines(c));
    c.start()?;
    let after_start = names(&log_lines(c));
    c.wait_exit(pid)?;
    let before_delete = names(&log_lines(c));
    c.delete()?;
    let lines = log_lines(c);
    let all = names(&lines);
    match check {
        Check::Create => ensure!(
            after_create == ["prestart", "createRuntime", "createContainer"],
            "hooks run by create: {after_create:?}, want [prestart, createRuntime, createContainer]"
        ),
        Check::Start => {
            let new: Vec<&String> = after_start
                .iter()
                .filter(|n| !after_create.contains(n))
                .collect();
            ensure!(
                new == ["startContainer", "poststart"],
                "hooks run by start: {new:?}, want [startContainer, poststart] (poststart before start returns); \
                 after create: {after_create:?}"
            );
        }
        Check::Delete => {
            ensure!(
                !before_delete.iter().any(|n| n == "poststop"),
                "poststop ran before delete"
            );
            ensure!(
                all.last().map(|s| s.as_str()) == Some("poststop"),
                "hooks after delete: {all:?}, want poststop last"
            );
            ensure!(
                all.iter().filter(|n| *n == "poststop").count() == 1,
                "poststop ran more than once: {all:?}"
            );
        }
        Check::Payload => {
            ensure!(all.len() == 6, "expected 6 hook runs, got {all:?}");
            for l in &lines {
                let mut it = l.splitn(4, ' ');
                let (name, arg0, envv, state) = (
                    it.next().unwrap_or(""),
                    it.next().unwrap_or(""),
                    it.next().unwrap_or(""),
                    it.next().unwrap_or(""),
                );
                ensure!(
                    arg0 == "hc-arg0",
                    "{name}: hook args not passed (got $0 {arg0:?})"
                );
                ensure!(
                    envv == "hc-env",
                    "{name}: hook env not passed (got HC_HOOKVAR {envv:?})"
                );
                let st: Value = serde_json::from_str(state)
                    .with_context(|| format!("{name}: stdin is not the state JSON: {state:?}"))?;
                ensure!(st["id"] == json!(c.id), "{name}: state id {}", st["id"]);
                ensure!(
                    st["bundle"] == json!(c.bundle_str()),
                    "{name}: state bundle {}",
                    st["bundle"]
                );
                ensure!(
                    st["ociVersion"].is_string(),
                    "{name}: state without ociVersion"
                );
                ensure!(st["status"].is_string(), "{name}: state without status");
                if matches!(name, "startContainer" | "poststart") {
                    ensure!(
                        st["pid"].as_i64().unwrap_or(0) > 0,
                        "{name}: state pid {}",
                        st["pid"]
                    );
                }
            }
        }
    }
    Ok(Outcome::Pass)
}

fn failing(c: &mut Ctx<'_>, stage: &str) -> CaseResult {
    c.share();
    let log = c.shared.join("hooks.log");
    let logs = log.display().to_string();
    let mut hooks = serde_json::Map::new();
    hooks.insert(
        stage.into(),
        json!([{"path": "/bin/sh", "args": ["sh", "-c", "exit 7"], "env": [format!("HC_ID={}", c.id)]}]),
    );
    // A poststop hook must still be called when create fails after the runtime env exists?
    // Not required; only record whether the user program ran.
    c.cfg["hooks"] = Value::Object(hooks);
    c.sh(&format!(
        "echo ran >> /shared/{}",
        log.file_name().and_then(|f| f.to_str()).unwrap_or("x")
    ));
    c.save()?;
    let b = c.bundle_str();
    c.rt_fails(
        &["create", "--bundle", &b, &c.id],
        &format!("create with a failing {stage} hook"),
    )?;
    c.rt_fails(&["state", &c.id], "state after the failed create")?;
    if std::fs::read_to_string(&log)
        .map(|s| s.contains("ran"))
        .unwrap_or(false)
    {
        bail!("the user program ran although the {stage} hook failed ({logs})");
    }
    Ok(Outcome::Pass)
}

fn create_runtime_fails(c: &mut Ctx<'_>) -> CaseResult {
    failing(c, "createRuntime")
}

fn prestart_fails(c: &mut Ctx<'_>) -> CaseResult {
    failing(c, "prestart")
}

fn timeout(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: timeout is the number of seconds before aborting the hook. A hook sleeping 8s
    // with timeout 1 must make create fail (and must not be left running).
    let Some(sleep) = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return Ok(Outcome::Skip("no sleep binary on the host".into()));
    };
    c.cfg["hooks"] = json!({"createRuntime": [{"path": sleep, "args": ["sleep", "8"], "timeout": 1,
                                               "env": [format!("HC_ID={}", c.id)]}]});
    c.sh("true");
    c.save()?;
    let b = c.bundle_str();
    c.rt_fails(
        &["create", "--bundle", &b, &c.id],
        "create with a createRuntime hook exceeding its timeout",
    )?;
    c.rt_fails(&["state", &c.id], "state after the failed create")?;
    Ok(Outcome::Pass)
}

fn poststop_fails(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: if a poststop hook fails, the runtime MUST log a warning, but the remaining
    // hooks and lifecycle continue.
    c.share();
    let fail = json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 7"], "env": [format!("HC_ID={}", c.id)]});
    c.cfg["hooks"] = json!({"poststop": [fail, hook(c, "poststop")]});
    c.sh("true");
    c.create()?;
    let pid = c.pid()?;
    c.start()?;
    c.wait_exit(pid)?;
    let o = c.rt(&["delete", &c.id])?;
    let gone = c.rt(&["state", &c.id])?.code != 0;
    ensure!(
        gone,
        "the container still exists after delete with a failing poststop hook ({})",
        o.describe()
    );
    ensure!(
        names(&log_lines(c)) == ["poststop"],
        "the poststop hook after the failing one did not run: {:?}",
        log_lines(c)
    );
    Ok(Outcome::Pass)
}
