//! OCI hooks: run with the container state on stdin, their env and args, and their timeout.
use crate::error::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run one hook to completion; an error names the phase, the path and what went wrong
/// (exit status, signal, timeout), with the hook's stderr.
pub fn run(phase: &'static str, hook: &Hook, state_json: &str) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        phase,
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first);
        cmd.args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
            Some(s) => break s,
            None => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {}s",
                        hook.timeout().unwrap_or(0)
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(fail(format!("{status}: {}", err.trim())));
    }
    Ok(())
}

/// Run a list of hooks in order, stopping at the first failure.
pub fn run_all(phase: &'static str, hooks: &Option<Vec<Hook>>, state_json: &str) -> Result<()> {
    for h in hooks.iter().flatten() {
        tracing::debug!(phase, path = %h.path().display(), "running hook");
        run(phase, h, state_json)?;
    }
    Ok(())
}

/// Run every hook of a phase whose failures are only warnings (poststart, poststop).
pub fn run_all_warn(phase: &'static str, hooks: &Option<Vec<Hook>>, state_json: &str) {
    for h in hooks.iter().flatten() {
        if let Err(e) = run(phase, h, state_json) {
            tracing::warn!("{e}");
        }
    }
}
