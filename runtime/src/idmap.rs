//! Idmapped mounts: a bind mount whose file ownership is seen through a uid/gid mapping
//! (mount uidMappings/gidMappings, or the "idmap"/"ridmap" options with the container's own
//! mappings). The runtime builds each one before clone with the host's privileges: a user
//! namespace holding the mapping, a detached clone of the source (open_tree) with
//! MOUNT_ATTR_IDMAP set; the init attaches the tree with move_mount (fd to fd).
use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Whether a mount asks to be idmapped, and if so whether recursively.
pub fn wants_idmap(m: &Mount) -> Option<bool> {
    let opts = m.options().clone().unwrap_or_default();
    let ridmap = opts.iter().any(|o| o == "ridmap");
    if ridmap
        || opts.iter().any(|o| o == "idmap")
        || m.uid_mappings().is_some()
        || m.gid_mappings().is_some()
    {
        Some(ridmap || opts.iter().any(|o| o == "rbind"))
    } else {
        None
    }
}

/// What the parent prepares for one idmapped mount: the user namespace holding its mapping.
#[derive(Debug)]
pub struct Prep {
    pub index: usize,
    /// The idmapped detached tree, made with the host's privileges.
    pub tree: OwnedFd,
    pub source: std::path::PathBuf,
}

/// Prepared idmapped mounts, by index in spec.mounts.
pub type Prepared = Vec<Prep>;

/// Build every idmapped mount of the spec as a detached tree.
pub fn prepare(spec: &Spec, bundle: &Path) -> Result<Prepared> {
    let mut out = Vec::new();
    let linux = spec.linux().as_ref();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(recursive) = wants_idmap(m) else {
            continue;
        };
        let what = format!("mounts[{i}] ({})", m.destination().display());
        let opts = m.options().clone().unwrap_or_default();
        if !opts.iter().any(|o| o == "bind" || o == "rbind") {
            return Err(Error::config(format!(
                "{what}: idmapped mounts must be bind mounts"
            )));
        }
        let uids = m
            .uid_mappings()
            .clone()
            .or_else(|| linux.and_then(|l| l.uid_mappings().clone()));
        let gids = m
            .gid_mappings()
            .clone()
            .or_else(|| linux.and_then(|l| l.gid_mappings().clone()));
        let (Some(uids), Some(gids)) = (
            uids.filter(|u| !u.is_empty()),
            gids.filter(|g| !g.is_empty()),
        ) else {
            return Err(Error::config(format!(
                "{what}: idmap needs uidMappings and gidMappings (on the mount or for the container)"
            )));
        };
        let src = m
            .source()
            .clone()
            .ok_or_else(|| Error::config(format!("{what}: bind mount without source")))?;
        let src = if src.is_absolute() {
            src
        } else {
            bundle.join(src)
        };
        let userns = userns_with(&uids, &gids)?;
        let tree = crate::sys::open_tree_clone(&src, recursive)
            .ctx(|| format!("{what}: open_tree {}", src.display()))?;
        crate::sys::mount_setattr_idmap(tree.as_fd(), userns.as_fd(), recursive)
            .ctx(|| format!("{what}: mount_setattr MOUNT_ATTR_IDMAP"))?;
        out.push(Prep {
            index: i,
            tree,
            source: src,
        });
    }
    Ok(out)
}

/// In the init's mount namespace: attach the prepared tree at `target`.
pub fn mount_at(p: &Prep, target: std::os::fd::BorrowedFd<'_>, what: &Path) -> Result<()> {
    crate::sys::move_mount_fd(p.tree.as_fd(), target)
        .map_err(|e| Error::sys(format!("move_mount idmapped tree to {}", what.display()), e))
}

/// A user namespace with the given mappings, held by its fd (the process that made it is gone).
fn userns_with(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
    // SAFETY: single-threaded runtime; the child only blocks on a read and exits.
    let pid = unsafe { crate::sys::clone_fork(libc::CLONE_NEWUSER) }
        .ctx(|| "clone user namespace for an idmapped mount".into())?;
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(&r, &mut b);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    drop(r);
    let res = (|| {
        let fmt = |m: &[LinuxIdMapping]| {
            m.iter()
                .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
                .collect::<String>()
        };
        std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uids))
            .ctx(|| format!("write uid_map of idmap helper {pid}"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gids))
            .ctx(|| format!("write gid_map of idmap helper {pid}"))?;
        crate::sys::open(Path::new(&format!("/proc/{pid}/ns/user")), libc::O_RDONLY)
            .ctx(|| "open idmap user namespace".into())
    })();
    drop(w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    res
}
