//! Pod user namespaces (CRI `NamespaceOption.userns_options`, mode POD).
//!
//! As containerd 2 does, a pod with its own user namespace also gets a network namespace that
//! this user namespace owns: root of the pod can then mount sysfs, set `net.*` sysctls and
//! manage its own interfaces, and the containers join the network namespace after the user
//! namespace. husk-cri makes both before the pause container starts, with a short-lived
//! helper process, and pins them on files (bind mounts of their nsfs files), so CNI runs
//! against the network namespace as for any other pod and the pause container joins both.
//!
//! The image layers are shared by every pod: a container of a user-namespaced pod sees them
//! through idmapped mounts (MOUNT_ATTR_IDMAP with the pod's user namespace), so files owned by
//! host uid 0 show as uid 0 inside, and the files it writes land in its writable layer owned
//! by the mapped ids ([`IdmappedLayers`]).

use k8s_cri::v1 as cri;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One contiguous id range: `container_id..container_id+length` inside is
/// `host_id..host_id+length` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The host id of container id `id`, if the range maps it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container_id)?;
        (off < self.length).then(|| self.host_id + off)
    }
}

/// A pod's uid and gid mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIdMaps {
    pub uids: IdRange,
    pub gids: IdRange,
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod user namespace: {what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("idmapped layer {path}: {what}: {source}")]
    Layer {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn mode(m: i32) -> cri::NamespaceMode {
    cri::NamespaceMode::try_from(m).unwrap_or(cri::NamespaceMode::Pod)
}

/// The pod's mappings from its namespace options: `None` for the node's user namespace (mode
/// NODE, or no userns options). An error (the text of an InvalidArgument) for what husk-cri
/// refuses, as containerd does: modes CONTAINER and TARGET, a mode POD without exactly one
/// uid and one gid range, ranges that do not map container id 0 or overflow, and a pod that
/// shares the node's network, pid or ipc namespace (kubelet refuses these too).
pub fn pod_maps(ns: &cri::NamespaceOption) -> Result<Option<PodIdMaps>, String> {
    let Some(u) = &ns.userns_options else {
        return Ok(None);
    };
    match mode(u.mode) {
        cri::NamespaceMode::Node => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err("userns_options: mode NODE takes no uid/gid mappings".into());
            }
            return Ok(None);
        }
        cri::NamespaceMode::Pod => {}
        m => {
            return Err(format!(
                "userns_options: mode {} is not supported for a pod's user namespace (NODE or POD)",
                m.as_str_name()
            ))
        }
    }
    let range = |what: &str, m: &[cri::IdMapping]| -> Result<IdRange, String> {
        let [one] = m else {
            return Err(format!(
                "userns_options.{what}: exactly one mapping is supported, got {}",
                m.len()
            ));
        };
        if one.container_id != 0 {
            return Err(format!(
                "userns_options.{what}: the mapping must start at container id 0 (got {})",
                one.container_id
            ));
        }
        if one.length == 0 || u64::from(one.host_id) + u64::from(one.length) > 1 << 32 {
            return Err(format!(
                "userns_options.{what}: host ids {}+{} are not a valid range",
                one.host_id, one.length
            ));
        }
        Ok(IdRange {
            container_id: one.container_id,
            host_id: one.host_id,
            length: one.length,
        })
    };
    let maps = PodIdMaps {
        uids: range("uids", &u.uids)?,
        gids: range("gids", &u.gids)?,
    };
    for (what, m) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
        if mode(m) == cri::NamespaceMode::Node {
            return Err(format!(
                "userns_options mode POD with the node's {what} namespace: a pod with its own user \
                 namespace needs its own {what} namespace"
            ));
        }
    }
    Ok(Some(maps))
}

/// The containers of a pod with its own user namespace are set up by the pod's root, an
/// unprivileged uid on the host: it must be able to search every directory above `dir` (where
/// their rootfs and the pod's files are). The first directory it cannot search, if any.
pub fn unreachable_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .skip(1)
        .find(|d| {
            std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 == 0)
        })
        .map(Path::to_path_buf)
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> UsernsError {
    move |source| UsernsError::Sys { what, source }
}

fn create_pin(pin: &Path) -> Result<(), UsernsError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(pin)
        .map(drop)
        .map_err(|source| UsernsError::Io {
            what: "create namespace pin",
            path: pin.to_path_buf(),
            source,
        })
}

fn bind(from: &str, pin: &Path) -> Result<(), UsernsError> {
    nix::mount::mount(
        Some(from),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| UsernsError::Io {
        what: "bind-mount a namespace on",
        path: pin.to_path_buf(),
        source: e.into(),
    })
}

/// Unpins a namespace pinned by [`create`]: a pin that is gone or not mounted is fine.
pub fn unpin(pin: &Path) {
    match nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("umount {}: {e}", pin.display()),
    }
    match std::fs::remove_file(pin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("remove {}: {e}", pin.display()),
    }
}

/// Makes the pod's user namespace with `maps`, pinned at `user_pin`, and a network namespace
/// it owns with `lo` up, pinned at `net_pin`. Both pins must not exist; on error neither is
/// left behind.
pub fn create(maps: &PodIdMaps, user_pin: &Path, net_pin: &Path) -> Result<(), UsernsError> {
    if let Some(dir) = net_pin.parent() {
        std::fs::create_dir_all(dir).map_err(|source| UsernsError::Io {
            what: "mkdir",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    create_pin(user_pin)?;
    if let Err(e) = create_pin(net_pin) {
        let _ = std::fs::remove_file(user_pin);
        return Err(e);
    }
    let made = make_and_pin(maps, user_pin, net_pin);
    if made.is_err() {
        unpin(net_pin);
        unpin(user_pin);
    }
    made
}

fn make_and_pin(maps: &PodIdMaps, user_pin: &Path, net_pin: &Path) -> Result<(), UsernsError> {
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe")(e.into()))?;
    let (done_r, done_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe")(e.into()))?;
    // SAFETY: husk-cri is multi-threaded, so the child is like one after fork(2): it only makes
    // raw system calls on fds and stack memory it owns (read, unshare, socket, ioctl, write),
    // takes no lock, allocates nothing, and leaves with _exit.
    let pid = unsafe { husk::sys::clone_fork(libc::CLONE_NEWUSER) }
        .map_err(sys("clone(CLONE_NEWUSER)"))?;
    if pid == 0 {
        // SAFETY: closing the child's copies of the parent's ends (a plain close(2)).
        unsafe {
            libc::close(go_w.as_raw_fd());
            libc::close(done_r.as_raw_fd());
        }
        helper_child(go_r.as_fd(), done_w.as_fd());
    }
    drop(go_r);
    drop(done_w);
    let result = (|| {
        let line = |r: &IdRange| format!("{} {} {}\n", r.container_id, r.host_id, r.length);
        for (file, r) in [("uid_map", &maps.uids), ("gid_map", &maps.gids)] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            std::fs::write(&path, line(r)).map_err(|source| UsernsError::Io {
                what: "write",
                path,
                source,
            })?;
        }
        // Mapped: the child may now make the network namespace (it is root in its own).
        nix::unistd::write(&go_w, &[1]).map_err(|e| sys("wake the namespace helper")(e.into()))?;
        let mut status = [0u8; 4];
        let n = nix::unistd::read(&done_r, &mut status)
            .map_err(|e| sys("read from the namespace helper")(e.into()))?;
        if n != 4 {
            return Err(sys("namespace helper")(std::io::Error::other(
                "exited before making the network namespace",
            )));
        }
        let errno = i32::from_ne_bytes(status);
        if errno != 0 {
            return Err(sys(
                "unshare(CLONE_NEWNET) and lo up in the pod's user namespace",
            )(std::io::Error::from_raw_os_error(errno)));
        }
        bind(&format!("/proc/{pid}/ns/user"), user_pin)?;
        bind(&format!("/proc/{pid}/ns/net"), net_pin)
    })();
    // The helper has nothing more to do (the pins hold the namespaces): end and reap it
    // whatever state it is in.
    drop(go_w);
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    result
}

/// The helper, in its new user namespace: waits until its maps are written, makes the network
/// namespace, reports 0 or the errno, and waits for the parent to kill it.
fn helper_child(go: std::os::fd::BorrowedFd<'_>, done: std::os::fd::BorrowedFd<'_>) -> ! {
    let mut b = [0u8; 1];
    let status: i32 = match nix::unistd::read(go, &mut b) {
        Ok(1) => match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .and_then(|_| crate::network::netns::loopback_up())
        {
            Ok(()) => 0,
            Err(e) => e as i32,
        },
        _ => libc::ECANCELED,
    };
    let _ = nix::unistd::write(done, &status.to_ne_bytes());
    let _ = nix::unistd::read(go, &mut b);
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}

/// A container's image layers seen through the pod's user namespace: one idmapped bind mount
/// per layer under `dir` (`dir/0`, `dir/1`, ... lowest first), for the overlay's lowerdir.
/// Overlayfs keeps private clones of its layers, so once the rootfs is mounted these go
/// ([`IdmappedLayers::release`], also on drop).
pub struct IdmappedLayers {
    dir: PathBuf,
    pub paths: Vec<PathBuf>,
}

impl IdmappedLayers {
    pub fn attach(dir: &Path, layers: &[PathBuf], userns: &Path) -> Result<Self, UsernsError> {
        let layer_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| UsernsError::Layer { what, path, source }
        };
        // Leftovers of an attach cut short by a crash go first.
        release_dir(dir);
        std::fs::create_dir_all(dir).map_err(|source| UsernsError::Io {
            what: "mkdir",
            path: dir.to_path_buf(),
            source,
        })?;
        let ns = husk::sys::open(userns, libc::O_RDONLY).map_err(|source| UsernsError::Io {
            what: "open the pod's user namespace",
            path: userns.to_path_buf(),
            source,
        })?;
        let mut out = IdmappedLayers {
            dir: dir.to_path_buf(),
            paths: Vec::with_capacity(layers.len()),
        };
        for (i, layer) in layers.iter().enumerate() {
            let target = dir.join(i.to_string());
            std::fs::create_dir(&target).map_err(layer_err("mkdir", &target))?;
            let tree = husk::sys::open_tree_clone(layer, false)
                .map_err(layer_err("open_tree(OPEN_TREE_CLONE)", layer))?;
            husk::sys::mount_setattr_idmap(tree.as_fd(), ns.as_fd(), false)
                .map_err(layer_err("mount_setattr(MOUNT_ATTR_IDMAP)", layer))?;
            attach_tree(&tree, &target).map_err(layer_err("move_mount", &target))?;
            out.paths.push(target);
        }
        Ok(out)
    }

    pub fn release(&mut self) {
        release_dir(&self.dir);
        self.paths.clear();
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        if !self.paths.is_empty() {
            self.release();
        }
    }
}

fn attach_tree(tree: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let t = husk::sys::open(target, libc::O_PATH | libc::O_DIRECTORY)?;
    husk::sys::move_mount_fd(tree.as_fd(), t.as_fd())
}

/// Unmounts and removes every `dir/<n>` left by [`IdmappedLayers::attach`], then `dir`.
pub fn release_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(err) => tracing::warn!("umount {}: {err}", p.display()),
        }
        if let Err(err) = std::fs::remove_dir(&p) {
            tracing::warn!("remove {}: {err}", p.display());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Gives `path` (a container's writable layer or a volume copied for it) to the pod's root:
/// ownership shifted into the pod's ranges, so uid 0 on the host shows as uid 0 inside.
/// Ids outside the ranges stay as they are (and show as nobody inside).
pub fn shift_tree(path: &Path, maps: &PodIdMaps) -> Result<(), UsernsError> {
    use std::os::unix::fs::MetadataExt;
    let io = |what, p: &Path| {
        let path = p.to_path_buf();
        move |source| UsernsError::Io { what, path, source }
    };
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).map_err(io("lstat", &p))?;
        let (uid, gid) = (
            maps.uids.to_host(md.uid()).unwrap_or(md.uid()),
            maps.gids.to_host(md.gid()).unwrap_or(md.gid()),
        );
        if (uid, gid) != (md.uid(), md.gid()) {
            // lchown clears setuid/setgid bits of regular files: put the mode back.
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(io("lchown", &p))?;
            if md.file_type().is_file() && md.mode() & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                    .map_err(io("chmod", &p))?;
            }
        }
        if md.file_type().is_dir() {
            for e in std::fs::read_dir(&p).map_err(io("read dir", &p))? {
                stack.push(e.map_err(io("read dir", &p))?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: cri::NamespaceMode, uids: &[(u32, u32, u32)]) -> cri::NamespaceOption {
        let m: Vec<cri::IdMapping> = uids
            .iter()
            .map(|&(c, h, l)| cri::IdMapping {
                container_id: c,
                host_id: h,
                length: l,
            })
            .collect();
        cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: mode as i32,
                uids: m.clone(),
                gids: m,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_mode_takes_one_range_from_container_id_0() {
        let m = pod_maps(&opts(cri::NamespaceMode::Pod, &[(0, 1000, 100000)]))
            .expect("valid")
            .expect("a user namespace");
        assert_eq!(m.uids.to_host(0), Some(1000));
        assert_eq!(m.uids.to_host(99_999), Some(100_999));
        assert_eq!(m.uids.to_host(100_000), None);
        assert_eq!(pod_maps(&cri::NamespaceOption::default()), Ok(None));
        assert_eq!(pod_maps(&opts(cri::NamespaceMode::Node, &[])), Ok(None));
    }

    #[test]
    fn refused_as_containerd_refuses_them() {
        for (o, needle) in [
            (
                opts(cri::NamespaceMode::Pod, &[(0, 1000, 10), (0, 2000, 10)]),
                "exactly one",
            ),
            (
                opts(cri::NamespaceMode::Pod, &[(1, 1000, 10)]),
                "container id 0",
            ),
            (opts(cri::NamespaceMode::Pod, &[]), "exactly one"),
            (
                opts(cri::NamespaceMode::Pod, &[(0, u32::MAX, 2)]),
                "valid range",
            ),
            (
                opts(cri::NamespaceMode::Pod, &[(0, 1000, 0)]),
                "valid range",
            ),
            (opts(cri::NamespaceMode::Container, &[]), "CONTAINER"),
            (opts(cri::NamespaceMode::Target, &[]), "TARGET"),
            (
                opts(cri::NamespaceMode::Node, &[(0, 1000, 10)]),
                "NODE takes no",
            ),
        ] {
            let e = pod_maps(&o).expect_err(needle);
            assert!(e.contains(needle), "{e:?} should say {needle:?}");
        }
        let mut host_net = opts(cri::NamespaceMode::Pod, &[(0, 1000, 10)]);
        host_net.network = cri::NamespaceMode::Node as i32;
        let e = pod_maps(&host_net).expect_err("host network");
        assert!(e.contains("network namespace"), "{e}");
    }
}
