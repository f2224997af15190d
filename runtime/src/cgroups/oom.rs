//! Waiting for OOM kills, for `husk events`.
//!
//! v1: an eventfd registered on memory.oom_control through cgroup.event_control (the kernel also
//! signals it when the cgroup is removed). v2: inotify on memory.events, whose `oom_kill` counter is
//! compared with the last value seen.

use super::fsutil::{keyed, read_flat_keyed, write};
use super::{CgroupError, Result};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// What woke a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomEvent {
    /// The cgroup hit its memory limit and the OOM killer ran (`count` events since the last wait).
    Oom { count: u64 },
    /// The cgroup is gone; no further events will come.
    CgroupRemoved,
}

/// Blocks until an OOM event in one container's memory cgroup.
#[derive(Debug)]
pub struct OomWatcher {
    fd: OwnedFd,
    dir: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    V1 { _oom_control: File },
    V2 { last: u64 },
}

fn sys(op: String) -> impl FnOnce(nix::Error) -> CgroupError {
    move |source| CgroupError::Sys { op, source }
}

impl OomWatcher {
    pub(crate) fn v1(dir: &Path) -> Result<Self> {
        let ctl_path = dir.join("memory.oom_control");
        let oom_control = File::open(&ctl_path).map_err(|source| CgroupError::Read {
            path: ctl_path.clone(),
            source,
        })?;
        // SAFETY: eventfd takes no pointers; the returned fd is owned by us.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(sys("eventfd".into())(nix::Error::last()));
        }
        // SAFETY: `raw` is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let line = format!("{} {}", fd.as_raw_fd(), oom_control.as_raw_fd());
        write(dir, "cgroup.event_control", &line)?;
        Ok(OomWatcher {
            fd,
            dir: dir.to_path_buf(),
            kind: Kind::V1 {
                _oom_control: oom_control,
            },
        })
    }

    pub(crate) fn v2(dir: &Path) -> Result<Self> {
        let events = dir.join("memory.events");
        if !events.exists() {
            return Err(CgroupError::ControllerUnavailable {
                resource: "OOM notification".into(),
                controller: "memory".into(),
                detail: format!("{} does not exist", events.display()),
            });
        }
        // SAFETY: inotify_init1 takes no pointers.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(sys("inotify_init1".into())(nix::Error::last()));
        }
        // SAFETY: fresh fd owned by us from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let cpath =
            std::ffi::CString::new(events.as_os_str().as_encoded_bytes()).map_err(|_| {
                CgroupError::InvalidPath {
                    path: events.display().to_string(),
                    detail: "contains a NUL byte".into(),
                }
            })?;
        // SAFETY: cpath is a valid NUL-terminated string that outlives the call.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(sys(format!("inotify_add_watch {}", events.display()))(
                nix::Error::last(),
            ));
        }
        let last = oom_kills(dir)?.unwrap_or(0);
        Ok(OomWatcher {
            fd,
            dir: dir.to_path_buf(),
            kind: Kind::V2 { last },
        })
    }

    /// The fd to poll for readability (then call [`try_wait`](Self::try_wait)).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Block until the next OOM event or the removal of the cgroup.
    pub fn wait(&mut self) -> Result<OomEvent> {
        loop {
            if let Some(ev) = self.try_wait()? {
                return Ok(ev);
            }
            let mut fds = [nix::poll::PollFd::new(
                self.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(source) => {
                    return Err(CgroupError::Sys {
                        op: "poll OOM notification fd".into(),
                        source,
                    })
                }
            }
        }
    }

    /// Without blocking: an OOM event or the removal of the cgroup since the last call, if any.
    /// Use it after polling [`as_raw_fd`](Self::as_raw_fd) readable (memory.events also changes for
    /// events that are not OOM kills, so readable does not always mean an OOM).
    pub fn try_wait(&mut self) -> Result<Option<OomEvent>> {
        match &mut self.kind {
            Kind::V1 { .. } => {
                let mut buf = [0u8; 8];
                if !read_nonblocking(&self.fd, &mut buf, "eventfd read (memory.oom_control)")? {
                    return Ok(None);
                }
                if !self.dir.join("memory.oom_control").exists() {
                    return Ok(Some(OomEvent::CgroupRemoved));
                }
                Ok(Some(OomEvent::Oom {
                    count: u64::from_ne_bytes(buf),
                }))
            }
            Kind::V2 { last } => {
                let mut buf = [0u8; 4096];
                while read_nonblocking(&self.fd, &mut buf, "inotify read (memory.events)")? {}
                match oom_kills(&self.dir)? {
                    None => Ok(Some(OomEvent::CgroupRemoved)),
                    Some(n) if n > *last => {
                        let count = n - *last;
                        *last = n;
                        Ok(Some(OomEvent::Oom { count }))
                    }
                    Some(_) => Ok(None),
                }
            }
        }
    }
}

/// memory.events oom_kill counter; None once the cgroup is gone.
fn oom_kills(dir: &Path) -> Result<Option<u64>> {
    match read_flat_keyed(dir, "memory.events") {
        Ok(kv) => Ok(Some(keyed(&kv, "oom_kill").unwrap_or(0))),
        Err(CgroupError::Read { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENODEV)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One read; false when nothing is pending (EAGAIN).
fn read_nonblocking(fd: &OwnedFd, buf: &mut [u8], what: &str) -> Result<bool> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(_) => return Ok(true),
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::EAGAIN) => return Ok(false),
            Err(source) => {
                return Err(CgroupError::Sys {
                    op: what.to_string(),
                    source,
                })
            }
        }
    }
}
