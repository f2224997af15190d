//! Property-based fuzz targets (proptest) for the image code that reads untrusted registry data:
//! the layer unpacker (`image::unpack`), manifests/indexes/configs (`image::manifest`) and
//! references (`image::reference`). See docs/FUZZING.md; `PROPTEST_CASES=N` runs more cases.
//!
//! Unpacker properties: whatever the tarball (random entries of every kind, hostile names and
//! link targets, whiteouts, long names, device nodes; plain, gzip or zstd; truncated or not),
//! unpacking never panics, never writes outside the destination directory (a sibling canary
//! directory and file are compared before and after; no hard link in the result shares an inode
//! with anything outside), and an error names the layer or the path.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use husk_cri::image::manifest;
use husk_cri::image::unpack::{unpack_layer, unpack_stream};
use husk_cri::image::Reference;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

const LAYER: &str = "fuzzlayer";

fn cases(default: u32) -> ProptestConfig {
    // PROPTEST_CASES (read by ProptestConfig::default) overrides the modest CI default.
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Layer unpacker
// ---------------------------------------------------------------------------------------------

/// A name or link target: placeholders `@CANARY@` (the sibling canary dir, absolute) and
/// `@TMP@` (the parent of the destination, absolute) are substituted per case.
#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    CharDev(u32, u32),
    BlockDev(u32, u32),
    Fifo,
    /// `.wh.NAME` in the entry's directory.
    Whiteout,
    /// `.wh..wh..opq` in the entry's directory.
    Opaque,
    /// Raw junk as type flag (e.g. 'x' pax, 'g', 'K', 'L', unknown letters).
    Odd(u8),
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: Kind,
    mode: u32,
    ids: (u64, u64),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "etc", "esc", "d1"]).prop_map(String::from),
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        1 => Just(".wh.a".to_string()),
        1 => Just(".wh..wh..opq".to_string()),
        1 => Just(".wh..wh.plnk".to_string()),
        1 => (1usize..300).prop_map(|n| "n".repeat(n)),
        1 => "[a-z\\\\ \\x01\u{e9}]{1,8}",
    ]
}

fn rel_path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => rel_path(),
        1 => rel_path().prop_map(|p| format!("/{p}")),
        1 => rel_path().prop_map(|p| format!("./{p}")),
        1 => rel_path().prop_map(|p| format!("{p}/")),
        1 => rel_path().prop_map(|p| format!("@CANARY@/{p}")),
        1 => Just("@CANARY@/file".to_string()),
        1 => Just("../canary/file".to_string()),
        1 => Just("../canary".to_string()),
        1 => Just("@TMP@/outside".to_string()),
        1 => (4000usize..4200).prop_map(|n| "p/".repeat(n / 2)),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..600).prop_map(Kind::File),
        3 => Just(Kind::Dir),
        3 => path().prop_map(Kind::Symlink),
        3 => path().prop_map(Kind::Hardlink),
        1 => (0u32..300, 0u32..300).prop_map(|(a, b)| Kind::CharDev(a, b)),
        1 => (0u32..300, 0u32..300).prop_map(|(a, b)| Kind::BlockDev(a, b)),
        1 => Just(Kind::Fifo),
        2 => Just(Kind::Whiteout),
        1 => Just(Kind::Opaque),
        1 => prop::sample::select(b"xgKLSV7ZM\0".to_vec()).prop_map(Kind::Odd),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        path(),
        kind(),
        prop_oneof![
            Just(0o644u32),
            Just(0o755),
            Just(0o4755),
            Just(0),
            any::<u32>()
        ],
        prop_oneof![Just((0u64, 0u64)), (0u64..70000, 0u64..70000)],
    )
        .prop_map(|(name, kind, mode, ids)| Entry {
            name,
            kind,
            mode,
            ids,
        })
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    Plain,
    Gzip,
    Zstd,
    /// Straight to `unpack_stream`, no blob file.
    Stream,
}

struct Tb(tar::Builder<Vec<u8>>);

impl Tb {
    /// Appends an entry with raw name/link bytes (GNU long name/link records when longer than
    /// the 100-byte header fields), as unpack_tests.rs does: the tar crate's setters refuse `..`.
    fn raw(&mut self, kind: EntryType, name: &[u8], link: &[u8], data: &[u8], e: &Entry) {
        if name.len() > 100 {
            self.long(EntryType::GNULongName, name);
        }
        if link.len() > 100 {
            self.long(EntryType::GNULongLink, link);
        }
        let mut h = Header::new_gnu();
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.ids.0);
        h.set_gid(e.ids.1);
        h.set_mtime(1_600_000_000);
        if let Kind::CharDev(a, b) | Kind::BlockDev(a, b) = e.kind {
            let _ = h.set_device_major(a);
            let _ = h.set_device_minor(b);
        }
        h.set_cksum();
        self.0.append(&h, data).expect("append to an in-memory tar");
    }

    fn long(&mut self, kind: EntryType, value: &[u8]) {
        let mut data = value.to_vec();
        data.push(0);
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.0
            .append(&h, data.as_slice())
            .expect("append to an in-memory tar");
    }
}

fn subst(s: &str, canary: &Path, tmp: &Path) -> Vec<u8> {
    s.replace("@CANARY@", &canary.to_string_lossy())
        .replace("@TMP@", &tmp.to_string_lossy())
        .into_bytes()
}

fn build_tar(entries: &[Entry], canary: &Path, tmp: &Path) -> Vec<u8> {
    let mut t = Tb(tar::Builder::new(Vec::new()));
    for e in entries {
        let name = subst(&e.name, canary, tmp);
        let in_dir = |leaf: &str| -> Vec<u8> {
            let mut n = name.clone();
            while n.last() == Some(&b'/') {
                n.pop();
            }
            match n.iter().rposition(|&b| b == b'/') {
                Some(i) => {
                    let mut d = n[..=i].to_vec();
                    d.extend_from_slice(leaf.as_bytes());
                    d.extend_from_slice(&n[i + 1..]);
                    d
                }
                None => {
                    let mut d = leaf.as_bytes().to_vec();
                    d.extend_from_slice(&n);
                    d
                }
            }
        };
        match &e.kind {
            Kind::File(data) => t.raw(EntryType::Regular, &name, b"", data, e),
            Kind::Dir => t.raw(EntryType::Directory, &name, b"", b"", e),
            Kind::Symlink(l) => t.raw(EntryType::Symlink, &name, &subst(l, canary, tmp), b"", e),
            Kind::Hardlink(l) => t.raw(EntryType::Link, &name, &subst(l, canary, tmp), b"", e),
            Kind::CharDev(..) => t.raw(EntryType::Char, &name, b"", b"", e),
            Kind::BlockDev(..) => t.raw(EntryType::Block, &name, b"", b"", e),
            Kind::Fifo => t.raw(EntryType::Fifo, &name, b"", b"", e),
            Kind::Whiteout => t.raw(EntryType::Regular, &in_dir(".wh."), b"", b"", e),
            Kind::Opaque => {
                let mut d = name.clone();
                while d.last() == Some(&b'/') {
                    d.pop();
                }
                d.extend_from_slice(b"/.wh..wh..opq");
                t.raw(EntryType::Regular, &d, b"", b"", e)
            }
            Kind::Odd(b) => t.raw(EntryType::new(*b), &name, b"", b"abc=def\n", e),
        }
    }
    t.0.into_inner().expect("finish an in-memory tar")
}

/// A zstd frame of raw (stored) blocks (valid zstd without a compressor), as unpack_tests.rs.
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 10 << 3];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(100_000).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = u32::from(i == chunks.len() - 1);
        let header = last | ((chunk.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything under `dir` (not following symlinks): relative path → (kind, size, mode, nlink,
/// content hash for files, link target for symlinks).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            let desc = if m.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&p).ok())
            } else if m.is_file() {
                let data = fs::read(&p).unwrap_or_default();
                format!(
                    "file {} {:o} nlink={} uid={} {}",
                    m.len(),
                    m.mode(),
                    m.nlink(),
                    m.uid(),
                    hex(&Sha256::digest(&data))
                )
            } else {
                format!("other {:o} uid={}", m.mode(), m.uid())
            };
            out.insert(rel, desc);
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Inodes of everything under `dir` (not following symlinks).
fn inodes(dir: &Path, out: &mut Vec<(u64, u64, PathBuf)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        out.push((m.dev(), m.ino(), p.clone()));
        if m.is_dir() {
            inodes(&p, out);
        }
    }
}

fn check_unpack(
    entries: &[Entry],
    compression: Compression,
    truncate: Option<usize>,
    wrong_diff_id: bool,
) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| TestCaseError::fail(format!("tempdir: {e}")))?;
    let tmp = fs::canonicalize(tmp.path())
        .map(|p| (tmp, p))
        .map_err(|e| TestCaseError::fail(format!("canonicalize: {e}")))?;
    let (_guard, root) = tmp;
    // root/{canary/, canary/file, canary/sub/x, sibling, blob, dest}
    let canary = root.join("canary");
    fs::create_dir_all(canary.join("sub")).expect("canary dir");
    fs::write(canary.join("file"), b"canary").expect("canary file");
    fs::write(canary.join("sub/x"), b"x").expect("canary file");
    fs::write(root.join("sibling"), b"sibling").expect("sibling file");
    let dest = root.join("dest");

    let mut tar = build_tar(entries, &canary, &root);
    if let Some(n) = truncate {
        tar.truncate(n % (tar.len() + 1));
    }
    let diff_id = if wrong_diff_id {
        format!("sha256:{}", "0".repeat(64))
    } else {
        format!("sha256:{}", hex(&Sha256::digest(&tar)))
    };

    let before_root: Vec<_> = {
        let mut v: Vec<_> = fs::read_dir(&root)
            .expect("read tmp")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&canary);

    let result = match compression {
        Compression::Stream => unpack_stream(tar.as_slice(), LAYER, &diff_id, &dest),
        c => {
            let blob = match c {
                Compression::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&tar).expect("gzip");
                    e.finish().expect("gzip")
                }
                Compression::Zstd => zstd_raw_frame(&tar),
                _ => tar.clone(),
            };
            let blob_path = root.join("blob");
            fs::write(&blob_path, blob).expect("write blob");
            let r = unpack_layer(&blob_path, LAYER, &diff_id, &dest);
            fs::remove_file(&blob_path).expect("remove blob");
            r
        }
    };

    // Nothing outside dest changed.
    let after = snapshot(&canary);
    prop_assert_eq!(&before, &after, "the canary directory changed");
    prop_assert_eq!(
        fs::read(root.join("sibling")).ok(),
        Some(b"sibling".to_vec())
    );
    let mut after_root: Vec<_> = fs::read_dir(&root)
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "dest")
        .collect();
    after_root.sort();
    let mut expect_root = before_root.clone();
    expect_root.retain(|n| n != "dest");
    prop_assert_eq!(expect_root, after_root, "entries appeared next to dest");
    let m = fs::metadata(canary.join("file")).expect("canary file");
    prop_assert_eq!(m.nlink(), 1, "a hard link to the canary file exists");

    match &result {
        Ok(()) => {
            prop_assert!(!wrong_diff_id, "a wrong diff_id was accepted");
            // No inode inside dest is one outside it.
            let mut inside = Vec::new();
            inodes(&dest, &mut inside);
            let mut outside = Vec::new();
            inodes(&canary, &mut outside);
            for (dev, ino, p) in &inside {
                if let Some((_, _, q)) = outside.iter().find(|(d, i, _)| d == dev && i == ino) {
                    return Err(TestCaseError::fail(format!(
                        "{} inside the layer is {} outside it",
                        p.display(),
                        q.display()
                    )));
                }
            }
            let rd = fs::symlink_metadata(&dest).expect("dest exists after success");
            prop_assert!(rd.is_dir());
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.contains(LAYER) || msg.contains(&*root.to_string_lossy()),
                "error does not name the layer or path: {}",
                msg
            );
            prop_assert!(!dest.exists(), "dest left behind after an error: {}", msg);
        }
    }
    Ok(())
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::Plain),
        Just(Compression::Gzip),
        Just(Compression::Zstd),
        Just(Compression::Stream),
    ]
}

proptest! {
    // Each case unpacks a layer (syncfs included): ~0.3 s per case on a busy CI box.
    #![proptest_config(cases(40))]

    #[test]
    fn unpack_random_entries(
        entries in prop::collection::vec(entry(), 0..12),
        compression in compression(),
        truncate in prop::option::weighted(0.15, any::<usize>()),
        wrong_diff_id in prop::bool::weighted(0.05),
    ) {
        check_unpack(&entries, compression, truncate, wrong_diff_id)?;
    }

    /// Escape-oriented archives: a link to the outside, then entries through it.
    #[test]
    fn unpack_escape_attempts(
        link_name in prop::sample::select(vec!["esc", "a/esc", "esc/"]),
        target in prop::sample::select(vec![
            "@CANARY@", "../canary", "../../canary", "..", "/", "@TMP@", ".", "esc",
            "@CANARY@/file", "../canary/file",
        ]),
        hard in any::<bool>(),
        then in prop::collection::vec(
            (prop::sample::select(vec!["esc/file", "esc/sub/x", "esc/new", "esc", "a/esc/file",
                "esc/../sibling", "esc/sub"]), kind()),
            1..4),
        compression in compression(),
    ) {
        let mut entries = vec![Entry { name: "a".into(), kind: Kind::Dir, mode: 0o755, ids: (0, 0) }];
        entries.push(Entry {
            name: link_name.into(),
            kind: if hard { Kind::Hardlink(target.into()) } else { Kind::Symlink(target.into()) },
            mode: 0o777,
            ids: (0, 0),
        });
        for (name, kind) in then {
            entries.push(Entry { name: name.into(), kind, mode: 0o644, ids: (0, 0) });
        }
        check_unpack(&entries, compression, None, false)?;
    }

    /// Arbitrary bytes as a layer blob (random data, or random data after a compression magic).
    #[test]
    fn unpack_random_bytes(
        magic in prop::sample::select(vec![
            &b""[..], &[0x1f, 0x8b][..], &[0x28, 0xb5, 0x2f, 0xfd][..], &b"BZh"[..],
            &[0xfd, b'7', b'z', b'X', b'Z', 0][..],
        ]),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blob = tmp.path().join("blob");
        let mut data = magic.to_vec();
        data.extend_from_slice(&body);
        fs::write(&blob, &data).expect("write blob");
        let dest = tmp.path().join("dest");
        if let Err(e) = unpack_layer(&blob, LAYER, &format!("sha256:{}", "0".repeat(64)), &dest) {
            let msg = e.to_string();
            prop_assert!(msg.contains(LAYER) || msg.contains(&*tmp.path().to_string_lossy()), "{}", msg);
            prop_assert!(!dest.exists());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests, indexes, configs
// ---------------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "sha256:",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "linux",
            "amd64",
            "arm64",
            "v8",
            "layers",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        (0usize..4).prop_map(|n| Value::String(format!("sha256:{}", "a".repeat(64 - n)))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "manifests",
                    "digest",
                    "size",
                    "platform",
                    "architecture",
                    "os",
                    "variant",
                    "os.version",
                    "os.features",
                    "annotations",
                    "rootfs",
                    "type",
                    "diff_ids",
                    "Env",
                    "Cmd",
                    "Entrypoint",
                    "User",
                    "WorkingDir",
                    "ExposedPorts",
                    "Volumes",
                    "Labels",
                    "StopSignal",
                    "urls",
                    "subject",
                    "artifactType",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_manifest() -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "a".repeat(64)), "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", "b".repeat(64)), "size": 20}]
    })
}

fn valid_index() -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", "c".repeat(64)), "size": 30,
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    })
}

fn valid_config() -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "1000:1000", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "d".repeat(64))]}
    })
}

/// Replaces the value at a random path of `v` (walking `steps` as indices into objects/arrays).
fn mutate(v: &mut serde_json::Value, steps: &[usize], new: serde_json::Value, delete: bool) {
    use serde_json::Value;
    let mut cur = v;
    for (i, s) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let leaf = match &*cur {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => true,
        };
        if leaf {
            *cur = new;
            return;
        }
        match cur {
            Value::Object(m) => {
                let key = m.keys().nth(s % m.len()).cloned().expect("key");
                if last {
                    if delete {
                        m.remove(&key);
                    } else {
                        m.insert(key, new);
                    }
                    return;
                }
                cur = m.get_mut(&key).expect("key");
            }
            Value::Array(a) => {
                let n = s % a.len();
                if last {
                    if delete {
                        a.remove(n);
                    } else {
                        a[n] = new;
                    }
                    return;
                }
                cur = &mut a[n];
            }
            _ => return,
        }
    }
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("application/json".to_string()),
        Just("application/vnd.oci.image.manifest.v1+json".to_string()),
        Just("application/vnd.oci.image.index.v1+json".to_string()),
        Just("application/vnd.docker.distribution.manifest.v2+json".to_string()),
        Just("application/vnd.docker.distribution.manifest.list.v2+json".to_string()),
        Just("application/vnd.docker.distribution.manifest.v1+prettyjws".to_string()),
        ".{0,20}",
    ]
}

fn check_manifest(ct: &str, body: &[u8]) -> Result<(), TestCaseError> {
    let digest = format!("sha256:{}", "e".repeat(64));
    match manifest::parse("example.com/repo:tag", &digest, ct, body) {
        Ok(manifest::Parsed::Index(list)) => {
            let host = manifest::host_platform();
            let _ = manifest::select_platform("example.com/repo:tag", &digest, &list, &host);
            for d in &list {
                if let Some(p) = &d.platform {
                    let _ = p.describe();
                }
            }
        }
        Ok(_) => {}
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn manifest_arbitrary_json(ct in content_type(), v in json_value()) {
        let body = serde_json::to_vec(&v).expect("serialize");
        check_manifest(&ct, &body)?;
    }

    #[test]
    fn manifest_arbitrary_bytes(ct in content_type(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_manifest(&ct, &body)?;
    }

    #[test]
    fn manifest_mutated(
        which in 0usize..2,
        ct in content_type(),
        steps in prop::collection::vec(any::<usize>(), 1..5),
        new in json_value(),
        delete in any::<bool>(),
    ) {
        let mut v = if which == 0 { valid_manifest() } else { valid_index() };
        mutate(&mut v, &steps, new, delete);
        check_manifest(&ct, &serde_json::to_vec(&v).expect("serialize"))?;
    }

    #[test]
    fn config_mutated(
        steps in prop::collection::vec(any::<usize>(), 1..5),
        new in json_value(),
        delete in any::<bool>(),
        layers in 0usize..3,
        raw in any::<bool>(),
    ) {
        let body = if raw {
            serde_json::to_vec(&new).expect("serialize")
        } else {
            let mut v = valid_config();
            mutate(&mut v, &steps, new, delete);
            serde_json::to_vec(&v).expect("serialize")
        };
        let digest = format!("sha256:{}", "f".repeat(64));
        if let Err(e) = manifest::parse_config(&digest, &body, layers) {
            let msg = e.to_string();
            prop_assert!(msg.contains(&digest), "config error does not name the config: {}", msg);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------

fn reference_string() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        prop::sample::select(vec![
            "docker.io",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.1",
            "registry-1.docker.io",
            "library",
            "busybox",
            "a",
            "a.b",
            "a__b",
            "a--b",
            "A",
            ":",
            "@",
            "/",
            "sha256:",
            ":latest",
            "@sha256:",
            "[",
            "]",
            "..",
            "-",
            "_",
            ".",
            "::",
        ])
        .prop_map(String::from),
        "[a-z0-9._:/@-]{0,10}",
        (60usize..70).prop_map(|n| "a".repeat(n)),
        (0usize..66).prop_map(|n| "0123456789abcdef".repeat(5)[..n].to_string()),
        ".{0,6}",
    ];
    prop_oneof![
        4 => prop::collection::vec(part, 0..8).prop_map(|v| v.concat()),
        1 => ".{0,40}",
        1 => (4090usize..4100).prop_map(|n| "a".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn reference_parse_never_panics(s in reference_string()) {
        match Reference::parse(&s) {
            Ok(r) => {
                let _ = (r.repository(), r.tagged(), r.manifest_ref(), r.api_host(), r.hostname(), r.is_loopback());
                let _ = r.with_digest(&format!("sha256:{}", "a".repeat(64)));
                // A normalized reference parses again to the same thing.
                let again = r.repository();
                let full = match r.tagged() { Some(t) => t, None => again };
                let r2 = Reference::parse(&full);
                prop_assert!(r2.is_ok(), "normalized {:?} of {:?} does not parse: {:?}", full, s, r2.err());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = husk_cri::image::reference::validate_digest(&s);
        let _ = husk_cri::image::reference::is_hex64(&s);
    }
}
