//! Containers without a mount namespace of their own (the runtime-spec allows it: the container
//! shares the runtime's mount namespace). Their mounts (the rootfs bind, /proc, /dev, /sys, the
//! cgroup binds, masked and read-only paths, the console) are made in the host's mount namespace,
//! all of them at or below the rootfs, and the init chroots into the rootfs (pivot_root would
//! change the root of every process in the namespace).
//!
//! runc leaves every such mount behind when the container is gone; husk removes them on delete
//! (and when a create fails). What was already mounted at or below the rootfs before `create`
//! (e.g. an overlay a client mounted as the rootfs) is recorded in the container's state before
//! the init is cloned, so a delete after a crash of `create` still knows what not to touch:
//! every other mount at or below the rootfs was made for the container, and is unmounted deepest
//! first.
//!
//! Nothing husk does in this mode changes a mount it did not make: the propagation of "/" and of
//! the rootfs's parent mount is left as it is (runc makes "/" rslave in the host's namespace),
//! and linux.rootfsPropagation applies to the container's own rootfs bind.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One entry of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// The mount ID (field 1): unique among the mounts that exist at the same time.
    pub id: u64,
    pub mountpoint: PathBuf,
}

/// What a container without a mount namespace has mounted in the runtime's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMounts {
    /// The container's rootfs (absolute, canonical): every mount made for it is at or below it.
    pub rootfs: PathBuf,
    /// Mounts at or below the rootfs that existed before `create`: never unmounted.
    pub before: Vec<MountEntry>,
    /// The mounts the container had once its init was ready (for the record and `husk state`
    /// debugging; delete looks again, so mounts added later are removed too).
    #[serde(default)]
    pub made: Vec<MountEntry>,
}

impl HostMounts {
    /// Record what is mounted at or below `rootfs` now, before anything is mounted for the
    /// container. Refuses a rootfs of "/": every mount of the host would be "below" it.
    pub fn begin(rootfs: &Path) -> Result<HostMounts> {
        if rootfs == Path::new("/") {
            return Err(Error::config(
                "root.path is the host's /: without a mount namespace the container's mounts \
                 would be made over the host's root (give the container a mount namespace)",
            ));
        }
        Ok(HostMounts {
            rootfs: rootfs.to_path_buf(),
            before: under(&read_mountinfo()?, rootfs),
            made: Vec::new(),
        })
    }

    /// The mounts at or below the rootfs that were not there before `create`.
    pub fn current(&self) -> Result<Vec<MountEntry>> {
        Ok(self.ours(&read_mountinfo()?))
    }

    fn ours(&self, all: &[MountEntry]) -> Vec<MountEntry> {
        under(all, &self.rootfs)
            .into_iter()
            .filter(|m| !self.before.contains(m))
            .collect()
    }

    /// Unmount every mount made for the container, deepest first (then the most recent first
    /// where mounts are stacked). Each unmount detaches one mount whose children are already
    /// gone; the mount table is read again after each, and each mount is opened and checked to
    /// be the one listed before it is unmounted through that open file, so nothing else is
    /// unmounted through a path that changed.
    pub fn unmount_all(&self) -> Result<()> {
        // Bounded: each round removes one mount or fails.
        for _ in 0..100_000 {
            let ours = self.ours(&read_mountinfo()?);
            let Some(m) = ours
                .iter()
                .max_by_key(|m| (m.mountpoint.components().count(), m.id))
            else {
                return Ok(());
            };
            umount_entry(m)?;
        }
        Err(Error::container(format!(
            "mounts below {} keep reappearing while they are unmounted",
            self.rootfs.display()
        )))
    }
}

/// Unmount exactly the mount `m` names: open its mount point (O_PATH, not following a final
/// symlink), check with statx that the open file is on mount `m.id`, then umount2 the open
/// file's /proc/self/fd path with MNT_DETACH (its children are gone already).
fn umount_entry(m: &MountEntry) -> Result<()> {
    use std::os::fd::AsRawFd;
    let what = |call: &str| {
        format!(
            "{call} {} (mount {} made for the container in the runtime's mount namespace)",
            m.mountpoint.display(),
            m.id
        )
    };
    let fd = crate::sys::open(&m.mountpoint, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(|e| Error::sys(what("open"), e))?;
    // SAFETY: statx on an fd we own with an empty path and a zeroed out struct it fills in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointers live for the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(Error::sys(what("statx"), std::io::Error::last_os_error()));
    }
    if stx.stx_mask & libc::STATX_MNT_ID != 0 && stx.stx_mnt_id != m.id {
        return Err(Error::container(format!(
            "{}: the path now leads to mount {}, not unmounting it",
            what("umount2"),
            stx.stx_mnt_id
        )));
    }
    let via = crate::sys::fd_path(std::os::fd::AsFd::as_fd(&fd));
    nix::mount::umount2(&via, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(what("umount2"), std::io::Error::from_raw_os_error(e as i32)))
}

/// The entries of `all` whose mount point is `root` or below it.
fn under(all: &[MountEntry], root: &Path) -> Vec<MountEntry> {
    all.iter()
        .filter(|m| m.mountpoint.starts_with(root))
        .cloned()
        .collect()
}

fn read_mountinfo() -> Result<Vec<MountEntry>> {
    let p = Path::new("/proc/self/mountinfo");
    let text =
        std::fs::read_to_string(p).map_err(|e| Error::sys("read /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
}

/// (mount ID, mount point) of each line of a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let mountpoint = f.nth(3)?;
            Some(MountEntry {
                id,
                mountpoint: PathBuf::from(crate::cgroups::unescape_mountinfo(mountpoint)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "27 1 254:0 / / rw - ext4 /dev/vda rw
100 27 254:0 / /b/rootfs rw - ext4 /dev/vda rw
101 100 254:0 / /b/rootfs rw - ext4 /dev/vda rw
102 101 0:5 / /b/rootfs/proc rw - proc proc rw
103 101 0:6 / /b/rootfs/dev rw - tmpfs tmpfs rw
104 103 0:7 / /b/rootfs/dev/pts rw - devpts devpts rw
105 101 0:8 / /b/rootfs\\040x rw - tmpfs tmpfs rw
106 27 0:9 / /b/rootfsx rw - tmpfs tmpfs rw";

    #[test]
    fn ours_excludes_what_was_there_and_lookalike_paths() {
        let all = parse_mountinfo(MI);
        let hm = HostMounts {
            rootfs: PathBuf::from("/b/rootfs"),
            before: vec![MountEntry {
                id: 100,
                mountpoint: PathBuf::from("/b/rootfs"),
            }],
            made: Vec::new(),
        };
        let ids: Vec<u64> = hm.ours(&all).iter().map(|m| m.id).collect();
        // 105 is "/b/rootfs x" (a sibling), 106 "/b/rootfsx": neither is below the rootfs
        assert_eq!(ids, vec![101, 102, 103, 104]);
        assert_eq!(all[6].mountpoint, PathBuf::from("/b/rootfs x"));
    }

    #[test]
    fn the_host_root_is_refused() {
        let e = HostMounts::begin(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("root.path is the host's /"), "{e}");
    }
}
