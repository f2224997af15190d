//! Images: registry pulls, the content store, unpacked layers.
//!
//! The store lives under one root directory:
//! ```text
//! ROOT/blobs/sha256/<hex>   content-addressed blobs: manifests, indexes, configs, layer tarballs
//! ROOT/layers/<hex>         each layer unpacked once, keyed by its diff_id (an overlayfs lowerdir)
//! ROOT/images/<hex>.json    one record per image, keyed by its ID (the config digest)
//! ROOT/tmp/                 downloads and unpacks in progress (renamed into place when complete)
//! ROOT/locks/               per-blob and per-layer lock files
//! ROOT/store.lock           shared by pulls, exclusive for remove/gc (so gc never races a pull)
//!                           (also shared while a container takes hold of its image's layers)
//! ROOT/records.lock         exclusive while image records are rewritten
//! ```
//! Blobs and records are written to a temporary file, fsynced and renamed; a layer is unpacked
//! into a temporary directory and renamed once its diff_id is verified. A pull that dies leaves
//! only files under `tmp/`, which the next gc removes.
//!
//! Layers in use: a container's overlay rootfs has its image's layers as lowerdirs. As
//! containerd's leases do, the store keeps (in memory) the layers each container holds
//! ([`ImageStore::hold_image_layers`] at CreateContainer, [`ImageStore::hold_layers`] when
//! husk-cri reloads its containers after a restart): RemoveImage of an image in use succeeds,
//! but gc keeps held layers until [`ImageStore::release_layers`] (RemoveContainer) lets them go.
//!
//! All calls are blocking; run them off the async runtime (`spawn_blocking`).

pub mod hosts;
pub mod manifest;
pub mod reference;
mod registry;
pub use registry::BLOB_RETRIES;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use reference::Reference;

use manifest::Parsed;
use registry::Hosts;

/// Largest image config we accept (it is read into memory).
const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Indexes pointing at indexes: how deep we follow.
const MAX_INDEX_DEPTH: usize = 4;

/// Everything that can go wrong; each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference} not found: the registry has no such manifest ({url})")]
    NotFound { reference: String, url: String },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: HTTP status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unauthorized: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: String,
    },
    #[error("image {reference}: unsupported manifest ({media_type}): {reason}")]
    UnsupportedManifest {
        reference: String,
        media_type: String,
        reason: String,
    },
    #[error("image {reference}: invalid manifest {digest}: {reason}")]
    InvalidManifest {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error(
        "image {reference}: index {digest} has no manifest for {platform} (it has: {available})"
    )]
    NoMatchingPlatform {
        reference: String,
        digest: String,
        platform: String,
        available: String,
    },
    #[error("image config {digest}: {reason}")]
    InvalidConfig { digest: String, reason: String },
    #[error("layer {layer}: {reason}")]
    Layer { layer: String, reason: String },
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    LayerEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("image record {path}: {source}")]
    Record {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("image {reference:?} is ambiguous: it is a prefix of {candidates:?}")]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    #[error("image {reference:?} is not in the store")]
    UnknownImage { reference: String },
    #[error("image {reference}: every registry host failed: {failures}")]
    AllHostsFailed { reference: String, failures: String },
    #[error("registry hosts config {path}: {reason}")]
    HostsConfig { path: PathBuf, reason: String },
}

impl ImageError {
    /// True when the registry has no such image (CRI callers report it as NotFound).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound { .. })
    }
}

/// Credentials for a pull (CRI AuthConfig): user name and password, or a token.
#[derive(Debug, Clone, Default)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (CRI `identity_token`), traded at the token realm.
    pub identity_token: Option<String>,
    /// A bearer token for the registry itself (CRI `registry_token`), sent as is.
    pub registry_token: Option<String>,
}

/// The parts of the image config the CRI uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    /// `"80/tcp"`, ...
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub architecture: String,
    pub os: String,
}

impl ImageConfig {
    /// CRI `Image.uid` / `Image.username`: the user part of `user` (before any `:group`) is a
    /// uid when numeric, else a user name.
    pub fn uid_or_username(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest hex>`
    pub id: String,
    /// Normalized: `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `<repository>@sha256:<digest>` of what the reference resolved to (the index for
    /// multi-platform images).
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    pub config: ImageConfig,
    /// diff_ids (digests of the uncompressed layer tarballs), lowest layer first.
    pub layers: Vec<String>,
}

/// What the store takes on its file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Mount point of the file system holding the store root.
    pub mountpoint: PathBuf,
    /// Bytes allocated under the root (st_blocks * 512, hard links counted once).
    pub used_bytes: u64,
    /// Inodes used under the root (the root included).
    pub inodes_used: u64,
}

/// What one pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// HTTP requests sent (manifests, blobs, tokens).
    pub requests: u32,
    /// Blobs downloaded (config and layers; blobs already in the store are not fetched).
    pub blobs_fetched: u32,
    pub bytes_fetched: u64,
    /// Layers unpacked by this pull (those already unpacked are reused).
    pub layers_unpacked: u32,
}

/// Options for [`ImageStore::open_with`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Registry domains (as written in references, with port: `myreg:5000`) reached over plain
    /// http. Loopback registries (localhost, 127.0.0.0/8, ::1) always are.
    pub insecure_registries: Vec<String>,
    /// containerd's `config_path`: `DIR/<registry>/hosts.toml` files naming mirrors (see
    /// [`hosts`]); `None` or a missing directory: every registry is reached directly.
    pub registry_config_dir: Option<PathBuf>,
}

/// The on-disk image store.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    options: StoreOptions,
    /// Layers (hex of their diff_id) held by each owner (a container ID): gc keeps them.
    held: Mutex<HashMap<String, BTreeSet<String>>>,
}

/// The stored form of a record: the image plus the blobs it keeps alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    image: ImageRecord,
    /// Digests of every blob this image holds: manifests and indexes, config, layer tarballs.
    blobs: BTreeSet<String>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { op, path, source }
}

/// The hex part of a validated `sha256:` digest.
fn digest_hex<'d>(what: &str, digest: &'d str) -> Result<&'d str, ImageError> {
    reference::validate_digest(digest).map_err(|reason| ImageError::InvalidManifest {
        reference: what.to_string(),
        digest: digest.to_string(),
        reason,
    })?;
    Ok(&digest["sha256:".len()..])
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        Self::open_with(root, StoreOptions::default())
    }

    pub fn open_with(root: &Path, options: StoreOptions) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            options,
            held: Mutex::new(HashMap::new()),
        };
        for (dir, mode) in [
            (store.root.clone(), 0o711),
            (store.root.join("blobs"), 0o700),
            (store.blob_dir(), 0o700),
            (store.root.join("layers"), 0o711),
            (store.root.join("images"), 0o700),
            (store.root.join("tmp"), 0o700),
            (store.root.join("locks"), 0o700),
        ] {
            match fs::create_dir(&dir) {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                        .map_err(io_err("chmod", &dir))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory", &dir)(e)),
            }
        }
        // Leftovers of pulls that died with an earlier process, if nobody is pulling now.
        if let Some(_lock) = store.try_lock_exclusive(&store.root.join("store.lock"))? {
            store.clean_tmp()?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pulls `reference` (see [`Reference`]) from its registry into the store.
    pub fn pull(
        &self,
        reference: &str,
        auth: Option<&PullAuth>,
    ) -> Result<ImageRecord, ImageError> {
        self.pull_with_stats(reference, auth).map(|(r, _)| r)
    }

    /// [`pull`](Self::pull), also reporting what was downloaded and unpacked.
    pub fn pull_with_stats(
        &self,
        reference: &str,
        auth: Option<&PullAuth>,
    ) -> Result<(ImageRecord, PullStats), ImageError> {
        let r = Reference::parse(reference)?;
        let shown = r.to_string();
        let plain_http = r.is_loopback() || self.options.insecure_registries.contains(&r.domain);
        let endpoints =
            hosts::endpoints(self.options.registry_config_dir.as_deref(), &r, plain_http)?;
        let client = Hosts::new(&r, auth, &endpoints)?;
        let mut stats = PullStats::default();
        let _store_lock = self.lock(&self.root.join("store.lock"), FlockArg::LockShared)?;

        // Resolve the reference to one image manifest, through indexes.
        let mut fetched = client.resolve(r.manifest_ref(), r.digest.is_none())?;
        let top_digest = fetched.digest.clone();
        let mut manifests = Vec::new();
        let image_manifest = loop {
            match manifest::parse(&shown, &fetched.digest, &fetched.media_type, &fetched.bytes)? {
                Parsed::Manifest(m) => {
                    manifests.push(fetched);
                    break m;
                }
                Parsed::Index(list) => {
                    if manifests.len() >= MAX_INDEX_DEPTH {
                        return Err(ImageError::InvalidManifest {
                            reference: shown,
                            digest: fetched.digest,
                            reason: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
                        });
                    }
                    let chosen = manifest::select_platform(
                        &shown,
                        &fetched.digest,
                        &list,
                        &manifest::host_platform(),
                    )?
                    .clone();
                    tracing::debug!(image = %shown, manifest = %chosen.digest, "index resolved");
                    manifests.push(fetched);
                    fetched = client.manifest(&chosen.digest, Some(chosen.size))?;
                }
            }
        };

        // Config, then layers: fetched only when missing, unpacked only when missing.
        let cfg = &image_manifest.config;
        if cfg.size > MAX_CONFIG_BYTES {
            return Err(ImageError::InvalidConfig {
                digest: cfg.digest.clone(),
                reason: format!("{} bytes, more than {MAX_CONFIG_BYTES}", cfg.size),
            });
        }
        let cfg_path = self.ensure_blob(&client, &shown, &cfg.digest, cfg.size, &mut stats)?;
        let cfg_bytes = fs::read(&cfg_path).map_err(io_err("read", &cfg_path))?;
        let (cfg_file, config) =
            manifest::parse_config(&cfg.digest, &cfg_bytes, image_manifest.layers.len())?;
        for (layer, diff_id) in image_manifest.layers.iter().zip(&cfg_file.rootfs.diff_ids) {
            let blob = self.ensure_blob(&client, &shown, &layer.digest, layer.size, &mut stats)?;
            crate::failpoint::hit("pull-after-blob");
            self.ensure_layer(&blob, &layer.digest, diff_id, &mut stats)?;
        }
        for m in &manifests {
            self.put_blob(&shown, &m.digest, &m.bytes)?;
        }

        let mut blobs: BTreeSet<String> = manifests.iter().map(|m| m.digest.clone()).collect();
        blobs.insert(cfg.digest.clone());
        blobs.extend(image_manifest.layers.iter().map(|l| l.digest.clone()));
        let image = ImageRecord {
            id: cfg.digest.clone(),
            repo_tags: r.tagged().into_iter().collect(),
            repo_digests: vec![r.with_digest(&top_digest)],
            size: image_manifest.layers.iter().map(|l| l.size).sum(),
            config,
            layers: cfg_file.rootfs.diff_ids.clone(),
        };
        crate::failpoint::hit("pull-before-record");
        let record = self.commit(Stored { image, blobs })?;
        stats.requests = client.requests();
        tracing::info!(image = %shown, id = %record.id, ?stats, "pulled");
        Ok((record, stats))
    }

    /// All images, sorted by ID.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.load_all()?.into_iter().map(|(_, s)| s.image).collect())
    }

    /// The image named by an ID (`sha256:<hex>` or `<hex>`), a unique ID prefix, a tag reference
    /// (`busybox` = `docker.io/library/busybox:latest`) or a digest reference
    /// (`repo@sha256:...`); `None` if the store has no such image.
    pub fn status(&self, reference_or_id: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.find(reference_or_id)?.map(|(_, s)| s.image))
    }

    /// Removes the image (all its tags and digests, as containerd's CRI does) and garbage-collects
    /// the blobs and layers no other image uses. Unknown images are not an error.
    pub fn remove(&self, reference_or_id: &str) -> Result<(), ImageError> {
        let _store_lock = self.lock(&self.root.join("store.lock"), FlockArg::LockExclusive)?;
        {
            let _records = self.lock(&self.root.join("records.lock"), FlockArg::LockExclusive)?;
            if let Some((path, stored)) = self.find(reference_or_id)? {
                fs::remove_file(&path).map_err(io_err("remove image record", &path))?;
                sync_dir(&self.root.join("images"))?;
                tracing::info!(image = %reference_or_id, id = %stored.image.id, "removed");
            }
        }
        self.gc_locked()
    }

    /// Removes blobs and layers that no image uses, and leftovers of interrupted pulls.
    /// Waits for pulls in progress.
    pub fn gc(&self) -> Result<(), ImageError> {
        let _store_lock = self.lock(&self.root.join("store.lock"), FlockArg::LockExclusive)?;
        self.gc_locked()
    }

    /// Space and inodes used under the store root, and the mount point holding it.
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let root = fs::canonicalize(&self.root).map_err(io_err("canonicalize", &self.root))?;
        let mut used_bytes = 0u64;
        let mut inodes_used = 0u64;
        let mut seen = HashSet::new();
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            let md = match fs::symlink_metadata(&p) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &p)(e)),
            };
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            used_bytes += md.blocks() * 512;
            inodes_used += 1;
            if md.is_dir() {
                let rd = match fs::read_dir(&p) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("read directory", &p)(e)),
                };
                for ent in rd {
                    match ent {
                        Ok(ent) => stack.push(ent.path()),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("read directory", &p)(e)),
                    }
                }
            }
        }
        Ok(FsUsage {
            mountpoint: mountpoint_of(&root)?,
            used_bytes,
            inodes_used,
        })
    }

    /// The unpacked layer directories of an image (any name [`status`](Self::status) takes),
    /// lowest first: overlayfs wants them highest first in `lowerdir=`, so reverse them there.
    /// A layer the image has twice (empty layers, a layer re-added) is given once, at its
    /// highest place: overlayfs refuses a lowerdir listed twice, and the lower copy changes
    /// nothing (every entry and whiteout of it is applied again above).
    pub fn layer_dirs(&self, id: &str) -> Result<Vec<PathBuf>, ImageError> {
        let (_, stored) = self.find(id)?.ok_or_else(|| ImageError::UnknownImage {
            reference: id.to_string(),
        })?;
        let dirs = stored
            .image
            .layers
            .iter()
            .map(|diff_id| {
                let dir = self.layer_dir(digest_hex(&stored.image.id, diff_id)?);
                if !dir.is_dir() {
                    return Err(ImageError::Io {
                        op: "find unpacked layer",
                        path: dir,
                        source: io::Error::from(io::ErrorKind::NotFound),
                    });
                }
                Ok(dir)
            })
            .collect::<Result<Vec<PathBuf>, ImageError>>()?;
        let mut seen = BTreeSet::new();
        let mut top_first: Vec<PathBuf> = dirs
            .into_iter()
            .rev()
            .filter(|d| seen.insert(d.clone()))
            .collect();
        top_first.reverse();
        Ok(top_first)
    }

    /// [`layer_dirs`](Self::layer_dirs) of image `id`, held for `owner` (a container) until
    /// [`release_layers`](Self::release_layers): gc keeps them even once no image names them.
    /// Taken under the shared store lock, so a RemoveImage runs either before (the image is
    /// gone: `UnknownImage`) or after (its layers are held).
    pub fn hold_image_layers(&self, owner: &str, id: &str) -> Result<Vec<PathBuf>, ImageError> {
        let _store_lock = self.lock(&self.root.join("store.lock"), FlockArg::LockShared)?;
        let dirs = self.layer_dirs(id)?;
        self.hold_layers_locked(owner, &dirs);
        Ok(dirs)
    }

    /// Holds layer directories `owner` recorded (a container reloaded after a restart); those
    /// that are not layers of this store are ignored. Returns the ones that are missing.
    pub fn hold_layers(&self, owner: &str, dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ImageError> {
        let _store_lock = self.lock(&self.root.join("store.lock"), FlockArg::LockShared)?;
        self.hold_layers_locked(owner, dirs);
        Ok(dirs.iter().filter(|d| !d.is_dir()).cloned().collect())
    }

    fn hold_layers_locked(&self, owner: &str, dirs: &[PathBuf]) {
        let layers = self.root.join("layers");
        let hexes: BTreeSet<String> = dirs
            .iter()
            .filter(|d| d.parent() == Some(layers.as_path()))
            .filter_map(|d| d.file_name()?.to_str().map(str::to_string))
            .filter(|h| reference::is_hex64(h))
            .collect();
        lock_held(&self.held).insert(owner.to_string(), hexes);
    }

    /// Lets `owner`'s layers go; those no image and no other owner uses are collected now
    /// (a gc, which waits for pulls in progress; only then).
    pub fn release_layers(&self, owner: &str) -> Result<(), ImageError> {
        let Some(released) = lock_held(&self.held).remove(owner) else {
            return Ok(());
        };
        let mut used = BTreeSet::new();
        for (_, s) in self.load_all()? {
            for l in &s.image.layers {
                used.insert(digest_hex(&s.image.id, l)?.to_string());
            }
        }
        used.extend(lock_held(&self.held).values().flatten().cloned());
        if released.iter().all(|l| used.contains(l)) {
            return Ok(());
        }
        tracing::info!(owner, "layers no image uses any more were released: gc");
        self.gc()
    }

    /// The path of a blob in the store (it may not exist).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blob_dir().join(digest_hex("blob", digest)?))
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    fn tmp_path(&self, kind: &str, hex: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{kind}-{hex}-{}-{n}", std::process::id()))
    }

    fn lock(&self, path: &Path, arg: FlockArg) -> Result<Flock<File>, ImageError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(l) => return Ok(l),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(io_err("flock", path)(e.into())),
            }
        }
    }

    /// `Some(lock)` if the exclusive lock was free, `None` if someone holds it.
    fn try_lock_exclusive(&self, path: &Path) -> Result<Option<Flock<File>>, ImageError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io_err("flock", path)(e.into())),
        }
    }

    /// Empties tmp/ and locks/ (only with the store lock held exclusively).
    fn clean_tmp(&self) -> Result<(), ImageError> {
        for dir in [self.root.join("tmp"), self.root.join("locks")] {
            for ent in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let ent = ent.map_err(io_err("read directory", &dir))?;
                let path = ent.path();
                let r = if ent.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(io_err("remove leftover", &path))?;
            }
        }
        Ok(())
    }

    /// Makes sure blob `digest` is in the store, downloading it if not; returns its path.
    fn ensure_blob(
        &self,
        client: &Hosts<'_>,
        what: &str,
        digest: &str,
        size: u64,
        stats: &mut PullStats,
    ) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(what, digest)?;
        let path = self.blob_dir().join(hex);
        let present = |p: &Path| fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == size);
        if present(&path) {
            return Ok(path);
        }
        let _lock = self.lock(
            &self.root.join("locks").join(format!("blob-{hex}")),
            FlockArg::LockExclusive,
        )?;
        if present(&path) {
            return Ok(path);
        }
        // Each host in turn (mirrors first), each attempt into a fresh temporary file.
        client.each_puller(|host| {
            let tmp = self.tmp_path("blob", hex);
            let result = (|| {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io_err("create", &tmp))?;
                let mut w = BufWriter::with_capacity(256 << 10, file);
                host.blob(digest, size, &mut w)?;
                let file = w
                    .into_inner()
                    .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
                file.sync_all().map_err(io_err("fsync", &tmp))?;
                fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
                sync_dir(&self.blob_dir())
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })?;
        stats.blobs_fetched += 1;
        stats.bytes_fetched += size;
        Ok(path)
    }

    /// Stores bytes we already have and verified (manifests) as a blob.
    fn put_blob(&self, what: &str, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let hex = digest_hex(what, digest)?;
        let path = self.blob_dir().join(hex);
        if fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    /// Makes sure the layer `diff_id` is unpacked from `blob`.
    fn ensure_layer(
        &self,
        blob: &Path,
        blob_digest: &str,
        diff_id: &str,
        stats: &mut PullStats,
    ) -> Result<(), ImageError> {
        let hex = digest_hex(blob_digest, diff_id)?;
        let dir = self.layer_dir(hex);
        if dir.is_dir() {
            return Ok(());
        }
        let _lock = self.lock(
            &self.root.join("locks").join(format!("layer-{hex}")),
            FlockArg::LockExclusive,
        )?;
        if dir.is_dir() {
            return Ok(());
        }
        let tmp = self.tmp_path("layer", hex);
        unpack::unpack_layer(blob, blob_digest, diff_id, &tmp)?;
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err("rename unpacked layer into place", &dir)(e));
        }
        sync_dir(&self.root.join("layers"))?;
        stats.layers_unpacked += 1;
        Ok(())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.tmp_path("write", &name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
            match path.parent() {
                Some(parent) => sync_dir(parent),
                None => Ok(()),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        Ok(self
            .root
            .join("images")
            .join(format!("{}.json", digest_hex("image id", id)?)))
    }

    /// Writes a pulled image's record, merged with an existing record of the same image; the
    /// tags it carries are taken away from other images (an image left with neither tags nor
    /// digests is dropped; its blobs go at the next gc).
    fn commit(&self, new: Stored) -> Result<ImageRecord, ImageError> {
        let _records = self.lock(&self.root.join("records.lock"), FlockArg::LockExclusive)?;
        let path = self.record_path(&new.image.id)?;
        let mut merged = match self.load(&path)? {
            Some(mut old) => {
                for t in &new.image.repo_tags {
                    if !old.image.repo_tags.contains(t) {
                        old.image.repo_tags.push(t.clone());
                    }
                }
                for d in &new.image.repo_digests {
                    if !old.image.repo_digests.contains(d) {
                        old.image.repo_digests.push(d.clone());
                    }
                }
                old.blobs.extend(new.blobs.iter().cloned());
                old.image.config = new.image.config.clone();
                old.image.layers = new.image.layers.clone();
                old.image.size = new.image.size;
                old
            }
            None => new.clone(),
        };
        merged.image.repo_tags.sort();
        merged.image.repo_digests.sort();
        for (other_path, mut other) in self.load_all()? {
            if other.image.id == merged.image.id {
                continue;
            }
            let before = other.image.repo_tags.len();
            other
                .image
                .repo_tags
                .retain(|t| !new.image.repo_tags.contains(t));
            if other.image.repo_tags.len() == before {
                continue;
            }
            if other.image.repo_tags.is_empty() && other.image.repo_digests.is_empty() {
                fs::remove_file(&other_path).map_err(io_err("remove image record", &other_path))?;
            } else {
                let json = serde_json::to_vec_pretty(&other).map_err(|e| ImageError::Record {
                    path: other_path.clone(),
                    source: e,
                })?;
                self.write_atomic(&other_path, &json)?;
            }
        }
        let json = serde_json::to_vec_pretty(&merged).map_err(|e| ImageError::Record {
            path: path.clone(),
            source: e,
        })?;
        self.write_atomic(&path, &json)?;
        Ok(merged.image)
    }

    fn load(&self, path: &Path) -> Result<Option<Stored>, ImageError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read image record", path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ImageError::Record {
                path: path.to_path_buf(),
                source: e,
            })
    }

    fn load_all(&self) -> Result<Vec<(PathBuf, Stored)>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let ent = ent.map_err(io_err("read directory", &dir))?;
            let path = ent.path();
            if path.extension() != Some(std::ffi::OsStr::new("json")) {
                continue;
            }
            if let Some(s) = self.load(&path)? {
                out.push((path, s));
            }
        }
        out.sort_by(|a, b| a.1.image.id.cmp(&b.1.image.id));
        Ok(out)
    }

    fn find(&self, name: &str) -> Result<Option<(PathBuf, Stored)>, ImageError> {
        let name = name.trim();
        let all = self.load_all()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if reference::is_hex64(hex) {
            let id = format!("sha256:{hex}");
            return Ok(all.into_iter().find(|(_, s)| s.image.id == id));
        }
        if let Ok(r) = Reference::parse(name) {
            let hit = match (&r.digest, r.tagged()) {
                (Some(d), _) => {
                    let want = r.with_digest(d);
                    all.iter()
                        .position(|(_, s)| s.image.repo_digests.contains(&want))
                }
                (None, Some(t)) => all.iter().position(|(_, s)| s.image.repo_tags.contains(&t)),
                (None, None) => None,
            };
            if let Some(i) = hit {
                return Ok(all.into_iter().nth(i));
            }
        }
        if !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let matches: Vec<(PathBuf, Stored)> = all
                .into_iter()
                .filter(|(_, s)| s.image.id["sha256:".len()..].starts_with(hex))
                .collect();
            if matches.len() > 1 {
                return Err(ImageError::Ambiguous {
                    reference: name.to_string(),
                    candidates: matches.into_iter().map(|(_, s)| s.image.id).collect(),
                });
            }
            return Ok(matches.into_iter().next());
        }
        Ok(None)
    }

    /// gc with the store lock held exclusively: no pull is running.
    fn gc_locked(&self) -> Result<(), ImageError> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for (_, s) in self.load_all()? {
            for b in &s.blobs {
                blobs.insert(digest_hex(&s.image.id, b)?.to_string());
            }
            for l in &s.image.layers {
                layers.insert(digest_hex(&s.image.id, l)?.to_string());
            }
        }
        // Layers containers still use (their images may be gone).
        layers.extend(lock_held(&self.held).values().flatten().cloned());
        let mut removed = (0u32, 0u32);
        for (dir, keep, is_layer) in [
            (self.blob_dir(), &blobs, false),
            (self.root.join("layers"), &layers, true),
        ] {
            for ent in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let ent = ent.map_err(io_err("read directory", &dir))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let path = ent.path();
                if is_layer {
                    fs::remove_dir_all(&path).map_err(io_err("remove layer", &path))?;
                    removed.1 += 1;
                } else {
                    fs::remove_file(&path).map_err(io_err("remove blob", &path))?;
                    removed.0 += 1;
                }
            }
        }
        self.clean_tmp()?;
        if removed != (0, 0) {
            tracing::info!(blobs = removed.0, layers = removed.1, "image store gc");
        }
        Ok(())
    }
}

fn lock_held(
    m: &Mutex<HashMap<String, BTreeSet<String>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// fsync a directory so renames in it are durable.
fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The mount point (from /proc/self/mountinfo) of the file system holding `path` (canonical).
fn mountpoint_of(path: &Path) -> Result<PathBuf, ImageError> {
    let mi = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mi).map_err(io_err("read", mi))?;
    let mut best = PathBuf::from("/");
    for line in text.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(field));
        if path.starts_with(&mp) && mp.components().count() > best.components().count() {
            best = mp;
        }
    }
    Ok(best)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        let value = octal.then(|| {
            b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'))
        });
        if let (b'\\', Some(v @ 0..=255)) = (b[i], value) {
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod held_layer_tests {
    use super::*;

    /// Writes an image record the way a pull commits it, with its layers unpacked (empty).
    fn image(store: &ImageStore, tag: &str, layers: &[&str]) -> String {
        let hex = |s: &str| format!("{:0>64}", s);
        let id = format!("sha256:{}", hex(tag));
        let layers: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", hex(l)))
            .collect();
        for l in &layers {
            fs::create_dir_all(store.layer_dir(&l["sha256:".len()..])).expect("mkdir layer");
        }
        let stored = Stored {
            image: ImageRecord {
                id: id.clone(),
                repo_tags: vec![format!("example.com/{tag}:latest")],
                repo_digests: vec![],
                size: 0,
                config: ImageConfig::default(),
                layers,
            },
            blobs: BTreeSet::new(),
        };
        store.commit(stored).expect("commit");
        id
    }

    fn layer_names(store: &ImageStore) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(store.root.join("layers"))
            .expect("readdir")
            .map(|e| {
                let n = e.expect("entry").file_name().to_string_lossy().into_owned();
                n.trim_start_matches('0').to_string()
            })
            .collect();
        v.sort();
        v
    }

    /// RemoveImage of an image containers use succeeds; its layers stay until the last of them
    /// releases them (a layer another image has stays after that too), and a store opened
    /// again (a restart) keeps what its owners hold again.
    #[test]
    fn layers_in_use_outlive_their_image() {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("husk-cri-held-{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        let store = ImageStore::open(tmp.path()).expect("open");
        let a = image(&store, "a", &["1a", "2a"]);
        image(&store, "b", &["1a", "3b"]);
        let dirs = store.hold_image_layers("c1", &a).expect("hold");
        assert_eq!(dirs.len(), 2);
        store.hold_image_layers("c2", &a).expect("hold");
        store.remove(&a).expect("RemoveImage of an image in use");
        assert!(store.status(&a).expect("status").is_none());
        assert_eq!(layer_names(&store), ["1a", "2a", "3b"]);
        store.release_layers("c1").expect("release");
        assert_eq!(layer_names(&store), ["1a", "2a", "3b"], "c2 still uses 2a");
        // A restart: the owners hold their recorded layers again.
        drop(store);
        let store = ImageStore::open(tmp.path()).expect("reopen");
        let missing = store.hold_layers("c2", &dirs).expect("hold again");
        assert!(missing.is_empty(), "{missing:?}");
        store.gc().expect("gc");
        assert_eq!(layer_names(&store), ["1a", "2a", "3b"]);
        store.release_layers("c2").expect("release");
        assert_eq!(
            layer_names(&store),
            ["1a", "3b"],
            "2a went with its last user"
        );
        // Paths outside the store's layers are never held (nor touched).
        let outside = tmp.path().join("elsewhere");
        fs::create_dir(&outside).expect("mkdir");
        store
            .hold_layers("c3", std::slice::from_ref(&outside))
            .expect("hold");
        store.release_layers("c3").expect("release");
        assert!(outside.is_dir());
    }
}
