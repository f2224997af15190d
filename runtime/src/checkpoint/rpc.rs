//! CRIU's RPC over `criu swrk FD`: husk starts criu as its child with one end of a SOCK_SEQPACKET
//! socketpair, sends `criu_req` messages and reads `criu_resp` messages (images/rpc.proto).
use super::proto::{self, Msg};
use crate::error::{Context, Error, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What CRIU's notify messages are handed to: the script name, the pid it carries and an fd
/// that came with it (e.g. the status fd for lazy pages).
pub type NotifyFn<'a> = dyn FnMut(&str, Option<i32>, Option<OwnedFd>) -> Result<()> + 'a;

/// `criu_req_type` values.
pub mod req {
    pub const DUMP: u64 = 1;
    pub const RESTORE: u64 = 2;
    pub const PRE_DUMP: u64 = 4;
    pub const NOTIFY: u64 = 6;
    pub const FEATURE_CHECK: u64 = 9;
    pub const VERSION: u64 = 10;
}

/// `criu_opts` field numbers used by husk.
pub mod opt {
    pub const IMAGES_DIR_FD: u32 = 1;
    pub const PID: u32 = 2;
    pub const LEAVE_RUNNING: u32 = 3;
    pub const EXT_UNIX_SK: u32 = 4;
    pub const TCP_ESTABLISHED: u32 = 5;
    pub const SHELL_JOB: u32 = 7;
    pub const FILE_LOCKS: u32 = 8;
    pub const LOG_LEVEL: u32 = 9;
    pub const LOG_FILE: u32 = 10;
    pub const NOTIFY_SCRIPTS: u32 = 12;
    pub const ROOT: u32 = 13;
    pub const PARENT_IMG: u32 = 14;
    pub const TRACK_MEM: u32 = 15;
    pub const AUTO_DEDUP: u32 = 16;
    pub const WORK_DIR_FD: u32 = 17;
    pub const MANAGE_CGROUPS: u32 = 24;
    pub const CG_ROOT: u32 = 25;
    pub const RST_SIBLING: u32 = 26;
    pub const INHERIT_FD: u32 = 27;
    pub const MANAGE_CGROUPS_MODE: u32 = 34;
    pub const EXTERNAL: u32 = 37;
    pub const EMPTY_NS: u32 = 38;
    pub const FREEZE_CGROUP: u32 = 44;
    pub const ORPHAN_PTS_MASTER: u32 = 50;
    /// criu_page_server_info: where dump sends (or a lazy dump serves) memory pages
    pub const PS: u32 = 11;
    pub const LAZY_PAGES: u32 = 48;
    pub const STATUS_FD: u32 = 49;
}

/// `criu_cg_mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgMode {
    Ignore = 0,
    Soft = 3,
    Full = 4,
    Strict = 5,
}

impl std::str::FromStr for CgMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<CgMode> {
        match s {
            "ignore" => Ok(CgMode::Ignore),
            "soft" => Ok(CgMode::Soft),
            "full" => Ok(CgMode::Full),
            "strict" => Ok(CgMode::Strict),
            _ => Err(Error::container(format!(
                "--manage-cgroups-mode {s:?}: expected one of soft, full, strict, ignore"
            ))),
        }
    }
}

/// A `criu_opts` message with the fields husk sets.
#[derive(Debug, Default)]
pub struct Opts {
    msg: Msg,
}

impl Opts {
    pub fn new(images_dir_fd: i32) -> Opts {
        let mut msg = Msg::new();
        msg.int32(opt::IMAGES_DIR_FD, images_dir_fd);
        Opts { msg }
    }
    pub fn int32(&mut self, field: u32, v: i32) -> &mut Opts {
        self.msg.int32(field, v);
        self
    }
    pub fn uint32(&mut self, field: u32, v: u32) -> &mut Opts {
        self.msg.uint32(field, v);
        self
    }
    /// Set a bool option only when true (CRIU's defaults are all false).
    pub fn flag(&mut self, field: u32, v: bool) -> &mut Opts {
        if v {
            self.msg.bool(field, true);
        }
        self
    }
    pub fn string(&mut self, field: u32, v: &str) -> &mut Opts {
        self.msg.string(field, v);
        self
    }
    /// `external` entries (`mnt[KEY]:VAL`, `net[INODE]:KEY`, ...).
    pub fn external(&mut self, v: &str) -> &mut Opts {
        self.string(opt::EXTERNAL, v)
    }
    /// The page server (`criu_page_server_info` address + port).
    pub fn page_server(&mut self, address: &str, port: u16) -> &mut Opts {
        let mut m = Msg::new();
        m.string(1, address).int32(2, i32::from(port));
        self.msg.msg(opt::PS, &m);
        self
    }
    /// An `inherit_fd` entry: CRIU uses its own fd `fd` for the file whose dump-time name is `key`.
    pub fn inherit_fd(&mut self, key: &str, fd: i32) -> &mut Opts {
        let mut m = Msg::new();
        m.string(1, key).int32(2, fd);
        self.msg.msg(opt::INHERIT_FD, &m);
        self
    }
    /// A `cg_root` entry: controller (None for all) → the cgroup path the restored tree goes to.
    pub fn cg_root(&mut self, ctrl: Option<&str>, path: &str) -> &mut Opts {
        let mut m = Msg::new();
        if let Some(c) = ctrl {
            m.string(1, c);
        }
        m.string(2, path);
        self.msg.msg(opt::CG_ROOT, &m);
        self
    }
}

/// The parts of a `criu_resp` husk reads.
#[derive(Debug, Default, Clone)]
pub struct Resp {
    pub typ: u64,
    pub success: bool,
    /// criu_dump_resp.restored
    pub dump_restored: bool,
    /// criu_restore_resp.pid
    pub restored_pid: Option<i32>,
    pub notify_script: Option<String>,
    pub notify_pid: Option<i32>,
    pub cr_errno: Option<i32>,
    pub cr_errmsg: Option<String>,
    /// criu_features.mem_track (answer to FEATURE_CHECK)
    pub mem_track: Option<bool>,
    /// criu_features.lazy_pages (answer to FEATURE_CHECK: userfaultfd as CRIU needs it)
    pub lazy_pages: Option<bool>,
    /// major, minor, sublevel
    pub version: Option<(i32, i32, i32)>,
}

fn parse_resp(data: &[u8]) -> std::result::Result<Resp, proto::DecodeError> {
    let f = proto::fields(data)?;
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut r = Resp {
        typ: proto::varint(&f, 1).unwrap_or(0),
        success: proto::varint(&f, 2) == Some(1),
        cr_errno: proto::varint(&f, 7).map(|v| v as i32),
        cr_errmsg: proto::bytes(&f, 9).map(s),
        ..Resp::default()
    };
    if let Some(d) = proto::bytes(&f, 3) {
        r.dump_restored = proto::varint(&proto::fields(d)?, 1) == Some(1);
    }
    if let Some(d) = proto::bytes(&f, 4) {
        r.restored_pid = proto::varint(&proto::fields(d)?, 1).map(|v| v as i32);
    }
    if let Some(d) = proto::bytes(&f, 5) {
        let n = proto::fields(d)?;
        r.notify_script = proto::bytes(&n, 1).map(s);
        r.notify_pid = proto::varint(&n, 2).map(|v| v as i32);
    }
    if let Some(d) = proto::bytes(&f, 8) {
        let feat = proto::fields(d)?;
        r.mem_track = proto::varint(&feat, 1).map(|v| v == 1);
        r.lazy_pages = proto::varint(&feat, 2).map(|v| v == 1);
    }
    if let Some(d) = proto::bytes(&f, 10) {
        let v = proto::fields(d)?;
        let g = |n| proto::varint(&v, n).map(|x| x as i32);
        if let (Some(maj), Some(min)) = (g(1), g(2)) {
            r.version = Some((maj, min, g(4).unwrap_or(0)));
        }
    }
    Ok(r)
}

/// The criu binary: `--criu PATH`, else /usr/local/sbin/criu (where hack/criu.sh installs a CRIU
/// that works on new kernels), else the first criu on PATH.
pub fn find_criu(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(Error::container(format!(
            "--criu {}: no such file",
            p.display()
        )));
    }
    let local = Path::new("/usr/local/sbin/criu");
    if local.is_file() {
        return Ok(local.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let c = dir.join("criu");
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(Error::Unsupported(
        "checkpoint/restore needs CRIU: no criu found in /usr/local/sbin or on PATH (install it with hack/criu.sh, or pass --criu PATH)".into(),
    ))
}

/// A running `criu swrk`.
pub struct Swrk {
    child: Child,
    sock: OwnedFd,
    criu: PathBuf,
}

impl Swrk {
    /// Start `criu swrk 3`. The child keeps husk's stdio (CRIU inherits fds 0-2 into a restored
    /// tree through `inherit_fd`), its signal mask is cleared, and it dies with husk.
    pub fn spawn(criu: &Path) -> Result<Swrk> {
        let mut sv = [0i32; 2];
        // SAFETY: socketpair writes two fds into `sv`, which we own from here on.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Error::sys(
                "socketpair(AF_UNIX, SOCK_SEQPACKET) for criu swrk",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (ours, theirs) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1]))
        };
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(criu);
        cmd.arg("swrk")
            .arg(child_fd.to_string())
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec (fcntl, signal, sigprocmask, prctl).
        unsafe {
            cmd.pre_exec(move || {
                crate::sys::clear_cloexec(child_fd)?;
                crate::sys::reset_signals();
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("start {} swrk", criu.display()))?;
        drop(theirs);
        Ok(Swrk {
            child,
            sock: ours,
            criu: criu.to_path_buf(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn send(&self, data: &[u8]) -> Result<()> {
        // SAFETY: sending from a valid buffer on a socket we own.
        let n = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 || n as usize != data.len() {
            return Err(Error::sys(
                format!("send request to {} swrk", self.criu.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Read one response; EOF means criu exited (its log says why).
    pub fn recv(&self) -> Result<Resp> {
        self.recv_with_fd().map(|(r, _)| r)
    }

    /// Read one response and the fd CRIU may attach to it (SCM_RIGHTS; a notify such as
    /// `orphan-pts-master` carries one).
    fn recv_with_fd(&self) -> Result<(Resp, Option<OwnedFd>)> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{FromRawFd, RawFd};
        let mut buf = vec![0u8; 1 << 20];
        let (n, fd) = loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::sys(
                        format!("receive response from {} swrk", self.criu.display()),
                        std::io::Error::from(e),
                    ))
                }
            };
            let mut got = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for fd in fds {
                            // SAFETY: the kernel installed this fd for us; owned exactly once.
                            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                            if got.is_none() {
                                got = Some(owned);
                            }
                        }
                    }
                }
            }
            break (msg.bytes, got);
        };
        if n == 0 {
            return Err(Error::container(format!(
                "{} swrk exited without answering",
                self.criu.display()
            )));
        }
        let r = parse_resp(&buf[..n]).map_err(|e| {
            Error::container(format!("response from {} swrk: {e}", self.criu.display()))
        })?;
        Ok((r, fd))
    }

    /// Send a request of type `typ` (with `opts` and, for FEATURE_CHECK, features) and return the
    /// final response, answering NOTIFY messages with success.
    pub fn call(&self, typ: u64, opts: Option<&Opts>, features_mem_track: bool) -> Result<Resp> {
        self.call_notify(typ, opts, features_mem_track, &mut |_, _, _| Ok(()))
    }

    /// Like `call`, with `on_notify(script, fd)` run for each NOTIFY message (with the fd CRIU
    /// attached, if any); an error from it is answered as a failure, which makes CRIU abort.
    pub fn call_notify(
        &self,
        typ: u64,
        opts: Option<&Opts>,
        features_mem_track: bool,
        on_notify: &mut NotifyFn<'_>,
    ) -> Result<Resp> {
        let mut m = Msg::new();
        m.uint32(1, typ as u32);
        if let Some(o) = opts {
            m.msg(2, &o.msg);
        }
        if features_mem_track {
            // criu_features: ask about mem_track and lazy_pages
            let mut f = Msg::new();
            f.bool(1, true).bool(2, true);
            m.msg(5, &f);
        }
        self.send(&m.into_bytes())?;
        let mut failed = None;
        loop {
            let (r, fd) = self.recv_with_fd()?;
            if r.typ == req::NOTIFY {
                let script = r.notify_script.clone().unwrap_or_default();
                tracing::debug!(script, pid = ?r.notify_pid, fd = fd.is_some(), "criu notify");
                let ok = match on_notify(&script, r.notify_pid, fd) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                };
                let mut ack = Msg::new();
                ack.uint32(1, req::NOTIFY as u32).bool(3, ok);
                self.send(&ack.into_bytes())?;
                continue;
            }
            if let Some(e) = failed {
                return Err(e);
            }
            return Ok(r);
        }
    }

    /// Close the socket (criu swrk exits) and reap criu.
    pub fn finish(mut self) -> Result<std::process::ExitStatus> {
        drop(self.sock);
        self.child
            .wait()
            .ctx(|| format!("wait for {} swrk", self.criu.display()))
    }
}

/// What a CRIU binary says about itself and this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// (major, minor, sublevel)
    pub version: Option<(i32, i32, i32)>,
    /// Dirty-memory tracking, needed for pre-dump and incremental images.
    pub mem_track: bool,
    /// userfaultfd as lazy restore needs it.
    pub lazy_pages: bool,
}

/// Ask CRIU (two swrk sessions: VERSION, then FEATURE_CHECK) for its version and features.
pub fn features(criu: &Path) -> Result<Features> {
    let s = Swrk::spawn(criu)?;
    let v = s.call(req::VERSION, None, false)?;
    s.finish()?;
    let s = Swrk::spawn(criu)?;
    let f = s.call(req::FEATURE_CHECK, None, true)?;
    s.finish()?;
    Ok(Features {
        version: v.version,
        mem_track: f.mem_track.unwrap_or(false),
        lazy_pages: f.lazy_pages.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_restore_response() {
        let mut rr = Msg::new();
        rr.int32(1, 4242);
        let mut m = Msg::new();
        m.uint32(1, req::RESTORE as u32).bool(2, true).msg(4, &rr);
        let r = parse_resp(&m.into_bytes()).unwrap();
        assert_eq!(r.typ, req::RESTORE);
        assert!(r.success);
        assert_eq!(r.restored_pid, Some(4242));
    }

    #[test]
    fn parses_an_error_response() {
        let mut m = Msg::new();
        m.uint32(1, req::DUMP as u32)
            .bool(2, false)
            .int32(7, 2)
            .string(9, "Dump failed");
        let r = parse_resp(&m.into_bytes()).unwrap();
        assert!(!r.success);
        assert_eq!(r.cr_errno, Some(2));
        assert_eq!(r.cr_errmsg.as_deref(), Some("Dump failed"));
    }

    #[test]
    fn cg_modes() {
        assert_eq!("soft".parse::<CgMode>().unwrap(), CgMode::Soft);
        assert_eq!("ignore".parse::<CgMode>().unwrap() as u32, 0);
        assert!("props"
            .parse::<CgMode>()
            .unwrap_err()
            .to_string()
            .contains("--manage-cgroups-mode"));
    }
}
