//! Thin wrappers over syscalls that neither `nix` nor `std` cover the way we need them.
//! Each `unsafe` block is a single FFI call with arguments checked by the wrapper's signature.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// fork-like clone(2): the child continues on a copy of the caller's stack, like fork(), but in the
/// namespaces named by `flags`. Returns 0 in the child and the child's pid in the parent.
///
/// # Safety
/// The caller must be single-threaded (as after fork, only the calling thread exists in the child).
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: raw clone with a NULL stack behaves like fork(2); the caller guarantees single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    check(ret).map(|p| p as libc::pid_t)
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork-like clone3(2) with CLONE_INTO_CGROUP: the child starts life inside the cgroup2
/// directory `cgroup_fd`, before it runs a single instruction. Returns 0 in the child.
///
/// # Safety
/// As `clone_fork`: the caller must be single-threaded.
pub unsafe fn clone3_into_cgroup(
    flags: libc::c_int,
    cgroup_fd: BorrowedFd<'_>,
) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with no stack behaves like fork; `args` lives for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    check(ret).map(|p| p as libc::pid_t)
}

pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

/// openat2(2) with RESOLVE_IN_ROOT: `path` is resolved as if `root` were "/", so neither ".." nor an
/// absolute symlink can leave the rootfs.
pub fn openat_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// openat2(2) with the given RESOLVE_* flags (O_CLOEXEC always added, mode 0).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = 0;
    how.resolve = resolve;
    // SAFETY: `c` and `how` outlive the call; the kernel validates the pointers' contents.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    // SAFETY: on success the kernel returned a new fd that we now own.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Plain openat(2) relative to a directory fd (O_CLOEXEC always added).
pub fn openat(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let ret = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    // SAFETY: a non-negative return is a new fd we own.
    check(ret as libc::c_long).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// open(2) an absolute path (O_CLOEXEC always added).
pub fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let ret = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    // SAFETY: a non-negative return is a new fd we own.
    check(ret as libc::c_long).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The magic-link path of an fd, used as a mount target so the kernel mounts on exactly that inode.
pub fn fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;

/// mount_setattr(2) on the mount at `fd` (the whole tree below it when `recursive`).
fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let empty = c"";
    let flags = AT_EMPTY_PATH | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `attr` and `empty` outlive the call; size matches the struct we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(|_| ())
}

/// mount_setattr(2) with AT_RECURSIVE on the mount at `fd`: sets/clears attributes on a whole tree
/// (the "rro", "rnosuid", ... options).
pub fn mount_setattr_recursive(fd: BorrowedFd<'_>, set: u64, clr: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(fd, true, &attr)
}

/// MOUNT_ATTR_IDMAP: the detached mount at `tree` (from [`open_tree_clone`]) shows file
/// ownership through the id mappings of the user namespace `userns`.
pub fn mount_setattr_idmap(
    tree: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<()> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(tree, recursive, &attr)
}

/// move_mount(2) from fd to fd: attaches the detached mount `tree` on the directory `target`.
pub fn move_mount_fd(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    // SAFETY: two fds the caller holds, empty paths that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret).map(|_| ())
}

/// open_tree(2) with OPEN_TREE_CLONE (and AT_RECURSIVE when `recursive`): a detached bind mount
/// of `path`, attached nowhere, close-on-exec; it goes with its last fd.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = cstr(path)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `c` is NUL-terminated and outlives the call; the result is checked.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// fsopen(2): a file system context of type `fstype` ("overlay", "tmpfs"), close-on-exec.
pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let n = CString::new(fstype).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `n` is NUL-terminated and outlives the call; the result is checked.
    let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, n.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// fsconfig(2) on a context from [`fsopen`]: FSCONFIG_SET_STRING `key`=`value`, or
/// FSCONFIG_SET_FLAG `key` when `value` is None.
pub fn fsconfig_set(fs: BorrowedFd<'_>, key: &str, value: Option<&[u8]>) -> io::Result<()> {
    let einval = |_| io::Error::from_raw_os_error(libc::EINVAL);
    let k = CString::new(key).map_err(einval)?;
    let v = value.map(|v| CString::new(v).map_err(einval)).transpose()?;
    let (cmd, vp) = match &v {
        Some(v) => (libc::FSCONFIG_SET_STRING, v.as_ptr()),
        None => (libc::FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: `k` and `v` are NUL-terminated and outlive the call; `fs` is an open fd.
    check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vp, 0) })
        .map(|_| ())
}

/// fsconfig(2) FSCONFIG_CMD_CREATE: makes the context's superblock.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: no pointers but NULL are passed; `fs` is an open fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    })
    .map(|_| ())
}

/// fsmount(2): a detached mount of the context's superblock with the MOUNT_ATTR_* `attr`,
/// close-on-exec.
pub fn fsmount(fs: BorrowedFd<'_>, attr: u64) -> io::Result<OwnedFd> {
    // SAFETY: no pointers are passed; `fs` is an open fd; the result is checked.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attr,
        )
    })?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// prctl(2) with integer arguments.
pub fn prctl(
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: integer-only prctl options; no pointers are passed.
    let ret = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(ret as libc::c_long).map(|r| r as libc::c_int)
}

/// close_range(2): close (or mark CLOEXEC with `cloexec`) every fd in [first, last].
pub fn close_range(first: u32, last: u32, cloexec: bool) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    check(ret).map(|_| ())
}

/// Clear FD_CLOEXEC on one fd (for preserved fds handed to the container).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd; an invalid fd returns EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    check(ret as libc::c_long).map(|_| ())
}

/// Set FD_CLOEXEC on one fd.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd; an invalid fd returns EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    check(ret as libc::c_long).map(|_| ())
}

/// Reset the signal mask to empty and every catchable signal's disposition to default, so the
/// container process starts with a clean signal state (execve keeps ignored signals and the mask).
pub fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; failures (invalid signal numbers) are harmless.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: an empty set is valid for SIG_SETMASK.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The process's start time (field 22 of /proc/PID/stat), used to tell a pid from a recycled one.
pub fn proc_start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// Process state letter and start time from /proc/PID/stat (the comm field may contain spaces).
pub fn proc_stat(pid: i32) -> io::Result<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> io::Result<(char, u64)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat");
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22 → index 19
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(bad)?;
    let start = fields
        .get(19)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn stat_with_spaces_in_comm() {
        let s = "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_stat(s).unwrap(), ('S', 98765));
    }
    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id() as i32;
        assert!(proc_start_time(me).unwrap() > 0);
    }
}
