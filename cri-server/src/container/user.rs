//! Users and groups of an image, read from its layers.
//!
//! [`read_image_file`] looks a path up through the unpacked layers as overlayfs would show
//! them (upper layers first; a 0:0 character device is a whiteout; a directory with
//! `trusted.overlay.opaque=y` hides the same directory in lower layers). Symlinks are followed
//! inside the image only: an absolute target starts again at the image's root and `..` stops
//! at the root, as `openat2(RESOLVE_IN_ROOT)` would. Nothing outside the layer directories is
//! ever opened.
//!
//! [`resolve`] turns the image `USER` and the container's security context into the uid,
//! gid and supplementary groups of the container's first process, as containerd's CRI plugin
//! does (`oci.WithUser`, `WithAdditionalGIDs`, `WithSupplementalGroups`).
use k8s_cri::v1 as cri;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Largest image file [`read_image_file`] returns.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 20;
/// Symlinks followed in one lookup before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors of image user resolution; each names the user, group or image file involved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("image file {path}: reading {host}: {source}")]
    Io {
        path: String,
        host: PathBuf,
        source: std::io::Error,
    },
    #[error("image file {path}: larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("image file {path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("image file {path}: not a regular file")]
    NotAFile { path: String },
    #[error("image file {path}: must be an absolute path")]
    RelativePath { path: String },
    #[error("user {user:?}: no users found in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("group {group:?}: no groups found in the image's /etc/group")]
    UnknownGroup { group: String },
    #[error("user {user:?}: {reason}")]
    InvalidUser { user: String, reason: String },
    #[error("run_as_group {gid} is specified without run_as_user or run_as_username")]
    GroupWithoutUser { gid: i64 },
    #[error("{field} {value}: not a valid id (0..=4294967295)")]
    InvalidId { field: &'static str, value: i64 },
    #[error("supplemental_groups_policy {0}: unknown policy")]
    UnknownPolicy(i32),
}

impl From<UserError> for tonic::Status {
    fn from(e: UserError) -> Self {
        let msg = e.to_string();
        match e {
            UserError::UnknownUser { .. } | UserError::UnknownGroup { .. } => {
                tonic::Status::not_found(msg)
            }
            UserError::Io { .. } => tonic::Status::internal(msg),
            UserError::TooLarge { .. }
            | UserError::SymlinkLoop { .. }
            | UserError::NotAFile { .. }
            | UserError::RelativePath { .. }
            | UserError::InvalidUser { .. }
            | UserError::GroupWithoutUser { .. }
            | UserError::InvalidId { .. }
            | UserError::UnknownPolicy(_) => tonic::Status::invalid_argument(msg),
        }
    }
}

/// What one name in a merged directory is.
enum Entry {
    Missing,
    /// A directory, with the layers (indices, top-down) that contribute to it.
    Dir(Vec<usize>),
    /// A symlink and its target.
    Symlink(PathBuf),
    /// Anything else, at this host path.
    Other(PathBuf),
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c_path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let Ok(c_name) = CString::new(OPAQUE_XATTR) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Looks `name` up in the merged directory `dir` (its components) made of `dir_layers`.
fn lookup(
    layers: &[PathBuf],
    dir: &[String],
    dir_layers: &[usize],
    name: &str,
    image_path: &str,
) -> Result<Entry, UserError> {
    let mut found_dirs = Vec::new();
    for &l in dir_layers {
        let mut host = layers[l].clone();
        host.extend(dir);
        host.push(name);
        let md = match std::fs::symlink_metadata(&host) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(UserError::Io {
                    path: image_path.to_string(),
                    host,
                    source: e,
                })
            }
        };
        if md.is_dir() {
            let opaque = is_opaque(&host);
            found_dirs.push(l);
            if opaque {
                break;
            }
            continue;
        }
        if !found_dirs.is_empty() || is_whiteout(&md) {
            // A whiteout hides everything below; a non-directory under a directory of an
            // upper layer is hidden by it (and hides the rest).
            break;
        }
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&host).map_err(|e| UserError::Io {
                path: image_path.to_string(),
                host: host.clone(),
                source: e,
            })?;
            return Ok(Entry::Symlink(target));
        }
        return Ok(Entry::Other(host));
    }
    if found_dirs.is_empty() {
        Ok(Entry::Missing)
    } else {
        Ok(Entry::Dir(found_dirs))
    }
}

/// The layers contributing to the root directory, top-down.
fn root_layers(layers: &[PathBuf]) -> Vec<usize> {
    let mut out = Vec::new();
    for l in (0..layers.len()).rev() {
        out.push(l);
        if is_opaque(&layers[l]) {
            break;
        }
    }
    out
}

/// Reads `path` (absolute, inside the image) through the image's unpacked layers, `layers`
/// lowest first as `ImageStore::layer_dirs` returns them. `Ok(None)` when the image has no
/// such file. At most [`MAX_IMAGE_FILE_BYTES`] are read.
pub fn read_image_file(layers: &[PathBuf], path: &str) -> Result<Option<Vec<u8>>, UserError> {
    if !path.starts_with('/') {
        return Err(UserError::RelativePath {
            path: path.to_string(),
        });
    }
    // Pending components, processed front to back (symlink targets are spliced in front).
    let mut pending: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    // The resolved directory: its components and each level's contributing layers.
    let mut dir: Vec<String> = Vec::new();
    let mut levels: Vec<Vec<usize>> = vec![root_layers(layers)];
    let mut links = 0usize;
    while let Some(comp) = pending.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                if dir.pop().is_some() {
                    levels.pop();
                }
                continue;
            }
            _ => {}
        }
        let current = levels.last().cloned().unwrap_or_default();
        match lookup(layers, &dir, &current, &comp, path)? {
            Entry::Missing => return Ok(None),
            Entry::Dir(ls) => {
                if pending.is_empty() {
                    return Err(UserError::NotAFile {
                        path: path.to_string(),
                    });
                }
                dir.push(comp);
                levels.push(ls);
            }
            Entry::Symlink(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(UserError::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                let t = target.as_os_str().to_string_lossy().into_owned();
                if t.starts_with('/') {
                    dir.clear();
                    levels.truncate(1);
                }
                for c in t.split('/').filter(|c| !c.is_empty()).rev() {
                    pending.push_front(c.to_string());
                }
            }
            Entry::Other(host) => {
                if !pending.is_empty() {
                    // A file used as a directory: ENOTDIR, i.e. no such file.
                    return Ok(None);
                }
                return read_bounded(&host, path).map(Some);
            }
        }
    }
    // The path named the root (or resolved to it).
    Err(UserError::NotAFile {
        path: path.to_string(),
    })
}

fn read_bounded(host: &Path, path: &str) -> Result<Vec<u8>, UserError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| UserError::Io {
        path: path.to_string(),
        host: host.to_path_buf(),
        source: e,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(host)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(UserError::NotAFile {
            path: path.to_string(),
        });
    }
    let mut data = Vec::new();
    file.take(MAX_IMAGE_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(UserError::TooLarge {
            path: path.to_string(),
            limit: MAX_IMAGE_FILE_BYTES,
        });
    }
    Ok(data)
}

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Parses /etc/passwd leniently (as libc and runc's user package do): comments, blank and
/// malformed lines are skipped.
fn parse_passwd(data: &[u8]) -> Vec<Passwd> {
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(data: &[u8]) -> Vec<Group> {
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The process identity of a container's first process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, sorted and without duplicates; always holds `gid`.
    pub additional_gids: Vec<u32>,
    /// The user's name in the image's /etc/passwd ("" when the uid has no entry).
    pub username: String,
}

fn id_u32(field: &'static str, v: i64) -> Result<u32, UserError> {
    u32::try_from(v).map_err(|_| UserError::InvalidId { field, value: v })
}

/// Lazily read passwd/group files of the image.
struct ImageDb<'a> {
    layers: &'a [PathBuf],
    passwd: Option<Vec<Passwd>>,
    group: Option<Vec<Group>>,
}

impl<'a> ImageDb<'a> {
    fn passwd(&mut self) -> Result<&[Passwd], UserError> {
        if self.passwd.is_none() {
            let data = read_image_file(self.layers, "/etc/passwd")?;
            self.passwd = Some(data.map(|d| parse_passwd(&d)).unwrap_or_default());
        }
        Ok(self.passwd.as_deref().unwrap_or(&[]))
    }

    fn group(&mut self) -> Result<&[Group], UserError> {
        if self.group.is_none() {
            let data = read_image_file(self.layers, "/etc/group")?;
            self.group = Some(data.map(|d| parse_group(&d)).unwrap_or_default());
        }
        Ok(self.group.as_deref().unwrap_or(&[]))
    }
}

/// A numeric id as containerd parses one (decimal, fits in 32 bits).
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves the container's process identity.
///
/// The user is, in order: `run_as_username`, `run_as_user`, the image's `USER` (which may
/// carry a `:group`), root. `run_as_group` replaces the group and needs one of the first two.
/// A user or group given by name must exist in the image; a uid without a passwd entry runs
/// with gid 0. Supplementary groups: the primary gid, then with policy Merge (the default)
/// the /etc/group groups listing the user by name, and the requested `supplemental_groups`.
pub fn resolve(
    image_user: &str,
    sc: Option<&cri::LinuxContainerSecurityContext>,
    layers: &[PathBuf],
) -> Result<ResolvedUser, UserError> {
    let mut db = ImageDb {
        layers,
        passwd: None,
        group: None,
    };
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);
    let run_as_username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");

    // containerd's generateUserString, then the image's USER.
    let (user_part, group_part): (String, Option<String>) =
        if !run_as_username.is_empty() || run_as_user.is_some() {
            let u = if !run_as_username.is_empty() {
                run_as_username.to_string()
            } else {
                let v = run_as_user.unwrap_or(0);
                id_u32("run_as_user", v)?.to_string()
            };
            let g = run_as_group
                .map(|g| id_u32("run_as_group", g).map(|g| g.to_string()))
                .transpose()?;
            (u, g)
        } else if let Some(g) = run_as_group {
            return Err(UserError::GroupWithoutUser { gid: g });
        } else if image_user.is_empty() {
            ("0".to_string(), None)
        } else {
            let mut parts = image_user.split(':');
            let u = parts.next().unwrap_or("").to_string();
            let g = parts.next().map(String::from);
            if parts.next().is_some() {
                return Err(UserError::InvalidUser {
                    user: image_user.to_string(),
                    reason: "expected user, uid, user:group or uid:gid".into(),
                });
            }
            (u, g)
        };
    if user_part.is_empty() || group_part.as_deref() == Some("") {
        return Err(UserError::InvalidUser {
            user: image_user.to_string(),
            reason: "empty user or group".into(),
        });
    }

    let (uid, mut gid, username) = match numeric(&user_part) {
        Some(uid) => match db.passwd()?.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, p.name.clone()),
            None => (uid, 0, String::new()),
        },
        None => match db.passwd()?.iter().find(|p| p.name == user_part) {
            Some(p) => (p.uid, p.gid, p.name.clone()),
            None => return Err(UserError::UnknownUser { user: user_part }),
        },
    };
    if let Some(g) = &group_part {
        gid = match numeric(g) {
            Some(n) => n,
            None => match db.group()?.iter().find(|e| &e.name == g) {
                Some(e) => e.gid,
                None => return Err(UserError::UnknownGroup { group: g.clone() }),
            },
        };
    }

    let policy_raw = sc.map(|s| s.supplemental_groups_policy).unwrap_or(0);
    let policy = cri::SupplementalGroupsPolicy::try_from(policy_raw)
        .map_err(|_| UserError::UnknownPolicy(policy_raw))?;
    let mut groups = vec![gid];
    if policy == cri::SupplementalGroupsPolicy::Merge && !username.is_empty() {
        groups.extend(
            db.group()?
                .iter()
                .filter(|g| g.members.iter().any(|m| m == &username))
                .map(|g| g.gid),
        );
    }
    for &g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        groups.push(id_u32("supplemental_groups", g)?);
    }
    groups.sort_unstable();
    groups.dedup();
    tracing::debug!(uid, gid, ?groups, %username, "resolved container user");
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: groups,
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/home:/bin/false\n\
        default-user:x:1000:1000::/home/default-user:/bin/sh\n";
    const GROUP: &str = "root:x:0:root\n\
        wheel:x:10:root,default-user\n\
        default-user:x:1000:\n\
        group-defined-in-image:x:50000:default-user\n\
        nogroup:x:65534:\n";

    fn mknod_whiteout(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; creates a 0:0 character device as unpack.rs does.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) };
        assert_eq!(
            r,
            0,
            "mknod {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }

    fn set_opaque(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let n = CString::new(OPAQUE_XATTR).unwrap();
        // SAFETY: valid strings and value.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(
            r,
            0,
            "setxattr {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }

    fn write(p: &Path, data: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Three layers, lowest first:
    /// 0: /etc/passwd, /etc/group, /etc/old (file), /data/a, /data/b, /usr/lib/os-release
    /// 1: whiteout /etc/old, opaque /data with /data/c, /etc/os-release -> ../usr/lib/os-release,
    ///    /evil -> /../../../../etc/hostname, /loop -> /loop
    /// 2: /etc/group replaced
    fn layers() -> (tempfile::TempDir, Vec<PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let ls: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("l{i}"))).collect();
        for l in &ls {
            std::fs::create_dir_all(l).unwrap();
        }
        write(&ls[0].join("etc/passwd"), PASSWD);
        write(&ls[0].join("etc/group"), "root:x:0:\n");
        write(&ls[0].join("etc/old"), "old");
        write(&ls[0].join("data/a"), "a");
        write(&ls[0].join("data/b"), "b");
        write(&ls[0].join("usr/lib/os-release"), "ID=test\n");
        std::fs::create_dir_all(ls[1].join("etc")).unwrap();
        mknod_whiteout(&ls[1].join("etc/old"));
        write(&ls[1].join("data/c"), "c");
        set_opaque(&ls[1].join("data"));
        symlink("../usr/lib/os-release", ls[1].join("etc/os-release")).unwrap();
        symlink("/../../../../etc/hostname", ls[1].join("evil")).unwrap();
        symlink("/loop", ls[1].join("loop")).unwrap();
        write(&ls[2].join("etc/group"), GROUP);
        (t, ls)
    }

    fn read(ls: &[PathBuf], p: &str) -> Option<String> {
        read_image_file(ls, p)
            .unwrap()
            .map(|d| String::from_utf8(d).unwrap())
    }

    #[test]
    fn overlay_lookup() {
        let (_t, ls) = layers();
        assert_eq!(read(&ls, "/etc/passwd").as_deref(), Some(PASSWD));
        // Upper layer wins.
        assert_eq!(read(&ls, "/etc/group").as_deref(), Some(GROUP));
        // Whiteout hides the lower file.
        assert_eq!(read(&ls, "/etc/old"), None);
        // Opaque dir hides the lower dir's entries, keeps its own.
        assert_eq!(read(&ls, "/data/a"), None);
        assert_eq!(read(&ls, "/data/c").as_deref(), Some("c"));
        // Relative symlink resolved inside the image.
        assert_eq!(read(&ls, "/etc/os-release").as_deref(), Some("ID=test\n"));
        assert_eq!(read(&ls, "/etc/../etc/./passwd").as_deref(), Some(PASSWD));
        // An escaping symlink stays inside: /etc/hostname is not in the image.
        assert_eq!(read(&ls, "/evil"), None);
        assert_eq!(read(&ls, "/missing/x"), None);
        // A file used as a directory.
        assert_eq!(read(&ls, "/etc/passwd/x"), None);
        assert!(matches!(
            read_image_file(&ls, "/loop"),
            Err(UserError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            read_image_file(&ls, "/etc"),
            Err(UserError::NotAFile { .. })
        ));
        assert!(matches!(
            read_image_file(&ls, "etc/passwd"),
            Err(UserError::RelativePath { .. })
        ));
        assert_eq!(read_image_file(&[], "/etc/passwd").unwrap(), None);
    }

    #[test]
    fn a_whiteout_of_a_directory_hides_it_and_the_size_is_bounded() {
        let (_t, mut ls) = layers();
        let top = ls[0].parent().unwrap().join("l3");
        std::fs::create_dir_all(&top).unwrap();
        mknod_whiteout(&top.join("usr"));
        write(
            &top.join("big"),
            &"x".repeat(MAX_IMAGE_FILE_BYTES as usize + 1),
        );
        ls.push(top);
        assert_eq!(read(&ls, "/usr/lib/os-release"), None);
        assert_eq!(read(&ls, "/etc/os-release"), None);
        assert!(matches!(
            read_image_file(&ls, "/big"),
            Err(UserError::TooLarge { .. })
        ));
    }

    fn sc() -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext::default()
    }

    fn user(v: i64) -> Option<cri::Int64Value> {
        Some(cri::Int64Value { value: v })
    }

    #[test]
    fn image_user_forms() {
        let (_t, ls) = layers();
        let r = resolve("", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid, r.username.as_str()), (0, 0, "root"));
        assert_eq!(r.additional_gids, vec![0, 10]);
        let r = resolve("default-user", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![10, 1000, 50000]);
        let r = resolve("1000", None, &ls).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.username.as_str()),
            (1000, 1000, "default-user")
        );
        let r = resolve("4242", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid, r.username.as_str()), (4242, 0, ""));
        assert_eq!(r.additional_gids, vec![0]);
        let r = resolve("nobody:wheel", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 10));
        let r = resolve("1000:2000", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 2000));
        assert_eq!(r.additional_gids, vec![10, 2000, 50000]);
        let r = resolve("4242:nogroup", None, &ls).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 65534));
        let e = resolve("ghost", None, &ls).unwrap_err();
        assert!(e.to_string().contains("ghost"), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::NotFound);
        let e = resolve("root:ghosts", None, &ls).unwrap_err();
        assert!(matches!(e, UserError::UnknownGroup { .. }), "{e}");
        assert!(resolve("a:b:c", None, &ls).is_err());
        assert!(resolve(":0", None, &ls).is_err());
        assert!(resolve("0:", None, &ls).is_err());
    }

    #[test]
    fn security_context_overrides() {
        let (_t, ls) = layers();
        // run_as_user replaces the image user and its group.
        let s = cri::LinuxContainerSecurityContext {
            run_as_user: user(1001),
            ..sc()
        };
        let r = resolve("default-user:wheel", Some(&s), &ls).unwrap();
        assert_eq!((r.uid, r.gid), (1001, 0));
        // run_as_user + run_as_group.
        let s = cri::LinuxContainerSecurityContext {
            run_as_user: user(1001),
            run_as_group: user(1002),
            ..sc()
        };
        let r = resolve("", Some(&s), &ls).unwrap();
        assert_eq!((r.uid, r.gid), (1001, 1002));
        assert_eq!(r.additional_gids, vec![1002]);
        // run_as_username wins over run_as_user.
        let s = cri::LinuxContainerSecurityContext {
            run_as_user: user(5),
            run_as_username: "nobody".into(),
            ..sc()
        };
        let r = resolve("", Some(&s), &ls).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.username.as_str()),
            (65534, 65534, "nobody")
        );
        let s = cri::LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..sc()
        };
        assert!(matches!(
            resolve("", Some(&s), &ls),
            Err(UserError::UnknownUser { .. })
        ));
        // run_as_group alone is refused.
        let s = cri::LinuxContainerSecurityContext {
            run_as_group: user(1002),
            ..sc()
        };
        let e = resolve("default-user", Some(&s), &ls).unwrap_err();
        assert!(
            matches!(e, UserError::GroupWithoutUser { gid: 1002 }),
            "{e}"
        );
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        // Out of range ids.
        let s = cri::LinuxContainerSecurityContext {
            run_as_user: user(-1),
            ..sc()
        };
        assert!(matches!(
            resolve("", Some(&s), &ls),
            Err(UserError::InvalidId { .. })
        ));
    }

    #[test]
    fn supplemental_groups_policies() {
        let (_t, ls) = layers();
        // critest's SupplementalGroupsPolicy specs: uid 1000 in group 50000 in the image.
        let merge = cri::LinuxContainerSecurityContext {
            run_as_user: user(1000),
            supplemental_groups: vec![1234],
            ..sc()
        };
        let r = resolve("", Some(&merge), &ls).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![10, 1000, 1234, 50000]);
        let strict = cri::LinuxContainerSecurityContext {
            supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
            ..merge.clone()
        };
        let r = resolve("", Some(&strict), &ls).unwrap();
        assert_eq!(r.additional_gids, vec![1000, 1234]);
        let bad = cri::LinuxContainerSecurityContext {
            supplemental_groups: vec![-5],
            ..merge.clone()
        };
        assert!(resolve("", Some(&bad), &ls).is_err());
        let unknown = cri::LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..merge
        };
        assert!(matches!(
            resolve("", Some(&unknown), &ls),
            Err(UserError::UnknownPolicy(7))
        ));
        // No /etc/passwd at all: numeric users still work, names do not.
        let empty = tempfile::tempdir().unwrap();
        let ls = vec![empty.path().to_path_buf()];
        let r = resolve("123:456", None, &ls).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (123, 456, vec![456])
        );
        assert!(resolve("root", None, &ls).is_err());
    }

    #[test]
    fn parsers_are_lenient() {
        let p = parse_passwd(b"a:x:1:2::/:/bin/sh\n::3:4\nb:x:nope:1\nc:x:5:6\n");
        assert_eq!(
            p.iter()
                .map(|e| (e.name.as_str(), e.uid, e.gid))
                .collect::<Vec<_>>(),
            vec![("a", 1, 2), ("c", 5, 6)]
        );
        let g = parse_group(b"g:x:7:a, b ,\nh:x:8\n#c:x:9:\n");
        assert_eq!(g[0].members, vec!["a", "b"]);
        assert_eq!((g[1].name.as_str(), g[1].gid), ("h", 8));
        assert_eq!(g.len(), 2);
    }
}
