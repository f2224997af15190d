//! linux.netDevices: move a host network interface into the container's network namespace,
//! renamed as asked (LXC's "phys" mode), over rtnetlink; and back on delete.
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_NET_NS_FD: u16 = 28;

/// Where to move a link: into the netns of a pid, or of an open netns fd.
pub enum Target {
    Pid(i32),
    NsFd(i32),
}

fn attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Move the link named `from` (in the caller's netns) to `target`, renamed to `to`.
pub fn move_link(from: &str, to: &str, target: Target) -> Result<()> {
    let what = || format!("move network device {from:?} as {to:?}");
    let cname = std::ffi::CString::new(from)
        .map_err(|_| Error::config(format!("linux.netDevices {from:?}: contains NUL")))?;
    // SAFETY: if_nametoindex with a valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(Error::sys(
            format!("{}: no such device", what()),
            std::io::Error::last_os_error(),
        ));
    }
    if to.is_empty()
        || to.len() >= libc::IFNAMSIZ
        || to.contains('/')
        || to.contains(char::is_whitespace)
    {
        return Err(Error::config(format!(
            "linux.netDevices {from:?}: invalid name {to:?}"
        )));
    }
    let mut body = Vec::new();
    // struct ifinfomsg: family, pad, type, index, flags, change
    body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    match target {
        Target::Pid(p) => attr(&mut body, IFLA_NET_NS_PID, &(p as u32).to_ne_bytes()),
        Target::NsFd(fd) => attr(&mut body, IFLA_NET_NS_FD, &(fd as u32).to_ne_bytes()),
    }
    let mut name = to.as_bytes().to_vec();
    name.push(0);
    attr(&mut body, IFLA_IFNAME, &name);
    let mut msg = Vec::new();
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);

    // SAFETY: a netlink socket; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(Error::sys(
            format!("{}: netlink socket", what()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: send/recv with buffers of the stated lengths.
    let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(Error::sys(
            format!("{}: netlink send", what()),
            std::io::Error::last_os_error(),
        ));
    }
    let mut buf = [0u8; 4096];
    // SAFETY: as above.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(Error::sys(
            format!("{}: netlink reply", what()),
            std::io::Error::last_os_error(),
        ));
    }
    let typ = u16::from_ne_bytes([buf[4], buf[5]]);
    if typ == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(Error::sys(what(), std::io::Error::from_raw_os_error(-code)));
        }
    }
    Ok(())
}

/// Move every device of linux.netDevices into the netns of `pid`.
pub fn move_in(devs: &HashMap<String, oci_spec::runtime::LinuxNetDevice>, pid: i32) -> Result<()> {
    for (host, d) in devs {
        let name = d.name().clone().unwrap_or_else(|| host.clone());
        move_link(host, &name, Target::Pid(pid))?;
    }
    Ok(())
}

/// Move the devices back from the netns of the running `pid` to ours, with their host names.
pub fn move_out(devs: &HashMap<String, oci_spec::runtime::LinuxNetDevice>, pid: i32) -> Result<()> {
    let host_ns = crate::sys::open(std::path::Path::new("/proc/self/ns/net"), libc::O_RDONLY)
        .map_err(|e| Error::sys("open /proc/self/ns/net", e))?;
    let theirs = crate::sys::open(
        std::path::Path::new(&format!("/proc/{pid}/ns/net")),
        libc::O_RDONLY,
    )
    .map_err(|e| Error::sys(format!("open /proc/{pid}/ns/net"), e))?;
    crate::namespaces::join(oci_spec::runtime::LinuxNamespaceType::Network, &theirs)?;
    let mut res = Ok(());
    for (host, d) in devs {
        let name = d.name().clone().unwrap_or_else(|| host.clone());
        if let Err(e) = move_link(&name, host, Target::NsFd(host_ns.as_raw_fd())) {
            res = Err(e);
        }
    }
    crate::namespaces::join(oci_spec::runtime::LinuxNamespaceType::Network, &host_ns)?;
    res
}
