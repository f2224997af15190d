//! Unpacking one layer tarball into its own directory, in the form overlayfs takes as a
//! lowerdir, without ever writing outside that directory.
//!
//! Every file system operation is relative to a directory fd that we opened ourselves, one
//! component at a time, with `O_NOFOLLOW|O_DIRECTORY`: a symlink in the layer can never be
//! traversed, whatever the entry names say. On top of that, names are checked before use.
//! Policy for hostile or odd entries (the whole layer is refused, with an error naming the entry,
//! unless said otherwise):
//! - absolute names (`/etc/passwd`, `/`) are taken relative to the layer root, as containerd
//!   and docker do; any `..` component is refused (containerd would clamp it; an image built
//!   from a file system never has one).
//! - a name whose parent path goes through a symlink, or through a non-directory: refused.
//!   (`evil -> /etc` then `evil/passwd`.)
//! - hard links: the target must be a relative, `..`-free name of a non-directory already in
//!   this layer, reached without symlinks; anything else is refused.
//! - names with a NUL byte, longer than PATH_MAX (4096) or with a component longer than
//!   NAME_MAX (255): refused.
//! - an entry whose name already exists replaces it (as tar does): the old entry, a symlink
//!   included, is unlinked first and the new one created with `O_EXCL|O_NOFOLLOW`, so writing
//!   a file "over" a symlink never writes through it. A directory over a directory keeps it.
//! - `trusted.*` xattrs (overlayfs metadata such as redirects and opaque markers among them)
//!   and `user.overlay.*` in the tarball are dropped with a warning: a layer must not smuggle
//!   overlayfs metadata, and trusted.* is the host's namespace, never visible in a container
//!   (no CAP_SYS_ADMIN). Other xattrs (security.capability for file capabilities, user.*) are
//!   kept, and skipped with a warning where the file system refuses them (ENOTSUP/EPERM).
//! - OCI whiteouts: `.wh.NAME` becomes a 0:0 character device `NAME`, `.wh..wh..opq` becomes the
//!   `trusted.overlay.opaque=y` xattr on its directory, other `.wh..wh.*` (aufs metadata) are
//!   skipped.
//! - symlink targets are stored verbatim: they are resolved later inside the container's root.
//!
//! The layer is unpacked into a fresh directory, the uncompressed stream's sha256 must equal the
//! diff_id, and the caller renames the directory into place; a failure removes it.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};

use super::registry::hex;
use super::ImageError;

const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const META_PREFIX: &[u8] = b".wh..wh.";

/// Unpacks the layer blob at `blob` (gzip, zstd or plain tar, detected from its first bytes)
/// into the new directory `dest`, checking that the uncompressed stream hashes to `diff_id`.
/// `layer` names the layer in errors. On error `dest` is removed.
pub fn unpack_layer(
    blob: &Path,
    layer: &str,
    diff_id: &str,
    dest: &Path,
) -> Result<(), ImageError> {
    let file = File::open(blob).map_err(|e| ImageError::Io {
        op: "open layer blob",
        path: blob.to_path_buf(),
        source: e,
    })?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let head = reader
        .fill_buf()
        .map_err(|e| ImageError::Io {
            op: "read layer blob",
            path: blob.to_path_buf(),
            source: e,
        })?
        .to_vec();
    let decompressed: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ZstdReader::new(reader))
    } else if head.starts_with(b"BZh") {
        return Err(layer_err(
            layer,
            "bzip2 compression is not supported (gzip, zstd or plain tar)",
        ));
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(layer_err(
            layer,
            "xz compression is not supported (gzip, zstd or plain tar)",
        ));
    } else {
        Box::new(reader)
    };
    unpack_stream(decompressed, layer, diff_id, dest)
}

/// Unpacks an uncompressed tar stream into the new directory `dest` (see [`unpack_layer`]).
pub fn unpack_stream<R: Read>(
    tar_stream: R,
    layer: &str,
    diff_id: &str,
    dest: &Path,
) -> Result<(), ImageError> {
    let result = unpack_inner(tar_stream, layer, diff_id, dest);
    if result.is_err() {
        if let Err(e) = std::fs::remove_dir_all(dest) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %dest.display(), error = %e, "removing a failed layer unpack");
            }
        }
    }
    result
}

fn unpack_inner<R: Read>(
    tar_stream: R,
    layer: &str,
    diff_id: &str,
    dest: &Path,
) -> Result<(), ImageError> {
    std::fs::create_dir(dest).map_err(|e| ImageError::Io {
        op: "create layer directory",
        path: dest.to_path_buf(),
        source: e,
    })?;
    let root: OwnedFd = File::open(dest)
        .map_err(|e| ImageError::Io {
            op: "open layer directory",
            path: dest.to_path_buf(),
            source: e,
        })?
        .into();
    fchmod(root.as_fd(), Mode::from_bits_truncate(0o755)).map_err(|e| ImageError::Io {
        op: "chmod layer directory",
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let mut ex = Extractor {
        root,
        dirs: Vec::new(),
        dir_index: HashMap::new(),
    };
    let mut archive = tar::Archive::new(HashingReader::new(tar_stream));
    let mut last = String::from("(start of archive)");
    {
        let entries = archive
            .entries()
            .map_err(|e| layer_err(layer, &format!("reading the tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                layer_err(
                    layer,
                    &format!("reading the tar stream after entry {last:?}: {e}"),
                )
            })?;
            let raw = match sparse_name(&mut entry)
                .map_err(|e| layer_err(layer, &format!("pax header after {last:?}: {e}")))?
            {
                Some(name) => name,
                None => entry.path_bytes().into_owned(),
            };
            last = display_name(&raw);
            ex.entry(&mut entry, &raw)
                .map_err(|reason| ImageError::LayerEntry {
                    layer: layer.to_string(),
                    entry: last.clone(),
                    reason,
                })?;
            crate::failpoint::hit("pull-during-unpack");
        }
    }
    ex.finish_dirs()
        .map_err(|(entry, reason)| ImageError::LayerEntry {
            layer: layer.to_string(),
            entry,
            reason,
        })?;
    // The diff_id covers the whole uncompressed stream, padding after the end marker included.
    let mut inner = archive.into_inner();
    io::copy(&mut inner, &mut io::sink())
        .map_err(|e| layer_err(layer, &format!("reading the end of the tar stream: {e}")))?;
    let actual = format!("sha256:{}", hex(&inner.hasher.finalize()));
    if actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {layer} (uncompressed, diff_id)"),
            expected: diff_id.to_string(),
            actual,
        });
    }
    nix::unistd::syncfs(ex.root.as_fd()).map_err(|e| ImageError::Io {
        op: "syncfs",
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    Ok(())
}

fn layer_err(layer: &str, reason: &str) -> ImageError {
    ImageError::Layer {
        layer: layer.to_string(),
        reason: reason.to_string(),
    }
}

/// A name fit for an error message: lossy UTF-8, shortened when absurdly long.
fn display_name(raw: &[u8]) -> String {
    if raw.len() > 256 {
        format!(
            "{}...({} bytes)",
            String::from_utf8_lossy(&raw[..200]),
            raw.len()
        )
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// Splits a tar name into checked components (see the module docs for what is refused).
/// A leading `./` and empty or `.` components are dropped; the layer root is `[]`.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte".to_string());
    }
    if raw.len() >= PATH_MAX {
        return Err(format!(
            "name is {} bytes long, more than PATH_MAX ({PATH_MAX})",
            raw.len()
        ));
    }
    // Absolute names are taken relative to the layer root, as containerd and docker do
    // (`tar -P` archives and hand-made layers have them): "/", "./" and "" all name the root,
    // "/x", "./x" and "x" the same entry. Only `..` could leave the root, and it is refused.
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' path component: refusing to leave the layer".to_string()),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "a path component is {} bytes long, more than NAME_MAX ({NAME_MAX})",
                    c.len()
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn show(comps: &[&[u8]]) -> String {
    let joined: Vec<u8> = comps.join(&b'/');
    display_name(&joined)
}

/// Deferred directory metadata: mode and mtime are applied after all entries, since creating
/// children changes a directory's mtime and a read-only mode would get in our way.
struct DirMeta {
    comps: Vec<Vec<u8>>,
    mode: u32,
    mtime: Option<TimeSpec>,
}

struct Extractor {
    root: OwnedFd,
    dirs: Vec<DirMeta>,
    dir_index: HashMap<Vec<Vec<u8>>, usize>,
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Extractor {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<(), String> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let comps = components(raw)?;
        let meta = read_meta(entry)?;

        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./").
            if !kind.is_dir() {
                return Err("entry for the layer root is not a directory".to_string());
            }
            let root = self.root.try_clone().map_err(|e| format!("dup: {e}"))?;
            self.dir_meta(root.as_fd(), &[], &meta)?;
            return Ok(());
        };
        let name: &[u8] = name;

        // Whiteouts.
        if name.starts_with(WHITEOUT_PREFIX) {
            let parent = self.open_dir(parent_comps, true)?;
            if name == OPAQUE_MARKER {
                return fsetxattr(parent.as_fd(), OPAQUE_XATTR, b"y").map_err(|e| {
                    format!("setting {OPAQUE_XATTR} on {:?}: {e}", show(parent_comps))
                });
            }
            if name.starts_with(META_PREFIX) {
                tracing::debug!(entry = %display_name(raw), "skipping aufs metadata entry");
                return Ok(());
            }
            let target = &name[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err("whiteout of an invalid name".to_string());
            }
            if remove_existing(parent.as_fd(), target)? {
                let mut gone = parent_comps.to_vec();
                gone.push(target);
                self.forget_dirs(&gone);
            }
            mknodat(
                parent.as_fd(),
                target,
                SFlag::S_IFCHR,
                Mode::empty(),
                makedev(0, 0),
            )
            .map_err(|e| format!("mknodat whiteout: {e}"))?;
            return Ok(());
        }

        let parent = self.open_dir(parent_comps, true)?;
        let parent = parent.as_fd();

        if kind.is_dir() {
            match stat_nofollow(parent, name)? {
                Some(st) if is_type(&st, libc::S_IFDIR) => {}
                Some(_) => {
                    remove_existing(parent, name)?;
                    mkdir(parent, name)?;
                }
                None => mkdir(parent, name)?,
            }
            let dir =
                open_dir_fd(parent, name).map_err(|e| format!("open the new directory: {e}"))?;
            return self.dir_meta(dir.as_fd(), &comps, &meta);
        }

        if kind.is_hard_link() {
            let target_raw = entry
                .link_name_bytes()
                .ok_or_else(|| "hard link without a target".to_string())?
                .into_owned();
            let tcomps = components(&target_raw)
                .map_err(|r| format!("hard link target {:?}: {r}", display_name(&target_raw)))?;
            let Some((tname, tparent_comps)) = tcomps.split_last() else {
                return Err("hard link to the layer root".to_string());
            };
            if tcomps == comps {
                return Ok(()); // a link to itself: nothing to do
            }
            let tparent = self
                .open_dir(tparent_comps, false)
                .map_err(|r| format!("hard link target {:?}: {r}", show(&tcomps)))?;
            let target_is_symlink = match stat_nofollow(tparent.as_fd(), tname)? {
                None => {
                    return Err(format!(
                        "hard link target {:?} does not exist in this layer",
                        show(&tcomps)
                    ))
                }
                Some(st) if is_type(&st, libc::S_IFDIR) => {
                    return Err(format!(
                        "hard link target {:?} is a directory",
                        show(&tcomps)
                    ))
                }
                Some(st) => is_type(&st, libc::S_IFLNK),
            };
            if remove_existing(parent, name)? {
                self.forget_dirs(&comps);
            }
            linkat(tparent.as_fd(), *tname, parent, name, AtFlags::empty())
                .map_err(|e| format!("linkat to {:?}: {e}", show(&tcomps)))?;
            // The link entry's owner, mode, xattrs and time go to the (shared) inode, as
            // containerd and docker apply them; never a chmod through a symlink.
            self.node_meta(parent, name, &meta, !target_is_symlink)?;
            return Ok(());
        }

        if remove_existing(parent, name)? {
            self.forget_dirs(&comps);
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = openat(
                    parent,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| format!("create: {e}"))?;
                let mut file = File::from(fd);
                match sparse_map(entry)? {
                    Some(sparse) => write_sparse(entry, &mut file, sparse)?,
                    None => {
                        io::copy(entry, &mut file)
                            .map_err(|e| format!("writing the file data: {e}"))?;
                    }
                }
                fchown(
                    file.as_fd(),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                )
                .map_err(|e| format!("fchown {}:{}: {e}", meta.uid, meta.gid))?;
                fchmod(file.as_fd(), Mode::from_bits_truncate(meta.mode))
                    .map_err(|e| format!("fchmod {:o}: {e}", meta.mode))?;
                for (k, v) in &meta.xattrs {
                    xattr_result(k, fsetxattr_c(file.as_fd(), k, v))?;
                }
                futimens(file.as_fd(), &meta.mtime, &meta.mtime)
                    .map_err(|e| format!("futimens: {e}"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| "symlink without a target".to_string())?
                    .into_owned();
                if target.contains(&0) {
                    return Err("symlink target contains a NUL byte".to_string());
                }
                if target.is_empty() || target.len() >= PATH_MAX {
                    return Err(format!("symlink target length {} is invalid", target.len()));
                }
                symlinkat(target.as_slice(), parent, name)
                    .map_err(|e| format!("symlinkat: {e}"))?;
                self.node_meta(parent, name, &meta, false)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = entry
                            .header()
                            .device_major()
                            .map_err(|e| format!("device major: {e}"))?
                            .unwrap_or(0);
                        let minor = entry
                            .header()
                            .device_minor()
                            .map_err(|e| format!("device minor: {e}"))?
                            .unwrap_or(0);
                        let s = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (s, makedev(major.into(), minor.into()))
                    }
                };
                mknodat(parent, name, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| format!("mknodat: {e}"))?;
                self.node_meta(parent, name, &meta, true)?;
            }
            other => {
                return Err(format!("unsupported tar entry type {other:?}"));
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a symlink or special file, by name in `parent`
    /// (never following a symlink).
    fn node_meta(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), String> {
        fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("fchownat {}:{}: {e}", meta.uid, meta.gid))?;
        if chmod {
            // The entry was created by us a moment ago and is not a symlink.
            fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| format!("fchmodat {:o}: {e}", meta.mode))?;
        }
        for (k, v) in &meta.xattrs {
            xattr_result(k, lsetxattr_at(parent, name, k, v))?;
        }
        utimensat(
            parent,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| format!("utimensat: {e}"))?;
        Ok(())
    }

    /// Owner and xattrs of a directory now; mode and mtime when all entries are in.
    fn dir_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        comps: &[&[u8]],
        meta: &Meta,
    ) -> Result<(), String> {
        fchown(
            dir,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| format!("fchown {}:{}: {e}", meta.uid, meta.gid))?;
        for (k, v) in &meta.xattrs {
            xattr_result(k, fsetxattr_c(dir, k, v))?;
        }
        let key: Vec<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        let m = DirMeta {
            comps: key.clone(),
            mode: meta.mode,
            mtime: Some(meta.mtime),
        };
        match self.dir_index.get(&key) {
            Some(&i) => self.dirs[i] = m,
            None => {
                self.dir_index.insert(key, self.dirs.len());
                self.dirs.push(m);
            }
        }
        Ok(())
    }

    /// Drops deferred metadata of `prefix` and everything under it (the tree was removed).
    fn forget_dirs(&mut self, prefix: &[&[u8]]) {
        self.dirs.retain(|d| {
            !(d.comps.len() >= prefix.len()
                && d.comps.iter().zip(prefix).all(|(a, b)| a.as_slice() == *b))
        });
        self.dir_index = self
            .dirs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.comps.clone(), i))
            .collect();
    }

    fn finish_dirs(&mut self) -> Result<(), (String, String)> {
        for d in &self.dirs {
            let comps: Vec<&[u8]> = d.comps.iter().map(Vec::as_slice).collect();
            let shown = if comps.is_empty() {
                "./".to_string()
            } else {
                show(&comps)
            };
            let dir = self
                .open_dir(&comps, false)
                .map_err(|r| (shown.clone(), r))?;
            fchmod(dir.as_fd(), Mode::from_bits_truncate(d.mode))
                .map_err(|e| (shown.clone(), format!("fchmod {:o}: {e}", d.mode)))?;
            if let Some(t) = &d.mtime {
                futimens(dir.as_fd(), t, t)
                    .map_err(|e| (shown.clone(), format!("futimens: {e}")))?;
            }
        }
        Ok(())
    }

    /// Opens the directory `comps` under the layer root one component at a time, never
    /// following a symlink; missing directories are created (0755) when `create`.
    fn open_dir(&self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, String> {
        let mut cur = openat(
            self.root.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open the layer root: {e}"))?;
        for (i, c) in comps.iter().enumerate() {
            let next = match open_dir_fd(cur.as_fd(), c) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    mkdir(cur.as_fd(), c)?;
                    let fd = open_dir_fd(cur.as_fd(), c)
                        .map_err(|e| format!("open {:?}: {e}", show(&comps[..=i])))?;
                    fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))
                        .map_err(|e| format!("chmod {:?}: {e}", show(&comps[..=i])))?;
                    fd
                }
                Err(Errno::ENOENT) => {
                    return Err(format!(
                        "{:?} does not exist in this layer",
                        show(&comps[..=i])
                    ))
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    let what = match stat_nofollow(cur.as_fd(), c)? {
                        Some(st) if is_type(&st, libc::S_IFLNK) => {
                            "is a symlink: refusing to write through it"
                        }
                        _ => "is not a directory",
                    };
                    return Err(format!("parent {:?} {what}", show(&comps[..=i])));
                }
                Err(e) => return Err(format!("open {:?}: {e}", show(&comps[..=i]))),
            };
            cur = next;
        }
        Ok(cur)
    }
}

fn open_dir_fd(parent: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn mkdir(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), String> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("mkdirat {:?}: {e}", display_name(name))),
    }
}

fn is_type(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn stat_nofollow(parent: BorrowedFd<'_>, name: &[u8]) -> Result<Option<libc::stat>, String> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(format!("fstatat {:?}: {e}", display_name(name))),
    }
}

/// Removes whatever is at `name` in `parent` (a directory recursively), never following
/// symlinks. True when a directory was removed.
fn remove_existing(parent: BorrowedFd<'_>, name: &[u8]) -> Result<bool, String> {
    match stat_nofollow(parent, name)? {
        None => Ok(false),
        Some(st) if is_type(&st, libc::S_IFDIR) => remove_tree(parent, name).map(|()| true),
        Some(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map(|()| false)
            .map_err(|e| format!("unlinkat the existing {:?}: {e}", display_name(name))),
    }
}

fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), String> {
    let fd = open_dir_fd(parent, name)
        .map_err(|e| format!("open {:?} to remove it: {e}", display_name(name)))?;
    let dirfd = fd.try_clone().map_err(|e| format!("dup: {e}"))?;
    let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| format!("fdopendir: {e}"))?;
    let mut children = Vec::new();
    for ent in dir.iter() {
        let ent = ent.map_err(|e| format!("readdir {:?}: {e}", display_name(name)))?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push(n.to_vec());
        }
    }
    for child in children {
        remove_existing(dirfd.as_fd(), &child)?;
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
        .map_err(|e| format!("rmdir the existing {:?}: {e}", display_name(name)))
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let h = entry.header();
    let mode = h.mode().map_err(|e| format!("mode: {e}"))? & 0o7777;
    let uid = h.uid().map_err(|e| format!("uid: {e}"))?;
    let gid = h.gid().map_err(|e| format!("gid: {e}"))?;
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?;
    let mut mtime = TimeSpec::new(h.mtime().map_err(|e| format!("mtime: {e}"))? as i64, 0);
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| format!("pax header: {e}"))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| format!("pax header: {e}"))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(ext.value_bytes()).ok_or_else(|| {
                    format!("pax mtime {:?} is invalid", display_name(ext.value_bytes()))
                })?;
            } else if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                if xname.starts_with(b"trusted.") || xname.starts_with(b"user.overlay.") {
                    tracing::warn!(xattr = %display_name(xname), "dropping a trusted.* or overlayfs xattr from a layer");
                    continue;
                }
                let cname = CString::new(xname)
                    .map_err(|_| "xattr name contains a NUL byte".to_string())?;
                if xname.is_empty() || xname.len() > 255 {
                    return Err(format!("xattr name {:?} is invalid", display_name(xname)));
                }
                xattrs.push((cname, ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// A PAX sparse file (GNU tar `--sparse --format=pax`): its real size and data map. The old
/// GNU sparse entries (type `S`) the tar crate expands itself; the PAX ones it hands over as
/// a plain file under a made-up name (`GNUSparseFile.N/name`) with the map in the headers
/// (formats 0.0 and 0.1) or at the start of the data (1.0), so they are expanded here.
struct Sparse {
    real_size: u64,
    /// (offset, length) of each data fragment; `None`: at the start of the data (1.0).
    map: Option<Vec<(u64, u64)>>,
}

/// Most fragments a sparse map may have (a map is made of decimal numbers in the data).
const MAX_SPARSE_FRAGMENTS: u64 = 1 << 20;

/// `GNU.sparse.name` of a PAX sparse entry (the real name), if any.
fn sparse_name<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<Vec<u8>>> {
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(None);
    };
    let mut name = None;
    for ext in exts {
        let ext = ext?;
        if ext.key_bytes() == b"GNU.sparse.name" {
            name = Some(ext.value_bytes().to_vec());
        }
    }
    Ok(name)
}

fn sparse_map<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Sparse>, String> {
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| format!("pax header: {e}"))?
    else {
        return Ok(None);
    };
    let num = |v: &[u8], what: &str| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("pax {what} {:?} is not a number", display_name(v)))
    };
    let (mut major, mut minor, mut real_size) = (None, None, None);
    let mut map: Option<Vec<(u64, u64)>> = None;
    let mut offsets = Vec::new();
    let mut lengths = Vec::new();
    for ext in exts {
        let ext = ext.map_err(|e| format!("pax header: {e}"))?;
        let v = ext.value_bytes();
        match ext.key_bytes() {
            b"GNU.sparse.major" => major = Some(num(v, "GNU.sparse.major")?),
            b"GNU.sparse.minor" => minor = Some(num(v, "GNU.sparse.minor")?),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                real_size = Some(num(v, "GNU.sparse.realsize")?)
            }
            b"GNU.sparse.offset" => offsets.push(num(v, "GNU.sparse.offset")?),
            b"GNU.sparse.numbytes" => lengths.push(num(v, "GNU.sparse.numbytes")?),
            b"GNU.sparse.map" => {
                let nums: Vec<u64> = v
                    .split(|b| *b == b',')
                    .filter(|n| !n.is_empty())
                    .map(|n| num(n, "GNU.sparse.map entry"))
                    .collect::<Result<_, _>>()?;
                if !nums.len().is_multiple_of(2) {
                    return Err("GNU.sparse.map has an odd count of numbers".to_string());
                }
                map = Some(nums.chunks(2).map(|c| (c[0], c[1])).collect());
            }
            _ => {}
        }
    }
    let in_data = major == Some(1) && minor == Some(0);
    if !in_data && map.is_none() && offsets.is_empty() {
        return Ok(None);
    }
    let real_size = real_size.ok_or("PAX sparse file without GNU.sparse.realsize")?;
    if map.is_none() && !offsets.is_empty() {
        if offsets.len() != lengths.len() {
            return Err("GNU.sparse.offset and GNU.sparse.numbytes do not pair up".to_string());
        }
        map = Some(offsets.into_iter().zip(lengths).collect());
    }
    Ok(Some(Sparse {
        real_size,
        map: if in_data { None } else { map },
    }))
}

/// Reads one decimal number of a 1.0 sparse map, ended by a newline.
fn map_number(r: &mut dyn Read, consumed: &mut u64) -> Result<u64, String> {
    let mut n: u64 = 0;
    let mut digits = 0;
    let mut b = [0u8; 1];
    loop {
        r.read_exact(&mut b)
            .map_err(|e| format!("reading the sparse map: {e}"))?;
        *consumed += 1;
        match b[0] {
            b'\n' if digits > 0 => return Ok(n),
            c @ b'0'..=b'9' if digits < 20 => {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(c - b'0')))
                    .ok_or("sparse map number overflows")?;
                digits += 1;
            }
            _ => return Err("sparse map is not decimal numbers".to_string()),
        }
    }
}

/// Writes a PAX sparse file's fragments at their offsets; the holes stay holes.
fn write_sparse<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    file: &mut File,
    sparse: Sparse,
) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let map = match sparse.map {
        Some(m) => m,
        None => {
            let mut consumed = 0u64;
            let count = map_number(entry, &mut consumed)?;
            if count > MAX_SPARSE_FRAGMENTS {
                return Err(format!("sparse map of {count} fragments"));
            }
            let mut m = Vec::new();
            for _ in 0..count {
                let off = map_number(entry, &mut consumed)?;
                let len = map_number(entry, &mut consumed)?;
                m.push((off, len));
            }
            // The map is padded to a 512-byte block.
            let pad = (512 - consumed % 512) % 512;
            let skipped = io::copy(&mut (&mut *entry).take(pad), &mut io::sink())
                .map_err(|e| format!("reading the sparse map: {e}"))?;
            if skipped != pad {
                return Err("sparse map truncated".to_string());
            }
            m
        }
    };
    let mut end = 0u64;
    for &(off, len) in &map {
        let stop = off
            .checked_add(len)
            .filter(|s| off >= end && *s <= sparse.real_size)
            .ok_or_else(|| {
                format!(
                    "sparse fragment {off}+{len} is out of order or past the size {}",
                    sparse.real_size
                )
            })?;
        file.seek(SeekFrom::Start(off))
            .map_err(|e| format!("seek in the sparse file: {e}"))?;
        let n = io::copy(&mut (&mut *entry).take(len), file)
            .map_err(|e| format!("writing the file data: {e}"))?;
        if n != len {
            return Err(format!("sparse fragment at {off}: {n} of {len} bytes"));
        }
        end = stop;
    }
    file.set_len(sparse.real_size)
        .map_err(|e| format!("ftruncate to {}: {e}", sparse.real_size))?;
    Ok(())
}

/// PAX times: `seconds[.fraction]`, possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    // A negative time with a fraction means secs - fraction.
    if secs < 0 || s.starts_with('-') {
        if nanos == 0 {
            return Some(TimeSpec::new(secs, 0));
        }
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

fn xattr_result(name: &CString, r: io::Result<()>) -> Result<(), String> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            tracing::warn!(xattr = ?name, error = %e, "the file system refused an xattr from a layer; skipped");
            Ok(())
        }
        Err(e) => Err(format!("setting xattr {name:?}: {e}")),
    }
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    fsetxattr_c(fd, &cname, value)
}

/// fsetxattr(2) on an open file or directory.
fn fsetxattr_c(fd: BorrowedFd<'_>, name: &CString, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor for the duration of the call, `name` is NUL-terminated
    // and `value` points to `value.len()` readable bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// lsetxattr(2) on `name` in the directory `parent` without following a final symlink. The
/// path goes through `/proc/self/fd/<parent>`, so only `name` (one component) is looked up.
fn lsetxattr_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    xname: &CString,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let cpath = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated and `value` points to `value.len()` readable bytes.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            xname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A reader that hashes (sha256) what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decodes a zstd stream of any number of frames; skippable frames are skipped.
pub struct ZstdReader<R: BufRead> {
    src: R,
    decoder: ruzstd::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    pub fn new(src: R) -> Self {
        ZstdReader {
            src,
            decoder: ruzstd::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(ruzstd::frame_decoder::FrameDecoderError::ReadFrameHeaderError(
                        ruzstd::frame::ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped =
                            io::copy(&mut (&mut self.src).take(length.into()), &mut io::sink())?;
                        if skipped != u64::from(length) {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "zstd: truncated skippable frame",
                            ));
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("zstd: {e}"),
                        ))
                    }
                }
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
                continue;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let want = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(
                        &mut self.src,
                        ruzstd::BlockDecodingStrategy::UptoBytes(want),
                    )
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
                    })?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
