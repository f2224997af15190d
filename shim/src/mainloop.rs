//! The shim's main thread: one poll loop for SIGCHLD (via signalfd), ttrpc connections, the
//! containers' stdio copies, OOM notifications and shutdown requests. Requests run on
//! short-lived threads (see `server`).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::crilog::CriSink;
use crate::oom::OomWatch;
use crate::reaper::Reaper;
use crate::server::Server;
use crate::service::{dispatch_exits, publish_oom, Service};
use crate::stdio::Pending;

/// Wakes the main loop (new OOM watch, new copy job, shutdown).
pub struct Wake {
    efd: OwnedFd,
    shutdown: AtomicBool,
    pub oom: Mutex<Option<OomWatch>>,
    jobs: Mutex<Vec<CopyJob>>,
}

/// Copy `from` to `to` until EOF (stdio of a container process), done by the main loop.
pub struct CopyJob {
    pub from: File,
    pub to: Sink,
    /// Output copies count here until drained.
    pub pending: Option<Arc<Pending>>,
}

/// Where a copy writes.
pub enum Sink {
    /// A FIFO, pipe, pty or file: bytes as they come.
    File(File),
    /// A CRI log file: lines as records (see `crilog`); never waits for POLLOUT.
    Cri(CriSink),
}

fn set_nonblocking(f: &File) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd owned by `f`.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A copy in progress: data not yet written is kept only while `to` is full.
struct Active {
    job: CopyJob,
    left: Vec<u8>,
    eof: bool,
}

impl Active {
    /// Moves data until `from` would block, `to` is full, or EOF was written out.
    /// Returns true when the copy is finished.
    fn step(&mut self, buf: &mut [u8]) -> bool {
        let to = match &mut self.job.to {
            Sink::File(f) => f,
            Sink::Cri(sink) => return step_cri(&self.job.from, sink, buf),
        };
        loop {
            while !self.left.is_empty() {
                match (&*to).write(&self.left) {
                    Ok(n) => {
                        self.left.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!("stdio copy write: {e}");
                        self.left = Vec::new();
                    }
                }
            }
            if self.eof {
                return true;
            }
            match (&self.job.from).read(buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        match (&*to).write(&buf[off..n]) {
                            Ok(w) => off += w,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                self.left = buf[off..n].to_vec();
                                return false;
                            }
                            Err(e) => {
                                tracing::debug!("stdio copy write: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EIO: the pty's slave side is closed.
                Err(_) => self.eof = true,
            }
        }
    }

    /// When a CRI log copy holds a partial line that is due to be written out.
    fn deadline(&self) -> Option<Instant> {
        match &self.job.to {
            Sink::Cri(sink) => sink.lines.deadline(),
            Sink::File(_) => None,
        }
    }

    fn flush_stalled(&mut self, now: Instant) {
        if let Sink::Cri(sink) = &mut self.job.to {
            if sink.lines.deadline().is_some_and(|d| d <= now) {
                sink.flush();
            }
        }
    }
}

/// Reads `from` until it would block, logging its lines; at EOF the partial line left is
/// logged too. Returns true at EOF.
fn step_cri(from: &File, sink: &mut CriSink, buf: &mut [u8]) -> bool {
    loop {
        match (&*from).read(buf) {
            Ok(0) => {
                sink.flush();
                return true;
            }
            Ok(n) => sink.feed(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // EIO: the pty's slave side is closed.
            Err(_) => {
                sink.flush();
                return true;
            }
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(p) = &self.job.pending {
            p.done();
        }
    }
}

impl Wake {
    pub fn new() -> std::io::Result<Wake> {
        // SAFETY: eventfd has no memory-safety preconditions; we check the result and take
        // ownership of the new fd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        let efd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Wake {
            efd,
            shutdown: AtomicBool::new(false),
            oom: Mutex::new(None),
            jobs: Mutex::new(Vec::new()),
        })
    }

    pub fn add_copy(&self, job: CopyJob) -> std::io::Result<()> {
        set_nonblocking(&job.from)?;
        if let Sink::File(to) = &job.to {
            set_nonblocking(to)?;
        }
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        self.notify();
        Ok(())
    }

    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64 to our eventfd.
        let _ = unsafe {
            libc::write(
                self.efd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.notify();
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local u64 from our (non-blocking) eventfd.
        let _ = unsafe {
            libc::read(
                self.efd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}

/// Blocks the signals the main loop handles, in the calling thread and every thread spawned
/// after it (call before starting any thread). Returns the signalfd.
pub fn block_signals() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

pub fn run(
    svc: Arc<Service>,
    reaper: Arc<Reaper>,
    wake: Arc<Wake>,
    sigfd: SignalFd,
    mut server: Server,
    container_id: &str,
) {
    let mut copies: Vec<Active> = Vec::new();
    // One copy buffer for every stream; pages are touched only as far as data comes.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Exits that happened before the first poll are picked up too.
        let exits = reaper.reap_all();
        dispatch_exits(&svc, container_id, exits);

        let new_jobs = std::mem::take(&mut *wake.jobs.lock().unwrap_or_else(|e| e.into_inner()));
        for job in new_jobs {
            let mut a = Active {
                job,
                left: Vec::new(),
                eof: false,
            };
            if !a.step(&mut buf) {
                copies.push(a);
            }
        }

        let oom_fd = wake
            .oom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.raw_fd());
        let (sig_ready, wake_ready, oom_ready, copy_ready, conn_ready, accept_ready) = {
            let mut fds = vec![
                PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.efd.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(fd) = oom_fd {
                // SAFETY: the OOM watch fd stays open while it is in `wake.oom`; only this
                // thread removes it, after the poll.
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(fd) },
                    PollFlags::POLLIN,
                ));
            }
            fds.push(PollFd::new(server.listener.as_fd(), PollFlags::POLLIN));
            let first_conn = fds.len();
            for c in &server.conns {
                fds.push(PollFd::new(c.reader.as_fd(), PollFlags::POLLIN));
            }
            let first_copy = fds.len();
            for a in &copies {
                if a.left.is_empty() {
                    fds.push(PollFd::new(a.job.from.as_fd(), PollFlags::POLLIN));
                } else {
                    match &a.job.to {
                        Sink::File(to) => fds.push(PollFd::new(to.as_fd(), PollFlags::POLLOUT)),
                        // `left` stays empty for a CRI log
                        Sink::Cri(_) => {
                            fds.push(PollFd::new(a.job.from.as_fd(), PollFlags::POLLIN))
                        }
                    }
                }
            }
            // A partial line held in a CRI log copy is written out when output stalls.
            let timeout = copies
                .iter()
                .filter_map(Active::deadline)
                .min()
                .map(|d| {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
                })
                .unwrap_or(PollTimeout::NONE);
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("poll: {e}");
                    return;
                }
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .map(|r| !r.is_empty())
                    .unwrap_or(false)
            };
            let copy_ready: Vec<bool> = (first_copy..fds.len()).map(ready).collect();
            let conn_ready: Vec<bool> = (first_conn..first_copy).map(ready).collect();
            let accept_ready = ready(first_conn - 1);
            (
                ready(0),
                ready(1),
                oom_fd.is_some() && ready(2),
                copy_ready,
                conn_ready,
                accept_ready,
            )
        };
        // Serve before accepting: indexes of `conn_ready` match `server.conns` as polled.
        let mut closed = Vec::new();
        for (i, r) in conn_ready.iter().enumerate() {
            if *r && !server.serve(i) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            server.conns.remove(i);
        }
        if accept_ready {
            server.accept();
        }
        if copy_ready.iter().any(|r| *r) {
            let mut i = 0;
            copies.retain_mut(|a| {
                let run = copy_ready.get(i).copied().unwrap_or(false);
                i += 1;
                !(run && a.step(&mut buf))
            });
        }
        let now = Instant::now();
        for a in copies.iter_mut() {
            a.flush_stalled(now);
        }
        if sig_ready {
            while let Ok(Some(info)) = sigfd.read_signal() {
                if info.ssi_signo != libc::SIGCHLD as u32 {
                    tracing::debug!("signal {} ignored", info.ssi_signo);
                }
            }
        }
        if wake_ready {
            wake.drain();
            if wake.shutdown.load(Ordering::SeqCst) {
                return;
            }
        }
        if oom_ready {
            let mut slot = wake.oom.lock().unwrap_or_else(|e| e.into_inner());
            let (oom, keep) = match slot.as_mut() {
                Some(w) => w.check(),
                None => (false, false),
            };
            if !keep {
                *slot = None;
            }
            drop(slot);
            if oom {
                publish_oom(&svc, container_id);
            }
        }
    }
}
