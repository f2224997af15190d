//! Protection of the runtime binary (the runc CVE-2019-5736 class): before building a container,
//! husk re-executes itself from a sealed, read-only memfd copy, so /proc/self/exe of every process
//! that could be reached from inside the container is that copy, never the host binary.
use crate::error::{Context, Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when we already run from a sealed memfd.
pub fn is_sealed_copy() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on an fd we own; returns -1 on files that are not memfds.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-execute the current process from a sealed memfd copy of its binary, with the same argv and
/// environment. Returns only on error.
pub fn reexec_sealed() -> Result<std::convert::Infallible> {
    let mut src = std::fs::File::open("/proc/self/exe").ctx(|| "open /proc/self/exe".into())?;
    let name = c"husk";
    const MFD_EXEC: libc::c_uint = 0x10;
    // SAFETY: memfd_create with a static name; a new fd is returned or -1.
    let mut fd = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | MFD_EXEC,
        )
    };
    if fd < 0 {
        // Kernels before 6.3 reject MFD_EXEC; they are executable by default.
        // SAFETY: as above.
        fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
    }
    if fd < 0 {
        return Err(Error::sys("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor we own.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut dst = std::fs::File::from(mem);
    std::io::copy(&mut src, &mut dst).ctx(|| "copy husk binary into memfd".into())?;
    // SAFETY: F_ADD_SEALS on our memfd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(Error::sys("seal memfd", std::io::Error::last_os_error()));
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::container("argument contains a NUL byte"))?;
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut b = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            b.push(b'=');
            b.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            CString::new(b).ok()
        })
        .collect();
    let err = nix::unistd::fexecve(dst.as_raw_fd_borrowed(), &args, &env);
    err.ctx(|| "fexecve sealed husk copy".into())
        .map(|never| match never {})
}

trait Borrowed {
    fn as_raw_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl Borrowed for std::fs::File {
    fn as_raw_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}
