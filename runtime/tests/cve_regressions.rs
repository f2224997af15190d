//! One regression test per container-escape CVE class that applies to an OCI runtime (issue 16,
//! item 10). Each test builds the hostile bundle of the attack with busybox (see
//! `common::Env`), runs the real `husk` binary and checks that the host side is untouched (or that
//! the runtime refuses with a clear error). The comment of each test says what a vulnerable
//! runtime would have done.
//!
//! The runtime-agnostic conformance suite has deeper variants of some of these classes (run them
//! against husk with hack/conformance.sh):
//! - CVE-2019-5736: conformance/src/cases/security.rs `proc_self_exe`, `exe_reference`,
//!   `exe_from_sibling` (a sibling container writing through /proc/1/exe of a created one);
//! - CVE-2024-21626: conformance/src/cases/security.rs `cwd_fd_escape` with the validator's
//!   `cwd-escape` check (conformance/validator/main.rs);
//! - CVE-2022-29162: conformance/src/cases/process.rs `caps_non_root`.
//!
//! Needs root (the tests create containers) and busybox-static at /bin/busybox.
mod common;
use common::{is_root, Env, HUSK};
use serde_json::json;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn require_root() {
    assert!(
        is_root(),
        "the CVE regression tests create containers: run them as root"
    );
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `husk run` (foreground) of the current config; the container is gone when it returns.
fn run(env: &mut Env, name: &str) -> Output {
    let id = env.id(name);
    let b = env.bundle().display().to_string();
    env.husk(&["run", "--bundle", &b, &id])
}

/// A directory outside the bundle that stands for "the host": nothing may appear in it.
fn host_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("husk-cve-host-{tag}-"))
        .tempdir()
        .expect("tempdir")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn rootfs(env: &Env) -> PathBuf {
    env.bundle().join("rootfs")
}

/// `../` enough times to climb from anywhere in the rootfs to the host's / (if not stopped).
fn climb(rel: &Path) -> String {
    let mut s = "../".repeat(rel.components().count() + 20);
    s.push_str(rel.to_str().expect("utf-8 path").trim_start_matches('/'));
    s
}

/// CVE-2019-5736: a container process (here: the test, holding a reference as a process in a
/// sibling container could) opens /proc/<init>/exe while the init still runs runtime code, waits
/// until the init has exec'd the user program and writes through the reference. A runtime whose
/// init executes the host binary itself would let that write modify the binary on the host (runc
/// < 1.0-rc6); husk's init runs from a sealed memfd or a read-only detached bind (runtime/src/
/// exe.rs), so the binary must stay byte-for-byte unchanged. The container also tries the same
/// from inside, through every /proc/<pid>/exe it can see.
#[test]
fn cve_2019_5736_container_cannot_overwrite_the_husk_binary() {
    require_root();
    let mut env = Env::new("cve5736");
    // Attack a private copy, not the binary cargo built.
    let bindir = tempfile::Builder::new()
        .prefix("husk-cve-bin-")
        .tempdir()
        .expect("tempdir");
    let copy = bindir.path().join("husk");
    std::fs::copy(HUSK, &copy).expect("copy husk");
    let original = std::fs::read(&copy).expect("read husk copy");
    let state_root = env.root.clone();
    let husk = |args: &[&str], out: Stdio| {
        Command::new(&copy)
            .arg("--root")
            .arg(&state_root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .status()
            .expect("run the husk copy")
    };
    env.sh("for p in /proc/[0-9]*; do echo pwned >> $p/exe 2>/dev/null && echo wrote $p; done; sleep 2");
    let id = env.id("exe");
    let b = env.bundle().display().to_string();
    assert!(husk(&["create", "--bundle", &b, &id], Stdio::null()).success());
    let pid = env.pid(&id);
    // The reference a container process could take while the init is still runtime code.
    let reference = std::fs::File::open(format!("/proc/{pid}/exe"));
    assert!(husk(&["start", &id], Stdio::null()).success());
    let mut wrote_through = None;
    if let Ok(f) = &reference {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let via = format!("/proc/self/fd/{}", f.as_raw_fd());
        if let Ok(mut w) = std::fs::OpenOptions::new().append(true).open(&via) {
            if w.write_all(b"pwned").is_ok() {
                wrote_through = Some(via);
            }
        }
    }
    let _ = husk(&["delete", "--force", &id], Stdio::null());
    let now = std::fs::read(&copy).expect("read husk copy");
    assert!(
        now == original,
        "the husk binary was modified through the init's /proc/<pid>/exe (wrote via {wrote_through:?})"
    );
    // Foreground run: the container's own attempt through /proc/<pid>/exe.
    env.sh(
        "for p in /proc/[0-9]*; do echo pwned >> $p/exe 2>/dev/null && echo wrote $p; done; true",
    );
    let id = env.id("exe-run");
    let out = Command::new(&copy)
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--bundle", &b, &id])
        .output()
        .expect("husk run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("wrote"),
        "the container wrote to a process executable: {}",
        text(&out)
    );
    assert!(std::fs::read(&copy).expect("read husk copy") == original);
}

/// CVE-2024-21626: runc leaked a host directory fd (its cgroup dir) into the init, so
/// process.cwd = /proc/self/fd/N gave the container a working directory on the host, from where
/// `../../..` reaches the host's /. Husk closes every fd it does not need before the chdir and
/// checks the cwd is inside the root: each N must fail or stay inside the rootfs (this repository's
/// Cargo.toml, on the host, must not be reachable), and a normal container sees no fd but its
/// stdio.
#[test]
fn cve_2024_21626_no_host_fd_leaks_and_cwd_stays_inside_the_rootfs() {
    require_root();
    let mut env = Env::new("cve21626");
    let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    assert!(marker.is_file());
    let rel = climb(&marker);
    env.sh(&format!(
        "if [ -e {rel} ]; then echo ESCAPED; else echo inside; fi"
    ));
    for n in 3..=12 {
        let mut c = env.config();
        c["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        env.write_config(&c);
        let o = run(&mut env, &format!("cwd{n}"));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !out.contains("ESCAPED"),
            "process.cwd /proc/self/fd/{n} reached the host's files: {}",
            text(&o)
        );
        if o.status.success() {
            assert!(out.contains("inside"), "{}", text(&o));
        }
    }
    // No inherited descriptor besides stdio (a vulnerable runtime leaks e.g. its cgroup dir).
    let mut c = env.config();
    c["process"]["cwd"] = json!("/");
    env.write_config(&c);
    // `ls` is a child of pid 1 (the shell), whose descriptors are those husk left it. No pipe in
    // the script: a shell holds a pipeline's pipe for a moment after forking, which `ls` would
    // list; `; true` keeps the shell from exec'ing ls as pid 1 itself.
    env.sh("ls -l /proc/1/fd; true");
    let o = run(&mut env, "fds");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // `lrwx------ 1 0 0 64 Dec 7 21:00 3 -> pipe:[1]`: the fd is the word before the arrow.
    let fds: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(left, target)| (left.rsplit(' ').next().unwrap_or(""), target))
        .collect();
    let extra: Vec<_> = fds
        .iter()
        .filter(|(fd, _)| !["0", "1", "2"].contains(fd))
        .collect();
    assert!(
        extra.is_empty(),
        "descriptors leaked into the container: {extra:?}\n{}",
        text(&o)
    );
    assert!(fds.iter().any(|(fd, _)| *fd == "0"), "{}", text(&o));
}

/// CVE-2021-30465: a mount destination that is (or goes through) a symlink pointing out of the
/// rootfs. runc resolved it with a racy securejoin and then mounted on the path, so a swapped
/// symlink made it mount (and mkdir) on the host. Husk resolves destinations with openat2
/// RESOLVE_IN_ROOT and mounts on the resolved fd: an absolute or `../` symlink to a host directory
/// lands inside the rootfs, and nothing is created on the host. A vulnerable runtime would have
/// created `<host>/sub` and `<host>/file` (and bound the sources over them).
#[test]
fn cve_2021_30465_symlinked_mount_destination_stays_inside_the_rootfs() {
    require_root();
    let mut env = Env::new("cve30465");
    let host = host_dir("30465");
    let host_abs = host.path().to_path_buf();
    let r = rootfs(&env);
    std::fs::create_dir_all(r.join("mnt")).expect("mkdir mnt");
    symlink(&host_abs, r.join("mnt/abs")).expect("symlink");
    symlink(climb(&host_abs), r.join("mnt/rel")).expect("symlink");
    symlink(host_abs.join("file"), r.join("mnt/absfile")).expect("symlink");
    let src = env.bundle().join("src");
    std::fs::create_dir(&src).expect("mkdir src");
    std::fs::write(src.join("payload"), "payload\n").expect("write payload");
    let srcfile = env.bundle().join("srcfile");
    std::fs::write(&srcfile, "filepayload\n").expect("write srcfile");
    let mut c = env.config();
    let mounts = c["mounts"].as_array_mut().expect("mounts");
    for (dst, s) in [
        ("/mnt/abs/sub", &src),
        ("/mnt/rel/relsub", &src),
        ("/mnt/absfile", &srcfile),
    ] {
        mounts.push(
            json!({"destination": dst, "type": "bind", "source": s, "options": ["rbind", "rw"]}),
        );
    }
    env.write_config(&c);
    env.sh("cat /mnt/abs/sub/payload /mnt/rel/relsub/payload /mnt/absfile");
    let o = run(&mut env, "mnt");
    assert!(
        entries(&host_abs).is_empty(),
        "a mount through a symlink created {:?} in the host directory {}\n{}",
        entries(&host_abs),
        host_abs.display(),
        text(&o)
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "payload\npayload\nfilepayload\n"
    );
    // The destinations were created inside the rootfs, under the symlink's target.
    let inside = r.join(host_abs.strip_prefix("/").expect("absolute"));
    assert!(inside.join("sub").is_dir(), "{}", inside.display());
    assert!(inside.join("relsub").is_dir());
    assert!(inside.join("file").is_file());
}

/// A bundle whose /dev is a bind of `<bundle>/devdir` (so the runtime does not create the device
/// nodes itself) instead of the default tmpfs.
fn bind_dev(env: &Env) -> PathBuf {
    let devdir = env.bundle().join("devdir");
    std::fs::create_dir(&devdir).expect("mkdir devdir");
    let mut c = env.config();
    for m in c["mounts"].as_array_mut().expect("mounts") {
        if m["destination"] == "/dev" {
            *m = json!({"destination": "/dev", "type": "bind", "source": devdir, "options": ["rbind", "rw"]});
        }
    }
    env.write_config(&c);
    devdir
}

/// CVE-2025-31133: maskedPaths are masked by bind-mounting /dev/null over them. If /dev/null is
/// a symlink (or was swapped for one) the bind follows it: runc then bound an arbitrary file (e.g.
/// /proc/sys/kernel/core_pattern, for a host escape) over the masked path, and the container wrote
/// through the "masked" path into it. Here /dev/null -> /etc/victim (a harmless stand-in for
/// core_pattern): a vulnerable runtime prints the victim's content for the masked file and lets
/// the container overwrite /etc/victim through it. Husk must refuse (the error naming /dev/null)
/// or mask with the real null device; /etc/victim must be unchanged either way.
#[test]
fn cve_2025_31133_masking_does_not_follow_a_dev_null_symlink() {
    require_root();
    let mut env = Env::new("cve31133");
    let devdir = bind_dev(&env);
    symlink("/etc/victim", devdir.join("null")).expect("symlink");
    let r = rootfs(&env);
    std::fs::write(r.join("etc/victim"), "victim\n").expect("write victim");
    std::fs::write(r.join("etc/masked"), "secret\n").expect("write masked");
    let mut c = env.config();
    c["linux"]["maskedPaths"] = json!(["/etc/masked"]);
    env.write_config(&c);
    env.sh("echo \"masked:[$(cat /etc/masked)]\"; echo overwritten > /etc/masked; echo \"victim:[$(cat /etc/victim)]\"");
    let o = run(&mut env, "null");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/victim")).expect("read victim"),
        "victim\n",
        "the masked path was bound to the target of the /dev/null symlink: {}",
        text(&o)
    );
    if o.status.success() {
        assert!(out.contains("masked:[]"), "{}", text(&o));
    } else {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("/dev/null"),
            "the refusal does not name /dev/null: {}",
            text(&o)
        );
        assert!(!out.contains("masked:"), "the process ran: {}", text(&o));
    }
    // The masked file itself was not written either.
    assert_eq!(
        std::fs::read_to_string(r.join("etc/masked")).expect("read masked"),
        "secret\n"
    );
}

/// CVE-2025-31133, second form: a maskedPath that is itself a symlink to a host path. Masking
/// happens after pivot_root, so the link resolves inside the container: the host file keeps its
/// content and nothing is created next to it (a runtime masking through the host's view would
/// bind /dev/null over the host file, or create it).
#[test]
fn cve_2025_31133_symlinked_masked_path_does_not_reach_the_host() {
    require_root();
    let mut env = Env::new("cve31133b");
    let host = host_dir("31133");
    let host_file = host.path().join("host-secret");
    std::fs::write(&host_file, "host\n").expect("write host file");
    let r = rootfs(&env);
    symlink(&host_file, r.join("etc/masklink")).expect("symlink");
    symlink(climb(&host_file), r.join("etc/masklink-rel")).expect("symlink");
    let inside = r.join(host_file.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
    std::fs::write(&inside, "inside\n").expect("write inside");
    let mut c = env.config();
    c["linux"]["maskedPaths"] = json!(["/etc/masklink", "/etc/masklink-rel"]);
    env.write_config(&c);
    env.sh("echo \"[$(cat /etc/masklink)]\"");
    let o = run(&mut env, "masklink");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "[]\n", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&host_file).expect("read"), "host\n");
    assert_eq!(entries(host.path()), ["host-secret"]);
}

/// CVE-2025-52565: the pty slave is bound onto /dev/console; with /dev/console a symlink (or
/// swapped for one) runc's bind followed it and mounted the pty over the target, or created the
/// target file through the link. /dev/console -> /etc/console-victim here: a vulnerable runtime
/// replaces or creates that file; husk creates /dev/console with O_NOFOLLOW and must refuse.
#[test]
fn cve_2025_52565_dev_console_symlink_is_not_followed() {
    require_root();
    let mut env = Env::new("cve52565");
    let devdir = bind_dev(&env);
    std::fs::create_dir(devdir.join("pts")).expect("mkdir pts");
    symlink("pts/ptmx", devdir.join("ptmx")).expect("symlink");
    symlink("/etc/console-victim", devdir.join("console")).expect("symlink");
    let r = rootfs(&env);
    std::fs::write(r.join("etc/console-victim"), "victim\n").expect("write victim");
    let mut c = env.config();
    c["process"]["terminal"] = json!(true);
    env.write_config(&c);
    env.sh("echo console-ran");
    // The console socket: hold whatever master husk sends until the run is over.
    let sock = env.bundle().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind console socket");
    let holder = std::thread::spawn(move || {
        use std::io::Read;
        listener.set_nonblocking(true).expect("nonblocking");
        for _ in 0..1000 {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.set_nonblocking(false);
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let id = env.id("console");
    let b = env.bundle().display().to_string();
    let s = sock.display().to_string();
    let o = env.husk(&[
        "run",
        "--detach",
        "--console-socket",
        &s,
        "--bundle",
        &b,
        &id,
    ]);
    let _ = env.husk(&["delete", "--force", &id]);
    let _ = holder.join();
    assert_eq!(
        std::fs::read_to_string(r.join("etc/console-victim")).expect("read victim"),
        "victim\n",
        "{}",
        text(&o)
    );
    assert!(
        std::fs::symlink_metadata(devdir.join("console"))
            .expect("lstat")
            .file_type()
            .is_symlink(),
        "/dev/console was replaced"
    );
    assert!(
        !o.status.success(),
        "husk accepted a /dev/console symlink: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/dev/console"),
        "the error does not name /dev/console: {}",
        text(&o)
    );
}

/// CVE-2025-52881: writes the runtime makes through procfs (sysctls here) must reach procfs, not
/// a file mounted over the procfs entry. The bundle binds one of its own files over
/// /proc/sys/net/ipv4/ip_forward (the attack binds another procfs file, e.g. core_pattern): a
/// vulnerable runtime writes the sysctl value into that file (on the host). Husk must refuse
/// and leave the file unchanged.
#[test]
fn cve_2025_52881_sysctl_writes_are_not_redirected_by_a_mount() {
    require_root();
    let mut env = Env::new("cve52881");
    let decoy = env.bundle().join("decoy");
    std::fs::write(&decoy, "decoy\n").expect("write decoy");
    let mut c = env.config();
    c["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/proc/sys/net/ipv4/ip_forward", "type": "bind",
        "source": decoy, "options": ["bind", "rw"]
    }));
    c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    env.write_config(&c);
    env.sh("echo sysctl-ran");
    let o = run(&mut env, "sysctl");
    assert_eq!(
        std::fs::read_to_string(&decoy).expect("read decoy"),
        "decoy\n",
        "the sysctl write went to the file mounted over /proc/sys: {}",
        text(&o)
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("net.ipv4.ip_forward"),
        "{}",
        text(&o)
    );
}

/// CVE-2022-29162: runc filled the inheritable set from the bounding set, so a non-root process
/// exec'ing a file with inheritable file capabilities gained them. CapInh must be exactly what
/// the spec says: empty when it gives none (absent or []), for root and for a non-root user.
#[test]
fn cve_2022_29162_inheritable_capabilities_are_not_filled_from_bounding() {
    require_root();
    let mut env = Env::new("cve29162");
    let set = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_SETUID"
    ]);
    env.sh("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
    for (name, inheritable, uid) in [
        ("absent-root", None, 0),
        ("empty-root", Some(json!([])), 0),
        ("absent-user", None, 1000),
        ("empty-user", Some(json!([])), 1000),
    ] {
        let mut c = env.config();
        let mut caps = json!({"bounding": set, "effective": set, "permitted": set, "ambient": []});
        if let Some(i) = inheritable {
            caps["inheritable"] = i;
        }
        c["process"]["capabilities"] = caps;
        c["process"]["user"] = json!({"uid": uid, "gid": uid});
        env.write_config(&c);
        let o = run(&mut env, name);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
                .unwrap_or_else(|| panic!("{k} missing: {out}"))
        };
        assert_ne!(field("CapBnd:"), 0, "{name}: {out}");
        assert_eq!(
            field("CapInh:"),
            0,
            "{name}: inheritable set not empty: {out}"
        );
        if uid != 0 {
            assert_eq!(field("CapEff:"), 0, "{name}: {out}");
            assert_eq!(field("CapPrm:"), 0, "{name}: {out}");
        }
    }
}

/// CVE-2023-27561 / CVE-2023-28642: a rootfs whose /proc is a symlink. runc's checks of the proc
/// mount destination followed it, so procfs (and the masking of /proc entries) landed outside
/// the rootfs, e.g. on a host directory, leaving the container's /proc unmasked. /proc ->
/// <host dir>/proc (absolute and `../` forms): husk must refuse, or mount procfs inside the
/// rootfs; the host directory must stay empty, and if the container runs, its /proc is a working
/// procfs with /proc/kcore masked.
#[test]
fn cve_2023_27561_cve_2023_28642_symlinked_proc_does_not_escape() {
    require_root();
    let host = host_dir("27561");
    for (name, relative) in [("abs", false), ("rel", true)] {
        let mut env = Env::new(&format!("cve27561{name}"));
        let r = rootfs(&env);
        std::fs::remove_dir(r.join("proc")).expect("rmdir proc");
        let target = host.path().join(name);
        if relative {
            symlink(climb(&target), r.join("proc")).expect("symlink");
        } else {
            symlink(&target, r.join("proc")).expect("symlink");
        }
        env.sh("grep -c '^Name:' /proc/self/status; echo \"kcore:[$(head -c 16 /proc/kcore 2>/dev/null | tr -d '\\0')]\"");
        let o = run(&mut env, &format!("proc-{name}"));
        assert!(
            entries(host.path()).is_empty(),
            "{name}: the /proc mount went through the symlink to the host: {:?}\n{}",
            entries(host.path()),
            text(&o)
        );
        if o.status.success() {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.starts_with("1\n"),
                "{name}: no procfs at /proc: {}",
                text(&o)
            );
            assert!(
                out.contains("kcore:[]"),
                "{name}: /proc/kcore not masked: {}",
                text(&o)
            );
            assert!(r.join(target.strip_prefix("/").expect("absolute")).is_dir());
        } else {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("proc"),
                "{name}: unclear error: {}",
                text(&o)
            );
        }
    }
}
