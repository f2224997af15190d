//! Image VOLUMEs, as containerd's CRI plugin makes them (1.6 `container_create.go`
//! `volumeMounts` and `opts.WithVolumes`): each volume of the image config that no CRI mount
//! covers gets a host directory of the container's own, `<bundle>/volumes/<n>`, filled with a
//! copy of what the image has at that path (directories, files, symlinks, hard links, device
//! nodes and FIFOs, with their modes, owners and times; sockets are skipped, xattrs are not
//! copied) and bound (rbind, rw) over it by the spec (`spec::add_image_volumes`). The
//! directories go with the bundle at RemoveContainer.
//!
//! The volume path comes from the image, so it is hostile input (CVE-2022-23648, "volume path
//! traversal from an image config": containerd joined it to the rootfs path and copied what
//! `/../../etc` named on the host):
//! - it is cleaned lexically (`..` stops at `/`, as Go's `filepath.Clean` and containerd after
//!   its fix): `/../../../../tmp/x` is the volume `/tmp/x` of the container;
//! - it is resolved only inside the image's rootfs: a read-only overlay of the image's layers
//!   mounted detached (fsopen/fsmount: attached nowhere, gone with its fd), the volume opened
//!   there with openat2 RESOLVE_IN_ROOT, so `..` and symlinks of the image (absolute or
//!   relative) resolve as if the rootfs were `/` (as containerd's `fs.RootPath`);
//! - the copy walks what it opened with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, follows no
//!   link and writes only below the new volume directory, whose name husk-cri chose.
//!
//! A volume that names a file (not a directory) in the image is refused, naming the path; one
//! the image does not have starts empty (as containerd).

use super::ContainerError;
use husk::sys::{
    fsconfig_create, fsconfig_set, fsmount, fsopen, openat2, RESOLVE_BENEATH, RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV,
};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors of making image volumes; each names the volume and the path or call involved.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("image volume {volume:?}: {call} {path}: {source}")]
    Sys {
        volume: String,
        call: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("image volume {volume:?}: {reason}")]
    Refused { volume: String, reason: String },
    #[error("image volumes: {call} of the image's rootfs (an overlay of {layers}): {source}")]
    Rootfs {
        call: &'static str,
        layers: String,
        source: io::Error,
    },
}

impl From<VolumeError> for ContainerError {
    fn from(e: VolumeError) -> ContainerError {
        match e {
            VolumeError::Refused { .. } => ContainerError::Invalid(e.to_string()),
            VolumeError::Sys {
                call, path, source, ..
            } => ContainerError::Io {
                what: call,
                path,
                source,
            },
            VolumeError::Rootfs { call, source, .. } => ContainerError::Io {
                what: call,
                path: PathBuf::from("overlay"),
                source,
            },
        }
    }
}

/// The cleaned absolute path of an image volume (`..` stops at `/`) and its path relative to
/// the rootfs; `/` itself is refused (the volume would hide the whole rootfs).
pub fn destination(volume: &str) -> Result<(String, String), VolumeError> {
    let refuse = |reason: &str| VolumeError::Refused {
        volume: volume.to_string(),
        reason: reason.to_string(),
    };
    if !volume.starts_with('/') {
        return Err(refuse("not an absolute path"));
    }
    if volume.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in volume.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(refuse("is the root directory once cleaned"));
    }
    let rel = parts.join("/");
    Ok((format!("/{rel}"), rel))
}

/// Makes the host directories of image volumes `volumes` (as `BuiltSpec::image_volumes`) under
/// `dir` (created here: `<bundle>/volumes`), `dir/0`, `dir/1`, ..., each holding a copy of the
/// image's content at that path; `layers` are the image's unpacked layers, lowest first.
/// Returns (destination, host directory) pairs for `spec::add_image_volumes`.
pub fn prepare(
    dir: &Path,
    layers: &[PathBuf],
    volumes: &[String],
) -> Result<Vec<(String, PathBuf)>, VolumeError> {
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let dests = volumes
        .iter()
        .map(|v| destination(v).map(|d| (v.as_str(), d)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = volumes.first().map(String::as_str).unwrap_or_default();
    mkdir(dir, 0o700, first)?;
    // overlayfs wants two lower layers without an upper one: an empty one goes lowest.
    let base = dir.join(".base");
    mkdir(&base, 0o700, first)?;
    let made = (|| {
        let root = mount_rootfs(layers, &base)?;
        let mut out = Vec::with_capacity(dests.len());
        for (i, (volume, (dst, rel))) in dests.into_iter().enumerate() {
            let host = dir.join(i.to_string());
            mkdir(&host, 0o755, volume)?;
            copy_volume(root.as_fd(), volume, &dst, &rel, &host)?;
            tracing::debug!(volume, host = %host.display(), "image volume made");
            out.push((dst, host));
        }
        Ok(out)
    })();
    if let Err(e) = std::fs::remove_dir(&base) {
        tracing::warn!("remove {}: {e}", base.display());
    }
    made
}

fn mkdir(path: &Path, mode: u32, volume: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|source| VolumeError::Sys {
            volume: volume.to_string(),
            call: "mkdir",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies what the image has at volume `dst` (`rel` below the rootfs `root`) into `host`.
fn copy_volume(
    root: BorrowedFd<'_>,
    volume: &str,
    dst: &str,
    rel: &str,
    host: &Path,
) -> Result<(), VolumeError> {
    let src = match openat2(
        root,
        Path::new(rel),
        libc::O_RDONLY | libc::O_DIRECTORY,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    ) {
        Ok(fd) => fd,
        // Nothing there in the image: the volume starts empty (as containerd).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(VolumeError::Refused {
                volume: volume.to_string(),
                reason: format!("{dst} (resolved inside the image's rootfs) is not a directory"),
            })
        }
        Err(source) => {
            return Err(VolumeError::Sys {
                volume: volume.to_string(),
                call: "openat2 (RESOLVE_IN_ROOT) in the image's rootfs",
                path: PathBuf::from(dst),
                source,
            })
        }
    };
    let dest = husk::sys::open(host, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .map_err(|source| VolumeError::Sys {
            volume: volume.to_string(),
            call: "open",
            path: host.to_path_buf(),
            source,
        })?;
    Copier {
        volume,
        image_path: Path::new(dst),
        host,
        src: src.as_fd(),
        dst: dest.as_fd(),
        links: HashMap::new(),
    }
    .run()
}

enum Step {
    /// Copy the entries of this directory (relative to both roots).
    Enter(PathBuf),
    /// Its content is copied: give the copy the source's owner, mode and times.
    Finish(PathBuf, FileStat),
}

/// Copies the tree below `src` into the empty directory `dst`: every directory is opened by
/// its path relative to the roots, beneath them and through no symlink; no fd is held across
/// directories (deep trees need no more than four).
struct Copier<'a> {
    volume: &'a str,
    /// The volume's path in the image (for messages).
    image_path: &'a Path,
    /// The volume's host directory (for messages).
    host: &'a Path,
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
    /// Hard-linked files copied already: (dev, ino) -> path of the copy below `dst`.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    fn err<E: Into<io::Error>>(
        &self,
        call: &'static str,
        path: PathBuf,
    ) -> impl FnOnce(E) -> VolumeError + '_ {
        move |e| VolumeError::Sys {
            volume: self.volume.to_string(),
            call,
            path,
            source: e.into(),
        }
    }

    fn src_path(&self, rel: &Path) -> PathBuf {
        let p = self.image_path.join(rel);
        PathBuf::from(format!("(image rootfs){}", p.display()))
    }

    fn open_beneath(&self, root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        openat2(
            root,
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        )
    }

    fn run(mut self) -> Result<(), VolumeError> {
        let st = fstat(self.src).map_err(self.err("fstat", self.src_path(Path::new(""))))?;
        let mut stack = vec![
            Step::Finish(PathBuf::new(), st),
            Step::Enter(PathBuf::new()),
        ];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(rel) => self.enter(&rel, &mut stack)?,
                Step::Finish(rel, st) => {
                    let d = self
                        .open_beneath(self.dst, &rel)
                        .map_err(self.err("openat2", self.host.join(&rel)))?;
                    self.attributes(d.as_fd(), &st, &rel)?;
                }
            }
        }
        Ok(())
    }

    fn enter(&mut self, rel: &Path, stack: &mut Vec<Step>) -> Result<(), VolumeError> {
        let sdir = self
            .open_beneath(self.src, rel)
            .map_err(self.err("openat2", self.src_path(rel)))?;
        let ddir = self
            .open_beneath(self.dst, rel)
            .map_err(self.err("openat2", self.host.join(rel)))?;
        let names = {
            let fd = sdir
                .try_clone()
                .map_err(self.err("dup", self.src_path(rel)))?;
            let mut d =
                nix::dir::Dir::from_fd(fd).map_err(self.err("fdopendir", self.src_path(rel)))?;
            let mut names = Vec::new();
            for ent in d.iter() {
                let ent = ent.map_err(self.err("readdir", self.src_path(rel)))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(OsString::from(OsStr::from_bytes(n)));
                }
            }
            names
        };
        for name in names {
            let child = rel.join(&name);
            let st = fstatat(sdir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(self.err("fstatat", self.src_path(&child)))?;
            let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
            let at = self.host.join(&child);
            match kind {
                SFlag::S_IFDIR => {
                    mkdirat(
                        ddir.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(self.err("mkdirat", at))?;
                    stack.push(Step::Finish(child.clone(), st));
                    stack.push(Step::Enter(child));
                }
                SFlag::S_IFREG => self.file(sdir.as_fd(), ddir.as_fd(), &name, &child, &st)?,
                SFlag::S_IFLNK => {
                    let target = nix::fcntl::readlinkat(sdir.as_fd(), name.as_os_str())
                        .map_err(self.err("readlinkat", self.src_path(&child)))?;
                    symlinkat(target.as_os_str(), ddir.as_fd(), name.as_os_str())
                        .map_err(self.err("symlinkat", at.clone()))?;
                    self.owner_and_times_at(ddir.as_fd(), &name, &st, &at)?;
                }
                SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                    mknodat(
                        ddir.as_fd(),
                        name.as_os_str(),
                        kind,
                        Mode::from_bits_truncate(0o600),
                        st.st_rdev,
                    )
                    .map_err(self.err("mknodat", at.clone()))?;
                    self.owner_and_times_at(ddir.as_fd(), &name, &st, &at)?;
                    // After chown (which clears set-id bits); a node we just made, no link.
                    fchmodat(
                        ddir.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(st.st_mode & 0o7777),
                        FchmodatFlags::FollowSymlink,
                    )
                    .map_err(self.err("fchmodat", at))?;
                }
                _ => tracing::debug!(path = %at.display(), "image volume: socket not copied"),
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &OsStr,
        child: &Path,
        st: &FileStat,
    ) -> Result<(), VolumeError> {
        let at = self.host.join(child);
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                // Below `dst` only directories this copy made: no link to follow.
                return linkat(self.dst, first.as_path(), ddir, name, AtFlags::empty())
                    .map_err(self.err("linkat", at));
            }
            self.links.insert(key, child.to_path_buf());
        }
        let s = openat(
            sdir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.err("openat", self.src_path(child)))?;
        let d = openat(
            ddir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(self.err("openat (create)", at.clone()))?;
        let mut s = std::fs::File::from(s);
        let mut d = std::fs::File::from(d);
        io::copy(&mut s, &mut d).map_err(|e| VolumeError::Sys {
            volume: self.volume.to_string(),
            call: "copy",
            path: at.clone(),
            source: e,
        })?;
        self.attributes(d.as_fd(), st, child)
    }

    /// Owner, then mode (chown clears set-id bits), then times, on an open file or directory.
    fn attributes(&self, fd: BorrowedFd<'_>, st: &FileStat, rel: &Path) -> Result<(), VolumeError> {
        let at = || self.host.join(rel);
        fchown(
            fd,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(self.err("fchown", at()))?;
        fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(self.err("fchmod", at()))?;
        let (a, m) = times(st);
        futimens(fd, &a, &m).map_err(self.err("futimens", at()))
    }

    /// Owner and times of an entry that cannot be opened (a symlink, a device node), not
    /// following it.
    fn owner_and_times_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        at: &Path,
    ) -> Result<(), VolumeError> {
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.err("fchownat", at.to_path_buf()))?;
        let (a, m) = times(st);
        utimensat(dir, name, &a, &m, UtimensatFlags::NoFollowSymlink)
            .map_err(self.err("utimensat", at.to_path_buf()))
    }
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// The image's rootfs as a read-only overlay of `layers` (lowest first) over the empty `base`,
/// mounted detached (the fd of its root; nothing is attached anywhere, the mount goes with the
/// fd). Each layer is added with `lowerdir+` (Linux 6.8+; fsconfig takes at most 256 bytes a
/// value), else all in one `lowerdir`.
fn mount_rootfs(layers: &[PathBuf], base: &Path) -> Result<OwnedFd, VolumeError> {
    let shown = layers
        .first()
        .and_then(|l| l.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let err = |call: &'static str| {
        let layers = shown.clone();
        move |source: io::Error| VolumeError::Rootfs {
            call,
            layers,
            source,
        }
    };
    let mut lower: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    lower.push(base);
    let fs = fsopen("overlay").map_err(err("fsopen"))?;
    let mut one_by_one = true;
    for (i, l) in lower.iter().enumerate() {
        match fsconfig_set(fs.as_fd(), "lowerdir+", Some(l.as_os_str().as_bytes())) {
            Ok(()) => {}
            Err(e) if i == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                one_by_one = false;
                break;
            }
            Err(e) => return Err(err("fsconfig lowerdir+")(e)),
        }
    }
    if !one_by_one {
        let mut all = Vec::new();
        for l in &lower {
            let b = l.as_os_str().as_bytes();
            if b.iter().any(|c| matches!(c, b':' | b',' | b'\\')) {
                return Err(err("fsconfig lowerdir")(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} has a ':', ',' or '\\'", l.display()),
                )));
            }
            if !all.is_empty() {
                all.push(b':');
            }
            all.extend_from_slice(b);
        }
        fsconfig_set(fs.as_fd(), "lowerdir", Some(&all)).map_err(err("fsconfig lowerdir"))?;
    }
    fsconfig_create(fs.as_fd()).map_err(err("fsconfig create"))?;
    fsmount(
        fs.as_fd(),
        libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC,
    )
    .map_err(err("fsmount"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("husk-cri-volumes-{}-", std::process::id()))
            .tempdir()
            .expect("tempdir")
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn destinations_are_cleaned_lexically() {
        assert_eq!(
            destination("/data").unwrap(),
            ("/data".into(), "data".into())
        );
        assert_eq!(
            destination("/../../../../tmp/x/").unwrap(),
            ("/tmp/x".into(), "tmp/x".into())
        );
        assert_eq!(destination("/a/./b/../c").unwrap().0, "/a/c");
        for bad in ["/", "/..", "relative", "/a/../.."] {
            let e = destination(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    /// Two layers (the upper one hides a file with a whiteout and adds one), a volume with
    /// dirs, a setgid file, a hard link, a symlink, a FIFO, owners and modes: the copy has
    /// them all, and only what the merged rootfs shows.
    #[test]
    fn the_copy_keeps_content_modes_owners_and_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (overlay mounts, chown)");
            return;
        }
        let t = tmp();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        std::fs::create_dir_all(l1.join("data/sub")).unwrap();
        std::fs::create_dir_all(l2.join("data")).unwrap();
        std::fs::write(l1.join("data/file"), "content").unwrap();
        std::fs::write(l1.join("data/gone"), "hidden by a whiteout").unwrap();
        std::fs::write(l1.join("data/sub/s"), "deep").unwrap();
        nix::unistd::chown(
            &l1.join("data/sub/s"),
            Some(Uid::from_raw(1234)),
            Some(Gid::from_raw(567)),
        )
        .unwrap();
        // After chown, which clears set-id bits.
        std::fs::set_permissions(l1.join("data/sub/s"), PermissionsExt::from_mode(0o2750)).unwrap();
        std::fs::hard_link(l1.join("data/file"), l1.join("data/hard")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", l1.join("data/link")).unwrap();
        nix::unistd::mkfifo(&l1.join("data/fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        std::fs::set_permissions(l1.join("data/sub"), PermissionsExt::from_mode(0o711)).unwrap();
        // The merged rootfs shows the upper layer's directory: its owner and mode count.
        nix::unistd::chown(
            &l2.join("data"),
            Some(Uid::from_raw(99)),
            Some(Gid::from_raw(98)),
        )
        .unwrap();
        std::fs::set_permissions(l2.join("data"), PermissionsExt::from_mode(0o1777)).unwrap();
        // The upper layer: a whiteout of `gone`, a new file.
        mknodat(
            husk::sys::open(&l2.join("data"), libc::O_RDONLY | libc::O_DIRECTORY)
                .unwrap()
                .as_fd(),
            "gone",
            SFlag::S_IFCHR,
            Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::write(l2.join("data/new"), "upper").unwrap();
        let vols = t.path().join("bundle/volumes");
        std::fs::create_dir_all(t.path().join("bundle")).unwrap();
        let made = prepare(
            &vols,
            &[l1.clone(), l2.clone()],
            &["/data".into(), "/empty".into()],
        )
        .unwrap();
        assert_eq!(
            made,
            [
                ("/data".to_string(), vols.join("0")),
                ("/empty".to_string(), vols.join("1"))
            ]
        );
        let v = vols.join("0");
        assert_eq!(std::fs::read_to_string(v.join("file")).unwrap(), "content");
        assert_eq!(std::fs::read_to_string(v.join("new")).unwrap(), "upper");
        assert_eq!(std::fs::read_to_string(v.join("sub/s")).unwrap(), "deep");
        assert!(!v.join("gone").exists(), "a whited-out file was copied");
        let s = std::fs::metadata(v.join("sub/s")).unwrap();
        assert_eq!((s.mode() & 0o7777, s.uid(), s.gid()), (0o2750, 1234, 567));
        assert_eq!(mode(&v.join("sub")), 0o711);
        let d = std::fs::metadata(&v).unwrap();
        assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o1777, 99, 98));
        assert_eq!(
            std::fs::metadata(v.join("file")).unwrap().ino(),
            std::fs::metadata(v.join("hard")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(v.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(std::fs::symlink_metadata(v.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(mode(&v.join("fifo")), 0o640);
        // The volume the image has nothing at is an empty directory; the empty base is gone.
        assert_eq!(std::fs::read_dir(vols.join("1")).unwrap().count(), 0);
        assert!(!vols.join(".base").exists());
    }

    /// CVE-2022-23648: `..` in the volume path and symlinks in the image (absolute and
    /// relative, at the volume and above it) resolve inside the image's rootfs: the host's
    /// directory they name is neither read nor written, and the image's own directory of that
    /// name is what the volume gets.
    #[test]
    fn volume_paths_resolve_inside_the_rootfs_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (overlay mounts)");
            return;
        }
        let t = tmp();
        let host = t.path().join("host-secret");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("secret"), "host").unwrap();
        let hostrel = host.strip_prefix("/").unwrap().to_path_buf();
        let l = t.path().join("layer");
        // The image's own directory at the host dir's path, with a file of its own.
        std::fs::create_dir_all(l.join(&hostrel)).unwrap();
        std::fs::write(l.join(&hostrel).join("mine"), "image").unwrap();
        std::os::unix::fs::symlink(&host, l.join("abs")).unwrap();
        let up = "../".repeat(12);
        std::os::unix::fs::symlink(format!("{up}{}", hostrel.display()), l.join("rel")).unwrap();
        std::fs::create_dir(l.join("etc")).unwrap();
        std::fs::write(l.join("etc/f"), "x").unwrap();
        let vols = t.path().join("volumes");
        let cases = [
            format!("/../../../..{}", host.display()),
            "/abs".to_string(),
            "/rel".to_string(),
            "/abs/.".to_string(),
        ];
        let made = prepare(&vols, std::slice::from_ref(&l), &cases).unwrap();
        for (i, (dst, dir)) in made.iter().enumerate() {
            assert_eq!(dir, &vols.join(i.to_string()));
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["mine"], "volume {dst}: the host dir was read");
        }
        assert_eq!(made[0].0, host.display().to_string());
        let names: Vec<_> = std::fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "something was written to the host dir");
        // A volume that is a file in the image is refused, naming it.
        let e = prepare(
            &t.path().join("v2"),
            std::slice::from_ref(&l),
            &["/etc/f".into()],
        )
        .unwrap_err();
        assert!(matches!(e, VolumeError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("/etc/f"), "{e}");
    }
}
