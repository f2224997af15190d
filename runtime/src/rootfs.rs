//! The container's filesystem: mounts (resolved inside the rootfs, never through a symlink out of
//! it), devices, pivot_root, masked and read-only paths.
use crate::error::{Context, Error, Result};
use crate::sys;
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// One parsed mount option.
#[derive(Debug, Clone, PartialEq)]
pub enum MountOpt {
    /// Set these flags.
    Set(MsFlags),
    /// Clear these flags.
    Clear(MsFlags),
    /// Propagation change applied after the mount.
    Propagation(MsFlags),
    /// Recursive mount attribute (mount_setattr): (set, clear).
    Recursive(u64, u64),
    /// Passed to the filesystem as data.
    Data(String),
    /// `tmpcopyup` (true) / `notmpcopyup`: a tmpfs starts with a copy of what it covers.
    CopyUp(bool),
}

impl MountOpt {
    pub fn parse(o: &str) -> std::result::Result<MountOpt, String> {
        use MountOpt::*;
        let f = |x| Ok(Set(x));
        let c = |x| Ok(Clear(x));
        match o {
            "defaults" => Ok(Set(MsFlags::empty())),
            "ro" => f(MsFlags::MS_RDONLY),
            "rw" => c(MsFlags::MS_RDONLY),
            "suid" => c(MsFlags::MS_NOSUID),
            "nosuid" => f(MsFlags::MS_NOSUID),
            "dev" => c(MsFlags::MS_NODEV),
            "nodev" => f(MsFlags::MS_NODEV),
            "exec" => c(MsFlags::MS_NOEXEC),
            "noexec" => f(MsFlags::MS_NOEXEC),
            "sync" => f(MsFlags::MS_SYNCHRONOUS),
            "async" => c(MsFlags::MS_SYNCHRONOUS),
            "dirsync" => f(MsFlags::MS_DIRSYNC),
            "remount" => f(MsFlags::MS_REMOUNT),
            "mand" => f(MsFlags::MS_MANDLOCK),
            "nomand" => c(MsFlags::MS_MANDLOCK),
            "atime" => c(MsFlags::MS_NOATIME),
            "noatime" => f(MsFlags::MS_NOATIME),
            "diratime" => c(MsFlags::MS_NODIRATIME),
            "nodiratime" => f(MsFlags::MS_NODIRATIME),
            "relatime" => f(MsFlags::MS_RELATIME),
            "norelatime" => c(MsFlags::MS_RELATIME),
            "strictatime" => f(MsFlags::MS_STRICTATIME),
            "nostrictatime" => c(MsFlags::MS_STRICTATIME),
            "lazytime" => f(MsFlags::MS_LAZYTIME),
            "nolazytime" => c(MsFlags::MS_LAZYTIME),
            "iversion" => f(MsFlags::MS_I_VERSION),
            "noiversion" => c(MsFlags::MS_I_VERSION),
            "silent" => f(MsFlags::MS_SILENT),
            "loud" => c(MsFlags::MS_SILENT),
            "bind" => f(MsFlags::MS_BIND),
            "rbind" => f(MsFlags::MS_BIND | MsFlags::MS_REC),
            "private" => Ok(Propagation(MsFlags::MS_PRIVATE)),
            "rprivate" => Ok(Propagation(MsFlags::MS_PRIVATE | MsFlags::MS_REC)),
            "shared" => Ok(Propagation(MsFlags::MS_SHARED)),
            "rshared" => Ok(Propagation(MsFlags::MS_SHARED | MsFlags::MS_REC)),
            "slave" => Ok(Propagation(MsFlags::MS_SLAVE)),
            "rslave" => Ok(Propagation(MsFlags::MS_SLAVE | MsFlags::MS_REC)),
            "unbindable" => Ok(Propagation(MsFlags::MS_UNBINDABLE)),
            "runbindable" => Ok(Propagation(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)),
            "rro" => Ok(Recursive(sys::MOUNT_ATTR_RDONLY, 0)),
            "rrw" => Ok(Recursive(0, sys::MOUNT_ATTR_RDONLY)),
            "rnosuid" => Ok(Recursive(sys::MOUNT_ATTR_NOSUID, 0)),
            "rsuid" => Ok(Recursive(0, sys::MOUNT_ATTR_NOSUID)),
            "rnodev" => Ok(Recursive(sys::MOUNT_ATTR_NODEV, 0)),
            "rdev" => Ok(Recursive(0, sys::MOUNT_ATTR_NODEV)),
            "rnoexec" => Ok(Recursive(sys::MOUNT_ATTR_NOEXEC, 0)),
            "rexec" => Ok(Recursive(0, sys::MOUNT_ATTR_NOEXEC)),
            "rnodiratime" => Ok(Recursive(sys::MOUNT_ATTR_NODIRATIME, 0)),
            "rdiratime" => Ok(Recursive(0, sys::MOUNT_ATTR_NODIRATIME)),
            "rrelatime" => Ok(Recursive(sys::MOUNT_ATTR_RELATIME, sys::MOUNT_ATTR__ATIME)),
            "rnorelatime" => Ok(Recursive(0, sys::MOUNT_ATTR__ATIME)),
            "rnoatime" => Ok(Recursive(sys::MOUNT_ATTR_NOATIME, sys::MOUNT_ATTR__ATIME)),
            "ratime" => Ok(Recursive(0, sys::MOUNT_ATTR__ATIME)),
            "rstrictatime" => Ok(Recursive(
                sys::MOUNT_ATTR_STRICTATIME,
                sys::MOUNT_ATTR__ATIME,
            )),
            "rnostrictatime" => Ok(Recursive(0, sys::MOUNT_ATTR__ATIME)),
            "nosymfollow" => f(MsFlags::from_bits_retain(256)),
            "symfollow" => c(MsFlags::from_bits_retain(256)),
            "rnosymfollow" => Ok(Recursive(sys::MOUNT_ATTR_NOSYMFOLLOW, 0)),
            "rsymfollow" => Ok(Recursive(0, sys::MOUNT_ATTR_NOSYMFOLLOW)),
            // Idmapped mounts are prepared by `idmap`; nothing for the flags.
            "idmap" | "ridmap" => Ok(Set(MsFlags::empty())),
            "tmpcopyup" => Ok(CopyUp(true)),
            "notmpcopyup" => Ok(CopyUp(false)),
            other => Ok(Data(other.to_string())),
        }
    }
}

/// The effect of all of a mount's options together.
#[derive(Debug, Clone)]
pub struct MountOpts {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub rec_set: u64,
    pub rec_clr: u64,
    pub data: Vec<String>,
    pub copyup: bool,
}

impl MountOpts {
    pub fn from_options(opts: &[String]) -> Result<MountOpts> {
        let mut r = MountOpts {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clr: 0,
            data: Vec::new(),
            copyup: false,
        };
        for o in opts {
            match MountOpt::parse(o).map_err(Error::config)? {
                MountOpt::Set(f) => r.flags |= f,
                MountOpt::Clear(f) => r.flags &= !f,
                MountOpt::Propagation(p) => r.propagation.push(p),
                MountOpt::Recursive(s, c) => {
                    r.rec_set |= s;
                    r.rec_clr |= c;
                }
                MountOpt::Data(d) => r.data.push(d),
                MountOpt::CopyUp(c) => r.copyup = c,
            }
        }
        Ok(r)
    }
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// The flags for linux.rootfsPropagation.
pub fn propagation_flags(p: &str) -> Result<MsFlags> {
    Ok(match p {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(Error::config(format!(
                "linux.rootfsPropagation {other:?}: unknown propagation"
            )))
        }
    })
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    nix::mount::mount(src, target, fstype, flags, data).ctx(what)
}

/// Resolve `path` as if `root` were "/": every symlink is followed inside the root (an absolute
/// link restarts at the root, ".." stops at it). The result is a path under `root` with no symlink
/// left in the part that exists (the securejoin algorithm).
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        match std::fs::read_link(root.join(&next)) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(Error::sys(
                        format!("resolve {} in rootfs", path.display()),
                        std::io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Err(_) => cur = next,
        }
    }
    Ok(root.join(cur))
}

/// Resolve `path` inside the rootfs (symlinks cannot leave it), creating missing directories; the
/// last component is created as a directory or, with `file`, as an empty file. Returns an O_PATH fd
/// opened with RESOLVE_IN_ROOT, so even a change between the two steps cannot escape the root.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path, file: bool) -> Result<OwnedFd> {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if let Ok(fd) = sys::openat_in_root(root, &rel, libc::O_PATH) {
        return Ok(fd);
    }
    let root_path = std::fs::read_link(sys::fd_path(root)).ctx(|| "readlink rootfs fd".into())?;
    let real = secure_join(&root_path, &rel)?;
    let inside = real
        .strip_prefix(&root_path)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let mut cur = root_path.clone();
    let comps: Vec<_> = inside.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == comps.len();
        let r = if last && file {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags_nofollow()
                .open(&cur)
                .map(|_| ())
        } else {
            std::fs::create_dir(&cur)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::sys(format!("create {} in rootfs", cur.display()), e)),
        }
    }
    sys::openat_in_root(root, &inside, libc::O_PATH)
        .ctx(|| format!("resolve {} in rootfs", path.display()))
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}
impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW).mode(0o644)
    }
}

/// The mount-time context: the rootfs, the bundle (for relative bind sources), whether we are in a
/// new user namespace (devices are bind-mounted then), and the host's cgroup layout.
pub struct RootfsCtx<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_userns: bool,
    pub new_cgroupns: bool,
    /// No mount namespace of its own: every mount is made in the runtime's mount namespace,
    /// at or below the rootfs (see crate::hostmounts), and no other mount is changed.
    pub shared_mountns: bool,
    /// Idmapped mount trees prepared by the parent, by index in spec.mounts.
    pub idmapped: &'a [crate::idmap::Prep],
}

/// Everything before pivot_root: propagation, the rootfs bind, every mount, devices.
pub fn prepare(ctx: &RootfsCtx<'_>) -> Result<()> {
    let linux = ctx.spec.linux().as_ref();
    let prop = propagation_flags(
        linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .unwrap_or(""),
    )?;
    // In the runtime's mount namespace these would change the host's mounts: skipped there
    // (no pivot_root follows, and rootfsPropagation goes to the rootfs bind after chroot).
    if !ctx.shared_mountns {
        mount(None, Path::new("/"), None, prop, None, || {
            "set propagation of / ".to_string()
        })?;
        make_parent_private(ctx.rootfs)?;
    }
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        || format!("bind rootfs {}", ctx.rootfs.display()),
    )?;
    let root = sys::open(ctx.rootfs, libc::O_PATH | libc::O_DIRECTORY)
        .ctx(|| format!("open rootfs {}", ctx.rootfs.display()))?;
    let mut dev_is_bind = false;
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        let opts = MountOpts::from_options(m.options().as_deref().unwrap_or(&[]))?;
        if m.destination() == Path::new("/dev") && opts.is_bind() {
            dev_is_bind = true;
        }
        if let Some(p) = ctx.idmapped.iter().find(|p| p.index == i) {
            mount_idmapped(root.as_fd(), m, &opts, p)?;
            continue;
        }
        mount_one(ctx, root.as_fd(), m, &opts)?;
    }
    if !dev_is_bind {
        create_default_devices(ctx, root.as_fd())?;
    }
    if let Some(devs) = linux.and_then(|l| l.devices().as_ref()) {
        for d in devs {
            create_device(ctx, root.as_fd(), d)?;
        }
    }
    Ok(())
}

/// pivot_root needs the new root's parent mount not to be shared; make it private.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "read /proc/self/mountinfo".into())?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 {
            continue;
        }
        let mp = PathBuf::from(unescape(f[4]));
        if rootfs.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            let shared = f[6..]
                .iter()
                .take_while(|x| **x != "-")
                .any(|x| x.starts_with("shared:"));
            best = Some((mp, shared));
        }
    }
    if let Some((mp, true)) = best {
        mount(None, &mp, None, MsFlags::MS_PRIVATE, None, || {
            format!("make {} private", mp.display())
        })?;
    }
    Ok(())
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn mount_one(ctx: &RootfsCtx<'_>, root: BorrowedFd<'_>, m: &Mount, opts: &MountOpts) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, root, m, opts);
    }
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if opts.is_bind() {
        let src = m.source().as_ref().ok_or_else(|| {
            Error::config(format!(
                "mount {}: bind mount without source",
                dest.display()
            ))
        })?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            ctx.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).ctx(|| format!("bind source {}", src.display()))?;
        let target = mkdir_all_in_root(root, dest, !meta.is_dir())?;
        let flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(
            Some(&src),
            &sys::fd_path(target.as_fd()),
            None,
            flags,
            None,
            || format!("bind {} on {}", src.display(), dest.display()),
        )?;
        let remount = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
            .ctx(|| format!("reopen {}", dest.display()))?;
        if !remount.is_empty() {
            remount_bind(
                &sys::fd_path(mounted.as_fd()),
                remount,
                &dest.display().to_string(),
            )?;
        }
        finish_mount(mounted.as_fd(), opts, dest)
    } else {
        let target = mkdir_all_in_root(root, dest, false)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let fstype = if typ.is_empty() { None } else { Some(typ) };
        if opts.copyup {
            return mount_tmpfs_copyup(root, target.as_fd(), dest, typ, opts, data);
        }
        let r = mount(
            Some(&src),
            &sys::fd_path(target.as_fd()),
            fstype,
            opts.flags,
            data,
            || format!("mount {} ({typ}) on {}", src.display(), dest.display()),
        );
        if let Err(e) = r {
            // sysfs cannot be mounted in a user namespace that does not own the network
            // namespace: fall back to a recursive read-only bind of the host's /sys, as runc does.
            if typ == "sysfs" && ctx.in_userns {
                mount(
                    Some(Path::new("/sys")),
                    &sys::fd_path(target.as_fd()),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                    || "bind /sys".into(),
                )?;
            } else {
                return Err(e);
            }
        }
        let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
            .ctx(|| format!("reopen {}", dest.display()))?;
        finish_mount(mounted.as_fd(), opts, dest)
    }
}

/// A tmpfs with `tmpcopyup`: the directory it covers is opened first, the tmpfs mounted (writable
/// until filled), the contents copied in (crate::copyup), then the requested read-only applied.
fn mount_tmpfs_copyup(
    root: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    dest: &Path,
    typ: &str,
    opts: &MountOpts,
    data: Option<&str>,
) -> Result<()> {
    if typ != "tmpfs" {
        return Err(Error::config(format!(
            "mount {}: option tmpcopyup is only valid for tmpfs, not {typ:?}",
            dest.display()
        )));
    }
    let dir = libc::O_RDONLY | libc::O_DIRECTORY;
    let under = sys::openat_in_root(root, dest, dir).ctx(|| format!("open {}", dest.display()))?;
    let rw = opts.flags & !MsFlags::MS_RDONLY;
    mount(
        Some(Path::new("tmpfs")),
        &sys::fd_path(target),
        Some("tmpfs"),
        rw,
        data,
        || format!("mount tmpfs on {}", dest.display()),
    )?;
    let top =
        sys::openat_in_root(root, dest, dir).ctx(|| format!("open tmpfs {}", dest.display()))?;
    // The tmpfs root takes the mode and owner of the directory it covers, unless mode= was given.
    if !opts.data.iter().any(|d| d.starts_with("mode=")) {
        let st = nix::sys::stat::fstat(&under).ctx(|| format!("stat {}", dest.display()))?;
        nix::sys::stat::fchmod(
            &top,
            nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777),
        )
        .ctx(|| format!("chmod tmpfs {}", dest.display()))?;
        nix::unistd::fchown(
            &top,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
        )
        .ctx(|| format!("chown tmpfs {}", dest.display()))?;
    }
    crate::copyup::copy_tree(under.as_fd(), top.as_fd(), dest)?;
    drop(under);
    let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
        .ctx(|| format!("reopen {}", dest.display()))?;
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None,
            &sys::fd_path(mounted.as_fd()),
            None,
            MsFlags::MS_REMOUNT | opts.flags,
            data,
            || format!("remount tmpfs {} read-only", dest.display()),
        )?;
    }
    finish_mount(mounted.as_fd(), opts, dest)
}

/// Attach an idmapped tree prepared by the parent, then apply the mount's flags.
fn mount_idmapped(
    root: BorrowedFd<'_>,
    m: &Mount,
    opts: &MountOpts,
    p: &crate::idmap::Prep,
) -> Result<()> {
    let dest = m.destination();
    let is_dir = std::fs::metadata(&p.source)
        .map(|m| m.is_dir())
        .unwrap_or(true);
    let target = mkdir_all_in_root(root, dest, !is_dir)?;
    crate::idmap::mount_at(p, target.as_fd(), dest)?;
    let remount = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
        .ctx(|| format!("reopen {}", dest.display()))?;
    if !remount.is_empty() {
        remount_bind(
            &sys::fd_path(mounted.as_fd()),
            remount,
            &dest.display().to_string(),
        )?;
    }
    finish_mount(mounted.as_fd(), opts, dest)
}

/// Propagation and recursive attributes, applied to the new mount.
fn finish_mount(mounted: BorrowedFd<'_>, opts: &MountOpts, dest: &Path) -> Result<()> {
    for p in &opts.propagation {
        mount(None, &sys::fd_path(mounted), None, *p, None, || {
            format!("set propagation of {}", dest.display())
        })?;
    }
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        sys::mount_setattr_recursive(mounted, opts.rec_set, opts.rec_clr)
            .ctx(|| format!("mount_setattr {}", dest.display()))?;
    }
    Ok(())
}

/// Remount a bind mount with new flags, keeping the flags the kernel locks (nosuid, nodev, ...
/// inherited from the source) so the remount is not refused.
fn remount_bind(target: &Path, flags: MsFlags, what: &str) -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match nix::mount::mount(
        None::<&Path>,
        target,
        None::<&str>,
        base | flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let locked = statvfs_flags(target)?;
            mount(None, target, None, base | flags | locked, None, || {
                format!("remount {what}")
            })
        }
        Err(e) => Err(Error::sys(
            format!("remount {what}"),
            std::io::Error::from_raw_os_error(e as i32),
        )),
    }
}

fn statvfs_flags(p: &Path) -> Result<MsFlags> {
    let st = nix::sys::statvfs::statvfs(p).ctx(|| format!("statvfs {}", p.display()))?;
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut r = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(a) {
            r |= b;
        }
    }
    Ok(r)
}

/// A cgroup filesystem for the container. v1 (and hybrid): a tmpfs with one bind mount per
/// hierarchy of the container's own cgroup directory. v2: cgroup2 itself in a new cgroup
/// namespace, else a bind of the container's cgroup directory.
fn mount_cgroup(
    ctx: &RootfsCtx<'_>,
    root: BorrowedFd<'_>,
    m: &Mount,
    opts: &MountOpts,
) -> Result<()> {
    let dest = m.destination();
    // Only the host's hierarchies, one mount each, as cgroups::Host chooses them: not copies
    // that a bind of /sys into the rootfs brought along, nor binds of cgroup subdirectories
    // that another container without a mount namespace has in its rootfs.
    let chosen = crate::cgroups::Host::detect()?;
    let mut seen = std::collections::HashSet::new();
    let hier: Vec<CgroupMount> = host_cgroup_mounts()?
        .into_iter()
        .filter(|h| !h.mountpoint.starts_with(ctx.rootfs))
        .filter(|h| is_chosen(&chosen, h))
        .filter(|h| seen.insert(h.mountpoint.clone()))
        .collect();
    let own = own_cgroups()?;
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let only_v2 =
        hier.len() == 1 && hier[0].v2 && hier[0].mountpoint == Path::new("/sys/fs/cgroup");
    let target = mkdir_all_in_root(root, dest, false)?;
    if only_v2 {
        if ctx.new_cgroupns {
            mount(
                Some(Path::new("cgroup2")),
                &sys::fd_path(target.as_fd()),
                Some("cgroup2"),
                opts.flags,
                None,
                || format!("mount cgroup2 on {}", dest.display()),
            )?;
        } else {
            let rel = own.get("").cloned().unwrap_or_else(|| "/".into());
            let src = hier[0].mountpoint.join(rel.trim_start_matches('/'));
            mount(
                Some(&src),
                &sys::fd_path(target.as_fd()),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                || format!("bind {} on {}", src.display(), dest.display()),
            )?;
            let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
                .ctx(|| format!("reopen {}", dest.display()))?;
            remount_bind(
                &sys::fd_path(mounted.as_fd()),
                opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC),
                &dest.display().to_string(),
            )?;
        }
        return Ok(());
    }
    mount(
        Some(Path::new("tmpfs")),
        &sys::fd_path(target.as_fd()),
        Some("tmpfs"),
        base,
        Some("mode=755"),
        || format!("mount tmpfs for cgroups on {}", dest.display()),
    )?;
    for h in &hier {
        let Some(name) = h.mountpoint.file_name() else {
            continue;
        };
        let key = if h.v2 { String::new() } else { h.key.clone() };
        let Some(rel) = own.get(&key) else { continue };
        let rel = rel.strip_prefix(&h.root).unwrap_or(rel);
        let src = h.mountpoint.join(rel.trim_start_matches('/'));
        let sub = dest.join(name);
        let t = mkdir_all_in_root(root, &sub, false)?;
        mount(
            Some(&src),
            &sys::fd_path(t.as_fd()),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            || format!("bind {} on {}", src.display(), sub.display()),
        )?;
        let mounted = sys::openat_in_root(root, &sub, libc::O_PATH)
            .ctx(|| format!("reopen {}", sub.display()))?;
        remount_bind(
            &sys::fd_path(mounted.as_fd()),
            base | if ro {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            },
            &sub.display().to_string(),
        )?;
        // co-mounted controllers ("cpu,cpuacct") get one symlink per controller, as on the host.
        let n = name.to_string_lossy();
        if n.contains(',') {
            let dir = mkdir_all_in_root(root, dest, false)?;
            for part in n.split(',') {
                let link = sys::fd_path(dir.as_fd()).join(part);
                let _ = std::os::unix::fs::symlink(&*n, link);
            }
        }
    }
    if ro {
        let mounted = sys::openat_in_root(root, dest, libc::O_PATH)
            .ctx(|| format!("reopen {}", dest.display()))?;
        mount(
            None,
            &sys::fd_path(mounted.as_fd()),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
            Some("mode=755"),
            || format!("remount {} read-only", dest.display()),
        )?;
    }
    Ok(())
}

#[derive(Debug)]
struct CgroupMount {
    mountpoint: PathBuf,
    root: String,
    /// The controllers as they appear in /proc/self/cgroup ("memory", "cpu,cpuacct", "name=systemd").
    key: String,
    v2: bool,
}

/// Whether `h` is the mount `host` chose for its hierarchy.
fn is_chosen(host: &crate::cgroups::Host, h: &CgroupMount) -> bool {
    let same = |m: &crate::cgroups::Mount| m.mountpoint == h.mountpoint && m.root == h.root;
    if h.v2 {
        return host.unified.as_ref().is_some_and(same);
    }
    h.key
        .split(',')
        .next()
        .and_then(|c| host.v1.get(c))
        .is_some_and(same)
}

fn host_cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "read /proc/self/mountinfo".into())?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let v2 = post[0] == "cgroup2";
        if post[0] != "cgroup" && !v2 {
            continue;
        }
        let key = if v2 {
            String::new()
        } else {
            let known = [
                "cpu",
                "cpuacct",
                "cpuset",
                "memory",
                "devices",
                "freezer",
                "net_cls",
                "net_prio",
                "blkio",
                "perf_event",
                "hugetlb",
                "pids",
                "rdma",
                "misc",
            ];
            let mut ctrls: Vec<&str> = post[2]
                .split(',')
                .filter(|o| known.contains(o) || o.starts_with("name="))
                .collect();
            ctrls.sort_by_key(|c| c.starts_with("name="));
            ctrls.join(",")
        };
        out.push(CgroupMount {
            mountpoint: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            key,
            v2,
        });
    }
    Ok(out)
}

/// Our own cgroup path per hierarchy, keyed by the controller list ("" for v2).
fn own_cgroups() -> Result<std::collections::HashMap<String, String>> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ctx(|| "read /proc/self/cgroup".into())?;
    Ok(s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let mut parts: Vec<&str> = ctrls.split(',').collect();
            parts.sort_by_key(|c| c.starts_with("name="));
            // normalise the order the kernel prints with what mountinfo's options give.
            Some((parts.join(","), path.to_string()))
        })
        .collect())
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn create_default_devices(ctx: &RootfsCtx<'_>, root: BorrowedFd<'_>) -> Result<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        make_node(
            ctx,
            root,
            Path::new(path),
            libc::S_IFCHR,
            major,
            minor,
            0o666,
            Some(0),
            Some(0),
        )?;
    }
    let dev = mkdir_all_in_root(root, Path::new("/dev"), false)?;
    let dir = sys::fd_path(dev.as_fd());
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match std::os::unix::fs::symlink(target, dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::sys(format!("symlink /dev/{name} -> {target}"), e)),
        }
    }
    Ok(())
}

fn create_device(ctx: &RootfsCtx<'_>, root: BorrowedFd<'_>, d: &LinuxDevice) -> Result<()> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::config(format!(
                "linux.devices {}: type 'a' is not a device node",
                d.path().display()
            )))
        }
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    make_node(
        ctx,
        root,
        d.path(),
        kind,
        d.major() as u64,
        d.minor() as u64,
        mode,
        d.uid(),
        d.gid(),
    )
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    ctx: &RootfsCtx<'_>,
    root: BorrowedFd<'_>,
    path: &Path,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path
        .file_name()
        .ok_or_else(|| Error::config(format!("device path {}: no file name", path.display())))?;
    let dir = mkdir_all_in_root(root, parent, false)?;
    let node = sys::fd_path(dir.as_fd()).join(name);
    // An existing node (from an image or a bind) is replaced, as runc does.
    let _ = std::fs::remove_file(&node);
    if ctx.in_userns {
        // mknod is not permitted in a user namespace: bind the host's device instead.
        let t = mkdir_all_in_root(root, path, true)?;
        return mount(
            Some(path),
            &sys::fd_path(t.as_fd()),
            None,
            MsFlags::MS_BIND,
            None,
            || format!("bind device {}", path.display()),
        );
    }
    let dev = libc::makedev(major as u32, minor as u32);
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::from_bits_truncate(kind),
        nix::sys::stat::Mode::from_bits_truncate(mode),
        dev,
    )
    .ctx(|| format!("mknod {}", path.display()))?;
    // mknod is subject to the umask: set the exact mode, then the owner.
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))?;
    std::os::unix::fs::lchown(&node, uid, gid).ctx(|| format!("chown {}", path.display()))?;
    Ok(())
}

/// Switch to the rootfs: pivot_root (old root detached), or with `no_pivot` MS_MOVE + chroot.
/// In the runtime's mount namespace (`shared_mountns`) only chroot: pivot_root would change the
/// root of every process in the namespace and MS_MOVE would move the rootfs over the host's /.
pub fn switch_root(rootfs: &Path, no_pivot: bool, shared_mountns: bool) -> Result<()> {
    if shared_mountns {
        nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        nix::unistd::chroot(".").ctx(|| format!("chroot {}", rootfs.display()))?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
        return Ok(());
    }
    if no_pivot {
        nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        mount(
            Some(rootfs),
            Path::new("/"),
            None,
            MsFlags::MS_MOVE,
            None,
            || "move rootfs to /".into(),
        )?;
        nix::unistd::chroot(".").ctx(|| "chroot .".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
        return Ok(());
    }
    let old =
        sys::open(Path::new("/"), libc::O_DIRECTORY | libc::O_RDONLY).ctx(|| "open /".into())?;
    let new = sys::open(rootfs, libc::O_DIRECTORY | libc::O_RDONLY)
        .ctx(|| format!("open {}", rootfs.display()))?;
    nix::unistd::fchdir(new.as_fd()).ctx(|| "fchdir rootfs".into())?;
    nix::unistd::pivot_root(".", ".").ctx(|| format!("pivot_root {}", rootfs.display()))?;
    nix::unistd::fchdir(old.as_fd()).ctx(|| "fchdir old root".into())?;
    // Do not let the unmount of the old root propagate back to the host.
    mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
        || "make old root rslave".into(),
    )?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    drop(old);
    drop(new);
    Ok(())
}

/// linux.rootfsPropagation on the new root, once pivot_root is done (pivot_root changes it).
pub fn apply_root_propagation(spec: &Spec) -> Result<()> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    else {
        return Ok(());
    };
    let flags = propagation_flags(p)?;
    mount(None, Path::new("/"), None, flags, None, || {
        format!("set rootfsPropagation {p} on /")
    })
}

/// maskedPaths: a directory gets an empty read-only tmpfs, anything else /dev/null bound over it.
/// /dev/null is opened without following a symlink and must be the null device (1:3), and the
/// bind is made from that fd: a /dev/null that is (or was swapped for) a symlink to another file
/// would otherwise bind that file over the masked path (CVE-2025-31133).
pub fn mask_paths(paths: &[String]) -> Result<()> {
    let mut null: Option<OwnedFd> = None;
    for p in paths {
        let path = Path::new(p);
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::sys(format!("maskedPaths: stat {p}"), e)),
        };
        if meta.is_dir() {
            mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
                || format!("mask {p}"),
            )?;
        } else {
            if null.is_none() {
                null = Some(open_dev_null()?);
            }
            let fd = null
                .as_ref()
                .map(|f| sys::fd_path(f.as_fd()))
                .unwrap_or_default();
            mount(Some(&fd), path, None, MsFlags::MS_BIND, None, || {
                format!("mask {p}")
            })?;
        }
    }
    Ok(())
}

/// The container's /dev/null, checked to be the null character device and not a symlink.
fn open_dev_null() -> Result<OwnedFd> {
    let fd = sys::open(Path::new("/dev/null"), libc::O_PATH | libc::O_NOFOLLOW)
        .ctx(|| "maskedPaths: open /dev/null".into())?;
    let st =
        std::fs::metadata(sys::fd_path(fd.as_fd())).ctx(|| "maskedPaths: stat /dev/null".into())?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !st.file_type().is_char_device() || st.rdev() != libc::makedev(1, 3) {
        return Err(Error::container(
            "maskedPaths: /dev/null is not the null device (a symlink or another file): refusing \
             to bind it over masked paths",
        ));
    }
    Ok(fd)
}

/// readonlyPaths: bind each path onto itself and remount it read-only.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        match nix::mount::mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("readonlyPaths: bind {p}"),
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
        remount_bind(path, MsFlags::MS_RDONLY | MsFlags::MS_REC, p)?;
    }
    Ok(())
}

/// root.readonly: remount / read-only once every mount is in place.
pub fn readonly_root() -> Result<()> {
    remount_bind(Path::new("/"), MsFlags::MS_RDONLY, "/ (root.readonly)")
}

/// Find the pty slave of a master and bind it onto /dev/console (after pivot_root).
pub fn bind_console(slave_path: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    // Opened without following a symlink and mounted on through that fd, so a /dev/console that
    // is (or is swapped for) a symlink cannot redirect the bind (CVE-2025-52565).
    let target = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode_for_console()
        .open(console)
    {
        Ok(f) => f,
        Err(e) => return Err(Error::sys("create /dev/console", e)),
    };
    mount(
        Some(slave_path),
        &sys::fd_path(target.as_fd()),
        None,
        MsFlags::MS_BIND,
        None,
        || format!("bind {} on /dev/console", slave_path.display()),
    )
}

trait ConsoleMode {
    fn mode_for_console(&mut self) -> &mut Self;
}
impl ConsoleMode for std::fs::OpenOptions {
    fn mode_for_console(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600).custom_flags(libc::O_NOFOLLOW)
    }
}

/// Write namespaced sysctls through /proc/sys (validated in `spec`). Each file is opened beneath
/// the procfs mount at /proc without crossing a mount or following a symlink, so a file (or
/// another procfs entry) mounted over a /proc/sys entry cannot receive the write (CVE-2025-52881).
pub fn apply_sysctls(sysctl: &std::collections::HashMap<String, String>) -> Result<()> {
    if sysctl.is_empty() {
        return Ok(());
    }
    let proc_dir = sys::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY)
        .ctx(|| "sysctl: open /proc".into())?;
    let fs = nix::sys::statfs::fstatfs(&proc_dir).ctx(|| "sysctl: statfs /proc".into())?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Error::container("sysctl: /proc is not a procfs mount"));
    }
    for (k, v) in sysctl {
        let rel = PathBuf::from("sys").join(k.replace('.', "/"));
        let f = sys::openat2(
            proc_dir.as_fd(),
            &rel,
            libc::O_WRONLY | libc::O_NOCTTY,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_XDEV | sys::RESOLVE_NO_SYMLINKS,
        )
        .ctx(|| {
            format!(
                "sysctl {k}={v}: open /proc/{} (within procfs, crossing no mount or symlink)",
                rel.display()
            )
        })?;
        std::io::Write::write_all(&mut std::fs::File::from(f), v.as_bytes())
            .ctx(|| format!("sysctl {k}={v} (/proc/{})", rel.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_combine() {
        let o = MountOpts::from_options(&[
            "nosuid".into(),
            "rbind".into(),
            "ro".into(),
            "rprivate".into(),
            "mode=755".into(),
            "rro".into(),
        ])
        .unwrap();
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        ));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        assert_eq!(o.rec_set, sys::MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn rw_clears_ro() {
        let o = MountOpts::from_options(&["ro".into(), "rw".into()]).unwrap();
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn idmap_sets_no_flags_and_tmpcopyup_is_parsed() {
        assert_eq!(
            MountOpt::parse("idmap").unwrap(),
            MountOpt::Set(MsFlags::empty())
        );
        let o = MountOpts::from_options(&["tmpcopyup".into(), "nosuid".into()]).unwrap();
        assert!(o.copyup && o.data.is_empty());
        let o = MountOpts::from_options(&["tmpcopyup".into(), "notmpcopyup".into()]).unwrap();
        assert!(!o.copyup);
    }

    #[test]
    fn mkdir_all_stays_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let rfd = sys::open(root.path(), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let fd = mkdir_all_in_root(rfd.as_fd(), Path::new("/evil/sub"), false).unwrap();
        drop(fd);
        // The absolute symlink was resolved inside the root: root/<outside path>/sub exists,
        // the real outside directory is untouched.
        assert!(!outside.path().join("sub").exists());
        let inside = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("sub");
        assert!(inside.is_dir(), "{}", inside.display());
    }
}
