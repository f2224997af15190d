//! Mounting the rootfs mounts containerd passes (overlay snapshots, bind mounts), in the calling
//! thread: no fork in this multi-threaded process.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {fstype} {source_path} on {target}: {errno}")]
    Mount {
        fstype: String,
        source_path: String,
        target: String,
        errno: nix::errno::Errno,
    },
    #[error("{call} for overlay on {target}: {err}")]
    NewApi {
        call: &'static str,
        target: String,
        err: std::io::Error,
    },
    #[error("mount option contains a NUL byte: {0}")]
    Nul(String),
}

fn flag(opt: &str) -> Option<(bool, MsFlags)> {
    // (clear, flags)
    let f = match opt {
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "defaults" => (false, MsFlags::empty()),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        "private" => (false, MsFlags::MS_PRIVATE),
        "rprivate" => (false, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => (false, MsFlags::MS_SHARED),
        "rshared" => (false, MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => (false, MsFlags::MS_SLAVE),
        "rslave" => (false, MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => (false, MsFlags::MS_UNBINDABLE),
        "runbindable" => (false, MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        _ => return None,
    };
    Some(f)
}

const PROPAGATION: MsFlags = MsFlags::MS_PRIVATE
    .union(MsFlags::MS_SHARED)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_UNBINDABLE);

/// Mounts one containerd mount on `target`.
pub fn mount_one(
    fstype: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), MountError> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match flag(o) {
            Some((true, f)) => flags.remove(f),
            Some((false, f)) => flags.insert(f),
            None => data.push(o.as_str()),
        }
    }
    let data = data.join(",");
    let err = |errno| MountError::Mount {
        fstype: fstype.to_string(),
        source_path: source.to_string(),
        target: target.display().to_string(),
        errno,
    };
    let page = 4096;
    if fstype == "overlay" && data.len() >= page - 1 {
        return mount_overlay_new_api(&data, flags, target);
    }
    let fst = if fstype.is_empty() || fstype == "bind" {
        None
    } else {
        Some(fstype)
    };
    let base = flags - PROPAGATION;
    mount(
        Some(source),
        target,
        fst,
        base,
        if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        },
    )
    .map_err(err)?;
    let prop = flags & (PROPAGATION | MsFlags::MS_REC);
    if flags.intersects(PROPAGATION) {
        mount(None::<&str>, target, None::<&str>, prop, None::<&str>).map_err(err)?;
    }
    if base.contains(MsFlags::MS_BIND) && base.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            base | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Overlay options longer than a page (many layers): use fsopen/fsconfig, which takes each
/// option separately (and `lowerdir+` one layer at a time, Linux 6.8+).
fn mount_overlay_new_api(data: &str, flags: MsFlags, target: &Path) -> Result<(), MountError> {
    let t = target.display().to_string();
    let io = |call: &'static str| {
        let t = t.clone();
        move |err: std::io::Error| MountError::NewApi {
            call,
            target: t,
            err,
        }
    };
    let cstr = |s: &str| CString::new(s).map_err(|_| MountError::Nul(s.to_string()));
    let fsname = cstr("overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name; the result is checked and owned.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fsname.as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(io("fsopen")(std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fd from fsopen.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |key: &str, value: Option<&str>| -> Result<(), MountError> {
        let k = cstr(key)?;
        let v = value.map(cstr).transpose()?;
        let (cmd, vp) = match &v {
            Some(v) => (libc::FSCONFIG_SET_STRING, v.as_ptr()),
            None => (libc::FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: k/v are valid NUL-terminated strings living across the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vp, 0) };
        if rc < 0 {
            return Err(io("fsconfig")(std::io::Error::last_os_error()));
        }
        Ok(())
    };
    for opt in data.split(',') {
        match opt.split_once('=') {
            Some(("lowerdir", dirs)) => {
                for d in dirs.split(':') {
                    set("lowerdir+", Some(d))?;
                }
            }
            Some((k, v)) => set(k, Some(v))?,
            None => set(opt, None)?,
        }
    }
    // SAFETY: plain syscall on our fs context fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io("fsconfig(CMD_CREATE)")(std::io::Error::last_os_error()));
    }
    let mut attr = 0u64;
    if flags.contains(MsFlags::MS_RDONLY) {
        attr |= libc::MOUNT_ATTR_RDONLY;
    }
    if flags.contains(MsFlags::MS_NOSUID) {
        attr |= libc::MOUNT_ATTR_NOSUID;
    }
    if flags.contains(MsFlags::MS_NODEV) {
        attr |= libc::MOUNT_ATTR_NODEV;
    }
    if flags.contains(MsFlags::MS_NOEXEC) {
        attr |= libc::MOUNT_ATTR_NOEXEC;
    }
    // SAFETY: plain syscall on our fs context fd.
    let mfd = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attr,
        )
    };
    if mfd < 0 {
        return Err(io("fsmount")(std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fd from fsmount.
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    let tc = cstr(&t)?;
    let empty = cstr("")?;
    // SAFETY: valid fds and NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            tc.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io("move_mount")(std::io::Error::last_os_error()));
    }
    Ok(())
}
