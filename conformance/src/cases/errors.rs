//! runtime.md "Errors": an operation that fails MUST leave the environment as if it had never
//! been attempted. Each case expects a non-zero exit; the runner's after-case check then
//! verifies no state, mount, cgroup or process is left behind.

use super::{case, Case};
use crate::ctx::{CaseResult, Ctx, Outcome};
use anyhow::{ensure, Context};
use serde_json::json;

pub fn cases() -> Vec<Case> {
    vec![
        case("error.duplicate-id", duplicate_id),
        case("error.unknown-id-state", |c| unknown(c, "state")),
        case("error.unknown-id-start", |c| unknown(c, "start")),
        case("error.unknown-id-kill", |c| unknown(c, "kill")),
        case("error.unknown-id-delete", |c| unknown(c, "delete")),
        case(
            "error.unknown-id-delete-force-succeeds",
            unknown_delete_force,
        ),
        case("error.malformed-json", malformed_json),
        case("error.missing-root-path", missing_root_path),
        case("error.nonexistent-root-path", nonexistent_root),
        case("error.unknown-namespace-type", unknown_ns),
        case("error.duplicate-namespace-type", duplicate_ns),
        case("error.namespace-path-of-wrong-type", ns_wrong_type),
        case("error.namespace-path-missing", ns_path_missing),
        case("error.unknown-signal", unknown_signal),
        case("error.id-empty", |c| bad_id(c, "")),
        case("error.id-with-slash", |c| bad_id(c, "SUB/dir")),
        case("error.id-dot-dot", |c| bad_id(c, "..")),
        case("error.id-dot-dot-slash", |c| bad_id(c, "../ESCAPE")),
        case("error.args0-not-found", args0_missing),
        case("error.no-args", no_args),
        case("error.cwd-not-found-refused-or-created", cwd_missing),
        case("error.cwd-relative", cwd_relative),
        case("error.missing-bundle", missing_bundle),
    ]
}

/// create must fail; afterwards `state ID` must fail too.
fn create_must_fail(c: &mut Ctx<'_>, what: &str) -> CaseResult {
    let b = c.bundle_str();
    c.rt_fails(&["create", "--bundle", &b, &c.id], what)?;
    c.rt_fails(
        &["state", &c.id],
        &format!("{what}: state after the failed create"),
    )?;
    Ok(Outcome::Pass)
}

fn duplicate_id(c: &mut Ctx<'_>) -> CaseResult {
    c.sh("sleep 1000");
    c.create()?;
    let pid = c.pid()?;
    let b = c.bundle_str();
    let r = c.rt_fails(
        &["create", "--bundle", &b, &c.id],
        "second create with the same ID",
    );
    let status = c.status();
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    r?;
    let status = status.context("the first container is gone after the refused duplicate")?;
    ensure!(
        status == "created",
        "the first container changed to {status:?}"
    );
    Ok(Outcome::Pass)
}

fn unknown(c: &mut Ctx<'_>, op: &str) -> CaseResult {
    let id = format!("{}-does-not-exist", c.id);
    let args: Vec<&str> = match op {
        "kill" => vec!["kill", &id, "KILL"],
        _ => vec![op, &id],
    };
    c.rt_fails(&args, &format!("{op} of an unknown ID"))?;
    Ok(Outcome::Pass)
}

/// runc and crun: `delete --force` of an unknown ID succeeds (podman and containerd call it after
/// a checkpoint or a failed create has already removed the container).
fn unknown_delete_force(c: &mut Ctx<'_>) -> CaseResult {
    let id = format!("{}-does-not-exist", c.id);
    c.rt_ok(&["delete", "--force", &id])?;
    // A bad ID is still refused, forced or not.
    c.rt_fails(
        &["delete", "--force", "../hc-escape"],
        "delete --force of ID ../hc-escape",
    )?;
    Ok(Outcome::Pass)
}

fn malformed_json(c: &mut Ctx<'_>) -> CaseResult {
    c.save_raw("{ \"ociVersion\": \"1.0.2\", \"process\": [ this is not json")?;
    create_must_fail(c, "create with a malformed config.json")
}

fn missing_root_path(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["root"] = json!({"readonly": true});
    c.save()?;
    create_must_fail(c, "create without root.path")
}

fn nonexistent_root(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["root"]["path"] = json!("no-such-rootfs");
    c.save()?;
    create_must_fail(c, "create with a root.path that does not exist")
}

fn unknown_ns(c: &mut Ctx<'_>) -> CaseResult {
    if let Some(a) = c.cfg["linux"]["namespaces"].as_array_mut() {
        a.push(json!({"type": "hc-no-such-namespace"}));
    }
    c.save()?;
    create_must_fail(c, "create with an unknown namespace type")
}

fn duplicate_ns(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: a namespace type MUST NOT be duplicated.
    if let Some(a) = c.cfg["linux"]["namespaces"].as_array_mut() {
        a.push(json!({"type": "uts"}));
    }
    c.save()?;
    create_must_fail(c, "create with the uts namespace listed twice")
}

fn ns_wrong_type(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: MUST generate an error if path is not a namespace of type `type`.
    for n in c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "network" {
            *n = json!({"type": "network", "path": "/proc/self/ns/uts"});
        }
    }
    c.save()?;
    create_must_fail(
        c,
        "create with a network namespace path that is a uts namespace",
    )
}

fn ns_path_missing(c: &mut Ctx<'_>) -> CaseResult {
    let p = c.dir.join("no-such-ns").display().to_string();
    for n in c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "network" {
            *n = json!({"type": "network", "path": p});
        }
    }
    c.save()?;
    create_must_fail(c, "create with a namespace path that does not exist")
}

fn unknown_signal(c: &mut Ctx<'_>) -> CaseResult {
    c.sh("sleep 1000");
    c.create()?;
    let pid = c.pid()?;
    let r = c.rt_fails(
        &["kill", &c.id, "SIGHCNOSUCH"],
        "kill with an unknown signal name",
    );
    let r2 = c.rt_fails(
        &["kill", &c.id, "99999"],
        "kill with an out-of-range signal number",
    );
    let status = c.status();
    c.rt_ok(&["delete", "--force", &c.id])?;
    c.wait_exit(pid)?;
    r?;
    r2?;
    let status = status?;
    ensure!(
        status == "created",
        "the container changed to {status:?} after refused kills"
    );
    Ok(Outcome::Pass)
}

fn bad_id(c: &mut Ctx<'_>, id: &str) -> CaseResult {
    // Unique names for what a broken runtime might create, so parallel runs do not collide.
    let esc_name = format!("{}-escape", c.id);
    let sub_name = format!("{}-sub", c.id);
    let id = id.replace("ESCAPE", &esc_name).replace("SUB", &sub_name);
    let id = id.as_str();
    c.sh("true");
    c.save()?;
    let root = c.rt.root.clone();
    let parent = root.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let escape = parent.join(&esc_name);
    let had_escape = escape.exists();
    let before_sub = root.join(&sub_name).exists();
    let b = c.bundle_str();
    let o = c.rt(&["create", "--bundle", &b, id])?;
    if o.code == 0 {
        // Clean up what the runtime made of it, then fail.
        let _ = c.rt(&["delete", "--force", id]);
        anyhow::bail!("create accepted the invalid ID {id:?}");
    }
    let made_escape = escape.exists() && !had_escape;
    let made_sub = !before_sub && root.join(&sub_name).exists();
    if made_escape {
        let _ = std::fs::remove_dir_all(&escape);
    }
    if made_sub {
        let _ = std::fs::remove_dir_all(root.join(&sub_name));
    }
    ensure!(
        !made_escape,
        "create with ID {id:?} created {}",
        escape.display()
    );
    ensure!(
        !made_sub,
        "create with ID {id:?} created {}/{sub_name}",
        root.display()
    );
    Ok(Outcome::Pass)
}

fn args0_missing(c: &mut Ctx<'_>) -> CaseResult {
    // The error may come from create or from start; the user program cannot run either way.
    c.set_args(&["/hc-no-such-binary"]);
    c.save()?;
    let b = c.bundle_str();
    let o = c.rt(&["create", "--bundle", &b, &c.id])?;
    if o.code != 0 {
        c.rt_fails(&["state", &c.id], "state after the failed create")?;
        return Ok(Outcome::Pass);
    }
    let pid = c.pid()?;
    let s = c.rt(&["start", &c.id])?;
    let after = c.state();
    let _ = c.rt(&["delete", "--force", &c.id]);
    let _ = c.wait_exit(pid);
    if s.code == 0 {
        let st = after.map(|s| s["status"].to_string()).unwrap_or_default();
        anyhow::bail!("neither create nor start reported the missing process.args[0] (status after start: {st})");
    }
    Ok(Outcome::Pass)
}

fn no_args(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: process.args is REQUIRED (at least one entry on POSIX).
    c.cfg["process"]["args"] = json!([]);
    c.save()?;
    create_must_fail(c, "create with an empty process.args")
}

fn cwd_missing(c: &mut Ctx<'_>) -> CaseResult {
    // config.md only says cwd is the working directory to set. A runtime may refuse a cwd that
    // does not exist (then nothing may be left behind) or create it; it must never run the
    // process elsewhere.
    c.cfg["process"]["cwd"] = json!("/hc-no-such-dir/sub");
    c.sh("pwd");
    let o = c.run()?;
    if o.code != 0 {
        c.rt_fails(&["state", &c.id], "state after the failed run")?;
        return Ok(Outcome::Pass);
    }
    ensure!(
        o.stdout.trim() == "/hc-no-such-dir/sub",
        "the process ran in {:?} instead of the configured cwd",
        o.stdout.trim()
    );
    Ok(Outcome::Pass)
}

fn cwd_relative(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: cwd MUST be an absolute path.
    c.cfg["process"]["cwd"] = json!("etc");
    c.sh("pwd");
    c.save()?;
    create_must_fail(c, "create with a relative process.cwd")
}

fn missing_bundle(c: &mut Ctx<'_>) -> CaseResult {
    let b = c.dir.join("no-such-bundle").display().to_string();
    c.rt_fails(
        &["create", "--bundle", &b, &c.id],
        "create with a bundle dir that does not exist",
    )?;
    c.rt_fails(&["state", &c.id], "state after the failed create")?;
    Ok(Outcome::Pass)
}
