//! OOM notifications for TaskOOM: cgroup v1 `memory.oom_control` + eventfd, or cgroup v2
//! `memory.events` watched with inotify.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::mainloop::Wake;
use crate::metrics::{is_unified, v1_paths};

pub enum OomWatch {
    V1 {
        efd: OwnedFd,
        _control: File,
        dir: PathBuf,
    },
    V2 {
        ifd: OwnedFd,
        events: PathBuf,
        last: u64,
    },
}

fn oom_kills(events: &Path) -> Option<u64> {
    let text = fs::read_to_string(events).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a local buffer of the given length from a non-blocking fd we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            break;
        }
    }
}

impl OomWatch {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            OomWatch::V1 { efd, .. } => efd.as_raw_fd(),
            OomWatch::V2 { ifd, .. } => ifd.as_raw_fd(),
        }
    }

    /// Called when the fd is readable. Returns (an OOM kill happened, keep watching).
    pub fn check(&mut self) -> (bool, bool) {
        match self {
            OomWatch::V1 { efd, dir, .. } => {
                drain(efd.as_raw_fd());
                // The eventfd also fires when the cgroup is removed.
                let alive = dir.join("memory.oom_control").exists();
                (alive, alive)
            }
            OomWatch::V2 { ifd, events, last } => {
                drain(ifd.as_raw_fd());
                match oom_kills(events) {
                    Some(n) if n > *last => {
                        *last = n;
                        (true, true)
                    }
                    Some(_) => (false, true),
                    None => (false, false),
                }
            }
        }
    }
}

fn watch_v1(pid: i32) -> Result<OomWatch, String> {
    let paths = v1_paths(pid as u32).map_err(|e| e.to_string())?;
    let dir = paths
        .get("memory")
        .cloned()
        .ok_or_else(|| format!("pid {pid} has no memory cgroup"))?;
    let control_path = dir.join("memory.oom_control");
    let control =
        File::open(&control_path).map_err(|e| format!("open {}: {e}", control_path.display()))?;
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ec = dir.join("cgroup.event_control");
    fs::write(&ec, format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()))
        .map_err(|e| format!("write {}: {e}", ec.display()))?;
    Ok(OomWatch::V1 {
        efd,
        _control: control,
        dir,
    })
}

fn watch_v2(pid: i32) -> Result<OomWatch, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("read /proc/{pid}/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("pid {pid} has no cgroup v2 path"))?;
    let events = Path::new("/sys/fs/cgroup")
        .join(rel.trim_start_matches('/'))
        .join("memory.events");
    // SAFETY: inotify_init1 has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let ifd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cpath = std::ffi::CString::new(events.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("{}: {e}", events.display()))?;
    // SAFETY: cpath is a valid NUL-terminated string; ifd is our inotify fd.
    let wd = unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(format!(
            "inotify_add_watch {}: {}",
            events.display(),
            std::io::Error::last_os_error()
        ));
    }
    let last = oom_kills(&events).unwrap_or(0);
    Ok(OomWatch::V2 { ifd, events, last })
}

/// Starts watching the memory cgroup of the container's init for OOM kills.
pub fn watch(pid: i32, wake: &Wake) {
    let w = if is_unified() {
        watch_v2(pid)
    } else {
        watch_v1(pid)
    };
    match w {
        Ok(w) => {
            *wake.oom.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
            wake.notify();
        }
        Err(e) => tracing::warn!("oom watch for pid {pid}: {e}"),
    }
}
