//! `tmpcopyup` (a runc/crun mount-option extension podman uses for `--read-only` containers):
//! a tmpfs mounted over a directory of the image starts with a copy of that directory's contents.
//!
//! The copy works between two directory fds, the image's directory opened before the tmpfs covers
//! it and the new tmpfs, with *at calls that never follow a symlink: image contents are untrusted,
//! so a symlink is copied as a symlink and nothing outside the two trees is ever reached.
//! Regular files, directories, symlinks, fifos, sockets and device nodes are copied with their
//! mode, owner and times; hard links become separate files (as with runc).

use crate::error::{Error, Result};
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag};
use nix::sys::stat::{FileStat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Deeper trees are refused (each level holds a directory fd open).
const MAX_DEPTH: usize = 128;

fn sys_err(what: String, e: nix::errno::Errno) -> Error {
    Error::sys(what, std::io::Error::from_raw_os_error(e as i32))
}

/// Copies the contents of directory `from` into directory `to` (which should be empty).
/// `what` names the tree in errors (the mount destination).
pub fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>, what: &Path) -> Result<()> {
    copy_dir(from, to, what, 0)
}

fn copy_dir(from: BorrowedFd<'_>, to: BorrowedFd<'_>, path: &Path, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::Unsupported(format!(
            "tmpcopyup {}: directory tree deeper than {MAX_DEPTH} levels",
            path.display()
        )));
    }
    // A second fd for reading the directory, so `from` stays usable for the *at calls.
    let list = openat(
        from,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys_err(format!("tmpcopyup: open {}", path.display()), e))?;
    let mut dir = nix::dir::Dir::from_fd(list)
        .map_err(|e| sys_err(format!("tmpcopyup: read {}", path.display()), e))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| sys_err(format!("tmpcopyup: read {}", path.display()), e))?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let child = path.join(OsStr::from_bytes(bytes));
        copy_entry(from, to, name, &child, depth)?;
    }
    Ok(())
}

fn copy_entry(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    path: &Path,
    depth: usize,
) -> Result<()> {
    let st = fstatat(from, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| sys_err(format!("tmpcopyup: stat {}", path.display()), e))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
    let at = |what: &str, e| sys_err(format!("tmpcopyup: {what} {}", path.display()), e);
    match kind {
        SFlag::S_IFDIR => {
            mkdirat(to, name, Mode::S_IRWXU).map_err(|e| at("mkdir", e))?;
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let src = openat(from, name, flags, Mode::empty()).map_err(|e| at("open", e))?;
            let dst = openat(to, name, flags, Mode::empty()).map_err(|e| at("open copy of", e))?;
            copy_dir(src.as_fd(), dst.as_fd(), path, depth + 1)?;
        }
        SFlag::S_IFREG => {
            let src = openat(
                from,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| at("open", e))?;
            let dst = openat(
                to,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
            .map_err(|e| at("create", e))?;
            let (mut src, mut dst) = (File::from(src), File::from(dst));
            std::io::copy(&mut src, &mut dst)
                .map_err(|e| Error::sys(format!("tmpcopyup: copy {}", path.display()), e))?;
        }
        SFlag::S_IFLNK => {
            let target = readlinkat(from, name).map_err(|e| at("readlink", e))?;
            symlinkat(target.as_os_str(), to, name).map_err(|e| at("symlink", e))?;
        }
        SFlag::S_IFIFO | SFlag::S_IFSOCK | SFlag::S_IFCHR | SFlag::S_IFBLK => {
            mknodat(to, name, kind, perm, st.st_rdev).map_err(|e| at("mknod", e))?;
        }
        _ => {
            return Err(Error::Unsupported(format!(
                "tmpcopyup {}: unknown file type {:#o}",
                path.display(),
                kind.bits()
            )))
        }
    }
    set_attrs(to, name, &st, kind == SFlag::S_IFLNK, path)
}

/// Owner first (chown clears set-id bits), then mode, then times.
fn set_attrs(
    to: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    st: &FileStat,
    symlink: bool,
    path: &Path,
) -> Result<()> {
    let at = |what: &str, e| sys_err(format!("tmpcopyup: {what} {}", path.display()), e);
    fchownat(
        to,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| at("chown", e))?;
    if !symlink {
        fchmodat(
            to,
            name,
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| at("chmod", e))?;
    }
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    utimensat(to, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| at("set times of", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open_dir(p: &Path) -> OwnedFd {
        File::open(p).unwrap().into()
    }

    #[test]
    fn copies_files_dirs_links_and_modes_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("a/b/file"), b"contents").unwrap();
        std::fs::set_permissions(
            src.join("a/b/file"),
            std::fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        std::fs::set_permissions(src.join("a"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        // A hostile link: copied as a link, its target never read.
        std::os::unix::fs::symlink("/etc/shadow", src.join("evil")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();

        copy_tree(
            open_dir(&src).as_fd(),
            open_dir(&dst).as_fd(),
            Path::new("/src"),
        )
        .unwrap();

        assert_eq!(std::fs::read(dst.join("a/b/file")).unwrap(), b"contents");
        let m = std::fs::metadata(dst.join("a/b/file")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4750);
        assert_eq!(
            std::fs::metadata(dst.join("a")).unwrap().mode() & 0o7777,
            0o1777
        );
        let l = std::fs::symlink_metadata(dst.join("evil")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!(
            std::fs::read_link(dst.join("evil")).unwrap(),
            Path::new("/etc/shadow")
        );
        let f = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&f.file_type()));
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::metadata(src.join("a/b/file")).unwrap().mtime(),
            m.mtime()
        );
    }

    #[test]
    fn an_existing_entry_in_the_target_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("x"), b"1").unwrap();
        std::fs::write(dst.join("x"), b"2").unwrap();
        let e = copy_tree(
            open_dir(&src).as_fd(),
            open_dir(&dst).as_fd(),
            Path::new("/tmp"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/tmp/x"), "{e}");
    }
}
