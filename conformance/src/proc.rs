//! Child processes: a subreaper thread that reaps every child (including containers orphaned to
//! us when the runtime exits) and records exit statuses, plus command execution with timeouts.
//!
//! std's `Child::wait` must never be used here: the reaper thread owns `waitpid(-1)`.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Reaper {
    /// pid -> exit code (128+signal for a signalled process).
    exited: Mutex<HashMap<i32, i32>>,
    exited_cv: Condvar,
    /// Bumped on every spawn so the reaper wakes up when it had no children.
    spawned: Mutex<u64>,
    spawned_cv: Condvar,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| Reaper {
        exited: Mutex::new(HashMap::new()),
        exited_cv: Condvar::new(),
        spawned: Mutex::new(0),
        spawned_cv: Condvar::new(),
    })
}

fn decode(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

/// Become a child subreaper and start the reaping thread.
pub fn init_subreaper() -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    let r = reaper();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            let generation = r.spawned.lock().map(|g| *g).unwrap_or(0);
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer; blocks until any child changes state.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                if let Ok(mut m) = r.exited.lock() {
                    m.insert(pid, decode(status));
                }
                r.exited_cv.notify_all();
            } else {
                // ECHILD: nothing to wait for until something is spawned.
                if let Ok(g) = r.spawned.lock() {
                    let _ = r
                        .spawned_cv
                        .wait_timeout_while(g, Duration::from_millis(200), |g| *g == generation);
                }
            }
        })
        .context("spawning the reaper thread")?;
    Ok(())
}

fn note_spawn() {
    let r = reaper();
    if let Ok(mut g) = r.spawned.lock() {
        *g += 1;
    }
    r.spawned_cv.notify_all();
}

/// Wait for `pid` to exit. Returns Some(code) if it was our child (or an orphan adopted by us),
/// None if it disappeared without us seeing its status, Err on timeout.
pub fn wait_pid(pid: i32, timeout: Duration) -> Result<Option<i32>> {
    let r = reaper();
    let deadline = Instant::now() + timeout;
    let mut m = r
        .exited
        .lock()
        .map_err(|_| anyhow::anyhow!("reaper state poisoned"))?;
    loop {
        if let Some(code) = m.remove(&pid) {
            return Ok(Some(code));
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Give the reaper a moment in case it is about to record it.
            let (g, _) = r
                .exited_cv
                .wait_timeout(m, Duration::from_millis(20))
                .map_err(|_| anyhow::anyhow!("reaper state poisoned"))?;
            m = g;
            return Ok(m.remove(&pid));
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("pid {pid} still alive after {timeout:?}");
        }
        let step = (deadline - now).min(Duration::from_millis(50));
        let (g, _) = r
            .exited_cv
            .wait_timeout(m, step)
            .map_err(|_| anyhow::anyhow!("reaper state poisoned"))?;
        m = g;
    }
}

/// Result of one command.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub cmdline: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0 && !self.timed_out
    }
    /// A short description for failure messages.
    pub fn describe(&self) -> String {
        let mut err = self.stderr.trim().to_string();
        if err.len() > 600 {
            let cut = err.len() - 600;
            let cut = (cut..err.len())
                .find(|i| err.is_char_boundary(*i))
                .unwrap_or(cut);
            err = format!("...{}", &err[cut..]);
        }
        format!(
            "`{}` exited {}{}{}",
            self.cmdline,
            self.code,
            if self.timed_out {
                " (timed out, killed)"
            } else {
                ""
            },
            if err.is_empty() {
                String::new()
            } else {
                format!(", stderr: {err}")
            }
        )
    }
}

/// How to run one command.
pub struct Spec<'a> {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    pub timeout: Duration,
    /// (target fd, file) pairs installed in the child (without CLOEXEC).
    pub extra_fds: Vec<(i32, &'a File)>,
    /// stdin from this file (default /dev/null).
    pub stdin: Option<&'a Path>,
    /// Working directory (default: the runner's).
    pub cwd: Option<&'a Path>,
}

pub fn run(spec: Spec<'_>) -> Result<Out> {
    let so =
        File::create(spec.stdout).with_context(|| format!("create {}", spec.stdout.display()))?;
    let se =
        File::create(spec.stderr).with_context(|| format!("create {}", spec.stderr.display()))?;
    let stdin = match spec.stdin {
        Some(p) => Stdio::from(File::open(p).with_context(|| format!("open {}", p.display()))?),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&spec.program);
    if let Some(d) = spec.cwd {
        cmd.current_dir(d);
    }
    cmd.args(&spec.args)
        .stdin(stdin)
        .stdout(so)
        .stderr(se)
        .process_group(0);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let fds: Vec<(i32, i32)> = spec
        .extra_fds
        .iter()
        .map(|(t, f)| (*t, std::os::fd::AsRawFd::as_raw_fd(*f)))
        .collect();
    if !fds.is_empty() {
        let mut fds = fds;
        // SAFETY: the closure only calls fcntl/dup2/close (async-signal-safe) and writes into
        // a vector allocated before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || install_fds(&mut fds));
        }
    }
    let cmdline = std::iter::once(&spec.program)
        .chain(spec.args.iter())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    note_spawn();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", spec.program.to_string_lossy()))?;
    let pid = child.id() as i32;
    drop(child);
    let (code, timed_out) = match wait_pid(pid, spec.timeout) {
        Ok(Some(c)) => (c, false),
        Ok(None) => (-1, false),
        Err(_) => {
            // SAFETY: kill of the process group we created for this child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let c = wait_pid(pid, Duration::from_secs(10))
                .ok()
                .flatten()
                .unwrap_or(-1);
            (c, true)
        }
    };
    let stdout = std::fs::read_to_string(spec.stdout).unwrap_or_default();
    let stderr = std::fs::read_to_string(spec.stderr).unwrap_or_default();
    Ok(Out {
        code,
        stdout,
        stderr,
        timed_out,
        cmdline,
    })
}

/// Install `fds` ((target, source) pairs) in the calling process so that each target fd refers
/// to its source's file without close-on-exec, whatever the numbers: a source may equal another
/// pair's target (the runner's files get whatever fd numbers are free, and cases run in parallel).
/// Every source is first duplicated above the highest target (close-on-exec), then each copy is
/// dup2'd into place, so no dup2 can overwrite a source still to be read. The sources in `fds`
/// are replaced by the copies. Runs between fork and exec: only async-signal-safe calls.
fn install_fds(fds: &mut [(i32, i32)]) -> std::io::Result<()> {
    let above = fds.iter().map(|(t, _)| *t).max().unwrap_or(0) + 1;
    for (_, src) in fds.iter_mut() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd number; the result is a new fd we own.
        let copy = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, above) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *src = copy;
    }
    for (target, copy) in fds.iter() {
        // SAFETY: dup2 between fd numbers; the new target fd has close-on-exec clear.
        if unsafe { libc::dup2(*copy, *target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (_, copy) in fds.iter() {
        // SAFETY: closing the copies made above (close-on-exec anyway).
        unsafe { libc::close(*copy) };
    }
    Ok(())
}

/// Spawn a long-running helper (e.g. `unshare ... sleep`) and return its pid; the reaper
/// collects it after the caller kills it.
pub fn spawn_helper(program: &str, args: &[&str]) -> Result<i32> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    note_spawn();
    let child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    Ok(child.id() as i32)
}

pub fn kill_wait(pid: i32) {
    // SAFETY: plain kill(2) on a pid we spawned.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = wait_pid(pid, Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// A file holding `text`, kept open (its fd number is whatever is free).
    fn file_with(dir: &Path, name: &str, text: &str) -> File {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        File::open(&p).unwrap()
    }

    /// What fds `targets` hold in a child after `install_fds(pairs)`, as "fd=content" lines.
    fn child_sees(pairs: Vec<(i32, i32)>, targets: &[i32]) -> String {
        let script: String = targets
            .iter()
            .map(|t| format!("printf '{t}=%s\\n' \"$(cat /proc/self/fd/{t})\"; "))
            .collect();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        let mut pairs = pairs;
        // SAFETY: install_fds only makes async-signal-safe calls (see its comment).
        unsafe {
            cmd.pre_exec(move || install_fds(&mut pairs));
        }
        // The reaper thread is not running in unit tests: std's wait is fine here.
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn preserved_fds_land_right_when_sources_collide_with_targets() {
        let dir = tempfile_dir("collide");
        let a = file_with(&dir, "a", "A");
        let b = file_with(&dir, "b", "B");
        let c = file_with(&dir, "c", "C");
        let (fa, fb, fc) = (a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd());
        // A rotation: every source is another pair's target. The old in-order dup2 turned all
        // three into A.
        let got = child_sees(vec![(fb, fa), (fc, fb), (fa, fc)], &[fa, fb, fc]);
        assert_eq!(got, format!("{fa}=C\n{fb}=A\n{fc}=B\n"));
        // A swap plus a source already in place (it must lose close-on-exec).
        let got = child_sees(vec![(fa, fb), (fb, fa), (fc, fc)], &[fa, fb, fc]);
        assert_eq!(got, format!("{fa}=B\n{fb}=A\n{fc}=C\n"));
        drop((a, b, c));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn preserved_fds_at_low_targets_from_high_sources() {
        let dir = tempfile_dir("low");
        let three = file_with(&dir, "3", "three");
        let four = file_with(&dir, "4", "four");
        // The preserve-fds case: targets 3 and 4, wherever the runner's files happen to be
        // (one of them may be 3 or 4 already, in either order).
        let pairs = vec![(3, three.as_raw_fd()), (4, four.as_raw_fd())];
        let got = child_sees(pairs, &[3, 4]);
        assert_eq!(got, "3=three\n4=four\n");
        drop((three, four));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh directory under the system temp dir, unique to this process and test.
    fn tempfile_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "husk-conformance-proc-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
