//! Pod network namespaces owned by husk-cri: made by a short-lived thread that unshares
//! CLONE_NEWNET, brings `lo` up and bind-mounts its namespace onto a file (the pin), so the
//! namespace outlives every process in it until [`remove`].

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network namespace thread for {0} panicked")]
    Thread(PathBuf),
}

/// Creates a new network namespace pinned at `pin` (which must not exist), with `lo` up.
pub fn create(pin: &Path) -> Result<(), NetnsError> {
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NetnsError::Io {
            what: "mkdir",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(pin)
        .map_err(|source| NetnsError::Io {
            what: "create namespace pin",
            path: pin.to_path_buf(),
            source,
        })?;
    let target = pin.to_path_buf();
    // unshare(CLONE_NEWNET) changes only the calling thread; a fresh thread keeps it away from
    // the runtime's worker threads, and it exits once the namespace is pinned.
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        let sys = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| NetnsError::Sys { what, path, source }
        };
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(sys("unshare(CLONE_NEWNET) for", &target))?;
        loopback_up().map_err(sys("bring lo up in", &target))?;
        let me = PathBuf::from(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()));
        nix::mount::mount(
            Some(&me),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind-mount the namespace on", &target))
    })
    .join()
    .map_err(|_| NetnsError::Thread(pin.to_path_buf()))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(pin);
        return Err(e);
    }
    Ok(())
}

/// Unpins and removes `pin`; a pin that is gone or not mounted is fine (idempotent).
pub fn remove(pin: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                what: "umount",
                path: pin.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            what: "remove",
            path: pin.to_path_buf(),
            source,
        }),
    }
}

/// True when `pin` is a mounted network namespace (not just a leftover file).
pub fn is_pinned(pin: &Path) -> bool {
    // nsfs files report st_dev of the nsfs filesystem; a plain file would be on the state dir's.
    // (f_type's width differs between libcs: the cast is not a no-op everywhere)
    #[allow(clippy::unnecessary_cast)]
    let nsfs = |s: nix::sys::statfs::Statfs| s.filesystem_type().0 as i64 == 0x6e73_6673;
    nix::sys::statfs::statfs(pin).is_ok_and(nsfs)
}

/// SIOCGIFFLAGS/SIOCSIFFLAGS on `lo` in the calling thread's network namespace.
pub(crate) fn loopback_up() -> Result<(), nix::errno::Errno> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: the ioctls read and write the ifreq we own; the socket is open for the call.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::errno::Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_namespace_has_lo_up_and_goes_away() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (CI runs as root)");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = dir.path().join("ns1");
        create(&pin).expect("create");
        assert!(is_pinned(&pin));
        // lo is up inside: `ip -n` cannot name a path, so enter it with nsenter.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args([
                "cat",
                "/sys/class/net/lo/operstate",
                "/sys/class/net/lo/flags",
            ])
            .output()
            .expect("nsenter");
        let s = String::from_utf8_lossy(&out.stdout);
        let flags = s.lines().nth(1).unwrap_or("");
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
        assert_eq!(flags & 1, 1, "lo flags {s:?}");
        // A second create on the same pin refuses.
        assert!(create(&pin).is_err());
        assert!(is_pinned(&pin));
        remove(&pin).expect("remove");
        assert!(!pin.exists());
        remove(&pin).expect("remove again is fine");
    }
}
