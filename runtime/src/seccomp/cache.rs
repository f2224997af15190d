//! On-disk cache of compiled filters, keyed by content hash.
//!
//! Key: sha256 over a generator tag, a build-time hash of the generator's sources (so
//! entries written by another build are never reused), the native architecture and the JSON of
//! `linux.seccomp` without `listenerPath`/`listenerMetadata` (they do not change the
//! program), fields in a fixed order. File `<dir>/<key>.bpf`:
//! ```text
//!   "HUSKBPF1" | key (32 bytes) | flags u32 | uses_notify u8 | 0u8 x3 | count u32
//!   | count x 8-byte sock_filter | sha256 of everything before (32 bytes)
//! ```
//! Written to a temporary file in the same directory and renamed into place; on read the
//! length, magic, key, checksum and the program's structure are checked, and anything
//! that does not hold is recompiled and rewritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::{bpf, compile, CompiledFilter, Result, SeccompError};

const MAGIC: &[u8; 8] = b"HUSKBPF1";
/// Format of the cache files and of the key.
const GENERATOR_VERSION: &str = "husk-seccomp-gen 1";

/// FNV-1a over the generator's sources, computed at build time: any change to the code
/// that produces programs gives new keys, so a stale entry is never reused.
const GENERATOR_HASH: u64 = {
    let parts: [&[u8]; 3] = [
        include_bytes!("compile.rs"),
        include_bytes!("bpf.rs"),
        include_bytes!("syscall_tables.rs"),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut p = 0;
    while p < parts.len() {
        let b = parts[p];
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    h
};
const HEADER: usize = 8 + 32 + 4 + 4 + 4;

/// What `FilterCache::compile` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid cached program was used.
    Hit,
    /// No cached program: compiled and stored.
    Miss,
    /// A cached file existed but was invalid (reason): recompiled and replaced.
    Recompiled(String),
}

/// A directory of compiled filters, e.g. `<state-root>/.seccomp-cache`.
#[derive(Clone, Debug)]
pub struct FilterCache {
    dir: PathBuf,
}

/// The parts of `linux.seccomp` that determine the program, serialised in a fixed field
/// order (the profile holds no maps, so the JSON of a given profile is canonical).
#[derive(Serialize)]
struct KeyView<'a> {
    #[serde(rename = "defaultAction")]
    default_action: LinuxSeccompAction,
    #[serde(rename = "defaultErrnoRet")]
    default_errno_ret: Option<u32>,
    architectures: &'a Option<Vec<Arch>>,
    flags: &'a Option<Vec<LinuxSeccompFilterFlag>>,
    syscalls: &'a Option<Vec<LinuxSyscall>>,
}

impl FilterCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The content hash (hex sha256) of a profile for this architecture.
    pub fn key(seccomp: &LinuxSeccomp) -> Result<String> {
        let view = KeyView {
            default_action: seccomp.default_action(),
            default_errno_ret: seccomp.default_errno_ret(),
            architectures: seccomp.architectures(),
            flags: seccomp.flags(),
            syscalls: seccomp.syscalls(),
        };
        let text = serde_json::to_vec(&view)
            .map_err(|e| SeccompError::Internal(format!("serialising linux.seccomp: {e}")))?;
        let mut h = Sha256::new();
        h.update(GENERATOR_VERSION.as_bytes());
        h.update(GENERATOR_HASH.to_le_bytes());
        h.update(b"\n");
        h.update(std::env::consts::ARCH.as_bytes());
        h.update(b"\n");
        h.update(&text);
        Ok(hex(&h.finalize()))
    }

    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bpf"))
    }

    /// Returns the compiled filter for `seccomp`, from the cache when a valid entry
    /// exists, otherwise compiling it and storing the result. Cache I/O problems are
    /// logged (warn) and never fail the call; profile errors do.
    pub fn compile(&self, seccomp: &LinuxSeccomp) -> Result<(CompiledFilter, CacheOutcome)> {
        let key = Self::key(seccomp)?;
        let path = self.path_for(&key);
        let outcome = match fs::read(&path) {
            Ok(bytes) => match decode(&bytes, &key) {
                Ok(f) => return Ok((f, CacheOutcome::Hit)),
                Err(reason) => {
                    warn!(path = %path.display(), %reason, "seccomp cache entry invalid, recompiling");
                    CacheOutcome::Recompiled(reason)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheOutcome::Miss,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "seccomp cache unreadable, recompiling");
                CacheOutcome::Recompiled(format!("read failed: {e}"))
            }
        };
        let filter = compile(seccomp)?;
        // The cache only saves time: failing to write it must not fail the container.
        match self.store(&key, &filter) {
            Ok(()) => debug!(path = %path.display(), "seccomp filter cached"),
            Err(e) => warn!(error = %e, "seccomp filter not cached"),
        }
        Ok((filter, outcome))
    }

    /// Writes `f` as the entry for `key` (temporary file + rename).
    pub fn store(&self, key: &str, f: &CompiledFilter) -> Result<()> {
        let io = |path: &Path, source| SeccompError::CacheIo {
            path: path.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io(&self.dir, e))?;
        let bytes = encode(f, key)?;
        let path = self.path_for(key);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = self
            .dir
            .join(format!(".{key}.{}.{nanos}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path, e));
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode(f: &CompiledFilter, key: &str) -> Result<Vec<u8>> {
    let key_bytes = unhex(key).ok_or_else(|| SeccompError::Internal("bad cache key".into()))?;
    let mut out = Vec::with_capacity(HEADER + f.program.len() * 8 + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_bytes);
    out.extend_from_slice(&f.flags.to_le_bytes());
    out.extend_from_slice(&[u8::from(f.uses_notify), 0, 0, 0]);
    out.extend_from_slice(&(f.program.len() as u32).to_le_bytes());
    out.extend_from_slice(&f.program_bytes());
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn decode(bytes: &[u8], key: &str) -> std::result::Result<CompiledFilter, String> {
    if bytes.len() < HEADER + 32 {
        return Err(format!("file too short ({} bytes)", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    let expected = unhex(key).ok_or("bad key")?;
    if body[8..40] != expected {
        return Err("key mismatch".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]]);
    let flags = u32_at(40);
    let uses_notify = match body[44] {
        0 => false,
        1 => true,
        x => return Err(format!("bad notify byte {x}")),
    };
    let count = u32_at(48) as usize;
    if body.len() != HEADER + count * 8 {
        return Err(format!(
            "length {} does not match {count} instructions",
            bytes.len()
        ));
    }
    let program: Vec<libc::sock_filter> = body[HEADER..]
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if !bpf::validate(&program) {
        return Err("program fails validation".into());
    }
    let notify_flag = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
    if uses_notify != (flags & notify_flag != 0) {
        return Err("flags and notify marker disagree".into());
    }
    Ok(CompiledFilter {
        program,
        flags,
        uses_notify,
    })
}
