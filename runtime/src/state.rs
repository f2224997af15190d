//! Container state on disk: the root directory (default /run/husk), one directory per container
//! holding state.json (written atomically) and a lock file that serialises operations on one ID.
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/run/husk";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const MAX_ID_LEN: usize = 1024;

/// True when husk runs without root on the host: a rootless container (user namespace
/// required, cgroups only where the user may write them).
pub fn rootless() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() != 0 }
}

/// The default state root: /run/husk for root, $XDG_RUNTIME_DIR/husk (else /tmp/husk-UID) otherwise.
pub fn default_root() -> PathBuf {
    if !rootless() {
        return PathBuf::from(DEFAULT_ROOT);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("husk"),
        // SAFETY: geteuid cannot fail.
        _ => PathBuf::from(format!("/tmp/husk-{}", unsafe { libc::geteuid() })),
    }
}

/// Container IDs: non-empty, bounded, no path separators, no "." or "..", printable ASCII from a
/// conservative set (what runc accepts).
pub fn validate_id(id: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+');
    if id.is_empty() || id.len() > MAX_ID_LEN || id == "." || id == ".." || !id.chars().all(ok_char)
    {
        return Err(Error::container(format!(
            "invalid container ID {id:?}: use 1-{MAX_ID_LEN} characters from [A-Za-z0-9_+.-], not \".\" or \"..\""
        )));
    }
    Ok(())
}

/// The runtime-spec status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What husk keeps about one container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Host pid of the container's init; 0 while it is not yet cloned.
    pub pid: i32,
    /// Start time of `pid` (from /proc/PID/stat), so a recycled pid is never mistaken for ours.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Set by `start` once the init has been told to exec.
    pub started: bool,
    /// The fd (in the init) of the pipe the init blocks on until `start`.
    pub start_fd: i32,
    /// The fd (in the init) of the pipe that closes when the init execs.
    #[serde(default = "no_fd")]
    pub exec_fd: i32,
    pub owner: String,
    /// The cgroups created for the container (opaque to this module).
    #[serde(default)]
    pub cgroup: Option<serde_json::Value>,
    /// The spec as it was at create time (hooks for poststart/poststop, process for exec).
    pub config: oci_spec::runtime::Spec,
    /// Whether the init is in a pid namespace of its own (if not, delete kills the whole cgroup).
    pub own_pidns: bool,
    /// Without a mount namespace of its own: the mounts made for the container in the runtime's
    /// mount namespace, which delete removes (recorded before the init is cloned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mounts: Option<crate::hostmounts::HostMounts>,
    /// Not stored: set by `Root::peek` when no init is recorded (pid 0) and no husk holds the
    /// container's lock, i.e. the create (or restore) that wrote this state was killed before
    /// its init was ready. Such a container is stopped, not "creating" for ever.
    #[serde(skip)]
    pub abandoned: bool,
}

impl ContainerState {
    /// The live status: derived from the init's existence, the started flag and the freezer.
    pub fn status(&self) -> Status {
        if self.pid <= 0 {
            return if self.abandoned {
                Status::Stopped
            } else {
                Status::Creating
            };
        }
        match crate::sys::proc_stat(self.pid) {
            Ok((state, start)) if start == self.pid_start && state != 'Z' && state != 'X' => {
                if !self.started {
                    Status::Created
                } else if crate::container::is_paused(self) {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }

    /// The runtime-spec state JSON (with runc's extra fields: rootfs, created, owner).
    pub fn to_oci_json(&self) -> serde_json::Value {
        let status = self.status();
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": crate::spec::OCI_VERSION,
            "id": self.id,
            "pid": pid,
            "status": status.to_string(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }

    /// The state JSON given to hooks: the same, with an explicit status.
    pub fn hook_json(&self, status: Status) -> String {
        let mut v = self.to_oci_json();
        v["status"] = serde_json::Value::String(status.to_string());
        v["pid"] = serde_json::Value::from(self.pid);
        v.to_string()
    }
}

fn no_fd() -> i32 {
    -1
}

/// The state root directory.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

/// An exclusive lock on one container's directory, held for the duration of a command.
#[derive(Debug)]
pub struct Locked {
    pub dir: PathBuf,
    _lock: File,
}

impl Root {
    pub fn new(path: &Path) -> Result<Root> {
        std::fs::create_dir_all(path).ctx(|| format!("create state root {}", path.display()))?;
        // The state root holds pids and configs: private to its owner.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o711));
        let meta = std::fs::metadata(path).ctx(|| format!("stat state root {}", path.display()))?;
        // SAFETY: geteuid cannot fail.
        if std::os::unix::fs::MetadataExt::uid(&meta) != unsafe { libc::geteuid() } {
            return Err(Error::container(format!(
                "state root {} is owned by another user",
                path.display()
            )));
        }
        Ok(Root {
            path: path.to_path_buf(),
        })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Create the directory of a new container (fails if the ID exists) and lock it.
    pub fn create(&self, id: &str) -> Result<Locked> {
        validate_id(id)?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::container(format!(
                    "container with id {id:?} already exists"
                )))
            }
            Err(e) => return Err(Error::sys(format!("mkdir {}", dir.display()), e)),
        }
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711));
        self.lock_dir(id, dir)
    }

    /// Lock an existing container's directory.
    pub fn lock(&self, id: &str) -> Result<Locked> {
        validate_id(id)?;
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        self.lock_dir(id, dir)
    }

    fn lock_dir(&self, id: &str, dir: PathBuf) -> Result<Locked> {
        let path = dir.join(LOCK_FILE);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(id.to_string()),
                _ => Error::sys(format!("open {}", path.display()), e),
            })?;
        // SAFETY: flock on an fd we own for the lifetime of `f`.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::sys(
                format!("flock {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        // A concurrent delete may have removed the directory while we waited.
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(Locked { dir, _lock: f })
    }

    /// A container's state without taking its lock: state.json is only ever replaced by a
    /// rename, so a reader sees a whole old or new version. For `state` and `list`, which must
    /// not wait behind a long operation (a checkpoint serving lazy pages holds the lock).
    pub fn peek(&self, id: &str) -> Result<ContainerState> {
        validate_id(id)?;
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        let st = Locked::read_state(&dir)?;
        if st.pid > 0 {
            return Ok(st);
        }
        // No init recorded: being created (the creator holds the lock), or its creator died.
        // A shared lock taken without waiting tells which; the state is read again under it, as
        // the create may have finished between the two reads.
        let path = dir.join(LOCK_FILE);
        let Ok(f) = File::open(&path) else {
            return Ok(st);
        };
        // SAFETY: flock on an fd we own for the lifetime of `f`.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return Ok(st);
        }
        let mut st = Locked::read_state(&dir)?;
        st.abandoned = st.pid <= 0;
        drop(f);
        Ok(st)
    }

    /// IDs of every container under the root.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(Error::sys(format!("read {}", self.path.display()), e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().join(STATE_FILE).is_file() && validate_id(&name).is_ok() {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

impl Locked {
    pub fn load(&self) -> Result<ContainerState> {
        Locked::read_state(&self.dir)
    }

    fn read_state(dir: &Path) -> Result<ContainerState> {
        let path = dir.join(STATE_FILE);
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::container(format!(
                "container {:?} does not exist (no state: it may still be being created)",
                dir.file_name().unwrap_or_default()
            )),
            _ => Error::sys(format!("read {}", path.display()), e),
        })?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::container(format!("{}: corrupt state: {e}", path.display())))
    }

    /// Write state.json atomically (temp file, then [`replace`]; no fsync: the state does not
    /// outlive a reboot).
    pub fn save(&self, st: &ContainerState) -> Result<()> {
        let tmp = self.write_tmp(st)?;
        replace(&tmp, &self.dir.join(STATE_FILE))
    }

    /// As [`Locked::save`], with a plain rename(2) over the old file: `create`'s saves, at which
    /// runtime/tests/faults.rs kills husk by tracing `rename` calls. They pay ext4's flush (see
    /// [`replace`]) until that test traces renameat2 too; then they can use `save`.
    pub fn save_renaming(&self, st: &ContainerState) -> Result<()> {
        let tmp = self.write_tmp(st)?;
        let path = self.dir.join(STATE_FILE);
        std::fs::rename(&tmp, &path)
            .ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
    }

    fn write_tmp(&self, st: &ContainerState) -> Result<PathBuf> {
        let tmp = self.dir.join(".state.json.tmp");
        let data = serde_json::to_vec(st)
            .map_err(|e| Error::container(format!("serialize state: {e}")))?;
        let mut f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(&data)
            .ctx(|| format!("write {}", tmp.display()))?;
        Ok(tmp)
    }

    /// Remove the container's directory (the lock is released when `self` drops).
    /// Remove the state directory. Never recursive: its files are unlinked and its
    /// subdirectories (a restore's `criu-root` mount point) only rmdir'ed, after a detaching
    /// unmount if one is still mounted there, so nothing under a mount that was left in the
    /// directory (the container's rootfs) can ever be deleted. An unexpected non-empty
    /// subdirectory is an error naming it.
    pub fn remove(&self) -> Result<()> {
        // First move the directory out of the way (atomic in its parent): a concurrent command
        // opening `<id>/lock` from then on finds no container, instead of re-creating a lock file
        // in the directory being emptied (which left `<id>/` with only `lock` behind for good).
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grave = self
            .dir
            .with_file_name(format!(".{name}.removing-{}", std::process::id()));
        std::fs::rename(&self.dir, &grave)
            .ctx(|| format!("rename {} to {}", self.dir.display(), grave.display()))?;
        let rd = std::fs::read_dir(&grave).ctx(|| format!("read {}", grave.display()))?;
        for e in rd {
            let e = e.ctx(|| format!("read {}", grave.display()))?;
            let p = e.path();
            let is_dir = e
                .file_type()
                .ctx(|| format!("stat {}", p.display()))?
                .is_dir();
            if !is_dir {
                std::fs::remove_file(&p).ctx(|| format!("remove {}", p.display()))?;
                continue;
            }
            if std::fs::remove_dir(&p).is_err() {
                // a mount point (EBUSY): detach it, then the empty directory goes
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
                std::fs::remove_dir(&p).ctx(|| format!("rmdir {}", p.display()))?;
            }
        }
        std::fs::remove_dir(&grave).ctx(|| format!("rmdir {}", grave.display()))
    }
}

/// Write a file atomically (pid files).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display()))?;
    replace(&tmp, path)
}

/// Puts the file `tmp` at `path` atomically (a reader sees the whole old or the whole new file).
///
/// An existing `path` is swapped with `tmp` (renameat2 RENAME_EXCHANGE), then the old file,
/// now at `tmp`, is unlinked. A plain rename over an existing file makes ext4 (`auto_da_alloc`,
/// its default) write the new file's data out right away: a synchronous block allocation and a
/// disk write in every state save, 0.1-0.3 ms each and a disk write per save under load (issue
/// 18: where /run is on ext4, as on the CI machine). Swapped, the small state files stay in the
/// page cache and are usually deleted before writeback ever allocates blocks for them.
/// Filesystems without RENAME_EXCHANGE (EINVAL) and a missing `path` (ENOENT) get a rename.
pub fn replace(tmp: &Path, path: &Path) -> Result<()> {
    match rename_exchange(tmp, path) {
        Ok(()) => match std::fs::remove_file(tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::sys(format!("remove {}", tmp.display()), e))
            }
            _ => Ok(()),
        },
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            std::fs::rename(tmp, path)
                .ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
        }
        Err(e) => Err(Error::sys(
            format!("exchange {} and {}", tmp.display(), path.display()),
            e,
        )),
    }
}

/// renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE).
fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call; AT_FDCWD is no fd
    // we own. The syscall touches no memory of ours beyond reading the two strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_then_removes_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, path) = (d.path().join(".t"), d.path().join("state.json"));
        std::fs::write(&tmp, b"one").unwrap();
        replace(&tmp, &path).unwrap(); // no file yet: a rename
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(!tmp.exists());
        std::fs::write(&tmp, b"two").unwrap();
        replace(&tmp, &path).unwrap(); // exchanged, the old one unlinked
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        assert!(replace(&tmp, &path).is_err()); // nothing to put there
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-1_2.3", "x+y"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_id(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn create_is_exclusive_and_lock_sees_deletion() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        let l = root.create("c1").unwrap();
        assert!(root
            .create("c1")
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        l.remove().unwrap();
        drop(l);
        assert!(root
            .lock("c1")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    fn state_without_init(id: &str) -> ContainerState {
        ContainerState {
            id: id.to_string(),
            pid: 0,
            pid_start: 0,
            bundle: PathBuf::from("/b"),
            rootfs: PathBuf::from("/b/rootfs"),
            created: chrono::Utc::now(),
            annotations: HashMap::new(),
            started: false,
            start_fd: -1,
            exec_fd: -1,
            owner: String::new(),
            cgroup: None,
            config: oci_spec::runtime::Spec::default(),
            own_pidns: true,
            host_mounts: None,
            abandoned: false,
        }
    }

    /// A state without an init (pid 0) is "creating" while its creator holds the lock, and
    /// "stopped" once nobody does (the create was killed), for `state` and `list`; the creator's
    /// (or delete's) own view under the lock stays "creating".
    #[test]
    fn a_create_killed_before_its_init_was_recorded_is_stopped() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        let l = root.create("c3").unwrap();
        l.save(&state_without_init("c3")).unwrap();
        assert_eq!(root.peek("c3").unwrap().status(), Status::Creating);
        drop(l);
        assert_eq!(root.peek("c3").unwrap().status(), Status::Stopped);
        let l = root.lock("c3").unwrap();
        assert_eq!(l.load().unwrap().status(), Status::Creating);
        assert_eq!(root.peek("c3").unwrap().status(), Status::Creating);
        l.remove().unwrap();
    }

    /// A command that opened the lock file before a delete and locks after it must not leave
    /// `<id>/lock` behind (found as ~50 stray state dirs after a day of CRI runs): delete moves
    /// the directory away first, so the waiter sees the container gone and nothing is re-created.
    #[test]
    fn a_lock_waiting_behind_a_delete_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        let l = root.create("c2").unwrap();
        let waiter = {
            let root = Root::new(d.path()).unwrap();
            std::thread::spawn(move || root.lock("c2").map(|_| ()))
        };
        // the waiter blocks in flock on the same lock file
        std::thread::sleep(std::time::Duration::from_millis(100));
        l.remove().unwrap();
        drop(l);
        let r = waiter.join().unwrap();
        assert!(r.unwrap_err().to_string().contains("does not exist"));
        // a later command finds nothing and creates nothing
        assert!(root.lock("c2").is_err());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in the state root: {left:?}");
    }
}
