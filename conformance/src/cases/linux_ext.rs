//! config.md "POSIX-platform Mounts" (uidMappings/gidMappings: idmapped mounts) and
//! config-linux.md "Network Devices", "Memory policy" and "Seccomp" (listenerPath).

use super::{case, Case};
use crate::ctx::{CaseResult, Ctx, Outcome};
use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::os::fd::AsRawFd;

pub fn cases() -> Vec<Case> {
    vec![
        case("mounts.idmapped-bind", idmapped_bind),
        case("linux.net-devices-moved-renamed-and-back", net_devices),
        case("linux.memory-policy-bind", memory_policy),
        case("seccomp.notify-listener", seccomp_notify),
        case("linux.rootless-user-namespace", rootless),
    ]
}

fn idmapped_bind(c: &mut Ctx<'_>) -> CaseResult {
    // A bind mount with uidMappings/gidMappings 0 -> 1000 (size 1): a file owned by 0 on disk
    // is seen owned by 1000 inside; the file on disk keeps its owner.
    let src = c.dir.join("idmap-src");
    std::fs::create_dir_all(&src).context("mkdir idmap source")?;
    std::fs::write(src.join("root-owned"), b"").context("write")?;
    let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    c.add_mount(
        json!({"destination": "/idm", "type": "bind", "source": src, "options": ["bind"],
        "uidMappings": map, "gidMappings": map}),
    );
    c.sh("stat -c '%u:%g' /idm/root-owned");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.trim() == "1000:1000",
        "owner through the idmapped mount: {:?}, want 1000:1000",
        o.stdout.trim()
    );
    use std::os::unix::fs::MetadataExt;
    ensure!(
        std::fs::metadata(src.join("root-owned"))?.uid() == 0,
        "the file on disk changed owner"
    );
    Ok(Outcome::Pass)
}

fn net_devices(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md netDevices: the host interface is moved into the container's network
    // namespace under `name`, and returned to the runtime's namespace when the container is
    // deleted.
    let n = std::process::id() % 10_000;
    let tag: u32 =
        c.id.bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % 1000;
    let (a, b) = (format!("hcv{n}x{tag}"), format!("hcp{n}x{tag}"));
    // (Host commands go through the runner, which reaps every child as a subreaper.)
    if !c
        .host(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?
        .ok()
    {
        return Ok(Outcome::Skip(
            "cannot create a veth pair on this host".into(),
        ));
    }
    let r = net_devices_inner(c, &a);
    // Whatever happened, the pair goes (deleting either end removes both).
    let _ = c.host("ip", &["link", "del", &a]);
    let _ = c.host("ip", &["link", "del", &b]);
    r
}

fn net_devices_inner(c: &mut Ctx<'_>, a: &str) -> CaseResult {
    c.cfg["linux"]["netDevices"] = json!({ a: {"name": "hceth0"} });
    c.set_args(&["sleep", "1000"]);
    c.save()?;
    let o = c.create()?;
    ensure!(o.ok(), "{}", o.describe());
    c.start()?;
    let inside = c.rt(&["exec", &c.id.clone(), "ls", "/sys/class/net"])?;
    let on_host = c.host("ip", &["link", "show", a])?.ok();
    c.rt(&["delete", "--force", &c.id.clone()])?;
    ensure!(
        inside.stdout.lines().any(|l| l == "hceth0"),
        "interfaces inside: {:?}",
        inside.stdout
    );
    ensure!(
        !on_host,
        "{a} was still in the host namespace while the container ran"
    );
    let back = c.host("ip", &["link", "show", a])?.ok();
    ensure!(
        back,
        "{a} did not come back to the runtime namespace on delete"
    );
    Ok(Outcome::Pass)
}

fn memory_policy(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
    c.sh("head -1 /proc/self/numa_maps");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("bind:0"),
        "numa_maps under MPOL_BIND 0: {:?}",
        o.stdout
    );
    Ok(Outcome::Pass)
}

fn seccomp_notify(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md seccomp listenerPath: the runtime sends the notify fd and the container
    // state to the agent; the agent's answer is what the syscall returns.
    let sock = c.dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).context("bind agent socket")?;
    let agent = std::thread::spawn(move || -> Result<(String, u32)> {
        listener.set_nonblocking(false)?;
        let (conn, _) = listener.accept()?;
        let (fd, state) = recv_fd_and_text(conn.as_raw_fd())?;
        let mut answered = 0;
        while let Some(id) = notif_recv(fd) {
            notif_send_errno(fd, id, libc::EACCES);
            answered += 1;
        }
        // SAFETY: closing the fd we received.
        unsafe { libc::close(fd) };
        Ok((state, answered))
    });
    c.cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": sock,
        "listenerMetadata": "hc-meta",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    c.sh("mkdir /tmp/hc-notify; echo mkdir=$?");
    let o = c.run()?;
    ensure!(
        o.stdout.contains("mkdir=1"),
        "mkdir under a NOTIFY rule answered EACCES: {}",
        o.describe()
    );
    let (state, answered) = agent
        .join()
        .map_err(|_| anyhow::anyhow!("agent thread panicked"))??;
    ensure!(answered >= 1, "the agent received no notification");
    ensure!(
        state.contains("hc-meta") && state.contains(&c.id),
        "state sent to the agent: {state:?}"
    );
    Ok(Outcome::Pass)
}

/// Receive one SCM_RIGHTS fd and the text sent with it (the container process state).
fn recv_fd_and_text(sock: i32) -> Result<(i32, String)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cbuf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a msghdr pointing at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len();
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(sock, &mut msg, 0) };
    ensure!(
        n > 0,
        "recvmsg from the runtime: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: walking the control messages the kernel filled in.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        ensure!(
            !cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS,
            "no fd from the runtime"
        );
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32)
    };
    let mut text = String::from_utf8_lossy(&buf[..n as usize]).to_string();
    // The rest of the state may follow on the stream.
    let mut more = [0u8; 4096];
    loop {
        // SAFETY: non-blocking peek-free read into a local buffer.
        let m = unsafe {
            libc::recv(
                sock,
                more.as_mut_ptr().cast(),
                more.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if m <= 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&more[..m as usize]));
    }
    Ok((fd, text))
}

#[repr(C)]
struct SeccompData {
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}
#[repr(C)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}
#[repr(C)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc0502100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc0182101;

fn notif_recv(fd: i32) -> Option<u64> {
    // SAFETY: zeroed struct of the size the ioctl expects.
    let mut n: SeccompNotif = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_IOCTL_NOTIF_RECV fills `n`; fails once the filter's processes are gone.
    let r = unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV as _, &mut n) };
    (r == 0).then_some(n.id)
}

fn notif_send_errno(fd: i32, id: u64, errno: i32) {
    let resp = SeccompNotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads `resp`.
    unsafe { libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
}

fn rootless(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md User namespace mappings, run by an unprivileged user: the container's root
    // is the caller's uid and nothing else (the "rootless" mode of runc-compatible runtimes).
    if c.rt.crun_wrap {
        return Ok(Outcome::Skip(
            "the hybrid-cgroup wrapper for crun needs root (unshare -m)".into(),
        ));
    }
    if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .is_ok_and(|v| v.trim() == "0")
    {
        return Ok(Outcome::Skip(
            "unprivileged user namespaces are disabled on this host".into(),
        ));
    }
    let tag: u32 =
        c.id.bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
            % 100_000;
    let name = format!("hcrl{}x{tag}", std::process::id() % 10_000);
    ensure!(
        c.host("useradd", &["-M", "-s", "/bin/sh", &name])?.ok(),
        "useradd {name}"
    );
    let out = c.host("id", &["-u", &name])?;
    let uid: u32 = out.stdout.trim().parse().context("uid of the test user")?;
    let r = rootless_inner(c, uid);
    // The user goes whatever happened.
    let _ = c.host("userdel", &[&name]);
    r
}

fn rootless_inner(c: &mut Ctx<'_>, uid: u32) -> CaseResult {
    c.private_rootfs_owned_by(uid, uid)?;
    let map = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    c.cfg["linux"]["uidMappings"] = map.clone();
    c.cfg["linux"]["gidMappings"] = map;
    c.cfg["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}]);
    if let Some(o) = c.cfg["linux"].as_object_mut() {
        o.remove("resources");
        o.remove("cgroupsPath");
    }
    let mounts: Vec<serde_json::Value> = c.cfg["mounts"].as_array().cloned().unwrap_or_default().into_iter()
        .filter(|m| m["type"] != "cgroup" && m["type"] != "cgroup2")
        .map(|mut m| {
            if m["destination"] == "/sys" {
                m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
            if m["destination"] == "/dev/pts" {
                m["options"] = json!(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]);
            }
            m
        })
        .collect();
    c.cfg["mounts"] = serde_json::Value::Array(mounts);
    c.sh("id -u; cat /proc/self/uid_map");
    c.save()?;
    let root = c.dir.join("rootless-state");
    std::fs::create_dir_all(&root)?;
    let bundle = std::path::PathBuf::from(c.bundle_str());
    for p in [bundle.clone(), root.clone(), bundle.join("config.json")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid))
            .with_context(|| format!("chown {}", p.display()))?;
    }
    // The user must be able to reach the bundle through the runner's directories.
    for a in bundle
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(std::env::temp_dir()) && *a != std::env::temp_dir())
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a)?.permissions().mode();
        std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    let rt = c.rt.path.display().to_string();
    let (r, b, id) = (root.display().to_string(), c.bundle_str(), c.id.clone());
    let args = [
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        &format!("XDG_RUNTIME_DIR={r}"),
        &rt,
        "--root",
        &r,
        "run",
        "--bundle",
        &b,
        &id,
    ];
    let o = c.host("setpriv", &args)?;
    let _ = c.host(
        "setpriv",
        &[
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            &rt,
            "--root",
            &r,
            "delete",
            "--force",
            &id,
        ],
    );
    ensure!(o.ok(), "rootless run: {}", o.describe());
    let mut lines = o.stdout.lines();
    ensure!(lines.next() == Some("0"), "id -u inside: {:?}", o.stdout);
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    ensure!(
        map == ["0", &uid.to_string(), "1"],
        "uid_map inside: {:?}",
        o.stdout
    );
    Ok(Outcome::Pass)
}
