//! config-linux.md "Seccomp": actions, errnoRet/defaultErrnoRet, argument comparisons,
//! architectures, and refusal of what cannot be compiled. The filters are observed through the
//! behaviour of busybox applets inside the container.

use super::{case, Case};
use crate::ctx::{CaseResult, Ctx, Outcome};
use anyhow::ensure;
use serde_json::{json, Value};

pub fn cases() -> Vec<Case> {
    vec![
        case("seccomp.errno-ret-specific", errno_specific),
        case("seccomp.errno-ret-defaults-to-EPERM", default_errno),
        case("seccomp.arg-eq", arg_eq),
        case("seccomp.arg-masked-eq", arg_masked_eq),
        case("seccomp.kill-process", kill_process),
        case("seccomp.trap", trap),
        case("seccomp.rules-first-match-wins-over-default", precedence),
        case("seccomp.unknown-action-refused", unknown_action),
        case("seccomp.unknown-arch-refused-or-ignored", unknown_arch),
    ]
}

const ARCHES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

fn profile(default: &str, syscalls: Value) -> Value {
    json!({"defaultAction": default, "architectures": ARCHES, "syscalls": syscalls})
}

/// Run `script` under `seccomp`; returns stdout (requires exit 0).
fn run_under(c: &mut Ctx<'_>, seccomp: Value, script: &str) -> anyhow::Result<String> {
    c.cfg["linux"]["seccomp"] = seccomp;
    c.cfg["root"]["readonly"] = json!(false);
    c.sh(script);
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    Ok(o.stdout.trim().to_string())
}

fn errno_specific(c: &mut Ctx<'_>) -> CaseResult {
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]),
    );
    let out = run_under(c, p, "mkdir /tmp/d 2>&1; true")?;
    ensure!(
        out.contains("Permission denied"),
        "mkdir with errnoRet 13 (EACCES): {out:?}"
    );
    Ok(Outcome::Pass)
}

fn default_errno(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md: errnoRet, if not specified, defaults to EPERM.
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
    );
    let out = run_under(c, p, "mkdir /tmp/d 2>&1; true")?;
    ensure!(
        out.contains("Operation not permitted"),
        "ERRNO without errnoRet must fail with EPERM: {out:?}"
    );
    Ok(Outcome::Pass)
}

fn arg_eq(c: &mut Ctx<'_>) -> CaseResult {
    // chmod to 0700 is refused, other modes are not (chmod: mode is args[1]; fchmodat: args[2]).
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 448, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 2, "value": 448, "op": "SCMP_CMP_EQ"}]}
        ]),
    );
    let out = run_under(
        c,
        p,
        "touch /tmp/f; chmod 700 /tmp/f 2>/dev/null && echo a-set; chmod 755 /tmp/f 2>/dev/null && echo b-set; true",
    )?;
    ensure!(
        out == "b-set",
        "SCMP_CMP_EQ on the mode: {out:?}, want only b-set"
    );
    Ok(Outcome::Pass)
}

fn arg_masked_eq(c: &mut Ctx<'_>) -> CaseResult {
    // Refuse any mode with group-write set: (mode & 0o020) == 0o020.
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 16, "valueTwo": 16, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 2, "value": 16, "valueTwo": 16, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]),
    );
    let out = run_under(
        c,
        p,
        "touch /tmp/f; chmod 770 /tmp/f 2>/dev/null && echo a-set; chmod 750 /tmp/f 2>/dev/null && echo b-set; chmod 2775 /tmp/f 2>/dev/null && echo c-set; true",
    )?;
    ensure!(
        out == "b-set",
        "SCMP_CMP_MASKED_EQ (mode & 020 == 020): {out:?}, want only b-set"
    );
    Ok(Outcome::Pass)
}

fn sigsys_case(c: &mut Ctx<'_>, action: &str) -> CaseResult {
    // sync(2): the shell never calls it, the `sync` applet does (uname(2) would not do: the
    // shell calls it itself).
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["sync"], "action": action}]),
    );
    // In a subshell: its death by SIGSYS shows as status 159 (128 + 31) while the outer shell
    // survives.
    let out = run_under(c, p, "(sync >/dev/null 2>&1); echo status=$?")?;
    ensure!(
        out == "status=159",
        "sync under {action}: {out:?}, want status=159 (SIGSYS)"
    );
    Ok(Outcome::Pass)
}

fn kill_process(c: &mut Ctx<'_>) -> CaseResult {
    sigsys_case(c, "SCMP_ACT_KILL_PROCESS")
}

fn trap(c: &mut Ctx<'_>) -> CaseResult {
    sigsys_case(c, "SCMP_ACT_TRAP")
}

fn precedence(c: &mut Ctx<'_>) -> CaseResult {
    // Rules for different syscalls coexist; a syscall not listed gets the default action.
    let p = profile(
        "SCMP_ACT_ALLOW",
        json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
        ]),
    );
    let out = run_under(
        c,
        p,
        "mkdir /tmp/a 2>&1; rmdir /tmp 2>&1; touch /tmp/f && echo touch-ok; true",
    )?;
    ensure!(
        out.contains("Operation not permitted")
            && out.contains("Permission denied")
            && out.contains("touch-ok"),
        "mixed rules: {out:?}"
    );
    Ok(Outcome::Pass)
}

fn unknown_action(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["seccomp"] = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir"], "action": "SCMP_ACT_HC_NO_SUCH"}]),
    );
    c.sh("true");
    let o = c.run()?;
    ensure!(
        o.code != 0,
        "a seccomp rule with an unknown action was accepted"
    );
    Ok(Outcome::Pass)
}

fn unknown_arch(c: &mut Ctx<'_>) -> CaseResult {
    // An unknown architecture must not silently weaken the filter: refusal, or the rules for
    // the native architecture still apply.
    c.cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_HC_NO_SUCH"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    c.cfg["root"]["readonly"] = json!(false);
    c.sh("mkdir /tmp/d 2>&1; true");
    let o = c.run()?;
    if o.code != 0 {
        return Ok(Outcome::Pass);
    }
    ensure!(
        o.stdout.contains("Operation not permitted"),
        "an unknown architecture disabled the filter: {:?}",
        o.stdout.trim()
    );
    Ok(Outcome::Pass)
}
