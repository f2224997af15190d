//! ExecSync: a command run in a running container through the shim's Exec (as containerd's
//! CRI plugin does), its output collected from two FIFOs and capped at 16 MiB per stream
//! (CVE-2022-31030: the rest is read and dropped, the command goes on), with the request's
//! timeout: past it the process is SIGKILLed, reaped and DeadlineExceeded is answered.

use super::store::Containers;
use super::{io_err, ContainerError};
use crate::shim::TaskIo;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// kubelet's cap on each stream of ExecSync output.
pub const MAX_OUTPUT: usize = 16 << 20;
/// How long output may still arrive after the process exited (a child that keeps a stream
/// open does not hold the call forever).
const DRAIN: Duration = Duration::from_secs(2);

/// One output stream being collected.
struct Stream {
    file: Option<File>,
    data: Vec<u8>,
}

impl Stream {
    /// Reads what is there; false at EOF (or on an error, which ends the stream too).
    fn read_some(&mut self) -> bool {
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 64 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    self.file = None;
                    return false;
                }
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(self.data.len());
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.file = None;
                    return false;
                }
            }
        }
    }
}

/// Makes FIFO `p` and opens its read side, non-blocking (shared with streaming exec).
pub(crate) fn mkfifo(p: &Path) -> Result<File, ContainerError> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err("mkfifo", p)(e.into()))?;
    // Non-blocking: opening the read side must not wait for the shim, and reads must not
    // block the poll loop.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(io_err("open fifo", p))
}

/// The output and exit code of `cmd` run in container `id`; `timeout` seconds (0 = none).
pub fn exec_sync(
    store: &Containers,
    id: &str,
    cmd: Vec<String>,
    timeout: i64,
) -> Result<(Vec<u8>, Vec<u8>, i32), ContainerError> {
    if cmd.is_empty() {
        return Err(ContainerError::Invalid("ExecSync: cmd is empty".into()));
    }
    if timeout < 0 {
        return Err(ContainerError::Invalid(format!(
            "ExecSync: timeout {timeout} is negative"
        )));
    }
    let (id, shim, _) = store.running(id)?;
    let spec = store.spec_of(&id)?;
    let process = super::spec::exec_process(&spec, &cmd, false);
    let exec_id = crate::sandbox::new_id()?[..32].to_string();
    let dir = store.exec_dir.join(&exec_id);
    std::fs::create_dir(&dir).map_err(io_err("mkdir", &dir))?;
    let r = run(&shim, &id, &exec_id, &dir, &process, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run(
    shim: &std::sync::Arc<crate::shim::Shim>,
    id: &str,
    exec_id: &str,
    dir: &Path,
    process: &serde_json::Value,
    timeout: i64,
) -> Result<(Vec<u8>, Vec<u8>, i32), ContainerError> {
    let shim_err = |source| ContainerError::Shim {
        id: id.to_string(),
        source: Box::new(source),
    };
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut out = Stream {
        file: Some(mkfifo(&out_path)?),
        data: Vec::new(),
    };
    let mut err = Stream {
        file: Some(mkfifo(&err_path)?),
        data: Vec::new(),
    };
    let io = TaskIo {
        stdin: String::new(),
        stdout: out_path.display().to_string(),
        stderr: err_path.display().to_string(),
        terminal: false,
    };
    shim.exec(exec_id, process, &io).map_err(shim_err)?;
    if let Err(e) = shim.start_task(exec_id) {
        let _ = shim.delete(exec_id);
        return Err(shim_err(e));
    }
    // The wait runs on its own thread; this one collects output meanwhile.
    let (tx, rx) = mpsc::channel();
    {
        let shim = shim.clone();
        let exec_id = exec_id.to_string();
        std::thread::Builder::new()
            .name("exec-wait".into())
            .spawn(move || {
                let r = if timeout > 0 {
                    shim.wait_for(&exec_id, Duration::from_secs(timeout as u64))
                } else {
                    shim.wait(&exec_id).map(Some)
                };
                let _ = tx.send(r);
            })
            .map_err(io_err("spawn the exec wait thread for", dir))?;
    }
    let mut exit: Option<Result<Option<u32>, crate::shim::ShimError>> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let open: Vec<_> = [&out, &err]
            .iter()
            .filter_map(|s| s.file.as_ref().map(|f| f.as_fd()))
            .collect();
        if open.is_empty() && exit.is_some() {
            break;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if !open.is_empty() {
            let mut fds: Vec<nix::poll::PollFd> = open
                .iter()
                .map(|fd| nix::poll::PollFd::new(*fd, nix::poll::PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        out.read_some();
        err.read_some();
        if exit.is_none() {
            if let Ok(r) = rx.try_recv() {
                if !matches!(r, Ok(None)) {
                    drain_until = Some(Instant::now() + DRAIN);
                }
                exit = Some(r);
                if matches!(exit, Some(Ok(None))) {
                    break;
                }
            }
        }
    }
    let code = match exit {
        Some(Ok(Some(code))) => code as i32,
        Some(Ok(None)) => {
            // Timed out: kill, reap, and say so.
            let _ = shim.kill(exec_id, libc::SIGKILL as u32, false);
            let _ = shim.wait_for(exec_id, Duration::from_secs(10));
            let _ = shim.delete(exec_id);
            return Err(ContainerError::ExecTimeout {
                id: id.to_string(),
                secs: timeout,
            });
        }
        Some(Err(e)) => {
            let _ = shim.delete(exec_id);
            return Err(shim_err(e));
        }
        None => {
            // Output still open past the drain time can only follow an exit; unreachable
            // without one, but never hang: wait for the exit now.
            match rx.recv() {
                Ok(Ok(Some(code))) => code as i32,
                _ => UNKNOWN,
            }
        }
    };
    if let Err(e) = shim.delete(exec_id) {
        tracing::debug!("container {id}: delete exec {exec_id}: {e}");
    }
    Ok((out.data, err.data, code))
}

const UNKNOWN: i32 = super::record::UNKNOWN_EXIT_CODE;
