//! SCMP_ACT_NOTIFY plumbing: passing the listener fd (init -> runtime -> seccomp agent)
//! and, for agents and tests, receiving and answering notifications.
//!
//! As runc does, the runtime connects to `linux.seccomp.listenerPath` (a unix stream
//! socket) and sends, in one sendmsg(2), the JSON of the runtime-spec
//! `ContainerProcessState` (`fds: ["seccompFd"]`, the container pid, `listenerMetadata`
//! as `metadata` and the container state) with the listener fd as SCM_RIGHTS.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::errno::Errno;
use oci_spec::runtime::{ContainerProcessState, State, SECCOMP_FD_NAME};

use super::{Result, SeccompError};

/// Control-message buffer for one fd, aligned like `struct cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// sendmsg(2) of `payload` with `fd` attached as SCM_RIGHTS. Does not allocate.
fn sendmsg_fd(sock: BorrowedFd<'_>, payload: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut buf = CmsgBuf([0; 64]);
    let iov = [IoSlice::new(payload)];
    // SAFETY: all pointers refer to live stack/borrowed memory for the duration of the
    // call; the cmsg buffer is large and aligned enough for one int (CMSG_SPACE(4) <= 64).
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Sends `fd` over the unix socket `sock` (one byte of payload + SCM_RIGHTS). Meant for
/// the container init handing the listener fd to the runtime; does not allocate.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    sendmsg_fd(sock, b"S", fd)
        .map(|_| ())
        .map_err(|e| SeccompError::Notify {
            op: "sendmsg(SCM_RIGHTS)",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
}

/// Receives one fd sent with `send_fd` (or any SCM_RIGHTS message carrying one fd),
/// along with up to `payload.len()` bytes of data. Returns the fd and the data length.
pub fn recv_fd_with(sock: BorrowedFd<'_>, payload: &mut [u8]) -> Result<(OwnedFd, usize)> {
    let err = |errno| SeccompError::Notify {
        op: "recvmsg(SCM_RIGHTS)",
        errno,
    };
    let mut buf = CmsgBuf([0; 64]);
    let mut iov = [io::IoSliceMut::new(payload)];
    // SAFETY: pointers refer to live buffers for the duration of recvmsg; the control
    // data is parsed with the CMSG_* helpers within `msg_controllen`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = buf.0.len() as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(err(e));
            }
        };
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return Ok((OwnedFd::from_raw_fd(fd), n));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Err(err(Errno::EBADMSG))
    }
}

/// Receives one fd sent with `send_fd`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut b = [0u8; 1];
    recv_fd_with(sock, &mut b).map(|(fd, _)| fd)
}

/// Sends the notify listener fd and the container process state to the seccomp agent
/// listening on `listener_path`, as runc does.
pub fn send_to_listener(
    listener_path: &Path,
    listener_metadata: Option<&str>,
    notify_fd: BorrowedFd<'_>,
    pid: i32,
    state: &State,
) -> Result<()> {
    let io_err = |source| SeccompError::Listener {
        path: listener_path.to_path_buf(),
        source,
    };
    let mut msg = ContainerProcessState::default();
    msg.set_version(state.version().clone());
    msg.set_fds(vec![SECCOMP_FD_NAME.to_string()]);
    msg.set_pid(pid);
    msg.set_metadata(listener_metadata.map(str::to_string));
    msg.set_state(state.clone());
    let json = serde_json::to_vec(&msg).map_err(|e| io_err(io::Error::other(e)))?;

    let stream = UnixStream::connect(listener_path).map_err(io_err)?;
    let sock = std::os::fd::AsFd::as_fd(&stream);
    let mut sent = sendmsg_fd(sock, &json, notify_fd).map_err(io_err)?;
    // A stream socket may take the payload in pieces; the fd went with the first one.
    while sent < json.len() {
        let n = nix::sys::socket::send(
            sock.as_raw_fd(),
            &json[sent..],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(|e| io_err(io::Error::from(e)))?;
        sent += n;
    }
    Ok(())
}

/// One seccomp user notification.
#[derive(Clone, Copy, Debug)]
pub struct Notification {
    pub id: u64,
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// The answer to a notification.
#[derive(Clone, Copy, Debug)]
pub struct NotifyResponse {
    pub id: u64,
    /// Return value of the syscall when `error` is 0.
    pub val: i64,
    /// Positive errno to fail the syscall with, or 0.
    pub error: i32,
    /// Let the kernel run the syscall (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
    pub continue_syscall: bool,
}

/// Blocks until a notification arrives on the listener fd.
pub fn recv_notification(listener: BorrowedFd<'_>) -> Result<Notification> {
    loop {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed and fills it.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: ioctl with a pointer to a live, correctly sized struct.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut n as *mut libc::seccomp_notif,
            )
        };
        if r == 0 {
            return Ok(Notification {
                id: n.id,
                pid: n.pid,
                nr: n.data.nr,
                arch: n.data.arch,
                instruction_pointer: n.data.instruction_pointer,
                args: n.data.args,
            });
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(SeccompError::Notify {
                op: "ioctl(SECCOMP_IOCTL_NOTIF_RECV)",
                errno: e,
            });
        }
    }
}

/// Answers a notification.
pub fn respond(listener: BorrowedFd<'_>, resp: NotifyResponse) -> Result<()> {
    let mut r = libc::seccomp_notif_resp {
        id: resp.id,
        val: resp.val,
        error: -resp.error,
        flags: if resp.continue_syscall {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: ioctl with a pointer to a live, correctly sized struct.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut r as *mut libc::seccomp_notif_resp,
        )
    };
    if ret != 0 {
        return Err(SeccompError::Notify {
            op: "ioctl(SECCOMP_IOCTL_NOTIF_SEND)",
            errno: Errno::last(),
        });
    }
    Ok(())
}
