//! Protection of the runtime binary (the runc CVE-2019-5736 class): before building a container,
//! husk re-executes itself from a file that cannot be written through, so /proc/self/exe of every
//! process that could be reached from inside the container is never a writable host binary.
//!
//! Preferred: a detached read-only bind of the binary (open_tree + mount_setattr, never attached
//! to a path), opened and execveat'd: the new image lives on a read-only mount nobody can reach
//! or remount, nothing is copied, and a husk killed half-way leaves nothing behind. Without mount
//! privileges (rootless) it falls back to a sealed memfd copy.
use crate::error::{Context, Error, Result};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when we already run from a protected image: a sealed memfd, or a file on a read-only
/// mount.
pub fn is_sealed_copy() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on an fd we own; returns -1 on files that are not memfds.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    nix::sys::statvfs::fstatvfs(&f)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Re-execute from a read-only bind of our binary (no copy), else from a sealed memfd copy.
/// Returns only on error.
pub fn reexec_protected() -> Result<std::convert::Infallible> {
    match ro_bind_image() {
        Ok(fd) => {
            let (args, env) = argv_env()?;
            let err = nix::unistd::fexecve(fd.as_fd(), &args, &env);
            tracing::debug!("fexecve of the read-only image failed ({err:?}), copying instead");
            reexec_sealed()
        }
        Err(e) => {
            tracing::debug!("read-only bind of the husk binary unavailable ({e}), copying instead");
            reexec_sealed()
        }
    }
}

/// Our binary opened through a read-only bind mount that is never attached anywhere: a detached
/// clone of it (open_tree OPEN_TREE_CLONE) made read-only (mount_setattr), then reopened. No
/// path is made for it, so a husk killed at any point leaves neither a file nor a mount behind
/// (the detached mount goes with its last fd).
fn ro_bind_image() -> Result<OwnedFd> {
    let tree = crate::sys::open_tree_clone(std::path::Path::new("/proc/self/exe"), false)
        .ctx(|| "open_tree /proc/self/exe".into())?;
    crate::sys::mount_setattr_recursive(tree.as_fd(), crate::sys::MOUNT_ATTR_RDONLY, 0)
        .ctx(|| "mount_setattr MOUNT_ATTR_RDONLY on the husk binary's bind".into())?;
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", tree.as_raw_fd()));
    crate::sys::open(&path, libc::O_RDONLY).ctx(|| format!("open {}", path.display()))
}

/// Re-execute the current process from a sealed memfd copy of its binary, with the same argv and
/// environment. Returns only on error.
pub fn reexec_sealed() -> Result<std::convert::Infallible> {
    let mut src = std::fs::File::open("/proc/self/exe").ctx(|| "open /proc/self/exe".into())?;
    let name = c"husk";
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a static name; a new fd is returned or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 {
        // Kernels before 6.3 reject MFD_EXEC; they are executable by default.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(Error::sys("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor we own.
    let mut dst = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut src, &mut dst).ctx(|| "copy husk binary into memfd".into())?;
    // SAFETY: F_ADD_SEALS on our memfd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(Error::sys("seal memfd", std::io::Error::last_os_error()));
    }
    let (args, env) = argv_env()?;
    let err = nix::unistd::fexecve(dst.as_fd(), &args, &env);
    err.ctx(|| "fexecve sealed husk copy".into())
        .map(|never| match never {})
}

fn argv_env() -> Result<(Vec<CString>, Vec<CString>)> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::container("argument contains a NUL byte"))?;
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).ok()
        })
        .collect();
    Ok((args, env))
}
