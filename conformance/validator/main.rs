//! `oci-validate`: runs INSIDE a container and checks the live process and its environment
//! against the config.json the conformance runner placed at `/.oci-validate/config.json`.
//!
//! Deliberately dependency-free (std + a few raw libc calls) so it can be linked statically
//! against glibc (`-C target-feature=+crt-static`) and run in a busybox rootfs without a libc.
//!
//! Usage: `oci-validate [GROUP ...]` where GROUP is one of the check groups below (default: all),
//! or the special modes `cwd-escape` / `exe-write`.
//! Output: one line per check, `ok - NAME: detail` or `not ok - NAME: expected X, got Y`;
//! exit status 0 when every check passed, 1 otherwise, 2 when the inputs could not be read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

const DIR: &str = "/.oci-validate";

// ---------------------------------------------------------------------------------------------
// Raw libc calls (small, commented wrappers).

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

#[repr(C)]
struct Utsname {
    sysname: [u8; 65],
    nodename: [u8; 65],
    release: [u8; 65],
    version: [u8; 65],
    machine: [u8; 65],
    domainname: [u8; 65],
}

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn getpid() -> i32;
    fn getgroups(size: i32, list: *mut u32) -> i32;
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn uname(buf: *mut Utsname) -> i32;
    fn isatty(fd: i32) -> i32;
    fn ioctl(fd: i32, req: u64, ...) -> i32;
}

#[repr(C)]
struct Winsize {
    row: u16,
    col: u16,
    xpixel: u16,
    ypixel: u16,
}

fn sys_winsize(fd: i32) -> Option<(u16, u16)> {
    let mut w = Winsize {
        row: 0,
        col: 0,
        xpixel: 0,
        ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ (0x5413) writes a struct winsize into w.
    let rc = unsafe { ioctl(fd, 0x5413, &mut w as *mut Winsize) };
    if rc == 0 {
        Some((w.row, w.col))
    } else {
        None
    }
}

fn sys_ids() -> (u32, u32, i32) {
    // SAFETY: getuid/getgid/getpid take no arguments and cannot fail.
    unsafe { (getuid(), getgid(), getpid()) }
}

fn sys_groups() -> Vec<u32> {
    let mut buf = vec![0u32; 1024];
    // SAFETY: buf has room for 1024 gids and we pass that size.
    let n = unsafe { getgroups(buf.len() as i32, buf.as_mut_ptr()) };
    if n < 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    buf
}

fn sys_rlimit(res: i32) -> Option<(u64, u64)> {
    let mut r = Rlimit { cur: 0, max: 0 };
    // SAFETY: r is a valid, writable struct rlimit (two u64 on x86_64/aarch64 Linux).
    let rc = unsafe { getrlimit(res, &mut r) };
    if rc == 0 {
        Some((r.cur, r.max))
    } else {
        None
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn sys_uname() -> Option<(String, String)> {
    let mut u = Utsname {
        sysname: [0; 65],
        nodename: [0; 65],
        release: [0; 65],
        version: [0; 65],
        machine: [0; 65],
        domainname: [0; 65],
    };
    // SAFETY: u is a writable struct utsname with the glibc Linux layout (6 x 65 bytes).
    let rc = unsafe { uname(&mut u) };
    if rc != 0 {
        return None;
    }
    Some((cstr(&u.nodename), cstr(&u.domainname)))
}

fn sys_isatty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { isatty(fd) == 1 }
}

// ---------------------------------------------------------------------------------------------
// Minimal JSON parser (objects, arrays, strings with escapes, numbers kept as text, literals).

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("JSON: {what} at byte {}", self.i))
    }
    fn value(&mut self) -> Result<J, String> {
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(J::Obj(v));
                }
                loop {
                    self.ws();
                    let k = match self.value()? {
                        J::Str(k) => k,
                        _ => return self.err("object key is not a string"),
                    };
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err("expected ':'");
                    }
                    self.i += 1;
                    let val = self.value()?;
                    v.push((k, val));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(v));
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(J::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(v));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut out: Vec<u8> = Vec::new();
                loop {
                    let c = match self.s.get(self.i) {
                        Some(c) => *c,
                        None => return self.err("unterminated string"),
                    };
                    self.i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let e = match self.s.get(self.i) {
                                Some(e) => *e,
                                None => return self.err("bad escape"),
                            };
                            self.i += 1;
                            match e {
                                b'n' => out.push(b'\n'),
                                b't' => out.push(b'\t'),
                                b'r' => out.push(b'\r'),
                                b'b' => out.push(8),
                                b'f' => out.push(12),
                                b'u' => {
                                    let hex = self.s.get(self.i..self.i + 4).unwrap_or(b"");
                                    let h = std::str::from_utf8(hex).unwrap_or("");
                                    let cp = match u32::from_str_radix(h, 16) {
                                        Ok(cp) => cp,
                                        Err(_) => return self.err("bad \\u escape"),
                                    };
                                    self.i += 4;
                                    let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                                    let mut b = [0u8; 4];
                                    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                                }
                                other => out.push(other),
                            }
                        }
                        c => out.push(c),
                    }
                }
                Ok(J::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(J::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(J::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(J::Null)
            }
            Some(_) => {
                let st = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                if st == self.i {
                    return self.err("unexpected character");
                }
                Ok(J::Num(
                    String::from_utf8_lossy(&self.s[st..self.i]).into_owned(),
                ))
            }
        }
    }
}

impl J {
    fn get(&self, k: &str) -> Option<&J> {
        match self {
            J::Obj(v) => v.iter().rev().find(|(kk, _)| kk == k).map(|(_, v)| v),
            _ => None,
        }
    }
    fn path(&self, p: &[&str]) -> Option<&J> {
        let mut cur = self;
        for k in p {
            cur = cur.get(k)?;
        }
        Some(cur)
    }
    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    fn u64(&self) -> Option<u64> {
        match self {
            J::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
    fn i64(&self) -> Option<i64> {
        match self {
            J::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
    fn bool(&self) -> Option<bool> {
        match self {
            J::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(v) => v,
            _ => &[],
        }
    }
    fn strs(&self) -> Vec<String> {
        self.arr()
            .iter()
            .filter_map(|x| x.str().map(String::from))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Report {
    failed: usize,
    passed: usize,
}

impl Report {
    fn ok(&mut self, name: &str, detail: &str) {
        self.passed += 1;
        println!("ok - {name}: {detail}");
    }
    fn fail(&mut self, name: &str, msg: &str) {
        self.failed += 1;
        println!("not ok - {name}: {msg}");
    }
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, name: &str, expected: T, got: T) {
        if expected == got {
            self.ok(name, &format!("{got:?}"));
        } else {
            self.fail(name, &format!("expected {expected:?}, got {got:?}"));
        }
    }
    fn check(&mut self, name: &str, cond: bool, detail: &str) {
        if cond {
            self.ok(name, detail);
        } else {
            self.fail(name, detail);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn status_field(key: &str) -> Option<String> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

struct MountInfo {
    id: String,
    parent: String,
    root: String,
    point: String,
    opts: BTreeSet<String>,
    optional: Vec<String>,
    fstype: String,
    source: String,
    super_opts: BTreeMap<String, String>,
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mountinfo() -> Vec<MountInfo> {
    let s = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v = Vec::new();
    for line in s.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let sep = match parts.iter().position(|p| *p == "-") {
            Some(x) => x,
            None => continue,
        };
        if parts.len() < sep + 4 || sep < 6 {
            continue;
        }
        let super_opts = parts[sep + 3]
            .split(',')
            .map(|o| match o.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (o.to_string(), String::new()),
            })
            .collect();
        v.push(MountInfo {
            id: parts[0].to_string(),
            parent: parts[1].to_string(),
            root: unescape_octal(parts[3]),
            point: unescape_octal(parts[4]),
            opts: parts[5].split(',').map(String::from).collect(),
            optional: parts[6..sep].iter().map(|x| x.to_string()).collect(),
            fstype: parts[sep + 1].to_string(),
            source: unescape_octal(parts[sep + 2]),
            super_opts,
        });
    }
    v
}

fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn last_mount<'a>(mi: &'a [MountInfo], point: &str) -> Option<&'a MountInfo> {
    let p = clean_path(point);
    mi.iter().rev().find(|m| m.point == p)
}

fn propagation(m: &MountInfo) -> &'static str {
    if m.optional.iter().any(|o| o.starts_with("shared:")) {
        "shared"
    } else if m.optional.iter().any(|o| o.starts_with("master:")) {
        "slave"
    } else if m.optional.iter().any(|o| o == "unbindable") {
        "unbindable"
    } else {
        "private"
    }
}

fn errno_of(r: std::io::Result<()>) -> Option<i32> {
    match r {
        Ok(()) => None,
        Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
    }
}

const EROFS: i32 = 30;

const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_mask(names: &[String]) -> u64 {
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(40);
    let mut m = 0u64;
    for n in names {
        if let Some(i) = CAPS.iter().position(|c| c == n) {
            if i <= last {
                m |= 1 << i;
            }
        }
    }
    m
}

fn cap_names(mask: u64) -> String {
    let v: Vec<&str> = (0..64)
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| CAPS.get(i).copied().unwrap_or("CAP_?"))
        .collect();
    format!("{mask:016x} [{}]", v.join(","))
}

fn rlimit_num(name: &str) -> Option<i32> {
    let names = [
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
        "RLIMIT_DATA",
        "RLIMIT_STACK",
        "RLIMIT_CORE",
        "RLIMIT_RSS",
        "RLIMIT_NPROC",
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
        "RLIMIT_AS",
        "RLIMIT_LOCKS",
        "RLIMIT_SIGPENDING",
        "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",
        "RLIMIT_RTPRIO",
        "RLIMIT_RTTIME",
    ];
    names.iter().position(|n| *n == name).map(|i| i as i32)
}

fn ns_ino(path: &str) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

fn dev_major(rdev: u64) -> u64 {
    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)
}

fn dev_minor(rdev: u64) -> u64 {
    (rdev & 0xff) | ((rdev >> 12) & !0xff)
}

/// Size option values like `65536k`, `64m`, `1g`, or plain bytes, to bytes.
fn size_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mul) = match v.chars().last() {
        Some('k') | Some('K') => (&v[..v.len() - 1], 1024),
        Some('m') | Some('M') => (&v[..v.len() - 1], 1024 * 1024),
        Some('g') | Some('G') => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mul)
}

fn octal_norm(v: &str) -> String {
    u32::from_str_radix(v, 8)
        .map(|n| format!("{n:o}"))
        .unwrap_or_else(|_| v.to_string())
}

// ---------------------------------------------------------------------------------------------
// Checks

struct Env {
    cfg: J,
    expect: BTreeMap<String, Vec<String>>, // key -> values (a key may repeat)
    mounts: Vec<MountInfo>,
}

impl Env {
    fn expect1(&self, k: &str) -> Option<&str> {
        self.expect
            .get(k)
            .and_then(|v| v.first())
            .map(|s| s.as_str())
    }
}

fn check_args(e: &Env, r: &mut Report) {
    let want = e
        .cfg
        .path(&["process", "args"])
        .map(|a| a.strs())
        .unwrap_or_default();
    let got: Vec<String> = std::env::args().collect();
    r.eq("process.args", want, got);
}

fn check_env(e: &Env, r: &mut Report) {
    let want = e
        .cfg
        .path(&["process", "env"])
        .map(|a| a.strs())
        .unwrap_or_default();
    let got: BTreeMap<String, String> = std::env::vars().collect();
    let mut wanted_keys = BTreeSet::new();
    for w in &want {
        let (k, v) = w.split_once('=').unwrap_or((w.as_str(), ""));
        wanted_keys.insert(k.to_string());
        match got.get(k) {
            Some(g) if g == v => r.ok(&format!("process.env {k}"), v),
            Some(g) => r.fail(
                &format!("process.env {k}"),
                &format!("expected {v:?}, got {g:?}"),
            ),
            None => r.fail(
                &format!("process.env {k}"),
                &format!("expected {v:?}, unset"),
            ),
        }
    }
    // Runtimes commonly add HOME when it is not configured; the runner may allow more
    // (`allow_env KEY`, e.g. LISTEN_FDS); anything else is a leak.
    let allowed: Vec<String> = e.expect.get("allow_env").cloned().unwrap_or_default();
    let extra: Vec<&String> = got
        .keys()
        .filter(|k| !wanted_keys.contains(*k) && k.as_str() != "HOME" && !allowed.contains(k))
        .collect();
    r.check(
        "process.env no extra variables",
        extra.is_empty(),
        &format!("unexpected: {extra:?}"),
    );
}

fn check_cwd(e: &Env, r: &mut Report) {
    let want = e
        .cfg
        .path(&["process", "cwd"])
        .and_then(|c| c.str())
        .map(clean_path)
        .unwrap_or_else(|| "/".into());
    let got = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("getcwd: {e}"));
    r.eq("process.cwd", want, got);
}

fn check_user(e: &Env, r: &mut Report) {
    let u = e.cfg.path(&["process", "user"]);
    let uid = u
        .and_then(|u| u.get("uid"))
        .and_then(|x| x.u64())
        .unwrap_or(0) as u32;
    let gid = u
        .and_then(|u| u.get("gid"))
        .and_then(|x| x.u64())
        .unwrap_or(0) as u32;
    let (guid, ggid, _) = sys_ids();
    r.eq("process.user.uid", uid, guid);
    r.eq("process.user.gid", gid, ggid);
    let want: BTreeSet<u32> = u
        .and_then(|u| u.get("additionalGids"))
        .map(|a| {
            a.arr()
                .iter()
                .filter_map(|x| x.u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    let mut got: BTreeSet<u32> = sys_groups().into_iter().collect();
    // The primary gid may appear in the supplementary list; it grants nothing extra.
    if !want.contains(&gid) {
        got.remove(&gid);
    }
    r.eq("process.user.additionalGids", want, got);
    if let Some(um) = u.and_then(|u| u.get("umask")).and_then(|x| x.u64()) {
        let got = status_field("Umask").unwrap_or_default();
        r.eq(
            "process.user.umask",
            format!("{um:04o}"),
            format!("{:04o}", u32::from_str_radix(&got, 8).unwrap_or(u32::MAX)),
        );
    }
}

fn check_caps(e: &Env, r: &mut Report) {
    let c = match e.cfg.path(&["process", "capabilities"]) {
        Some(c) => c,
        None => return,
    };
    let set = |k: &str| c.get(k).map(|a| cap_mask(&a.strs())).unwrap_or(0);
    let (bnd, eff, prm, inh, amb) = (
        set("bounding"),
        set("effective"),
        set("permitted"),
        set("inheritable"),
        set("ambient"),
    );
    let _ = eff;
    let uid = e
        .cfg
        .path(&["process", "user", "uid"])
        .and_then(|x| x.u64())
        .unwrap_or(0);
    // What the kernel can grant across execve of a binary without file capabilities:
    // ambient needs each cap in permitted and inheritable; root gets bounding|inheritable.
    let amb_x = amb & inh & prm;
    let (prm_x, eff_x) = if uid == 0 {
        let p = (bnd | inh) | amb_x;
        (p, p)
    } else {
        (amb_x, amb_x)
    };
    for (key, want) in [
        ("CapBnd", bnd),
        ("CapInh", inh),
        ("CapAmb", amb_x),
        ("CapPrm", prm_x),
        ("CapEff", eff_x),
    ] {
        let got = status_field(key)
            .and_then(|h| u64::from_str_radix(&h, 16).ok())
            .unwrap_or(u64::MAX);
        if got == want {
            r.ok(&format!("capabilities {key}"), &cap_names(got));
        } else {
            r.fail(
                &format!("capabilities {key}"),
                &format!("expected {}, got {}", cap_names(want), cap_names(got)),
            );
        }
    }
}

fn check_nnp(e: &Env, r: &mut Report) {
    let want = e
        .cfg
        .path(&["process", "noNewPrivileges"])
        .and_then(|x| x.bool())
        .unwrap_or(false);
    let got = status_field("NoNewPrivs").unwrap_or_default();
    r.eq(
        "process.noNewPrivileges",
        if want { "1" } else { "0" }.to_string(),
        got,
    );
}

fn check_rlimits(e: &Env, r: &mut Report) {
    for rl in e
        .cfg
        .path(&["process", "rlimits"])
        .map(|a| a.arr())
        .unwrap_or(&[])
    {
        let ty = rl.get("type").and_then(|x| x.str()).unwrap_or("");
        let name = format!("process.rlimits {ty}");
        let res = match rlimit_num(ty) {
            Some(n) => n,
            None => {
                r.fail(&name, "unknown rlimit type in config");
                continue;
            }
        };
        let soft = rl.get("soft").and_then(|x| x.u64()).unwrap_or(0);
        let hard = rl.get("hard").and_then(|x| x.u64()).unwrap_or(0);
        r.eq(&name, Some((soft, hard)), sys_rlimit(res));
    }
}

fn check_oom(e: &Env, r: &mut Report) {
    if let Some(want) = e
        .cfg
        .path(&["process", "oomScoreAdj"])
        .and_then(|x| x.i64())
    {
        let got = fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        r.eq("process.oomScoreAdj", Some(want), got);
    }
}

fn check_hostname(e: &Env, r: &mut Report) {
    let (node, domain) = sys_uname().unwrap_or_default();
    if let Some(h) = e.cfg.get("hostname").and_then(|x| x.str()) {
        r.eq("hostname", h.to_string(), node);
    }
    if let Some(d) = e.cfg.get("domainname").and_then(|x| x.str()) {
        r.eq("domainname", d.to_string(), domain);
    }
}

fn check_namespaces(e: &Env, r: &mut Report) {
    let nss = e
        .cfg
        .path(&["linux", "namespaces"])
        .map(|a| a.arr())
        .unwrap_or(&[]);
    let map = [
        ("mount", "mnt"),
        ("uts", "uts"),
        ("ipc", "ipc"),
        ("pid", "pid"),
        ("network", "net"),
        ("cgroup", "cgroup"),
        ("user", "user"),
        ("time", "time"),
    ];
    let host: BTreeMap<String, u64> = e
        .expect
        .get("hostns")
        .map(|v| {
            v.iter()
                .filter_map(|l| {
                    let (k, i) = l.split_once(' ')?;
                    Some((k.to_string(), i.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let joined: BTreeMap<String, u64> = e
        .expect
        .get("nspath")
        .map(|v| {
            v.iter()
                .filter_map(|l| {
                    let (k, i) = l.split_once(' ')?;
                    Some((k.to_string(), i.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    for (ty, proc_name) in map {
        let entry = nss
            .iter()
            .find(|n| n.get("type").and_then(|t| t.str()) == Some(ty));
        let got = match ns_ino(&format!("/proc/self/ns/{proc_name}")) {
            Some(i) => i,
            None => {
                if entry.is_some() {
                    r.fail(&format!("namespace {ty}"), "no /proc/self/ns entry");
                }
                continue;
            }
        };
        let host_ino = host.get(proc_name).copied();
        let name = format!("namespace {ty}");
        match entry {
            None => match host_ino {
                Some(h) => r.check(
                    &name,
                    got == h,
                    &format!("expected the host's (inode {h}), got inode {got}"),
                ),
                None => r.ok(&name, "host inode unknown; not compared"),
            },
            Some(en) => {
                if en.get("path").and_then(|p| p.str()).is_some() {
                    match joined.get(proc_name) {
                        Some(w) => r.check(
                            &name,
                            got == *w,
                            &format!("expected to join inode {w}, got inode {got}"),
                        ),
                        None => r.fail(&name, "runner gave no expected inode for the path"),
                    }
                } else {
                    match host_ino {
                        Some(h) => r.check(
                            &name,
                            got != h,
                            &format!("expected a new namespace, got inode {got} (host {h})"),
                        ),
                        None => r.ok(&name, "host inode unknown; not compared"),
                    }
                    if ty == "cgroup" {
                        // The container's cgroups are the roots of its cgroup namespace.
                        let cg = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                        let not_root: Vec<&str> = cg
                            .lines()
                            .filter(|l| l.splitn(3, ':').nth(2).map(|p| p != "/").unwrap_or(true))
                            .collect();
                        r.check(
                            "namespace cgroup: /proc/self/cgroup paths are /",
                            not_root.is_empty(),
                            &format!("lines not at the namespace root: {not_root:?}"),
                        );
                    }
                    if ty == "time" {
                        if let Some(J::Obj(offs)) = e.cfg.path(&["linux", "timeOffsets"]) {
                            let got =
                                fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
                            for (clock, v) in offs {
                                let secs = v.get("secs").and_then(|x| x.i64()).unwrap_or(0);
                                let nanos = v.get("nanosecs").and_then(|x| x.u64()).unwrap_or(0);
                                let line = got
                                    .lines()
                                    .find(|l| l.split_whitespace().next() == Some(clock.as_str()))
                                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
                                r.eq(
                                    &format!("linux.timeOffsets {clock}"),
                                    Some(format!("{clock} {secs} {nanos}")),
                                    line,
                                );
                            }
                        }
                    }
                    if ty == "pid" {
                        let (_, _, pid) = sys_ids();
                        r.eq("namespace pid: process is pid 1", 1, pid);
                    }
                }
            }
        }
    }
}

fn check_root(e: &Env, r: &mut Report) {
    let ro = e
        .cfg
        .path(&["root", "readonly"])
        .and_then(|x| x.bool())
        .unwrap_or(false);
    let m = last_mount(&e.mounts, "/");
    let probe = "/.oci-validate-rootfs-probe";
    let res = fs::write(probe, b"x");
    if res.is_ok() {
        let _ = fs::remove_file(probe);
    }
    let errno = errno_of(res);
    if ro {
        r.check(
            "root.readonly: / mounted ro",
            m.map(|m| m.opts.contains("ro")).unwrap_or(false),
            &format!("options {:?}", m.map(|m| &m.opts)),
        );
        r.eq(
            "root.readonly: write to / fails with EROFS",
            Some(EROFS),
            errno,
        );
    } else {
        r.eq("root writable (readonly=false)", None, errno);
    }
    if let Some(p) = e
        .cfg
        .path(&["linux", "rootfsPropagation"])
        .and_then(|x| x.str())
    {
        let want = match p {
            "shared" | "rshared" => "shared",
            "slave" | "rslave" => "slave",
            "unbindable" | "runbindable" => "unbindable",
            _ => "private",
        };
        r.eq(
            "linux.rootfsPropagation",
            want.to_string(),
            m.map(|m| propagation(m).to_string()).unwrap_or_default(),
        );
    }
}

fn check_mounts(e: &Env, r: &mut Report) {
    let binds: BTreeMap<String, (u64, u64)> = e
        .expect
        .get("bind")
        .map(|v| {
            v.iter()
                .filter_map(|l| {
                    let mut it = l.split(' ');
                    let d = it.next()?.to_string();
                    let dev = it.next()?.parse().ok()?;
                    let ino = it.next()?.parse().ok()?;
                    Some((d, (dev, ino)))
                })
                .collect()
        })
        .unwrap_or_default();
    for mnt in e.cfg.get("mounts").map(|a| a.arr()).unwrap_or(&[]) {
        let dest = match mnt.get("destination").and_then(|x| x.str()) {
            Some(d) => clean_path(d),
            None => continue,
        };
        let ty = mnt.get("type").and_then(|x| x.str()).unwrap_or("");
        let opts = mnt.get("options").map(|o| o.strs()).unwrap_or_default();
        let is_bind = ty == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        let name = format!("mount {dest}");
        let m = match last_mount(&e.mounts, &dest) {
            Some(m) => m,
            None => {
                r.fail(
                    &name,
                    "no mount at this destination in /proc/self/mountinfo",
                );
                continue;
            }
        };
        if !is_bind {
            let ok = match ty {
                // cgroup v1 hosts: a tmpfs with one mount per hierarchy below it.
                "cgroup" => matches!(m.fstype.as_str(), "cgroup" | "cgroup2" | "tmpfs"),
                t => m.fstype == t,
            };
            r.check(
                &format!("{name} type"),
                ok,
                &format!("expected {ty}, got {}", m.fstype),
            );
        } else if let Some((dev, ino)) = binds.get(&dest) {
            match fs::metadata(&dest) {
                Ok(md) => r.check(
                    &format!("{name} bind source"),
                    md.dev() == *dev && md.ino() == *ino,
                    &format!(
                        "expected dev {dev} ino {ino}, got dev {} ino {}",
                        md.dev(),
                        md.ino()
                    ),
                ),
                Err(err) => r.fail(&format!("{name} bind source"), &format!("stat: {err}")),
            }
        }
        let _ = (&m.root, &m.source);
        for o in &opts {
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            let oname = format!("{name} option {o}");
            match k {
                "ro" | "nosuid" | "nodev" | "noexec" | "noatime" | "nodiratime" => {
                    if ty == "cgroup" && m.fstype == "tmpfs" {
                        // cgroup v1: a tmpfs holding one mount per hierarchy. The option must
                        // hold for every hierarchy mount below it.
                        let subs: Vec<&MountInfo> =
                            e.mounts.iter().filter(|x| x.parent == m.id).collect();
                        let bad: Vec<&str> = subs
                            .iter()
                            .filter(|x| !x.opts.contains(k))
                            .map(|x| x.point.as_str())
                            .collect();
                        r.check(
                            &format!("{oname} (every cgroup v1 hierarchy below)"),
                            !subs.is_empty() && bad.is_empty(),
                            &format!("{} hierarchies, without {k}: {bad:?}", subs.len()),
                        );
                    } else {
                        r.check(
                            &oname,
                            m.opts.contains(k),
                            &format!("mount options {:?}", m.opts),
                        )
                    }
                }
                "rw" if !opts.iter().any(|x| x == "ro") => r.check(
                    &oname,
                    m.opts.contains("rw"),
                    &format!("mount options {:?}", m.opts),
                ),
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                | "unbindable" | "runbindable" => {
                    let want = k.trim_start_matches('r');
                    let want = if want == "unbindable" {
                        "unbindable"
                    } else {
                        want
                    };
                    r.eq(&oname, want.to_string(), propagation(m).to_string());
                }
                "mode" | "ptmxmode" => {
                    let mut got = m.super_opts.get(k).map(|g| octal_norm(g));
                    // tmpfs does not show its default mode (1777).
                    if got.is_none() && k == "mode" && m.fstype == "tmpfs" {
                        got = Some("1777".into());
                    }
                    r.eq(&oname, Some(octal_norm(v)), got);
                }
                "size" if ty == "tmpfs" => {
                    let got = m.super_opts.get("size").and_then(|g| size_bytes(g));
                    r.eq(&oname, size_bytes(v), got);
                }
                "gid" | "uid" if ty == "tmpfs" || ty == "devpts" => {
                    // Some filesystems show ids as seen from the initial user namespace.
                    let maps = if k == "uid" {
                        "uidMappings"
                    } else {
                        "gidMappings"
                    };
                    let mapped = v
                        .parse::<u64>()
                        .ok()
                        .and_then(|id| map_id(&e.cfg, maps, id));
                    let got = m.super_opts.get(k).cloned();
                    let ok = got.as_deref() == Some(v)
                        || (mapped.is_some()
                            && got.as_deref() == mapped.map(|x| x.to_string()).as_deref());
                    r.check(
                        &oname,
                        ok,
                        &format!("expected {v} (host {mapped:?}), got {got:?}"),
                    );
                }
                _ => {}
            }
        }
    }
}

/// Map a container id to the host id through linux.uidMappings/gidMappings.
fn map_id(cfg: &J, key: &str, id: u64) -> Option<u64> {
    for m in cfg.path(&["linux", key]).map(|a| a.arr()).unwrap_or(&[]) {
        let c = m.get("containerID").and_then(|x| x.u64())?;
        let h = m.get("hostID").and_then(|x| x.u64())?;
        let n = m.get("size").and_then(|x| x.u64())?;
        if id >= c && id < c + n {
            return Some(h + (id - c));
        }
    }
    None
}

fn check_devices(e: &Env, r: &mut Report) {
    for d in e
        .cfg
        .path(&["linux", "devices"])
        .map(|a| a.arr())
        .unwrap_or(&[])
    {
        let path = d.get("path").and_then(|x| x.str()).unwrap_or("");
        let name = format!("linux.devices {path}");
        let md = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(err) => {
                r.fail(&name, &format!("stat: {err}"));
                continue;
            }
        };
        let ty = d.get("type").and_then(|x| x.str()).unwrap_or("");
        let ft = md.file_type();
        let ok_type = match ty {
            "c" | "u" => ft.is_char_device(),
            "b" => ft.is_block_device(),
            "p" => ft.is_fifo(),
            _ => false,
        };
        r.check(
            &format!("{name} type"),
            ok_type,
            &format!("expected {ty}, got {ft:?}"),
        );
        if ty != "p" {
            let maj = d.get("major").and_then(|x| x.u64());
            let min = d.get("minor").and_then(|x| x.u64());
            r.eq(
                &format!("{name} major:minor"),
                (maj, min),
                (Some(dev_major(md.rdev())), Some(dev_minor(md.rdev()))),
            );
        }
        if let Some(mode) = d.get("fileMode").and_then(|x| x.u64()) {
            r.eq(
                &format!("{name} fileMode"),
                format!("{:o}", mode & 0o7777),
                format!("{:o}", md.mode() & 0o7777),
            );
        }
        if let Some(uid) = d.get("uid").and_then(|x| x.u64()) {
            r.eq(&format!("{name} uid"), uid as u32, md.uid());
        }
        if let Some(gid) = d.get("gid").and_then(|x| x.u64()) {
            r.eq(&format!("{name} gid"), gid as u32, md.gid());
        }
    }
}

fn check_default_devices(e: &Env, r: &mut Report) {
    for (p, maj, min) in [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ] {
        let name = format!("default device {p}");
        match fs::metadata(p) {
            Ok(md) => {
                let ok = md.file_type().is_char_device()
                    && dev_major(md.rdev()) == maj
                    && dev_minor(md.rdev()) == min
                    && md.mode() & 0o666 == 0o666;
                r.check(
                    &name,
                    ok,
                    &format!(
                        "expected char {maj}:{min} rw-rw-rw-, got {:?} {}:{} mode {:o}",
                        md.file_type(),
                        dev_major(md.rdev()),
                        dev_minor(md.rdev()),
                        md.mode() & 0o7777
                    ),
                );
            }
            Err(err) => r.fail(&name, &format!("stat: {err}")),
        }
    }
    for (p, targets) in [
        ("/dev/fd", &["/proc/self/fd"][..]),
        ("/dev/stdin", &["/proc/self/fd/0"][..]),
        ("/dev/stdout", &["/proc/self/fd/1"][..]),
        ("/dev/stderr", &["/proc/self/fd/2"][..]),
    ] {
        let got = fs::read_link(p).map(|t| t.display().to_string());
        r.check(
            &format!("default symlink {p}"),
            matches!(&got, Ok(t) if targets.contains(&t.as_str())),
            &format!("expected -> {}, got {got:?}", targets[0]),
        );
    }
    // /dev/ptmx: a symlink to pts/ptmx or a bind mount of /dev/pts/ptmx.
    let ptmx_ok = match fs::read_link("/dev/ptmx") {
        Ok(t) => {
            let t = t.display().to_string();
            t == "pts/ptmx" || t == "/dev/pts/ptmx"
        }
        Err(_) => match (fs::metadata("/dev/ptmx"), fs::metadata("/dev/pts/ptmx")) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        },
    };
    r.check(
        "default /dev/ptmx -> /dev/pts/ptmx",
        ptmx_ok,
        "symlink or bind of pts/ptmx",
    );
    let terminal = e
        .cfg
        .path(&["process", "terminal"])
        .and_then(|x| x.bool())
        .unwrap_or(false);
    if terminal {
        for fd in 0..3 {
            r.check(
                &format!("process.terminal: fd {fd} is a tty"),
                sys_isatty(fd),
                "isatty",
            );
        }
        if let Some(cs) = e.cfg.path(&["process", "consoleSize"]) {
            let h = cs.get("height").and_then(|x| x.u64()).unwrap_or(0) as u16;
            let w = cs.get("width").and_then(|x| x.u64()).unwrap_or(0) as u16;
            r.eq(
                "process.consoleSize (rows, cols)",
                Some((h, w)),
                sys_winsize(0),
            );
        }
        let c = fs::metadata("/dev/console");
        r.check(
            "process.terminal: /dev/console is a char device",
            matches!(&c, Ok(m) if m.file_type().is_char_device()),
            &format!("{:?}", c.map(|m| m.file_type())),
        );
    }
}

fn check_masked(e: &Env, r: &mut Report) {
    for p in e
        .cfg
        .path(&["linux", "maskedPaths"])
        .map(|a| a.strs())
        .unwrap_or_default()
    {
        let name = format!("linux.maskedPaths {p}");
        let md = match fs::metadata(&p) {
            Ok(m) => m,
            Err(err) => {
                r.ok(&name, &format!("not accessible ({err})"));
                continue;
            }
        };
        if md.is_dir() {
            let n = fs::read_dir(&p).map(|d| d.count()).unwrap_or(0);
            r.eq(&format!("{name} (dir) is empty"), 0, n);
        } else {
            let mut buf = Vec::new();
            let res = fs::File::open(&p).and_then(|mut f| f.read_to_end(&mut buf));
            match res {
                Ok(n) => r.eq(&format!("{name} reads nothing"), 0, n),
                Err(err) => r.ok(&name, &format!("unreadable ({err})")),
            }
        }
    }
}

fn check_readonly(e: &Env, r: &mut Report) {
    for p in e
        .cfg
        .path(&["linux", "readonlyPaths"])
        .map(|a| a.strs())
        .unwrap_or_default()
    {
        let name = format!("linux.readonlyPaths {p}");
        let md = match fs::metadata(&p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if md.is_dir() {
            // A read-only mount at the path (procfs answers ENOENT to mkdir before EROFS, so
            // the mount table is the reliable witness), or EROFS on creating an entry.
            let m = last_mount(&e.mounts, &p);
            let ro_mount = m.map(|m| m.opts.contains("ro")).unwrap_or(false);
            let probe = format!("{p}/.oci-validate-probe");
            let errno = errno_of(fs::create_dir(&probe));
            if errno.is_none() {
                let _ = fs::remove_dir(&probe);
            }
            r.check(
                &format!("{name} is read-only"),
                ro_mount || errno == Some(EROFS),
                &format!(
                    "mount at path: {:?}, mkdir inside: errno {errno:?}",
                    m.map(|m| &m.opts)
                ),
            );
        } else {
            let errno = errno_of(fs::OpenOptions::new().write(true).open(&p).map(|_| ()));
            r.eq(
                &format!("{name} write fails with EROFS"),
                Some(EROFS),
                errno,
            );
        }
    }
}

fn check_sysctl(e: &Env, r: &mut Report) {
    if let Some(J::Obj(kv)) = e.cfg.path(&["linux", "sysctl"]) {
        for (k, v) in kv {
            let want = v
                .str()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            let got = fs::read_to_string(&path)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|err| format!("read {path}: {err}"));
            r.eq(&format!("linux.sysctl {k}"), want, got);
        }
    }
}

fn check_fds(e: &Env, r: &mut Report) {
    let n: i32 = e
        .expect1("preserved_fds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let want: BTreeSet<i32> = (0..3 + n).collect();
    let mut got = BTreeSet::new();
    let mut detail = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc/self/fd") {
        for ent in rd.flatten() {
            let fd: i32 = match ent.file_name().to_string_lossy().parse() {
                Ok(fd) => fd,
                Err(_) => continue,
            };
            let target = fs::read_link(ent.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            // The directory stream we are reading with.
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                continue;
            }
            detail.push(format!("{fd}->{target}"));
            got.insert(fd);
        }
    }
    if want == got {
        r.ok(
            "open fds: only 0,1,2 and the preserved ones",
            &detail.join(" "),
        );
    } else {
        r.fail(
            "open fds: only 0,1,2 and the preserved ones",
            &format!("expected {want:?}, got {}", detail.join(" ")),
        );
    }
}

fn check_seccomp(e: &Env, r: &mut Report) {
    let want = if e.cfg.path(&["linux", "seccomp"]).is_some() {
        "2"
    } else {
        "0"
    };
    r.eq(
        "linux.seccomp mode",
        want.to_string(),
        status_field("Seccomp").unwrap_or_default(),
    );
}

/// CVE-2024-21626 class: the process's cwd must be inside its root.
fn cwd_escape(r: &mut Report) {
    let root = fs::metadata("/").map(|m| (m.dev(), m.ino()));
    let cwd = fs::read_link("/proc/self/cwd").map(|p| p.display().to_string());
    // Walk up with "..": from inside the root this ends at "/"; from a leaked directory outside
    // the root it ends at the real (host) root.
    for _ in 0..256 {
        if std::env::set_current_dir("..").is_err() {
            break;
        }
    }
    let top = fs::metadata(".").map(|m| (m.dev(), m.ino()));
    let ok = matches!((&root, &top), (Ok(a), Ok(b)) if a == b);
    r.check(
        "process.cwd stays inside the container root",
        ok,
        &format!("cwd was {cwd:?}; walking up reached {top:?}, root is {root:?}"),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut r = Report {
        failed: 0,
        passed: 0,
    };
    if args.iter().any(|a| a == "cwd-escape") {
        cwd_escape(&mut r);
        std::process::exit(if r.failed == 0 { 0 } else { 1 });
    }
    // OCI_VALIDATE_CONFIG: another config in the same format (e.g. for an exec'd process).
    let cfg_path =
        std::env::var("OCI_VALIDATE_CONFIG").unwrap_or_else(|_| format!("{DIR}/config.json"));
    let raw = match fs::read(&cfg_path) {
        Ok(b) => b,
        Err(err) => {
            println!("not ok - read {cfg_path}: {err}");
            std::process::exit(2);
        }
    };
    let cfg = match (Parser { s: &raw, i: 0 }).value() {
        Ok(j) => j,
        Err(err) => {
            println!("not ok - parse {cfg_path}: {err}");
            std::process::exit(2);
        }
    };
    let mut expect: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(s) = fs::read_to_string(format!("{DIR}/expect")) {
        for l in s.lines() {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            expect.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    let e = Env {
        cfg,
        expect,
        mounts: mountinfo(),
    };
    // fds first, before this process opens anything else.
    type Check = fn(&Env, &mut Report);
    let groups: [(&str, Check); 18] = [
        ("fds", check_fds),
        ("args", check_args),
        ("env", check_env),
        ("cwd", check_cwd),
        ("user", check_user),
        ("caps", check_caps),
        ("nnp", check_nnp),
        ("rlimits", check_rlimits),
        ("oom", check_oom),
        ("hostname", check_hostname),
        ("namespaces", check_namespaces),
        ("root", check_root),
        ("mounts", check_mounts),
        ("devices", check_devices),
        ("default-devices", check_default_devices),
        ("masked", check_masked),
        ("readonly", check_readonly),
        ("sysctl", check_sysctl),
    ];
    let selected: Vec<&str> = args
        .iter()
        .filter(|a| groups.iter().any(|(g, _)| g == a) || *a == "seccomp")
        .map(|a| a.as_str())
        .collect();
    for (g, f) in groups {
        if selected.is_empty() || selected.contains(&g) {
            f(&e, &mut r);
        }
    }
    if selected.is_empty() || selected.contains(&"seccomp") {
        check_seccomp(&e, &mut r);
    }
    println!("# oci-validate: {} passed, {} failed", r.passed, r.failed);
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}
