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

    /// Build from the texts of a mountinfo file and a /proc/<pid>/cgroup file.
    pub fn from_texts(mountinfo: &str, proc_cgroup: &str) -> Result<Host, CgroupError> {
        let mut v1 = BTreeMap::new();
        let mut unified = None;
        for line in mountinfo.lines() {
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
            match fstype {
                "cgroup2" if unified.is_none() => {
                    unified = Some(Mount { mountpoint, root });
                }
                "cgroup" => {
                    for opt in superopts.split(',') {
                        if KNOWN_V1.contains(&opt) || opt.starts_with("name=") {
                            v1.entry(opt.to_string()).or_insert_with(|| Mount {
                                mountpoint: mountpoint.clone(),
                                root: root.clone(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if v1.is_empty() && unified.is_none() {
            return Err(CgroupError::NoCgroupFs(
                "no cgroup or cgroup2 filesystem in mountinfo".into(),
            ));
        }
        let own = parse_proc_cgroup(proc_cgroup);
        Ok(Host { v1, unified, own })
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
fn unescape(s: &str) -> String {
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
        // first mount of cpu wins
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
}
