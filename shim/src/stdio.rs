//! Container standard streams: containerd's FIFOs, `file://` and `binary://` loggers, and the
//! pty master received over a console socket.
//!
//! The main loop copies the data (no thread per stream); a process's exit is reported only once its output
//! copiers drained (or after a bounded wait, when a daemonized child keeps a stream open).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::crilog::{self, CriLog, CriSink, Stream};
use crate::mainloop::{CopyJob, Sink, Wake};
use crate::runtime::ProcStdio;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    #[error("console socket {path}: {msg}")]
    Console { path: String, msg: String },
    #[error(transparent)]
    CriLog(#[from] crilog::CriLogError),
}

fn path_err<'a>(what: &'static str, path: &'a str) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError::Path {
        what,
        path: path.to_string(),
        source,
    }
}

/// The stream paths containerd passes for one process.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Counts output copiers that have not drained yet.
#[derive(Default)]
pub struct Pending {
    count: Mutex<usize>,
    cond: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
    pub fn done(&self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *c = c.saturating_sub(1);
        self.cond.notify_all();
    }
    fn wait(&self, timeout: Duration) {
        let c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .cond
            .wait_timeout_while(c, timeout, |c| *c > 0)
            .map_err(|e| e.into_inner());
    }
}

/// The shim's side of a process's streams.
pub struct ProcIo {
    pending: Arc<Pending>,
    console: Option<File>,
    stdin_path: String,
    /// The shim's own writer of a `heldfifo://` stdin: the process reads EOF only after
    /// CloseIO, not when the client's writer goes (a CRI server restarting).
    stdin_keeper: std::sync::Mutex<Option<File>>,
    /// The CRI log the process writes (`crilog://` stdout/stderr).
    crilog: Option<Arc<CriLog>>,
}

impl ProcIo {
    /// Waits until the output of the process was copied out (bounded).
    pub fn drain(&self, timeout: Duration) {
        self.pending.wait(timeout);
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let Some(console) = &self.console else {
            return Err(IoError::Sys {
                what: "resize pty: process has no terminal",
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        };
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct we own from a valid pointer; the fd is a
        // pty master we own.
        let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(IoError::Sys {
                what: "ioctl TIOCSWINSZ on pty master",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The CRI log file this process writes to, if any.
    pub fn crilog(&self) -> Option<&Arc<CriLog>> {
        self.crilog.as_ref()
    }

    /// CloseIO(stdin): if the stdin copier still waits for a writer to open the FIFO, open and
    /// close one so that it sees EOF and closes the process's stdin.
    pub fn close_stdin(&self) {
        drop(
            self.stdin_keeper
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let path = match stdin_fifo(&self.stdin_path) {
            Some((p, _)) => p,
            None => return,
        };
        if let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            drop(f);
        }
    }
}

use crate::uri::percent_decode;

fn is_uri(p: &str) -> bool {
    p.starts_with("binary://")
        || p.starts_with("file://")
        || p.starts_with("fifo://")
        || p.starts_with(crilog::SCHEME)
        || p.starts_with(HELD_FIFO)
}

/// A stdin FIFO the shim holds a writer of itself (husk-cri's): `heldfifo:///ABS/PATH`. The
/// process's stdin then ends only with CloseIO, and a client that restarts (its writer closed)
/// opens the FIFO again and writes on.
pub const HELD_FIFO: &str = "heldfifo://";

/// The FIFO of a stdin path (a plain path or `heldfifo://`), and whether it is held; None for
/// no stdin or another kind of URI.
fn stdin_fifo(p: &str) -> Option<(String, bool)> {
    if let Some(rest) = p.strip_prefix(HELD_FIFO) {
        return Some((percent_decode(rest), true));
    }
    (!p.is_empty() && !is_uri(p)).then(|| (p.to_string(), false))
}

fn pipe() -> Result<(File, File), IoError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| IoError::Sys {
        what: "pipe2",
        source: e.into(),
    })?;
    Ok((File::from(r), File::from(w)))
}

/// Opens an output FIFO read-write: never blocks, and a vanished reader does not make the
/// container's writes fail with EPIPE.
fn open_output_fifo(path: &str) -> Result<File, IoError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(path_err("open output fifo", path))
}

fn open_output_file(path: &str) -> Result<File, IoError> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent).map_err(path_err("create log dir", path))?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(path_err("open log file", path))
}

/// Opens the stdin FIFO without waiting for containerd's writer; the main loop copies from it
/// once a writer came (a FIFO reports no hang-up before its first writer).
fn start_stdin_copy(wake: &Wake, stdin: &str, to: File) -> Result<Option<File>, IoError> {
    let (path, held) = stdin_fifo(stdin).unwrap_or_else(|| (stdin.to_string(), false));
    let path = path.as_str();
    let from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(path_err("open stdin fifo", path))?;
    // With a reader open, a non-blocking writer opens at once.
    let keeper = if held {
        Some(
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(path_err("hold stdin fifo", path))?,
        )
    } else {
        None
    };
    wake.add_copy(CopyJob {
        from,
        to: Sink::File(to),
        pending: None,
    })
    .map_err(|source| IoError::Sys {
        what: "set stdin copy non-blocking",
        source,
    })?;
    Ok(keeper)
}

fn start_output_copy(
    wake: &Wake,
    pending: &Arc<Pending>,
    from: File,
    to: Sink,
) -> Result<(), IoError> {
    pending.add();
    wake.add_copy(CopyJob {
        from,
        to,
        pending: Some(pending.clone()),
    })
    .map_err(|source| {
        pending.done();
        IoError::Sys {
            what: "set output copy non-blocking",
            source,
        }
    })
}

/// Starts the `binary://` logger with the process's stdout/stderr pipes as fds 3 and 4 and a
/// readiness pipe as fd 5 (as containerd's shims do). Returns the write ends.
fn start_binary_logger(uri: &str, ns: &str, id: &str) -> Result<(File, File), IoError> {
    let rest = &uri["binary://".len()..];
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (percent_decode(p), q),
        None => (percent_decode(rest), ""),
    };
    let mut args = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        args.push(percent_decode(k));
        if !v.is_empty() {
            args.push(percent_decode(v));
        }
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds: [RawFd; 3] = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(&path);
    cmd.args(&args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", ns)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe and the fds are
    // valid in the child (inherited from this process). Targets 3..5 may be among the sources,
    // so first move every source above 5.
    unsafe {
        cmd.pre_exec(move || {
            let mut moved = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let n = libc::fcntl(*fd, libc::F_DUPFD, 10);
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = n;
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // The temporary copy must not stay open in the logger (the readiness pipe
                // would never see EOF).
                libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(path_err("start logging binary", &path))?;
    drop(cmd);
    drop(out_r);
    drop(err_r);
    drop(ready_w);
    // Wait until the logger closed (or wrote to) its readiness fd.
    let mut buf = [0u8; 1];
    let _ = io::Read::read(&mut &ready_r, &mut buf);
    Ok((out_w, err_w))
}

/// Sets up the pipes for a process without a terminal. Returns the streams to hand to the
/// runtime and the shim's side.
pub fn setup_pipes(
    wake: &Wake,
    paths: &StdioPaths,
    ns: &str,
    id: &str,
) -> Result<(ProcStdio, ProcIo), IoError> {
    let pending = Arc::new(Pending::default());
    let mut stdio = ProcStdio {
        stdin: None,
        stdout: None,
        stderr: None,
    };
    let mut stdin_keeper = None;
    if !paths.stdin.is_empty() {
        let (r, w) = pipe()?;
        stdin_keeper = start_stdin_copy(wake, &paths.stdin, w)?;
        stdio.stdin = Some(OwnedFd::from(r));
    }
    let mut crilog = None;
    if paths.stdout.starts_with("binary://") {
        let (o, e) = start_binary_logger(&paths.stdout, ns, id)?;
        stdio.stdout = Some(o.into());
        stdio.stderr = Some(e.into());
    } else if paths.stdout.starts_with(crilog::SCHEME) || paths.stderr.starts_with(crilog::SCHEME) {
        // One pipe per stream (the records name the stream), one log file when both name it.
        let out_log = open_crilog(&paths.stdout, None)?;
        let err_log = open_crilog(&paths.stderr, out_log.as_ref())?;
        stdio.stdout = match out_log.clone() {
            Some(log) => Some(cri_output(wake, &pending, log, Stream::Stdout)?),
            None => output(wake, &paths.stdout, &pending)?,
        };
        stdio.stderr = match err_log.clone() {
            Some(log) => Some(cri_output(wake, &pending, log, Stream::Stderr)?),
            None => output(wake, &paths.stderr, &pending)?,
        };
        crilog = out_log.or(err_log);
    } else {
        stdio.stdout = output(wake, &paths.stdout, &pending)?;
        stdio.stderr = if paths.stderr == paths.stdout && !paths.stdout.is_empty() {
            match &stdio.stdout {
                Some(fd) => Some(fd.try_clone().map_err(|source| IoError::Sys {
                    what: "dup stdout",
                    source,
                })?),
                None => None,
            }
        } else {
            output(wake, &paths.stderr, &pending)?
        };
    }
    Ok((
        stdio,
        ProcIo {
            pending,
            console: None,
            stdin_path: paths.stdin.clone(),
            stdin_keeper: std::sync::Mutex::new(stdin_keeper),
            crilog,
        },
    ))
}

/// Opens the CRI log of a `crilog://` stream path (`same`: the other stream's, reused when both
/// name the same file). None for any other kind of path.
fn open_crilog(path: &str, same: Option<&Arc<CriLog>>) -> Result<Option<Arc<CriLog>>, IoError> {
    let Some(parsed) = crilog::parse_uri(path) else {
        return Ok(None);
    };
    let target = parsed?;
    if let Some(log) = same.filter(|l| l.path() == target.path) {
        return Ok(Some(log.clone()));
    }
    Ok(Some(Arc::new(CriLog::open(target)?)))
}

/// A pipe whose read side the main loop copies into `log` as records of `stream`.
fn cri_output(
    wake: &Wake,
    pending: &Arc<Pending>,
    log: Arc<CriLog>,
    stream: Stream,
) -> Result<OwnedFd, IoError> {
    let (r, w) = pipe()?;
    start_output_copy(wake, pending, r, Sink::Cri(CriSink::new(log, stream)))?;
    Ok(w.into())
}

fn output(wake: &Wake, path: &str, pending: &Arc<Pending>) -> Result<Option<OwnedFd>, IoError> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(p) = path.strip_prefix("file://") {
        return Ok(Some(open_output_file(&percent_decode(p))?.into()));
    }
    let p = path.strip_prefix("fifo://").unwrap_or(path);
    let is_fifo = std::fs::metadata(p)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let sink = if is_fifo {
        open_output_fifo(p)?
    } else {
        open_output_file(p)?
    };
    let (r, w) = pipe()?;
    start_output_copy(wake, pending, r, Sink::File(sink))?;
    Ok(Some(w.into()))
}

static SOCKET_SEQ: AtomicU64 = AtomicU64::new(0);

/// A console socket the runtime sends the pty master to.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket, IoError> {
        let n = SOCKET_SEQ.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("husk-shim-pty-{}-{}.sock", std::process::id(), n));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| IoError::Path {
            what: "bind console socket",
            path: path.display().to_string(),
            source,
        })?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master the runtime sent (it connected before it exited).
    pub fn receive(&self) -> Result<File, IoError> {
        let cerr = |msg: String| IoError::Console {
            path: self.path.display().to_string(),
            msg,
        };
        self.listener
            .set_nonblocking(true)
            .map_err(|e| cerr(e.to_string()))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| cerr(format!("runtime did not connect: {e}")))?;
        conn.set_nonblocking(false)
            .map_err(|e| cerr(e.to_string()))?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| cerr(format!("recvmsg: {e}")))?;
        let cmsgs = msg.cmsgs().map_err(|e| cerr(format!("cmsgs: {e}")))?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd in our table for us; we own it.
                    return Ok(unsafe { File::from_raw_fd(*fd) });
                }
            }
        }
        Err(cerr("no file descriptor received".into()))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts copying between a pty master and the process's FIFOs.
pub fn setup_console(wake: &Wake, master: File, paths: &StdioPaths) -> Result<ProcIo, IoError> {
    let pending = Arc::new(Pending::default());
    let dup = |f: &File| {
        f.try_clone().map_err(|source| IoError::Sys {
            what: "dup pty master",
            source,
        })
    };
    let mut stdin_keeper = None;
    if !paths.stdin.is_empty() {
        stdin_keeper = start_stdin_copy(wake, &paths.stdin, dup(&master)?)?;
    }
    let mut crilog = None;
    if let Some(log) = open_crilog(&paths.stdout, None)? {
        // The terminal's output is the container's stdout.
        let sink = Sink::Cri(CriSink::new(log.clone(), Stream::Stdout));
        start_output_copy(wake, &pending, dup(&master)?, sink)?;
        crilog = Some(log);
    } else if !paths.stdout.is_empty() {
        let p = paths
            .stdout
            .strip_prefix("file://")
            .map(percent_decode)
            .unwrap_or_else(|| paths.stdout.clone());
        let is_fifo = std::fs::metadata(&p)
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        let sink = if is_fifo {
            open_output_fifo(&p)?
        } else {
            open_output_file(&p)?
        };
        start_output_copy(wake, &pending, dup(&master)?, Sink::File(sink))?;
    }
    Ok(ProcIo {
        pending,
        console: Some(master),
        stdin_path: paths.stdin.clone(),
        stdin_keeper: std::sync::Mutex::new(stdin_keeper),
        crilog,
    })
}
