//! The parent <-> init sync channel: one SOCK_SEQPACKET socketpair, one JSON message per packet.
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};

/// Messages from the container side (intermediate or init) to the parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToParent {
    /// The intermediate process unshared a user namespace: write its id maps.
    NeedIdMaps,
    /// The intermediate forked the init: its host pid.
    InitPid(i32),
    /// Mounts are done: run prestart and createRuntime hooks now.
    RunHooks,
    /// Set-up is complete; the init blocks on `start_fd` until `start`. `exec_fd` is the write
    /// end of a close-on-exec pipe: its readers see EOF once the init has exec'd (or died).
    Ready { start_fd: i32, exec_fd: i32 },
    /// The seccomp listener fd follows in the next packet (SCM_RIGHTS).
    SeccompFd,
    /// Set-up failed; the message names what.
    Error(String),
}

/// Messages from the parent to the container side.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Go on: the process is in its cgroups (and its id maps are written).
    Go,
    IdMapsDone,
    /// Hooks ran; the state JSON for the container-side hooks.
    HooksDone {
        state: String,
    },
    /// The seccomp listener fd was handed to the agent.
    SeccompDone,
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "socketpair for the init sync channel".into())?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send<T: Serialize>(&self, msg: &T) -> Result<()> {
        let data = serde_json::to_vec(msg)
            .map_err(|e| Error::container(format!("encode sync message: {e}")))?;
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            &data,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .ctx(|| "send on init sync channel".into())?;
        Ok(())
    }

    /// Receive one message; `None` when the other side closed without sending (it died).
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<Option<T>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match nix::sys::socket::recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map(Some)
                        .map_err(|e| Error::container(format!("decode sync message: {e}")))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::sys(
                        "recv on init sync channel",
                        std::io::Error::from_raw_os_error(e as i32),
                    ))
                }
            }
        }
    }

    /// Send an fd (SCM_RIGHTS) as its own packet.
    pub fn send_fd(&self, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        use std::os::fd::AsFd;
        crate::seccomp::send_fd(self.fd.as_fd(), fd)?;
        Ok(())
    }

    pub fn recv_fd(&self) -> Result<OwnedFd> {
        use std::os::fd::AsFd;
        Ok(crate::seccomp::recv_fd(self.fd.as_fd())?)
    }

    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
