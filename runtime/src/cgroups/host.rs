//! Which cgroup hierarchies this host has, and where the calling process sits in them.
//!
//! Built from `/proc/self/mountinfo` and `/proc/self/cgroup` ([`Host::detect`]), or from given texts /
//! a directory ([`Host::from_texts`], [`Host::v2_at`]) so tests can point it at a fake tree.

use super::CgroupError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cgroup layout of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// cgroup v1 hierarchies plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// Pure cgroup v2 (unified hierarchy).
    V2,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup shown at the mountpoint (mountinfo field 4), usually "/".
    pub root: String,
}

/// Cgroup hierarchies of a host and the caller's own cgroups.
#[derive(Debug, Clone)]
pub struct Host {
    /// v1 hierarchies by controller name ("memory", "cpu", "name=systemd", ...). Co-mounted
    /// controllers ("cpu,cpuacct") share one mount.
    pub v1: BTreeMap<String, Mount>,
    /// The cgroup2 mount, if any.
    pub unified: Option<Mount>,
    /// The caller's cgroup per v1 controller, and under the key "" its cgroup2 path.
    pub own: BTreeMap<String, String>,
}

/// v1 controllers Husk knows about (named hierarchies "name=..." are taken as well).
const KNOWN_V1: &[&str] = &[
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

impl Host {
    /// Detect the hierarchies from /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Host, CgroupError> {
        let mi = super::fsutil::read_path(Path::new("/proc/self/mountinfo"))?;
        let cg = super::fsutil::read_path(Path::new("/proc/self/cgroup"))?;
        Host::from_texts(&mi, &cg)
    }

    /// Build from the texts of a mountinfo file and a /proc/<pid>/cgroup file. Mount points are
    /// checked for reachability on this machine (see [`Host::from_texts_with`]).
    pub fn from_texts(mountinfo: &str, proc_cgroup: &str) -> Result<Host, CgroupError> {
        Host::from_texts_with(mountinfo, proc_cgroup, mount_reachable)
    }

    /// Build from texts, `reachable(mountpoint, dev)` telling whether a listed mount is the one
    /// a path lookup of its mount point reaches.
    ///
    /// A controller (or cgroup2) can be mounted more than once: besides the host's hierarchy,
    /// mountinfo may list bind mounts of a cgroup subdirectory (what runc leaves under a
    /// bundle's rootfs for a container without a mount namespace), possibly listed first and
    /// with a mount point that is hidden by a later mount or gone. As runc (which looks at
    /// /sys/fs/cgroup/<controller> first and wants the hierarchy's root), each is chosen by,
    /// in order: its root being "/" (the whole hierarchy), its mount point being reachable,
    /// its mount point being under /sys/fs/cgroup, then the order in mountinfo.
    pub fn from_texts_with(
        mountinfo: &str,
        proc_cgroup: &str,
        reachable: impl Fn(&Path, u64) -> bool,
    ) -> Result<Host, CgroupError> {
        let mut v1: BTreeMap<String, (Rank, Mount)> = BTreeMap::new();
        let mut unified: Option<(Rank, Mount)> = None;
        for (index, line) in mountinfo.lines().enumerate() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if fields.len() < sep + 4 || sep < 5 {
                continue;
            }
            let root = unescape(fields[3]);
            let mountpoint = PathBuf::from(unescape(fields[4]));
            let fstype = fields[sep + 1];
            let superopts = fields[sep + 3];
            if fstype != "cgroup" && fstype != "cgroup2" {
                continue;
            }
            let rank = Rank {
                whole: root == "/",
                reachable: parse_dev(fields[2]).is_some_and(|d| reachable(&mountpoint, d)),
                standard: mountpoint.starts_with("/sys/fs/cgroup"),
                // Earlier lines win ties: a smaller index ranks higher.
                order: usize::MAX - index,
            };
            let mount = Mount { mountpoint, root };
            if fstype == "cgroup2" {
                if unified.as_ref().is_none_or(|(r, _)| rank > *r) {
                    unified = Some((rank, mount));
                }
                continue;
            }
            for opt in superopts.split(',') {
                if KNOWN_V1.contains(&opt) || opt.starts_with("name=") {
                    let better = v1.get(opt).is_none_or(|(r, _)| rank > *r);
                    if better {
                        v1.insert(opt.to_string(), (rank, mount.clone()));
                    }
                }
            }
        }
        if v1.is_empty() && unified.is_none() {
            return Err(CgroupError::NoCgroupFs(
                "no cgroup or cgroup2 filesystem in mountinfo".into(),
            ));
        }
        let own = parse_proc_cgroup(proc_cgroup);
        Ok(Host {
            v1: v1.into_iter().map(|(k, (_, m))| (k, m)).collect(),
            unified: unified.map(|(_, m)| m),
            own,
        })
    }

    /// A pure cgroup v2 host whose cgroup2 mount is `root`, the caller sitting in `own_path`.
    pub fn v2_at(root: impl Into<PathBuf>, own_path: &str) -> Host {
        let mut own = BTreeMap::new();
        own.insert(String::new(), own_path.to_string());
        Host {
            v1: BTreeMap::new(),
            unified: Some(Mount {
                mountpoint: root.into(),
                root: "/".into(),
            }),
            own,
        }
    }

    /// V1, hybrid or V2.
    pub fn mode(&self) -> Mode {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (false, false) => Mode::V1,
            (false, true) => Mode::Hybrid,
            _ => Mode::V2,
        }
    }

    /// The caller's own cgroup directory in a hierarchy (`key` is a v1 controller, "" for cgroup2).
    pub(crate) fn own_dir(&self, key: &str, mount: &Mount) -> PathBuf {
        let own = self.own.get(key).map(String::as_str).unwrap_or("/");
        let rel = strip_root(own, &mount.root);
        join_rel(&mount.mountpoint, rel)
    }
}

/// How well a listed cgroup mount fits as the host's hierarchy; compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// The mount shows the hierarchy's root ("/"), not a subdirectory of it.
    whole: bool,
    /// A lookup of the mount point reaches this mount (not hidden by a later mount, not gone).
    reachable: bool,
    /// Mounted under /sys/fs/cgroup.
    standard: bool,
    /// Position in mountinfo, reversed (the first listed is the largest).
    order: usize,
}

/// mountinfo's "major:minor" field as a dev_t.
fn parse_dev(s: &str) -> Option<u64> {
    let (major, minor) = s.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// Whether a path lookup of `mountpoint` lands on a filesystem with device `dev`: false when the
/// mount point is hidden under another mount, or no longer exists.
fn mount_reachable(mountpoint: &Path, dev: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(mountpoint).is_ok_and(|m| m.dev() == dev)
}

/// `path` relative to a mount whose root is `root` (both absolute cgroup paths).
fn strip_root<'a>(path: &'a str, root: &str) -> &'a str {
    if root == "/" || root.is_empty() {
        return path;
    }
    match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Join a cgroup path ("/a/b" or "a/b") below `base`.
pub(crate) fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

/// Parse /proc/<pid>/cgroup: "4:memory:/a/b" → {"memory": "/a/b"}; "0::/x" → {"": "/x"}.
fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut own = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            own.insert(String::new(), path.to_string());
        } else {
            for c in ctrls.split(',') {
                own.insert(c.to_string(), path.to_string());
            }
        }
    }
    own
}

/// Undo mountinfo's octal escapes (\040 for space, ...).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let oct = std::str::from_utf8(oct).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 /sub /mnt/my\\040dir rw - cgroup cgroup rw,pids";

    const PC: &str = "9:name=systemd:/
4:memory:/process_api/abc
1:cpu,cpuacct:/
8:pids:/sub/x
0::/";

    #[test]
    fn parses_hybrid_mountinfo() {
        let h = Host::from_texts(MI, PC).unwrap();
        assert_eq!(h.mode(), Mode::Hybrid);
        // of two whole hierarchies under /sys/fs/cgroup, the first listed (or the reachable one)
        assert_eq!(h.v1["cpu"].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(
            h.v1["cpuacct"].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(h.v1.contains_key("name=systemd"));
        assert!(!h.v1.contains_key("xattr"));
        assert_eq!(h.v1["pids"].mountpoint, PathBuf::from("/mnt/my dir"));
        assert_eq!(
            h.own_dir("memory", &h.v1["memory"]),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        // mount root "/sub" is stripped from the own path "/sub/x"
        assert_eq!(
            h.own_dir("pids", &h.v1["pids"]),
            PathBuf::from("/mnt/my dir/x")
        );
        let u = h.unified.clone().unwrap();
        assert_eq!(h.own_dir("", &u), PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn v2_only_and_none() {
        let mi = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let h = Host::from_texts(mi, "0::/user.slice/x").unwrap();
        assert_eq!(h.mode(), Mode::V2);
        let u = h.unified.clone().unwrap();
        assert_eq!(
            h.own_dir("", &u),
            PathBuf::from("/sys/fs/cgroup/user.slice/x")
        );
        let e = Host::from_texts("1 2 0:1 / / rw - ext4 /dev/sda rw", "").unwrap_err();
        assert!(e.to_string().contains("no cgroup"), "{e}");
    }

    /// A decoy listed first (a subdirectory's bind, then its mount point hidden) loses against
    /// the host's hierarchy whatever the order.
    #[test]
    fn decoy_listed_first_loses_on_texts() {
        let mi = "60 1 0:29 /husk-x /tmp/b/rootfs/sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
61 1 0:29 / /tmp/b2/rootfs/sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
62 1 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
63 1 0:38 /x /tmp/b/rootfs/sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
64 1 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
        // Only /sys/fs/cgroup/... reachable.
        let h = Host::from_texts_with(mi, "", |p, _| p.starts_with("/sys")).unwrap();
        assert_eq!(h.v1["cpu"].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(h.v1["cpu"].root, "/");
        let u = h.unified.unwrap();
        assert_eq!(u.mountpoint, PathBuf::from("/sys/fs/cgroup/unified"));
        // Nothing reachable (texts from elsewhere): whole hierarchy, then /sys/fs/cgroup.
        let h = Host::from_texts_with(mi, "", |_, _| false).unwrap();
        assert_eq!(h.v1["cpu"].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu"));
        // A whole hierarchy reachable elsewhere beats an unreachable one under /sys/fs/cgroup.
        let h = Host::from_texts_with(mi, "", |p, _| p.starts_with("/tmp/b2")).unwrap();
        assert_eq!(
            h.v1["cpu"].mountpoint,
            PathBuf::from("/tmp/b2/rootfs/sys/fs/cgroup/cpu")
        );
        // The only mount of a controller is taken even if it is a subdirectory.
        let h = Host::from_texts_with(
            "60 1 0:29 /sub /mnt/x rw - cgroup cgroup rw,pids",
            "",
            |_, _| false,
        )
        .unwrap();
        assert_eq!(h.v1["pids"].mountpoint, PathBuf::from("/mnt/x"));
    }

    /// The machine case (issue 16): in a private mount namespace, a bind of a subdirectory of a
    /// real v1 hierarchy is listed before the hierarchy's own mount and its mount point is then
    /// hidden. `Host::detect` must choose the host's mount, not the first one listed.
    #[test]
    fn detect_skips_a_hidden_subdirectory_mount_listed_first() {
        use std::ffi::CString;
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (mounts in a private mount namespace)");
            return;
        }
        let host = Host::detect().expect("detect");
        let Some((ctrl, m)) = ["pids", "cpu", "memory", "devices", "freezer"]
            .iter()
            .find_map(|c| {
                host.v1
                    .get(*c)
                    .filter(|m| m.root == "/")
                    .map(|m| (*c, m.clone()))
            })
        else {
            eprintln!("SKIPPED: no cgroup v1 hierarchy on this host");
            return;
        };
        let tag = format!(
            "husk-decoy-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let cgdir = m.mountpoint.join(&tag);
        std::fs::create_dir(&cgdir).expect("mkdir decoy cgroup");
        let base = std::env::temp_dir().join(&tag);
        let decoy = base.join("rootfs/sys/fs/cgroup").join(ctrl);
        std::fs::create_dir_all(&decoy).expect("mkdir decoy mount point");
        let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let (c_cg, c_decoy, c_base, c_mp) = (c(&cgdir), c(&decoy), c(&base), c(&m.mountpoint));
        let c_ctrl = CString::new(ctrl).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 with a two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the pipe fds were just created and are owned here.
        let (mut rd, wr) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        // SAFETY: fork; the child only makes syscalls, reads mountinfo (glibc's malloc is
        // usable after fork) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let wfd = wr.as_raw_fd();
            fn report(wfd: i32, msg: String) -> ! {
                // SAFETY: write to our pipe end, then _exit without the parent's destructors.
                unsafe {
                    libc::write(wfd, msg.as_ptr().cast(), msg.len());
                    libc::_exit(0)
                }
            }
            let none: *const libc::c_char = std::ptr::null();
            // SAFETY: unshare/mount with valid C strings that outlive the calls. Everything
            // happens in this child's own mount namespace (made private first) and goes away
            // with it.
            let step = |what: &str, r: libc::c_int| {
                if r != 0 {
                    report(
                        wfd,
                        format!("ERR {what}: {}", std::io::Error::last_os_error()),
                    );
                }
            };
            unsafe {
                step("unshare", libc::unshare(libc::CLONE_NEWNS));
                let root = c"/";
                step(
                    "make / rprivate",
                    libc::mount(
                        none,
                        root.as_ptr(),
                        none,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ),
                );
                // 1. the decoy: a bind of a subdirectory of the hierarchy (root /<tag>)
                step(
                    "bind decoy",
                    libc::mount(
                        c_cg.as_ptr(),
                        c_decoy.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ),
                );
                // 2. its mount point hidden under a tmpfs
                step(
                    "hide decoy",
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        c_base.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ),
                );
                // 3. the host's hierarchy mounted again, so it is listed after the decoy
                step("umount host hierarchy", libc::umount2(c_mp.as_ptr(), 0));
                step(
                    "mount host hierarchy",
                    libc::mount(
                        c"cgroup".as_ptr(),
                        c_mp.as_ptr(),
                        c"cgroup".as_ptr(),
                        0,
                        c_ctrl.as_ptr().cast(),
                    ),
                );
            }
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            // What the old rule (first cgroup mount listing the controller) would take.
            let first = mi
                .lines()
                .find(|l| {
                    l.split_once(" - ").is_some_and(|(_, post)| {
                        let post: Vec<&str> = post.split(' ').collect();
                        post.first() == Some(&"cgroup")
                            && post.get(2).is_some_and(|o| o.split(',').any(|x| x == ctrl))
                    })
                })
                .and_then(|l| l.split(' ').nth(4))
                .unwrap_or("")
                .to_string();
            match Host::detect() {
                Ok(h) => report(
                    wfd,
                    format!(
                        "OK {first}\n{}",
                        h.v1.get(ctrl)
                            .map(|m| m.mountpoint.display().to_string())
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => report(wfd, format!("ERR detect: {e}")),
            }
        }
        drop(wr);
        let mut out = String::new();
        let _ = rd.read_to_string(&mut out);
        let mut status = 0;
        // SAFETY: waitpid on the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // The child's mount namespace is gone with it: nothing to unmount here.
        let _ = std::fs::remove_dir(&cgdir);
        let _ = std::fs::remove_dir_all(&base);
        let rest = out
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("child: {out}"));
        let (first, chosen) = rest.split_once('\n').unwrap_or((rest, ""));
        assert_eq!(
            Path::new(first),
            decoy.as_path(),
            "set-up: the decoy must be the first {ctrl} mount listed"
        );
        assert_eq!(
            Path::new(chosen),
            m.mountpoint.as_path(),
            "chose the decoy or worse"
        );
    }
}
