//! `checkpoint` and `restore` (runc's commands) on top of CRIU, driven through CRIU's RPC
//! (`criu swrk`, see `rpc`).
//!
//! Checkpoint: the container's config, the stdio of its init (`descriptors.json`, as runc writes it)
//! and the list of external mounts go into the image directory next to CRIU's images. The rootfs
//! and every bind mount are external mounts (CRIU does not copy host files); joined network
//! namespaces are external namespaces. While CRIU works, a marker file `husk-incomplete` sits in
//! the image directory; it is removed only when the dump succeeded, so a refused checkpoint leaves
//! the container running and the image visibly unusable.
//!
//! Restore: a new state directory and new cgroups (from the config, under the new ID) are made
//! first; criu swrk is moved into those cgroups and told (`cg_root`) that the dumped cgroups map to
//! them, so the restored tree lands there. CRIU restores the tree as husk's sibling child
//! (`rst_sibling`), which gives husk the init's pid for state.json. Any failure undoes everything:
//! restored processes, cgroups, the temporary root mount and the state directory.
//!
//! Terminals: the pty master of a `process.terminal` container lives outside it (with whoever
//! got it over the console socket), so the dump records the slave alone (`orphan_pts_master`);
//! restore asks CRIU for a new master (an `orphan-pts-master` notify carrying the fd) and sends
//! it to `restore --console-socket`, as runc does.
//!
//! TCP (`--tcp-established`): the container's network namespace must survive the checkpoint,
//! so the container joins one by path (e.g. from `ip netns add`); CRIU treats it as external and
//! repairs the sockets into it on restore. CRIU 4.1.1 cannot dump inet sockets on Linux >= 6.16
//! (hack/migrate/criu-patched.sh builds a fixed one). hack/migrate.sh moves such a container
//! between two husk roots with its connection.
pub mod rpc;

use crate::cgroups::{CgroupManager, CgroupOptions, Host};
use crate::error::{Context, Error, Result};
use crate::state::{ContainerState, Locked, Root, Status};
use nix::mount::MsFlags;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rpc::{on, CriuOpts, CriuReqType, Swrk};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The container's config, saved with the image.
pub const CONFIG_FILE: &str = "husk-config.json";
/// What restore needs besides the config (bundle, rootfs, external mounts).
pub const META_FILE: &str = "husk-checkpoint.json";
/// The init's fds 0-2 at checkpoint time (the same file runc writes).
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
/// Present while a checkpoint is in progress or after it failed; holds the reason.
pub const INCOMPLETE_MARKER: &str = "husk-incomplete";
pub const DUMP_LOG: &str = "dump.log";
pub const RESTORE_LOG: &str = "restore.log";
/// Joined namespaces CRIU treats as external: CRIU's name for the type and the key in the image
/// (the keys runc uses).
const EXTERNAL_NS: [(LinuxNamespaceType, &str, &str); 2] = [
    (LinuxNamespaceType::Network, "net", "extRootNetNS"),
    (LinuxNamespaceType::Pid, "pid", "extRootPidNS"),
];

/// The spec's joined (by path) namespaces among EXTERNAL_NS: (CRIU type name, key, path).
fn joined_external_ns(spec: &Spec) -> Vec<(&'static str, &'static str, PathBuf)> {
    let mut out = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        let Some(p) = ns.path() else { continue };
        if let Some((_, name, key)) = EXTERNAL_NS.iter().find(|(t, _, _)| *t == ns.typ()) {
            out.push((*name, *key, p.clone()));
        }
    }
    out
}
fn is_terminal(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// How much CRIU logs (4 = debug: the log is the only account of a failure).
const CRIU_LOG_LEVEL: i32 = 4;

/// Options of `husk checkpoint` (runc's flags).
#[derive(Debug, Default, Clone)]
pub struct CheckpointOpts {
    pub id: String,
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub pre_dump: bool,
    pub parent_path: Option<PathBuf>,
    pub manage_cgroups_mode: Option<String>,
    pub empty_ns: Vec<String>,
    pub auto_dedup: bool,
    /// Dump everything but memory, then serve the memory pages from `page_server` to the
    /// destination's `criu lazy-pages` daemon (userfaultfd) until it has fetched them all.
    pub lazy_pages: bool,
    /// `ADDRESS:PORT`: with --lazy-pages where this side serves pages; otherwise the remote
    /// `criu page-server` the memory is sent to instead of the image directory.
    pub page_server: Option<String>,
    /// CRIU writes a byte to this (inherited) fd once the lazy page server is ready.
    pub status_fd: Option<i32>,
    pub criu: Option<PathBuf>,
}

/// Options of `husk restore` (runc's flags).
#[derive(Debug, Default, Clone)]
pub struct RestoreOpts {
    pub id: String,
    pub image_path: PathBuf,
    /// Use this bundle's config.json and rootfs instead of the ones saved with the image.
    pub bundle: Option<PathBuf>,
    pub work_path: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub manage_cgroups_mode: Option<String>,
    pub no_pivot: bool,
    pub empty_ns: Vec<String>,
    pub criu: Option<PathBuf>,
    pub systemd_cgroup: bool,
    /// Where the new pty master of a terminal container is sent (SCM_RIGHTS), as with create.
    pub console_socket: Option<PathBuf>,
    /// Memory comes on demand (userfaultfd) from a `criu lazy-pages` daemon listening in the
    /// work directory, which fetches it from the source's page server.
    pub lazy_pages: bool,
    /// Punch the restored pages out of the image files as they are read.
    pub auto_dedup: bool,
    /// Foreground restore: do not become a child subreaper.
    pub no_subreaper: bool,
}

/// `ADDRESS:PORT` (IPv6 as `[ADDR]:PORT`) of a page server.
fn parse_page_server(s: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::container(format!(
            "--page-server {s:?}: expected ADDRESS:PORT (e.g. 192.0.2.1:27000)"
        ))
    };
    let (addr, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if addr.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((addr.to_string(), port))
}

/// Size of the pipe CRIU's lazy page server tees pages through (criu/include/page-pipe.h
/// PIPE_MAX_SIZE pages: 8 pages of `struct pipe_buffer` slots, 819 pages on x86-64).
const CRIU_LAZY_PIPE_BYTES: i32 = 819 * 4096;

/// CRIU's lazy page server sets its pipe to `CRIU_LAZY_PIPE_BYTES` and, when the kernel refuses
/// (above fs.pipe-max-size without CAP_SYS_RESOURCE), fails only once the destination asks
/// for pages ("splice: Bad file descriptor"). Check it first, the same way.
fn require_lazy_pipe_size() -> Result<()> {
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .ctx(|| "pipe2 to probe F_SETPIPE_SZ".into())?;
    match nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CRIU_LAZY_PIPE_BYTES)) {
        Ok(_) => Ok(()),
        Err(e) => {
            let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
            Err(Error::Unsupported(format!(
                "--lazy-pages: CRIU's lazy page server needs a pipe of {CRIU_LAZY_PIPE_BYTES} bytes, and \
                 F_SETPIPE_SZ refuses it here ({e}; fs.pipe-max-size is {}): raise \
                 /proc/sys/fs/pipe-max-size to at least 4194304 or run with CAP_SYS_RESOURCE",
                max.trim()
            )))
        }
    }
}

/// Lazy pages need CRIU's userfaultfd support on this kernel.
fn require_lazy_pages(criu: &Path) -> Result<()> {
    if !rpc::features(criu)?.lazy_pages {
        return Err(Error::Unsupported(format!(
            "--lazy-pages needs userfaultfd as CRIU uses it, and {} reports it is not available here",
            criu.display()
        )));
    }
    Ok(())
}

/// An external mount: CRIU's key (the mount point in the container) and the host path bound there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMount {
    pub key: String,
    pub source: PathBuf,
    /// true for spec bind mounts (their source may change with `restore --bundle`)
    #[serde(default)]
    pub from_spec: bool,
}

/// One of the init's fds 0-2 that comes from outside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioFd {
    pub fd: i32,
    /// CRIU's key for it (`inherit_fd` on restore).
    pub key: String,
    /// true for files CRIU must be told are external (`external file[...]` on dump).
    pub external_file: bool,
}

/// The contents of META_FILE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub own_pidns: bool,
    pub external_mounts: Vec<ExternalMount>,
    /// The init's stdio as CRIU names it in the image (`pipe:[INODE]` or an external
    /// `file[MNT:INODE]`): restore hands husk's own fd of the same number to CRIU for each.
    #[serde(default)]
    pub stdio: Vec<StdioFd>,
    pub checkpointed: chrono::DateTime<chrono::Utc>,
}

fn empty_ns_flags(types: &[String]) -> Result<u32> {
    let mut flags = 0u32;
    for t in types {
        match t.as_str() {
            "network" | "net" => flags |= libc::CLONE_NEWNET as u32,
            other => {
                return Err(Error::Unsupported(format!(
                    "--empty-ns {other:?}: only \"network\" can be left empty (as with runc)"
                )))
            }
        }
    }
    Ok(flags)
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// CRIU mounts the container's mounts back onto their mount points, which must exist in the
/// rootfs: a fresh rootfs (restore into a new container, e.g. podman's `restore --import`) lacks
/// those the runtime created at create time. Like runc: every mount's destination that is not
/// inside a tmpfs (CRIU restores a tmpfs's contents itself) is created, as a file for a bind
/// mount of a file, else as a directory; resolved inside the root (symlinks cannot leave it).
fn make_restore_mountpoints(spec: &Spec, root: &Path, externals: &[ExternalMount]) -> Result<()> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    let root_fd = open_dir(root, "restore root")?;
    for m in mounts {
        let dest = m.destination();
        if tmpfs.iter().any(|t| dest != *t && dest.starts_with(t)) {
            continue;
        }
        let file = is_bind(m) && {
            let key = dest.display().to_string();
            let source = externals
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.source.clone())
                .or_else(|| m.source().clone());
            source.is_some_and(|s| !s.is_dir())
        };
        crate::rootfs::mkdir_all_in_root(std::os::fd::AsFd::as_fd(&root_fd), dest, file)?;
    }
    Ok(())
}

/// The spec's bind mounts as CRIU external mounts (key = destination in the container).
fn spec_binds(spec: &Spec, bundle: &Path) -> Vec<ExternalMount> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if !is_bind(m) {
            continue;
        }
        let Some(src) = m.source() else { continue };
        let source = if src.is_absolute() {
            src.clone()
        } else {
            bundle.join(src)
        };
        out.push(ExternalMount {
            key: m.destination().display().to_string(),
            source,
            from_spec: true,
        });
    }
    out
}

/// Every mount of the container that comes from outside its rootfs and that CRIU must treat as
/// external: the spec's bind mounts, and (read from the init's mountinfo) bind mounts of host
/// cgroup directories and of the host's /dev/null over masked files.
fn external_mounts(st: &ContainerState) -> Result<Vec<ExternalMount>> {
    let mut out = spec_binds(&st.config, &st.bundle);
    let path = format!("/proc/{}/mountinfo", st.pid);
    let text = std::fs::read_to_string(&path).ctx(|| format!("read {path}"))?;
    for line in text.lines() {
        let Some(mi) = MountInfo::parse(line) else {
            continue;
        };
        if mi.mount_point == "/" || out.iter().any(|e| e.key == mi.mount_point) {
            continue;
        }
        if mi.fstype == "cgroup" && mi.root != "/" {
            // a v1 controller directory bound into the container's /sys/fs/cgroup
            out.push(ExternalMount {
                key: mi.mount_point.clone(),
                source: PathBuf::from(format!("cgroup:{}", mi.super_options)),
                from_spec: false,
            });
        } else if mi.fstype == "cgroup2" && mi.root != "/" {
            out.push(ExternalMount {
                key: mi.mount_point.clone(),
                source: PathBuf::from("cgroup2:"),
                from_spec: false,
            });
        } else if mi.fstype == "devtmpfs" && mi.root == "/null" {
            out.push(ExternalMount {
                key: mi.mount_point.clone(),
                source: PathBuf::from("/dev/null"),
                from_spec: false,
            });
        }
    }
    Ok(out)
}

/// The init's fds 0-2 that CRIU cannot recreate by itself: pipes (their other end is outside) and
/// files on mounts outside the container (e.g. the host's /dev/null).
fn stdio_fds(pid: i32) -> Result<Vec<StdioFd>> {
    let path = format!("/proc/{pid}/mountinfo");
    let mounts: Vec<u64> = std::fs::read_to_string(&path)
        .ctx(|| format!("read {path}"))?
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let mut out = Vec::new();
    for fd in 0..3 {
        let link = match std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
            Ok(l) => l.display().to_string(),
            Err(_) => continue,
        };
        if link.starts_with("pipe:") {
            out.push(StdioFd {
                fd,
                key: link,
                external_file: false,
            });
            continue;
        }
        if link.starts_with("socket:")
            || link.starts_with("anon_inode:")
            || link.starts_with("/dev/pts/")
        {
            continue;
        }
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = std::fs::read_to_string(&info_path).ctx(|| format!("read {info_path}"))?;
        let Some(mnt_id) = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        if mounts.contains(&mnt_id) {
            continue;
        }
        let fd_path = format!("/proc/{pid}/fd/{fd}");
        let meta = std::fs::metadata(&fd_path).ctx(|| format!("stat {fd_path}"))?;
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        out.push(StdioFd {
            fd,
            key: format!("file[{mnt_id:x}:{ino:x}]"),
            external_file: true,
        });
    }
    Ok(out)
}

/// One line of /proc/PID/mountinfo (the fields husk uses).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountInfo {
    root: String,
    mount_point: String,
    fstype: String,
    super_options: String,
}

impl MountInfo {
    fn parse(line: &str) -> Option<MountInfo> {
        let (pre, post) = line.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let unescape = |s: &str| {
            s.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\")
        };
        Some(MountInfo {
            root: unescape(pre.get(3)?),
            mount_point: unescape(pre.get(4)?),
            fstype: post.first()?.to_string(),
            super_options: post.get(2).map(|s| s.to_string()).unwrap_or_default(),
        })
    }
}

/// The lines of a CRIU log that say what went wrong ("Error (file:line): ..."), at most a few.
pub fn criu_log_errors(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let errs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error (") || l.contains("Error:"))
        // CRIU tries to raise its own nofile limit; without CAP_SYS_RESOURCE that fails harmlessly
        .filter(|l| !l.contains("Can't setup RLIMIT_NOFILE for self"))
        .map(|l| l.trim())
        .collect();
    let keep: Vec<&str> = errs.iter().rev().take(6).rev().copied().collect();
    keep.join("; ")
}

fn criu_failure(what: &str, resp: &rpc::Resp, log: &Path) -> Error {
    let mut msg = format!("criu {what} failed");
    // CRIU reports its first error; skip the harmless nofile one (see criu_log_errors)
    let first = resp
        .cr_errmsg
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.contains("RLIMIT_NOFILE for self"));
    if let Some(m) = first {
        msg.push_str(&format!(": {m}"));
    }
    if let Some(e) = resp.cr_errno.filter(|e| *e != 0) {
        msg.push_str(&format!(" ({})", std::io::Error::from_raw_os_error(e)));
    }
    let errs = criu_log_errors(log);
    if !errs.is_empty() {
        msg.push_str(if first.is_some() { "; " } else { ": " });
        msg.push_str(&errs);
    }
    msg.push_str(&format!(" (log: {})", log.display()));
    Error::container(msg)
}

fn open_dir(p: &Path, what: &str) -> Result<OwnedFd> {
    crate::sys::open(p, libc::O_RDONLY | libc::O_DIRECTORY)
        .ctx(|| format!("open {what} {}", p.display()))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::container(format!("serialize {}: {e}", path.display())))?;
    crate::state::write_atomic(path, &data)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).ctx(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| Error::container(format!("{}: {e}", path.display())))
}

fn manage_cgroups(opts: &mut CriuOpts, mode: Option<&str>) -> Result<()> {
    opts.manage_cgroups = Some(true);
    if let Some(m) = mode {
        opts.set_manage_cgroups_mode(rpc::cg_mode(m)?);
    }
    Ok(())
}

/// Fail clearly when CRIU cannot track dirty memory (needed for pre-dump/incremental images).
fn require_mem_track(criu: &Path) -> Result<()> {
    let f = rpc::features(criu)?;
    if !f.mem_track {
        let version = f
            .version
            .map(|(a, b, c)| format!("CRIU {a}.{b}.{c} "))
            .unwrap_or_default();
        return Err(Error::Unsupported(format!(
            "--pre-dump needs dirty-memory tracking (soft-dirty page bits), and {version}({}) reports it \
             is not available on this kernel; only full checkpoints (without --pre-dump) work here",
            criu.display()
        )));
    }
    Ok(())
}

/// CRIU needs full privileges over the tree it dumps or restores.
fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Unsupported(format!(
            "{what} needs root: CRIU must run privileged (rootless checkpoint/restore is not supported)"
        )));
    }
    Ok(())
}

/// `husk checkpoint`.
pub fn checkpoint(root: &Root, o: &CheckpointOpts) -> Result<()> {
    require_root("checkpoint")?;
    let criu = rpc::find_criu(o.criu.as_deref())?;
    let empty_ns = empty_ns_flags(&o.empty_ns)?;
    if o.manage_cgroups_mode.is_some() {
        // validate before touching anything
        o.manage_cgroups_mode
            .as_deref()
            .map(rpc::cg_mode)
            .transpose()?;
    }
    if o.pre_dump {
        require_mem_track(&criu)?;
    }
    if let Some(ps) = &o.page_server {
        parse_page_server(ps)?;
    }
    if o.lazy_pages {
        if o.page_server.is_none() {
            return Err(Error::container(
                "--lazy-pages needs --page-server ADDRESS:PORT: the address the destination's `criu lazy-pages` daemon fetches the memory from",
            ));
        }
        if o.pre_dump {
            return Err(Error::container(
                "--lazy-pages and --pre-dump cannot be combined",
            ));
        }
        require_lazy_pages(&criu)?;
        require_lazy_pipe_size()?;
    }
    if let Some(fd) = o.status_fd {
        if !o.lazy_pages {
            return Err(Error::container(
                "--status-fd is only used with --lazy-pages (CRIU signals there when its page server is ready)",
            ));
        }
        crate::sys::set_cloexec(fd)
            .ctx(|| format!("--status-fd {fd}: not an open file descriptor (F_SETFD)"))?;
    }
    let locked = root.lock(&o.id)?;
    let st = locked.load()?;
    if st.host_mounts.is_some() {
        return Err(Error::Unsupported(format!(
            "cannot checkpoint container {}: it has no mount namespace of its own (it shares the runtime's, so CRIU would dump the host's mounts)",
            o.id
        )));
    }
    let status = st.status();
    if !matches!(status, Status::Running | Status::Paused) {
        return Err(Error::container(format!(
            "cannot checkpoint container {}: it is {status}, not running",
            o.id
        )));
    }
    std::fs::create_dir_all(&o.image_path)
        .ctx(|| format!("create image directory {}", o.image_path.display()))?;
    let image_dir = std::fs::canonicalize(&o.image_path)
        .ctx(|| format!("image directory {}", o.image_path.display()))?;
    let marker = image_dir.join(INCOMPLETE_MARKER);
    std::fs::write(
        &marker,
        format!("checkpoint of container {} in progress\n", o.id),
    )
    .ctx(|| format!("write {}", marker.display()))?;
    let work_dir = match &o.work_path {
        Some(w) => {
            std::fs::create_dir_all(w).ctx(|| format!("create work directory {}", w.display()))?;
            w.clone()
        }
        None => image_dir.clone(),
    };
    let log = work_dir.join(if o.pre_dump { "pre-dump.log" } else { DUMP_LOG });
    let res = dump(
        root, locked, st, o, &criu, empty_ns, &image_dir, &work_dir, &log,
    );
    match &res {
        Ok(()) => match std::fs::remove_file(&marker) {
            // a lazy dump removed it when its page server became ready
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("remove {}: {e}", marker.display());
            }
            _ => {}
        },
        Err(e) => {
            let _ = std::fs::write(
                &marker,
                format!("checkpoint of container {} failed: {e}\n", o.id),
            );
        }
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn dump(
    root: &Root,
    locked: Locked,
    st: ContainerState,
    o: &CheckpointOpts,
    criu: &Path,
    empty_ns: u32,
    image_dir: &Path,
    work_dir: &Path,
    log: &Path,
) -> Result<()> {
    let externals = external_mounts(&st)?;
    let stdio = stdio_fds(st.pid)?;
    write_json(&image_dir.join(CONFIG_FILE), &st.config)?;
    let meta = CheckpointMeta {
        id: st.id.clone(),
        bundle: st.bundle.clone(),
        rootfs: st.rootfs.clone(),
        own_pidns: st.own_pidns,
        external_mounts: externals.clone(),
        stdio: stdio.clone(),
        checkpointed: chrono::Utc::now(),
    };
    write_json(&image_dir.join(META_FILE), &meta)?;
    let descriptors: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{}/fd/{fd}", st.pid))
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    write_json(&image_dir.join(DESCRIPTORS_FILE), &descriptors)?;

    let images_fd = open_dir(image_dir, "image directory")?;
    let work_fd = open_dir(work_dir, "work directory")?;
    let mut opts = rpc::opts(images_fd.as_raw_fd());
    opts.pid = Some(st.pid);
    opts.work_dir_fd = Some(work_fd.as_raw_fd());
    opts.log_level = Some(CRIU_LOG_LEVEL);
    opts.log_file = Some(
        log.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(DUMP_LOG)
            .to_string(),
    );
    opts.root = Some(st.rootfs.display().to_string());
    opts.leave_running = on(o.leave_running || o.pre_dump);
    opts.tcp_established = on(o.tcp_established);
    opts.ext_unix_sk = on(o.ext_unix_sk);
    opts.shell_job = on(o.shell_job);
    opts.file_locks = on(o.file_locks);
    opts.auto_dedup = on(o.auto_dedup);
    // a terminal container's pty master is outside the tree (with whoever holds the
    // console): CRIU dumps the slave alone, and restore makes a new master for it
    opts.orphan_pts_master = on(is_terminal(&st.config));
    opts.empty_ns = (empty_ns != 0).then_some(empty_ns);
    opts.parent_img = o.parent_path.as_ref().map(|p| p.display().to_string());
    opts.track_mem = on(o.pre_dump);
    if let Some(ps) = &o.page_server {
        let (addr, port) = parse_page_server(ps)?;
        opts.page_server(&addr, port);
    }
    // With lazy pages the dump answers only once the destination has fetched all memory; CRIU
    // says on its status fd (a pipe of ours) when the images are written and the page server
    // listens: from then on the image directory is restorable (memory comes from the server).
    let mut ready_pipe = None;
    if o.lazy_pages {
        // CRIU opens the write end through /proc/<husk>/fd/N (husk is its RPC peer)
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .ctx(|| "pipe2 for CRIU's status fd".into())?;
        opts.lazy_pages = Some(true);
        opts.status_fd = Some(w.as_raw_fd());
        ready_pipe = Some((r, w));
    }
    manage_cgroups(&mut opts, o.manage_cgroups_mode.as_deref())?;
    if let Some(cg) = crate::container::cgroup_manager(&st) {
        if let Some(f) = cg.v1_paths().get("freezer") {
            // CRIU freezes (and, for a paused container, finds frozen) the tree through the freezer.
            opts.freeze_cgroup = Some(f.display().to_string());
        }
    }
    for e in &externals {
        opts.external(&format!("mnt[{}]:{}", e.key, e.key));
    }
    for f in stdio.iter().filter(|f| f.external_file) {
        opts.external(&f.key);
    }
    for (name, key, p) in joined_external_ns(&st.config) {
        let meta = std::fs::metadata(&p)
            .ctx(|| format!("stat joined {name} namespace {}", p.display()))?;
        opts.external(&format!(
            "{name}[{}]:{key}",
            std::os::unix::fs::MetadataExt::ino(&meta)
        ));
    }
    let typ = if o.pre_dump {
        CriuReqType::PreDump
    } else {
        CriuReqType::Dump
    };
    let started = std::time::Instant::now();
    let swrk = Swrk::spawn(criu)?;
    let waiter = ready_pipe.map(|(r, w)| {
        let t = lazy_ready_waiter(r, image_dir.join(INCOMPLETE_MARKER), o.status_fd);
        (t, w)
    });
    let resp = swrk.call(typ, Some(&opts), false);
    let exit = swrk.finish();
    if let Some((t, w)) = waiter {
        // criu is gone; with our write end closed the waiter sees EOF if no byte came
        drop(w);
        let _ = t.join();
    }
    let resp = resp?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        ?exit,
        "criu dump"
    );
    if !resp.success {
        return Err(criu_failure(
            if o.pre_dump { "pre-dump" } else { "dump" },
            &resp,
            log,
        ));
    }
    if o.leave_running || o.pre_dump {
        return Ok(());
    }
    // CRIU killed the tree: remove the container like `delete` (cgroups, state directory).
    drop(locked);
    crate::container::delete(root, &st.id, true)
}

/// Waits (in a thread) for CRIU's byte on the status pipe of a lazy dump: then the image
/// directory is complete but for the memory the page server serves, so the incomplete marker
/// goes and the caller's `--status-fd` gets a byte too (as CRIU would have written it there).
fn lazy_ready_waiter(
    r: OwnedFd,
    marker: PathBuf,
    status_fd: Option<i32>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        match nix::unistd::read(&r, &mut b) {
            Ok(1) => {
                tracing::debug!("criu: lazy page server ready");
                if let Err(e) = std::fs::remove_file(&marker) {
                    tracing::warn!("remove {}: {e}", marker.display());
                }
                if let Some(fd) = status_fd {
                    // SAFETY: the caller's fd stays open for husk's lifetime; we only borrow it.
                    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    if let Err(e) = nix::unistd::write(bfd, &[0u8]) {
                        tracing::warn!("write to --status-fd {fd}: {e}");
                    }
                }
            }
            _ => tracing::debug!("criu exited without signalling lazy-pages readiness"),
        }
    })
}

/// Undo a restore that did not complete: kill what CRIU restored, remove the cgroups, the
/// temporary root mount and the state directory.
struct RestoreGuard<'a> {
    locked: &'a Locked,
    cgroup: Option<CgroupManager>,
    criu_root: Option<PathBuf>,
    pid: Option<i32>,
    done: bool,
}

/// The temporary mount point of the restored root inside a container's state directory.
const CRIU_ROOT_DIR: &str = "criu-root";

fn unmount_criu_root(p: &Path) {
    if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!("umount {}: {e}", p.display());
    }
    let _ = std::fs::remove_dir(p);
}

impl Drop for RestoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = &self.criu_root {
            unmount_criu_root(p);
        }
        if self.done {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        if let Some(cg) = &mut self.cgroup {
            for _ in 0..200 {
                let procs = cg.procs().unwrap_or_default();
                if procs.is_empty() {
                    break;
                }
                let _ = cg.thaw();
                for p in procs {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup after failed restore: {e}");
            }
        }
        if let Err(e) = self.locked.remove() {
            tracing::warn!("cleanup after failed restore: {e}");
        }
    }
}

/// What restore works from: the config and where the rootfs and bundle are.
struct Source {
    spec: Spec,
    bundle: PathBuf,
    rootfs: PathBuf,
    meta: Option<CheckpointMeta>,
}

fn restore_source(o: &RestoreOpts, image_dir: &Path) -> Result<Source> {
    let meta_path = image_dir.join(META_FILE);
    let meta: Option<CheckpointMeta> = if meta_path.is_file() {
        Some(read_json(&meta_path)?)
    } else {
        None
    };
    if let Some(b) = &o.bundle {
        let b = crate::spec::load_bundle(b)?;
        return Ok(Source {
            spec: b.spec,
            bundle: b.dir,
            rootfs: b.rootfs,
            meta,
        });
    }
    let cfg = image_dir.join(CONFIG_FILE);
    let Some(m) = meta else {
        return Err(Error::container(format!(
            "{}: no {META_FILE} (not a husk checkpoint): pass --bundle",
            image_dir.display()
        )));
    };
    if !cfg.is_file() {
        return Err(Error::container(format!(
            "{}: missing (pass --bundle)",
            cfg.display()
        )));
    }
    let spec: Spec = read_json(&cfg)?;
    crate::spec::validate(&spec)?;
    if !m.rootfs.is_dir() {
        return Err(Error::container(format!(
            "rootfs {} of the checkpointed container does not exist: pass --bundle",
            m.rootfs.display()
        )));
    }
    Ok(Source {
        spec,
        bundle: m.bundle.clone(),
        rootfs: m.rootfs.clone(),
        meta: Some(m),
    })
}

/// The cgroups of a process as CRIU `cg_root` entries (controller list → path).
fn own_cgroups(pid: i32) -> Result<Vec<(String, String)>> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).ctx(|| format!("read {path}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _ = it.next()?;
            let ctrls = it.next()?.to_string();
            let p = it.next()?.to_string();
            Some((ctrls, p))
        })
        .collect())
}

/// `husk restore`: returns the exit code husk should exit with (the container's, without --detach).
pub fn restore(root: &Root, o: &RestoreOpts) -> Result<i32> {
    require_root("restore")?;
    crate::state::validate_id(&o.id)?;
    if o.no_pivot {
        return Err(Error::Unsupported(
            "restore --no-pivot: CRIU always pivots into the restored root; not supported".into(),
        ));
    }
    let criu = rpc::find_criu(o.criu.as_deref())?;
    let empty_ns = empty_ns_flags(&o.empty_ns)?;
    if o.lazy_pages {
        require_lazy_pages(&criu)?;
    }
    o.manage_cgroups_mode
        .as_deref()
        .map(rpc::cg_mode)
        .transpose()?;
    let image_dir = std::fs::canonicalize(&o.image_path)
        .ctx(|| format!("image directory {}", o.image_path.display()))?;
    let marker = image_dir.join(INCOMPLETE_MARKER);
    if marker.exists() {
        let why = std::fs::read_to_string(&marker).unwrap_or_default();
        return Err(Error::container(format!(
            "image directory {} holds an incomplete checkpoint ({}): {}",
            image_dir.display(),
            INCOMPLETE_MARKER,
            why.trim()
        )));
    }
    let src = restore_source(o, &image_dir)?;
    let terminal = is_terminal(&src.spec);
    if terminal && o.console_socket.is_none() {
        return Err(Error::container(
            "restore of a container with process.terminal=true needs --console-socket (the new pty master is sent there)",
        ));
    }
    let work_dir = match &o.work_path {
        Some(w) => {
            std::fs::create_dir_all(w).ctx(|| format!("create work directory {}", w.display()))?;
            w.clone()
        }
        None => image_dir.clone(),
    };
    let log = work_dir.join(RESTORE_LOG);
    let descriptors: Vec<String> = {
        let p = image_dir.join(DESCRIPTORS_FILE);
        if p.is_file() {
            read_json(&p)?
        } else {
            Vec::new()
        }
    };
    let mut externals: Vec<ExternalMount> = src
        .meta
        .as_ref()
        .map(|m| m.external_mounts.clone())
        .unwrap_or_default();
    if o.bundle.is_some() {
        // the bundle given now decides where its bind mounts come from
        for b in spec_binds(&src.spec, &src.bundle) {
            match externals.iter_mut().find(|e| e.key == b.key) {
                Some(e) => *e = b,
                None => externals.push(b),
            }
        }
    }
    let linux = src
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux: missing"))?;
    let plan = crate::namespaces::NsPlan::from_spec(&src.spec)?;
    if !plan.has(LinuxNamespaceType::Mount) {
        return Err(Error::Unsupported(
            "restore: linux.namespaces has no mount namespace; husk restores only containers with one".into(),
        ));
    }
    let mut ns_fds = Vec::new();
    for (name, key, p) in joined_external_ns(&src.spec) {
        let fd = crate::sys::open(&p, libc::O_RDONLY)
            .ctx(|| format!("open {name} namespace {}", p.display()))?;
        ns_fds.push((key, fd));
    }
    let fg = if o.detach {
        None
    } else {
        Some(crate::run::Foreground::prepare_with(!o.no_subreaper)?)
    };

    let locked = root.create(&o.id)?;
    let mut guard = RestoreGuard {
        locked: &locked,
        cgroup: None,
        criu_root: None,
        pid: None,
        done: false,
    };
    let host = Host::detect()?;
    let mut cg = CgroupManager::new(
        &host,
        &CgroupOptions {
            cgroups_path: linux.cgroups_path().as_deref(),
            id: &o.id,
            systemd: o.systemd_cgroup,
        },
    )?;
    let cg_res = cg.create();
    guard.cgroup = Some(cg.clone());
    cg_res?;
    if let Some(r) = linux.resources() {
        cg.apply(r)?;
    }
    let mut st = ContainerState {
        id: o.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: src.bundle.clone(),
        rootfs: src.rootfs.clone(),
        created: chrono::Utc::now(),
        annotations: src.spec.annotations().clone().unwrap_or_default(),
        started: true,
        start_fd: -1,
        exec_fd: -1,
        owner: String::new(),
        cgroup: Some(
            serde_json::to_value(cg.save())
                .map_err(|e| Error::container(format!("serialize cgroup state: {e}")))?,
        ),
        config: src.spec.clone(),
        own_pidns: src
            .meta
            .as_ref()
            .map_or(plan.is_new(LinuxNamespaceType::Pid), |m| m.own_pidns),
        host_mounts: None,
        abandoned: false,
    };
    // a restore killed half-way leaves a state `delete --force` can clean
    locked.save(&st)?;

    // CRIU needs the root to be a mount point of its own.
    let criu_root = locked.dir.join(CRIU_ROOT_DIR);
    std::fs::create_dir(&criu_root).ctx(|| format!("mkdir {}", criu_root.display()))?;
    nix::mount::mount(
        Some(&src.rootfs),
        &criu_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind {} on {}", src.rootfs.display(), criu_root.display()))?;
    guard.criu_root = Some(criu_root.clone());
    nix::mount::mount(
        None::<&str>,
        &criu_root,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("make {} private", criu_root.display()))?;
    make_restore_mountpoints(&src.spec, &criu_root, &externals)?;

    let images_fd = open_dir(&image_dir, "image directory")?;
    let work_fd = open_dir(&work_dir, "work directory")?;
    let mut opts = rpc::opts(images_fd.as_raw_fd());
    opts.work_dir_fd = Some(work_fd.as_raw_fd());
    opts.log_level = Some(CRIU_LOG_LEVEL);
    opts.log_file = Some(RESTORE_LOG.to_string());
    opts.root = Some(criu_root.display().to_string());
    opts.rst_sibling = Some(true);
    opts.tcp_established = on(o.tcp_established);
    opts.ext_unix_sk = on(o.ext_unix_sk);
    opts.shell_job = on(o.shell_job);
    opts.file_locks = on(o.file_locks);
    opts.lazy_pages = on(o.lazy_pages);
    opts.auto_dedup = on(o.auto_dedup);
    // CRIU makes a new pty master for the container's terminal and hands it over in an
    // "orphan-pts-master" notify message
    opts.orphan_pts_master = on(terminal);
    // notify messages: the pty master, and "setup-namespaces" for the OCI hooks
    opts.notify_scripts = on(terminal || src.spec.hooks().is_some());
    opts.empty_ns = (empty_ns != 0).then_some(empty_ns);
    manage_cgroups(&mut opts, o.manage_cgroups_mode.as_deref())?;
    for e in &externals {
        let source = if e.source == Path::new("cgroup2:") {
            cg.unified_path().map(Path::to_path_buf).ok_or_else(|| {
                Error::container(format!("restore: external cgroup2 mount {}: the new container has no cgroup2 directory", e.key))
            })?
        } else {
            match e.source.to_str().and_then(|s| s.strip_prefix("cgroup:")) {
            // a cgroup controller bound into the container: the new container's own directory
            Some(super_opts) => match cgroup_dir_for(&cg, super_opts) {
                Some(d) => d,
                None => {
                    return Err(Error::container(format!(
                        "restore: external cgroup mount {} ({super_opts}): no such controller in the new container's cgroups",
                        e.key
                    )))
                }
            },
            None => e.source.clone(),
        }
        };
        opts.external(&format!("mnt[{}]:{}", e.key, source.display()));
    }
    match src
        .meta
        .as_ref()
        .map(|m| &m.stdio)
        .filter(|s| !s.is_empty())
    {
        Some(stdio) => {
            for f in stdio {
                opts.inherit_fd(&f.key, f.fd);
            }
        }
        None => {
            // an image without husk's metadata (runc's): its pipes, as runc restores them
            for (fd, name) in descriptors.iter().enumerate() {
                if name.starts_with("pipe:") {
                    opts.inherit_fd(name, fd as i32);
                }
            }
        }
    }
    for (key, fd) in &ns_fds {
        // criu swrk inherits it; CRIU joins the restored tree to it
        crate::sys::clear_cloexec(fd.as_raw_fd())
            .ctx(|| format!("clear FD_CLOEXEC on the namespace fd for {key}"))?;
        opts.inherit_fd(key, fd.as_raw_fd());
    }

    let swrk = Swrk::spawn(&criu)?;
    // criu joins the container's cgroups; the restored tree is created inside them.
    let placed = cg
        .add_task(swrk.pid())
        .map_err(Error::from)
        .and_then(|()| own_cgroups(swrk.pid()));
    let cgs = match placed {
        Ok(c) => c,
        Err(e) => {
            let _ = swrk.finish();
            return Err(e);
        }
    };
    for (ctrls, path) in &cgs {
        // "" is the cgroup2 hierarchy (the `0::` line), which CRIU matches by the empty name
        opts.cg_root(Some(ctrls), path);
    }
    let mut sent_master = false;
    let hooks = src.spec.hooks().clone();
    if let Some(h) = &hooks {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty())
        {
            // they run inside the container's init before pivot_root/exec, which a restored
            // process never passes through (runc skips them too)
            tracing::warn!(
                "restore: hooks.createContainer and hooks.startContainer are not run for a restored process"
            );
        }
    }
    let hook_state = st.clone();
    let mut on_notify = |script: &str, pid: Option<i32>, fd: Option<OwnedFd>| -> Result<()> {
        if script == "setup-namespaces" {
            // the restored tree's namespaces exist, nothing runs yet: prestart and
            // createRuntime hooks, with the restored init's pid (as runc does)
            if let Some(h) = &hooks {
                let mut s = hook_state.clone();
                s.pid = pid.unwrap_or(0);
                let json = s.hook_json(Status::Creating);
                crate::hooks::run_all("prestart", h.prestart(), &json)?;
                crate::hooks::run_all("createRuntime", h.create_runtime(), &json)?;
            }
            return Ok(());
        }
        if script != "orphan-pts-master" {
            return Ok(());
        }
        let (Some(master), Some(path)) = (fd, o.console_socket.as_deref()) else {
            return Err(Error::container(
                "criu orphan-pts-master notify without a pty master or a console socket",
            ));
        };
        let sock = crate::tty::connect_console_socket(path)?;
        crate::tty::send_fd(sock.as_raw_fd(), master.as_raw_fd(), "/dev/ptmx")?;
        sent_master = true;
        Ok(())
    };
    let resp = swrk.call_notify(CriuReqType::Restore, Some(&opts), false, &mut on_notify);
    if let Ok(r) = &resp {
        guard.pid = r.restored_pid.filter(|p| *p > 0);
    }
    if let Err(e) = swrk.finish() {
        tracing::warn!("criu swrk: {e}");
    }
    let resp = resp?;
    if !resp.success {
        return Err(criu_failure("restore", &resp, &log));
    }
    if terminal && !sent_master {
        return Err(Error::container(format!(
            "criu restored a terminal container without handing over a pty master (log: {})",
            log.display()
        )));
    }
    let pid = guard.pid.ok_or_else(|| {
        Error::container(format!(
            "criu restore reported success without a pid (log: {})",
            log.display()
        ))
    })?;
    st.pid = pid;
    st.pid_start = crate::sys::proc_start_time(pid)
        .ctx(|| format!("read start time of restored init pid {pid}"))?;
    locked.save(&st)?;
    if let Some(p) = &o.pid_file {
        crate::state::write_atomic(p, pid.to_string().as_bytes())?;
    }
    guard.done = true;
    drop(guard);
    drop(locked);
    let Some(fg) = fg else { return Ok(0) };
    let code = fg.wait(pid, None)?;
    crate::container::delete(root, &o.id, true)?;
    Ok(code)
}

/// The new container's v1 directory for a cgroup mount with these super options
/// ("rw,memory" → the memory directory).
fn cgroup_dir_for(cg: &CgroupManager, super_opts: &str) -> Option<PathBuf> {
    let paths = cg.v1_paths();
    super_opts.split(',').find_map(|o| {
        let o = o
            .strip_prefix("name=")
            .map(|n| format!("name={n}"))
            .unwrap_or_else(|| o.to_string());
        paths.get(&o).cloned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let l = "530 520 0:35 /husk/c1 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory";
        let m = MountInfo::parse(l).unwrap();
        assert_eq!(m.root, "/husk/c1");
        assert_eq!(m.mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(m.fstype, "cgroup");
        assert_eq!(m.super_options, "rw,memory");
        let l = "1 2 0:5 /null /proc/kcore rw shared:3 - devtmpfs udev rw,size=10k";
        let m = MountInfo::parse(l).unwrap();
        assert_eq!((m.root.as_str(), m.fstype.as_str()), ("/null", "devtmpfs"));
        assert!(MountInfo::parse("garbage").is_none());
        let l = "1 2 0:5 / /a\\040b rw - ext4 /dev/sda rw";
        assert_eq!(MountInfo::parse(l).unwrap().mount_point, "/a b");
    }

    #[test]
    fn empty_ns_only_network() {
        assert_eq!(
            empty_ns_flags(&["network".into()]).unwrap(),
            libc::CLONE_NEWNET as u32
        );
        assert_eq!(empty_ns_flags(&[]).unwrap(), 0);
        assert!(empty_ns_flags(&["pid".into()])
            .unwrap_err()
            .to_string()
            .contains("\"pid\""));
    }

    #[test]
    fn log_errors_are_extracted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("restore.log");
        std::fs::write(&p, "(00.001) info\n(00.002) Error (criu/image.c:12): Unable to open inventory.img\n(00.003) ok\n").unwrap();
        assert_eq!(
            criu_log_errors(&p),
            "(00.002) Error (criu/image.c:12): Unable to open inventory.img"
        );
        assert_eq!(criu_log_errors(&d.path().join("none")), "");
    }

    #[test]
    fn spec_bind_mounts_become_external() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
                {"destination": "/rel", "source": "rel", "options": ["bind", "ro"]}
            ]
        }))
        .unwrap();
        let e = spec_binds(&spec, Path::new("/b"));
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].key.as_str(), e[0].source.as_path()),
            ("/data", Path::new("/srv/data"))
        );
        assert_eq!(
            (e[1].key.as_str(), e[1].source.as_path()),
            ("/rel", Path::new("/b/rel"))
        );
    }
}
