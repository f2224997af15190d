//! Terminals: the container's pty is created inside its own devpts and the master is handed to
//! the caller over the console socket (SCM_RIGHTS), as runc does.
use crate::error::{Context, Error, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Send `fd` with a name (the pty's path) over a unix socket.
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let iov = [IoSlice::new(name.as_bytes())];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None)
        .ctx(|| "send pty master over the console socket".into())?;
    Ok(())
}

/// Receive one fd (and its name) sent by `send_fd`.
pub fn recv_fd(sock: RawFd) -> Result<(OwnedFd, String)> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .ctx(|| "receive pty master from the console socket".into())?;
    let mut got = None;
    for c in msg.cmsgs().ctx(|| "read control message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel installed this fd in our table for us; we take ownership once.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    let name = String::from_utf8_lossy(&buf[..n]).to_string();
    got.map(|fd| (fd, name))
        .ok_or_else(|| Error::container("console socket: no file descriptor received"))
}

/// A new pty from the (container's) /dev/ptmx: master, slave and the slave's path.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

pub fn open_pty() -> Result<Pty> {
    let master = crate::sys::open(
        std::path::Path::new("/dev/ptmx"),
        libc::O_RDWR | libc::O_NOCTTY,
    )
    .ctx(|| "open /dev/ptmx".into())?;
    // SAFETY: unlockpt/ptsname_r on a valid pty master fd; buffer is sized and NUL-terminated.
    let mut name = [0 as libc::c_char; 128];
    unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(Error::sys("unlockpt", std::io::Error::last_os_error()));
        }
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(Error::sys("ptsname", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: ptsname_r NUL-terminated the buffer.
    let slave_path = PathBuf::from(
        unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .to_string(),
    );
    let slave = crate::sys::open(&slave_path, libc::O_RDWR | libc::O_NOCTTY)
        .ctx(|| format!("open {}", slave_path.display()))?;
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Set a terminal's window size.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if r != 0 {
        return Err(Error::sys(
            "ioctl TIOCSWINSZ",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Make `fd` (the pty slave) the controlling terminal and stdin/stdout/stderr.
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds; `slave` stays open for the duration.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys(
                format!("dup2 pty slave to fd {target}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TIOCSCTTY with arg 0 on our stdin (the pty slave) after setsid.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            "ioctl TIOCSCTTY",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Connect to the console socket the caller listens on.
pub fn connect_console_socket(path: &std::path::Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .ctx(|| format!("connect console socket {}", path.display()))?;
    Ok(OwnedFd::from(s))
}
