//! Layer unpacking: whiteouts, metadata, compression, and hostile tarballs built by hand
//! (the `tar` crate's path setters refuse `..` and absolute names, so headers are written raw).

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;

struct Tb(tar::Builder<Vec<u8>>);

impl Tb {
    fn new() -> Tb {
        Tb(tar::Builder::new(Vec::new()))
    }

    /// Appends an entry with raw `name`/`link` bytes (GNU long name/link records when longer
    /// than the 100-byte header fields).
    fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
        ids: (u64, u64),
    ) {
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
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.0
            .append(&h, data)
            .unwrap_or_else(|e| panic!("append: {e}"));
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
            .unwrap_or_else(|e| panic!("append: {e}"));
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tb {
        self.raw(
            EntryType::Regular,
            name.as_bytes(),
            b"",
            data,
            0o644,
            (0, 0),
        );
        self
    }
    fn dir(&mut self, name: &str) -> &mut Tb {
        self.raw(
            EntryType::Directory,
            name.as_bytes(),
            b"",
            b"",
            0o755,
            (0, 0),
        );
        self
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Tb {
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
            (0, 0),
        );
        self
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tb {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
            (0, 0),
        );
        self
    }
    fn pax(&mut self, exts: &[(&str, &[u8])]) -> &mut Tb {
        self.0
            .append_pax_extensions(exts.iter().map(|(k, v)| (*k, *v)))
            .unwrap_or_else(|e| panic!("pax: {e}"));
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0
            .into_inner()
            .unwrap_or_else(|e| panic!("finish: {e}"))
    }
}

fn diff_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap_or_else(|e| panic!("mkdir: {e}"));
    fs::write(outside.join("secret"), b"secret").unwrap_or_else(|e| panic!("write: {e}"));
    Fixture {
        dest: tmp.path().join("layer"),
        outside,
        _tmp: tmp,
    }
}

fn unpack(f: &Fixture, tar: &[u8]) -> Result<(), ImageError> {
    unpack_stream(Cursor::new(tar), "sha256:test", &diff_id(tar), &f.dest)
}

fn must_unpack(f: &Fixture, tar: &[u8]) {
    if let Err(e) = unpack(f, tar) {
        panic!("unpack: {e}");
    }
}

/// The layer is refused with an error naming `entry` and saying `reason`; nothing was written
/// outside the layer, and no partial layer directory is left.
fn assert_refused(f: &Fixture, tar: &[u8], entry: &str, reason: &str) {
    match unpack(f, tar) {
        Ok(()) => panic!("a layer with {entry:?} was accepted"),
        Err(ImageError::LayerEntry {
            entry: e,
            reason: r,
            layer,
        }) => {
            assert_eq!(layer, "sha256:test");
            assert!(
                e.contains(entry),
                "error names entry {e:?}, want {entry:?} ({r})"
            );
            assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
        }
        Err(other) => panic!("unexpected error for {entry:?}: {other}"),
    }
    assert!(
        !f.dest.exists(),
        "partial layer dir left at {}",
        f.dest.display()
    );
    assert_outside_untouched(f);
}

fn assert_outside_untouched(f: &Fixture) {
    let names: Vec<String> = fs::read_dir(&f.outside)
        .unwrap_or_else(|e| panic!("readdir: {e}"))
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        names,
        vec!["secret".to_string()],
        "something was written outside"
    );
    let secret = f.outside.join("secret");
    let md = fs::symlink_metadata(&secret).unwrap_or_else(|e| panic!("stat: {e}"));
    assert_eq!(md.nlink(), 1, "the outside file got a hard link");
    assert_eq!(fs::read(&secret).unwrap_or_default(), b"secret");
    let mut buf = [0u8; 8];
    assert!(
        lgetxattr(&f.outside, "trusted.overlay.opaque", &mut buf).is_err(),
        "the outside dir was made opaque"
    );
}

fn lgetxattr(path: &Path, name: &str, buf: &mut [u8]) -> io::Result<usize> {
    let p = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: NUL-terminated strings; `buf` is writable for `buf.len()` bytes.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn absolute_and_dot_names_name_the_same_entries() {
    let f = fixture();
    let abs = format!("{}/pwned", f.outside.display());
    let mut t = Tb::new();
    t.raw(EntryType::Directory, b"/", b"", b"", 0o711, (0, 0));
    t.file("ok", b"fine")
        .file(&abs, b"x")
        .file("/abs", b"a")
        .file("./dot", b"d")
        .dir("/etc/")
        .file("./etc/passwd", b"p")
        .hardlink("/abslink", "/abs")
        .hardlink("dotlink", "./dot");
    must_unpack(&f, &t.finish());
    // The absolute name was re-rooted: nothing was written outside.
    assert!(!f.outside.join("pwned").exists());
    let rerooted = f.dest.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(&rerooted).unwrap_or_default(), b"x");
    for (name, data) in [
        ("abs", &b"a"[..]),
        ("dot", b"d"),
        ("etc/passwd", b"p"),
        ("abslink", b"a"),
        ("dotlink", b"d"),
    ] {
        assert_eq!(
            fs::read(f.dest.join(name)).unwrap_or_default(),
            data,
            "{name}"
        );
    }
    let ino = |n: &str| fs::symlink_metadata(f.dest.join(n)).map(|m| m.ino()).ok();
    assert_eq!(ino("abs"), ino("abslink"));
    assert_eq!(ino("dot"), ino("dotlink"));
    // "/" is the layer root: its mode applies to the layer directory.
    let mode = fs::metadata(&f.dest)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0);
    assert_eq!(mode, 0o711);
}

#[test]
fn trusted_xattrs_are_dropped_and_file_capabilities_kept() {
    let f = fixture();
    // security.capability v2: cap_net_raw (bit 13) permitted + effective.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let mut t = Tb::new();
    t.pax(&[
        ("SCHILY.xattr.security.capability", cap.as_slice()),
        ("SCHILY.xattr.trusted.secret", b"host only"),
        ("SCHILY.xattr.user.kept", b"yes"),
    ]);
    t.raw(EntryType::Regular, b"ping", b"", b"elf", 0o755, (0, 0));
    must_unpack(&f, &t.finish());
    let p = f.dest.join("ping");
    let mut buf = [0u8; 64];
    let n = lgetxattr(&p, "security.capability", &mut buf)
        .unwrap_or_else(|e| panic!("security.capability: {e}"));
    assert_eq!(&buf[..n], cap.as_slice());
    let n = lgetxattr(&p, "user.kept", &mut buf).unwrap_or_else(|e| panic!("user.kept: {e}"));
    assert_eq!(&buf[..n], b"yes");
    assert!(
        lgetxattr(&p, "trusted.secret", &mut buf).is_err(),
        "trusted.* must not be applied"
    );
}

#[test]
fn dotdot_paths_are_refused() {
    let f = fixture();
    for name in [
        "../outside/pwned",
        "a/../../outside/pwned",
        "./../outside/pwned",
        "a/..",
    ] {
        let mut t = Tb::new();
        t.dir("a/").file(name, b"x");
        assert_refused(&f, &t.finish(), name, "'..'");
    }
    // A directory entry too.
    let mut t = Tb::new();
    t.dir("../outside/newdir/");
    assert_refused(&f, &t.finish(), "../outside/newdir", "'..'");
}

#[test]
fn writes_through_symlinks_are_refused() {
    let f = fixture();
    let abs_target = f.outside.display().to_string();
    for target in [abs_target.as_str(), "../outside", "../outside/"] {
        // A file through the symlink.
        let mut t = Tb::new();
        t.symlink("evil", target).file("evil/pwned", b"x");
        assert_refused(&f, &t.finish(), "evil/pwned", "symlink");
        // A directory through the symlink.
        let mut t = Tb::new();
        t.symlink("evil", target).dir("evil/sub/");
        assert_refused(&f, &t.finish(), "evil/sub", "symlink");
        // Deeper: a symlinked directory in the middle of the path.
        let mut t = Tb::new();
        t.dir("a/")
            .symlink("a/evil", target)
            .file("a/evil/pwned", b"x");
        assert_refused(&f, &t.finish(), "a/evil/pwned", "symlink");
        // A whiteout or an opaque marker through the symlink.
        let mut t = Tb::new();
        t.symlink("evil", target).file("evil/.wh.secret", b"");
        assert_refused(&f, &t.finish(), "evil/.wh.secret", "symlink");
        let mut t = Tb::new();
        t.symlink("evil", target).file("evil/.wh..wh..opq", b"");
        assert_refused(&f, &t.finish(), "evil/.wh..wh..opq", "symlink");
        // A hard link placed through the symlink.
        let mut t = Tb::new();
        t.file("f", b"x")
            .symlink("evil", target)
            .hardlink("evil/link", "f");
        assert_refused(&f, &t.finish(), "evil/link", "symlink");
    }
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let f = fixture();
    let secret = f.outside.join("secret").display().to_string();
    let mut t = Tb::new();
    t.symlink("evil", &secret).file("evil", b"mine");
    t.symlink("rel", "../outside/secret")
        .file("rel", b"mine too");
    must_unpack(&f, &t.finish());
    assert_outside_untouched(&f);
    let md = fs::symlink_metadata(f.dest.join("evil")).unwrap_or_else(|e| panic!("{e}"));
    assert!(md.is_file());
    assert_eq!(fs::read(f.dest.join("evil")).unwrap_or_default(), b"mine");
    assert_eq!(
        fs::read(f.dest.join("rel")).unwrap_or_default(),
        b"mine too"
    );
}

#[test]
fn escaping_hard_links_are_refused() {
    let f = fixture();
    let abs = f.outside.join("secret").display().to_string();
    let cases: Vec<(Vec<u8>, &str, &str)> = {
        let mut t = Tb::new();
        t.hardlink("l1", "../outside/secret");
        let a = t.finish();
        let mut t = Tb::new();
        t.hardlink("l2", &abs);
        let b = t.finish();
        let mut t = Tb::new();
        t.symlink("evil", "../outside")
            .hardlink("l3", "evil/secret");
        let c = t.finish();
        let mut t = Tb::new();
        t.symlink("evil", &f.outside.display().to_string())
            .hardlink("l4", "evil/secret");
        let d = t.finish();
        let mut t = Tb::new();
        t.hardlink("l5", "missing");
        let e = t.finish();
        let mut t = Tb::new();
        t.dir("d/").hardlink("l6", "d");
        let g = t.finish();
        let mut t = Tb::new();
        t.hardlink("l7", "a/../../outside/secret");
        let h = t.finish();
        vec![
            (a, "l1", "'..'"),
            (b, "l2", "does not exist in this layer"),
            (c, "l3", "symlink"),
            (d, "l4", "symlink"),
            (e, "l5", "does not exist"),
            (g, "l6", "is a directory"),
            (h, "l7", "'..'"),
        ]
    };
    for (tar, entry, reason) in cases {
        assert_refused(&f, &tar, entry, reason);
    }
}

#[test]
fn nul_bytes_and_absurd_names_are_refused() {
    let f = fixture();
    let mut t = Tb::new();
    t.pax(&[("path", b"evil\0name")]).file("placeholder", b"x");
    assert_refused(&f, &t.finish(), "evil\0name", "NUL");

    let mut t = Tb::new();
    t.pax(&[("linkpath", b"tar\0get")]);
    t.raw(EntryType::Symlink, b"s", b"x", b"", 0o777, (0, 0));
    assert_refused(&f, &t.finish(), "s", "NUL");

    let long_component = "x".repeat(300);
    let mut t = Tb::new();
    t.file(&long_component, b"x");
    assert_refused(&f, &t.finish(), "xxxxxxxx", "NAME_MAX");

    let long_path = "a/".repeat(5000) + "f";
    let mut t = Tb::new();
    t.file(&long_path, b"x");
    assert_refused(&f, &t.finish(), "(10001 bytes)", "PATH_MAX");

    let mut t = Tb::new();
    t.file(".wh...", b"");
    assert_refused(&f, &t.finish(), ".wh...", "whiteout of an invalid name");

    let mut t = Tb::new();
    t.file("./", b"");
    assert_refused(&f, &t.finish(), "./", "layer root is not a directory");
}

#[test]
fn truncated_and_corrupt_streams_fail_cleanly() {
    let f = fixture();
    let mut t = Tb::new();
    t.file("big", &vec![7u8; 10_000]);
    let tar = t.finish();
    let cut = &tar[..3000];
    match unpack_stream(Cursor::new(cut), "sha256:test", &diff_id(cut), &f.dest) {
        Err(ImageError::LayerEntry { entry, .. }) => assert_eq!(entry, "big"),
        Err(ImageError::Layer { .. }) => {}
        other => panic!("truncated tar: {other:?}"),
    }
    assert!(!f.dest.exists());
    // A wrong diff_id: refused after unpacking, and the directory is removed.
    let wrong = format!("sha256:{}", "0".repeat(64));
    match unpack_stream(Cursor::new(&tar), "sha256:test", &wrong, &f.dest) {
        Err(ImageError::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            assert!(what.contains("sha256:test"), "{what}");
            assert_eq!(expected, wrong);
            assert_eq!(actual, diff_id(&tar));
        }
        other => panic!("wrong diff_id: {other:?}"),
    }
    assert!(!f.dest.exists());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let f = fixture();
    let mut t = Tb::new();
    t.dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/kept", b"k")
        .file(".wh.gone", b"")
        .file("d/.wh.x", b"")
        .file("e/.wh..wh.plnk", b"")
        .file("replaced", b"old")
        .file(".wh.replaced", b"");
    must_unpack(&f, &t.finish());
    assert!(is_whiteout(&f.dest.join("gone")), "gone is not a whiteout");
    assert!(is_whiteout(&f.dest.join("d/x")), "d/x is not a whiteout");
    assert!(
        is_whiteout(&f.dest.join("replaced")),
        "replaced is not a whiteout"
    );
    let mut buf = [0u8; 8];
    let n = lgetxattr(&f.dest.join("d"), "trusted.overlay.opaque", &mut buf)
        .unwrap_or_else(|e| panic!("opaque xattr on d: {e}"));
    assert_eq!(&buf[..n], b"y");
    assert!(lgetxattr(&f.dest, "trusted.overlay.opaque", &mut buf).is_err());
    assert_eq!(fs::read(f.dest.join("d/kept")).unwrap_or_default(), b"k");
    // No .wh.* names survive; the aufs metadata entry is dropped (its dir is created).
    let mut names = Vec::new();
    for dir in [f.dest.clone(), f.dest.join("d"), f.dest.join("e")] {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            names.push(
                e.map(|e| e.file_name().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    assert!(names.iter().all(|n| !n.starts_with(".wh.")), "{names:?}");
}

#[test]
fn metadata_links_devices_and_xattrs_are_kept() {
    let f = fixture();
    let mut t = Tb::new();
    t.raw(EntryType::Directory, b"./", b"", b"", 0o751, (0, 0));
    t.raw(EntryType::Directory, b"d/", b"", b"", 0o750, (1000, 1001));
    t.pax(&[
        ("SCHILY.xattr.user.test", b"value"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("mtime", b"1234567890.5"),
    ]);
    t.raw(
        EntryType::Regular,
        b"d/f",
        b"",
        b"hello",
        0o4755,
        (1000, 1001),
    );
    t.raw(EntryType::Symlink, b"l", b"d/f", b"", 0o777, (7, 8));
    t.raw(EntryType::Symlink, b"up", b"../usr/lib", b"", 0o777, (0, 0));
    t.raw(
        EntryType::Symlink,
        b"abs",
        b"/etc/passwd",
        b"",
        0o777,
        (0, 0),
    );
    // as real layers have it, the link entry carries the inode's own metadata (applied to it)
    t.pax(&[("mtime", b"1234567890.5")]);
    t.raw(EntryType::Link, b"d/h", b"d/f", b"", 0o4755, (1000, 1001));
    t.raw(EntryType::Link, b"d/hl", b"l", b"", 0o777, (7, 8));
    t.raw(EntryType::Fifo, b"p", b"", b"", 0o640, (0, 0));
    let mut dev = Header::new_gnu();
    dev.as_old_mut().name[..8].copy_from_slice(b"dev/null");
    dev.set_entry_type(EntryType::Char);
    dev.set_mode(0o666);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_size(0);
    dev.set_mtime(1_600_000_000);
    dev.set_device_major(1).unwrap_or_else(|e| panic!("{e}"));
    dev.set_device_minor(3).unwrap_or_else(|e| panic!("{e}"));
    dev.set_cksum();
    t.0.append(&dev, &b""[..]).unwrap_or_else(|e| panic!("{e}"));
    t.file("deep/er/file", b"implicit parents");
    // Replacements: a file by a directory, a directory by a file.
    t.file("dup", b"file").dir("dup/").file("dup/in", b"x");
    t.dir("gone/")
        .file("gone/x", b"x")
        .file("gone", b"now a file");
    must_unpack(&f, &t.finish());
    let d = &f.dest;

    let root = fs::metadata(d).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(root.permissions().mode() & 0o7777, 0o751);
    let dm = fs::metadata(d.join("d")).unwrap_or_else(|e| panic!("{e}"));
    assert!(dm.is_dir());
    assert_eq!(dm.permissions().mode() & 0o7777, 0o750);
    assert_eq!((dm.uid(), dm.gid()), (1000, 1001));
    assert_eq!(
        dm.mtime(),
        1_600_000_000,
        "directory mtime must survive its children"
    );

    let fm = fs::metadata(d.join("d/f")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fm.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!((fm.uid(), fm.gid()), (1000, 1001));
    assert_eq!((fm.mtime(), fm.mtime_nsec()), (1_234_567_890, 500_000_000));
    assert_eq!(fs::read(d.join("d/f")).unwrap_or_default(), b"hello");
    let mut buf = [0u8; 16];
    let n = lgetxattr(&d.join("d/f"), "user.test", &mut buf)
        .unwrap_or_else(|e| panic!("user.test: {e}"));
    assert_eq!(&buf[..n], b"value");
    assert!(
        lgetxattr(&d.join("d/f"), "trusted.overlay.redirect", &mut buf).is_err(),
        "overlay xattrs from the tarball must be dropped"
    );

    let lm = fs::symlink_metadata(d.join("l")).unwrap_or_else(|e| panic!("{e}"));
    assert!(lm.file_type().is_symlink());
    assert_eq!((lm.uid(), lm.gid()), (7, 8));
    assert_eq!(lm.mtime(), 1_600_000_000);
    assert_eq!(
        fs::read_link(d.join("l")).unwrap_or_default(),
        Path::new("d/f")
    );
    assert_eq!(
        fs::read_link(d.join("up")).unwrap_or_default(),
        Path::new("../usr/lib")
    );
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap_or_default(),
        Path::new("/etc/passwd")
    );

    let hm = fs::metadata(d.join("d/h")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hm.ino(), fm.ino(), "hard link shares the inode");
    assert_eq!(fm.nlink(), 2);
    let hlm = fs::symlink_metadata(d.join("d/hl")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        hlm.file_type().is_symlink(),
        "a hard link to a symlink links the symlink"
    );
    assert_eq!(hlm.ino(), lm.ino());

    let pm = fs::symlink_metadata(d.join("p")).unwrap_or_else(|e| panic!("{e}"));
    assert!(pm.file_type().is_fifo());
    assert_eq!(pm.permissions().mode() & 0o7777, 0o640);
    let nm = fs::symlink_metadata(d.join("dev/null")).unwrap_or_else(|e| panic!("{e}"));
    assert!(nm.file_type().is_char_device());
    assert_eq!(nm.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(nm.permissions().mode() & 0o7777, 0o666);

    assert_eq!(
        fs::read(d.join("deep/er/file")).unwrap_or_default(),
        b"implicit parents"
    );
    let im = fs::metadata(d.join("deep/er")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(im.permissions().mode() & 0o7777, 0o755);
    assert!(fs::metadata(d.join("dup")).is_ok_and(|m| m.is_dir()));
    assert_eq!(fs::read(d.join("dup/in")).unwrap_or_default(), b"x");
    assert_eq!(fs::read(d.join("gone")).unwrap_or_default(), b"now a file");
}

fn write_blob(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A zstd frame made of raw (stored) blocks: valid zstd that needs no compressor.
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    out.push(0x00); // frame header descriptor: no content size, no checksum, no dictionary
    out.push(10 << 3); // window descriptor: 2^(10+10) = 1 MiB
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(100_000).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = u32::from(i == chunks.len() - 1);
        let header = last | ((chunk.len() as u32) << 3); // block type 0 = raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn compressed_layers() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut t = Tb::new();
    t.file("bin/tool", &vec![42u8; 300_000])
        .file("etc/conf", b"conf");
    let tar = t.finish();
    let id = diff_id(&tar);

    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        e.finish().unwrap_or_else(|e| panic!("{e}"))
    };
    // Plain, gzip, gzip in two members, zstd in two frames with a skippable frame between.
    let (a, b) = tar.split_at(200_000);
    let mut two_members = gz(a);
    two_members.extend(gz(b));
    let mut zstd = zstd_raw_frame(a);
    zstd.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    zstd.extend_from_slice(&5u32.to_le_bytes());
    zstd.extend_from_slice(b"skip!");
    zstd.extend(zstd_raw_frame(b));
    for (name, blob) in [
        ("plain", tar.clone()),
        ("gzip", gz(&tar)),
        ("gzip2", two_members),
        ("zstd", zstd),
    ] {
        let path = write_blob(tmp.path(), name, &blob);
        let dest = tmp.path().join(format!("{name}.layer"));
        if let Err(e) = unpack_layer(&path, name, &id, &dest) {
            panic!("{name}: {e}");
        }
        assert_eq!(
            fs::read(dest.join("bin/tool")).unwrap_or_default(),
            vec![42u8; 300_000],
            "{name}"
        );
        assert_eq!(
            fs::read(dest.join("etc/conf")).unwrap_or_default(),
            b"conf",
            "{name}"
        );
    }

    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.extend_from_slice(&[0; 32]);
    let path = write_blob(tmp.path(), "xz", &xz);
    let dest = tmp.path().join("xz.layer");
    match unpack_layer(&path, "sha256:xzlayer", &id, &dest) {
        Err(e @ ImageError::Layer { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("xz compression is not supported") && msg.contains("sha256:xzlayer"),
                "{msg}"
            );
        }
        other => panic!("xz: {other:?}"),
    }
    assert!(!dest.exists());

    // Corrupt gzip: an error, no directory.
    let mut bad = gz(&tar);
    let mid = bad.len() / 2;
    bad[mid..mid + 64].fill(0xff);
    let path = write_blob(tmp.path(), "badgz", &bad);
    let dest = tmp.path().join("badgz.layer");
    assert!(unpack_layer(&path, "badgz", &id, &dest).is_err());
    assert!(!dest.exists());
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn overlayfs_takes_the_layers_as_lowerdirs() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut t = Tb::new();
    t.file("a", b"a").file("d/x", b"x").file("keep", b"k");
    let base = t.finish();
    let mut t = Tb::new();
    t.file(".wh.a", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/y", b"y");
    let top = t.finish();
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    for (tar, dir) in [(&base, &l1), (&top, &l2)] {
        if let Err(e) = unpack_stream(Cursor::new(tar), "layer", &diff_id(tar), dir) {
            panic!("unpack: {e}");
        }
    }
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap_or_else(|e| panic!("{e}"));
    let opts = format!("lowerdir={}:{}", l2.display(), l1.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay {opts}: {e}"));
    let _guard = Mounted(merged.clone());
    let mut top_names: Vec<String> = fs::read_dir(&merged)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    top_names.sort();
    assert_eq!(top_names, vec!["d", "keep"], "the whiteout hides a");
    let d_names: Vec<String> = fs::read_dir(merged.join("d"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(d_names, vec!["y"], "the opaque directory hides d/x");
}

/// PAX sparse files (GNU tar `--sparse --format=pax`): format 1.0 (the map at the start of
/// the data, padded to a block) and 0.1 (the map in GNU.sparse.map) are expanded under their
/// real names, holes included.
#[test]
fn pax_sparse_files_are_expanded() {
    let f = fixture();
    let mut t = Tb::new();
    // 1.0: map "2 fragments: 0+4, 1 MiB+6", then the fragments' data
    let mut data = b"2\n0\n4\n1048576\n6\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"headmiddle");
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"s/one"),
        ("GNU.sparse.realsize", b"2097152"),
    ]);
    t.raw(
        EntryType::Regular,
        b"s/GNUSparseFile.1/one",
        b"",
        &data,
        0o640,
        (0, 0),
    );
    // 0.1: the map in a header
    t.pax(&[
        ("GNU.sparse.map", b"4096,3,8192,4"),
        ("GNU.sparse.name", b"s/two"),
        ("GNU.sparse.realsize", b"10000"),
    ]);
    t.raw(
        EntryType::Regular,
        b"s/GNUSparseFile.1/two",
        b"",
        b"abcdefg",
        0o644,
        (0, 0),
    );
    must_unpack(&f, &t.finish());
    assert!(!f.dest.join("s/GNUSparseFile.1").exists());
    let one = fs::read(f.dest.join("s/one")).unwrap_or_default();
    let mut want = vec![0u8; 2097152];
    want[..4].copy_from_slice(b"head");
    want[1048576..1048582].copy_from_slice(b"middle");
    assert!(
        one == want,
        "s/one: {} bytes, not the expanded file",
        one.len()
    );
    let blocks = fs::metadata(f.dest.join("s/one"))
        .map(|m| m.blocks())
        .unwrap_or(0);
    assert!(
        blocks < 2097152 / 512,
        "the hole was written: {blocks} blocks"
    );
    let two = fs::read(f.dest.join("s/two")).unwrap_or_default();
    let mut want = vec![0u8; 10000];
    want[4096..4099].copy_from_slice(b"abc");
    want[8192..8196].copy_from_slice(b"defg");
    assert!(two == want, "s/two: {} bytes", two.len());
    // A map running past the real size is refused.
    let f = fixture();
    let mut t = Tb::new();
    t.pax(&[
        ("GNU.sparse.map", b"0,3,50,4"),
        ("GNU.sparse.name", b"bad"),
        ("GNU.sparse.realsize", b"52"),
    ]);
    t.raw(EntryType::Regular, b"x", b"", b"abcdefg", 0o644, (0, 0));
    assert_refused(&f, &t.finish(), "bad", "past the size");
}

/// A hard link entry's metadata goes to the inode it shares, as containerd and docker do.
#[test]
fn hard_link_entries_carry_their_metadata() {
    let f = fixture();
    let mut t = Tb::new();
    t.raw(
        EntryType::Regular,
        b"orig",
        b"",
        b"data",
        0o640,
        (1000, 1000),
    );
    t.raw(EntryType::Link, b"link", b"orig", b"", 0o644, (0, 0));
    t.symlink("sym", "/etc/passwd");
    t.raw(EntryType::Link, b"symlink-link", b"sym", b"", 0o600, (7, 7));
    must_unpack(&f, &t.finish());
    let md = fs::metadata(f.dest.join("orig")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((md.mode() & 0o7777, md.uid(), md.nlink()), (0o644, 0, 2));
    // A link to a symlink: owned as said, never chmod'ed through.
    let md = fs::symlink_metadata(f.dest.join("symlink-link")).unwrap_or_else(|e| panic!("{e}"));
    assert!(md.file_type().is_symlink());
    assert_eq!(md.uid(), 7);
}
