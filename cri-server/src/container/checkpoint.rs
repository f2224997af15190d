//! CheckpointContainer: a running container's checkpoint archive, as containerd's CRI plugin
//! and CRI-O write it for kubelet's checkpoint API (KEP-2008), readable by `checkpointctl`.
//!
//! The shim runs `husk checkpoint --leave-running` (CRIU) into a private work directory
//! (`<state>/checkpoints/<random>`, mode 0700: the images hold the container's memory); next to
//! the images go what a restore needs, under the names containerd and CRI-O use:
//!
//! - `checkpoint/`: CRIU's images (and husk's restore description);
//! - `config.dump`: the container's identity (id, name, image, runtime, times);
//! - `spec.dump`: the container's OCI spec (config.json);
//! - `rootfs-diff.tar`: the files the container changed (its overlay upper dir, whiteouts left
//!   out) and `deleted.files`: the image files it removed (JSON list);
//! - `container.json`: husk-cri's own record of the container (CRI config, mounts, log path).
//!
//! The archive (plain tar) is written next to `location` under a temporary name, mode 0600,
//! and renamed into place once complete, so a reader never sees half an archive. The work
//! directory goes in every case; what an interrupted call left is removed when husk-cri starts.

use super::store::Containers;
use super::{io_err, ContainerError};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Used when the request's timeout is 0 (kubelet always sets one).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// `<state>/checkpoints`: work directories of checkpoints in progress.
pub fn work_root(state_dir: &Path) -> PathBuf {
    state_dir.join("checkpoints")
}

/// CheckpointContainer (blocking): the archive of running container `id` at `location`.
pub fn checkpoint(
    store: &Containers,
    work_root: &Path,
    id: &str,
    location: &str,
    timeout: i64,
) -> Result<(), ContainerError> {
    if location.is_empty() {
        return Err(ContainerError::Invalid(
            "CheckpointContainer: location (the archive's path) is empty".into(),
        ));
    }
    let location = Path::new(location);
    if !location.is_absolute() {
        return Err(ContainerError::Invalid(format!(
            "CheckpointContainer: location {} is not an absolute path",
            location.display()
        )));
    }
    if timeout < 0 {
        return Err(ContainerError::Invalid(format!(
            "CheckpointContainer: timeout {timeout} is negative"
        )));
    }
    let timeout = if timeout == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_secs(timeout as u64)
    };
    let (id, shim, record) = store.running(id)?;
    let spec = store.spec_of(&id)?;
    std::fs::create_dir_all(work_root).map_err(io_err("mkdir", work_root))?;
    let work = work_root.join(&crate::sandbox::new_id()?[..32]);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .map_err(io_err("mkdir", &work))?;
    let r = (|| {
        let images = work.join("checkpoint");
        let criu_work = work.join("criu-work");
        for d in [&images, &criu_work] {
            std::fs::create_dir(d).map_err(io_err("mkdir", d))?;
        }
        tracing::info!(container = %id, location = %location.display(), "checkpoint");
        shim.checkpoint(&images, &criu_work, timeout)
            .map_err(|source| ContainerError::Shim {
                id: id.clone(),
                source: Box::new(source),
            })?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let config = serde_json::json!({
            "id": id,
            "name": record.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            "rootfsImage": record.image_name,
            "rootfsImageRef": record.image_id,
            "rootfsImageName": record.image_name,
            "runtime": "husk",
            "createdTime": rfc3339(record.created_at),
            "checkpointedTime": now,
        });
        write_json(&work.join("config.dump"), &config)?;
        write_json(&work.join("spec.dump"), &spec)?;
        let rec = serde_json::to_value(&record).map_err(|source| ContainerError::Json {
            what: "encode",
            path: work.join("container.json"),
            source,
        })?;
        write_json(&work.join("container.json"), &rec)?;
        let deleted = rootfs_diff(
            &record.snapshot.join("upper"),
            &work.join("rootfs-diff.tar"),
        )?;
        write_json(&work.join("deleted.files"), &serde_json::json!(deleted))?;
        // CRIU's work dir holds its logs, not part of the archive.
        std::fs::remove_dir_all(&criu_work).map_err(io_err("remove", &criu_work))?;
        write_archive(&work, location)
    })();
    if let Err(e) = std::fs::remove_dir_all(&work) {
        tracing::warn!("remove checkpoint work dir {}: {e}", work.display());
    }
    r
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), ContainerError> {
    let data = serde_json::to_vec_pretty(v).map_err(|source| ContainerError::Json {
        what: "encode",
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, data).map_err(io_err("write", path))
}

/// Writes the upper dir `upper` (the container's changes) as a tar at `out`, without overlayfs
/// whiteouts (0:0 character devices); returns the paths those whiteouts delete, relative to
/// the rootfs ("/etc/motd"). Symlinks are stored as symlinks, never followed.
pub(crate) fn rootfs_diff(upper: &Path, out: &Path) -> Result<Vec<String>, ContainerError> {
    let file = File::create(out).map_err(io_err("create", out))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    let mut deleted = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io_err("read dir", &dir))?
            .collect::<Result<_, _>>()
            .map_err(io_err("read dir", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = rel.join(e.file_name());
            let md = std::fs::symlink_metadata(&path).map_err(io_err("lstat", &path))?;
            if md.file_type().is_char_device() && md.rdev() == 0 {
                deleted.push(format!("/{}", name.display()));
                continue;
            }
            tar.append_path_with_name(&path, &name)
                .map_err(io_err("tar append", &path))?;
            if md.is_dir() {
                stack.push(name);
            }
        }
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(io_err("write", out))?;
    deleted.sort();
    Ok(deleted)
}

/// Tars the work directory `work` into `location` (mode 0600) through a temporary file in the
/// same directory, renamed into place when complete.
fn write_archive(work: &Path, location: &Path) -> Result<(), ContainerError> {
    let parent = location.parent().unwrap_or(Path::new("/"));
    let name = location
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.husk-partial"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let r = (|| {
        let mut tar = tar::Builder::new(file);
        tar.follow_symlinks(false);
        let mut entries: Vec<_> = std::fs::read_dir(work)
            .map_err(io_err("read dir", work))?
            .collect::<Result<_, _>>()
            .map_err(io_err("read dir", work))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let md = std::fs::symlink_metadata(&path).map_err(io_err("lstat", &path))?;
            let r = if md.is_dir() {
                tar.append_dir_all(e.file_name(), &path)
            } else {
                tar.append_path_with_name(&path, e.file_name())
            };
            r.map_err(io_err("tar append", &path))?;
        }
        tar.into_inner()
            .and_then(|f| f.sync_all())
            .map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, location).map_err(io_err("rename to", location))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_diff_leaves_whiteouts_out_and_lists_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/sub")).expect("mkdir");
        std::fs::write(upper.join("etc/new"), b"hello").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", upper.join("etc/link")).expect("symlink");
        // A whiteout: what overlayfs writes for a deleted lower file (needs CAP_MKNOD).
        let wh = upper.join("etc/motd");
        let made = nix::sys::stat::mknod(
            &wh,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0),
            0,
        )
        .is_ok();
        let out = t.path().join("diff.tar");
        let deleted = rootfs_diff(&upper, &out).expect("diff");
        if made {
            assert_eq!(deleted, vec!["/etc/motd".to_string()]);
        } else {
            assert!(deleted.is_empty());
        }
        let mut a = tar::Archive::new(File::open(&out).expect("open"));
        let mut seen = Vec::new();
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let p = e.path().expect("path").display().to_string();
            if p == "etc/link" {
                assert_eq!(
                    e.link_name()
                        .expect("link")
                        .expect("some")
                        .display()
                        .to_string(),
                    "/etc/passwd"
                );
            }
            seen.push(p);
        }
        seen.sort();
        assert_eq!(seen, vec!["etc", "etc/link", "etc/new", "etc/sub"]);
    }

    #[test]
    fn archive_is_private_and_appears_whole() {
        let t = tempfile::tempdir().expect("tempdir");
        let work = t.path().join("work");
        std::fs::create_dir_all(work.join("checkpoint")).expect("mkdir");
        std::fs::write(work.join("checkpoint/pages-1.img"), b"x").expect("write");
        std::fs::write(work.join("spec.dump"), b"{}").expect("write");
        let loc = t.path().join("c.tar");
        write_archive(&work, &loc).expect("archive");
        let md = std::fs::metadata(&loc).expect("stat");
        assert_eq!(md.mode() & 0o777, 0o600);
        assert!(!t.path().join(".c.tar.husk-partial").exists());
        let mut names: Vec<String> = tar::Archive::new(File::open(&loc).expect("open"))
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let p = e.path().expect("path").display().to_string();
                p.trim_end_matches('/').to_string()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["checkpoint", "checkpoint/pages-1.img", "spec.dump"]
        );
    }
}
