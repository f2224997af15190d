//! Checkpoint/restore of a container with a terminal (process.terminal=true): the pty master is
//! outside the container (with whoever listens on the console socket), so CRIU dumps the slave
//! alone (`orphan_pts_master`) and on restore creates a new pty pair in the container's devpts;
//! husk sends the new master to `restore --console-socket`, as runc does. The shell in the
//! container answers lines typed into the terminal before the checkpoint (old master) and after
//! the restore (new master). Needs root and a working CRIU; otherwise fails, saying why.
mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(30);

/// Everything read from a pty master, collected by a thread.
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn new(master: OwnedFd) -> Screen {
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            // EIO once the slave side is gone
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen(text)
    }
    fn wait_for(&self, want: &str) {
        let until = Instant::now() + PATIENCE;
        while !self.0.lock().unwrap().contains(want) {
            assert!(
                Instant::now() < until,
                "terminal never showed {want:?}: {:?}",
                self.0.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Accept one connection on the console socket and take the pty master from it.
fn accept_master(l: &UnixListener) -> OwnedFd {
    let (conn, _) = l.accept().unwrap();
    husk::tty::recv_fd(conn.as_raw_fd()).unwrap().0
}

struct Env {
    dir: tempfile::TempDir,
    criu: PathBuf,
    id: String,
}

impl Env {
    fn husk(&self, args: &[&str]) {
        let err = self.dir.path().join("stderr");
        let o = Command::new(common::husk_bin())
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .arg("--criu")
            .arg(&self.criu)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        assert!(
            o.success(),
            "husk {args:?}: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    }
    fn exists(&self) -> bool {
        Command::new(common::husk_bin())
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .args(["state", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new(common::husk_bin())
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn bundle(dir: &Path) -> PathBuf {
    let b = dir.join("bundle");
    let rootfs = b.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let out = Command::new(common::husk_bin())
        .args(["spec", "-b"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "husk spec failed");
    let path = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["process"]["terminal"] = true.into();
    v["process"]["args"] =
        serde_json::json!(["sh", "-c", "while read l; do echo \"got:$l\"; done"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    b
}

#[test]
fn terminal_container_restores_with_a_new_master_on_the_console_socket() {
    let criu = common::require_criu();
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        criu,
        id: format!("husk-crtty-{}", std::process::id()),
    };
    let b = bundle(env.dir.path());
    let sock1 = env.dir.path().join("console1.sock");
    let l1 = UnixListener::bind(&sock1).unwrap();
    let accept1 = std::thread::spawn(move || accept_master(&l1));
    env.husk(&[
        "create",
        "-b",
        b.to_str().unwrap(),
        "--console-socket",
        sock1.to_str().unwrap(),
        &env.id,
    ]);
    let master1 = accept1.join().unwrap();
    let mut input1 = std::fs::File::from(master1.try_clone().unwrap());
    let screen1 = Screen::new(master1);
    env.husk(&["start", &env.id]);
    input1.write_all(b"one\n").unwrap();
    screen1.wait_for("got:one");

    let img = env.dir.path().join("img");
    env.husk(&["checkpoint", "--image-path", img.to_str().unwrap(), &env.id]);
    assert!(!env.exists(), "container still exists after checkpoint");
    drop(input1);

    let sock2 = env.dir.path().join("console2.sock");
    let l2 = UnixListener::bind(&sock2).unwrap();
    let accept2 = std::thread::spawn(move || accept_master(&l2));
    env.husk(&[
        "restore",
        "-d",
        "--image-path",
        img.to_str().unwrap(),
        "--console-socket",
        sock2.to_str().unwrap(),
        &env.id,
    ]);
    let master2 = accept2.join().unwrap();
    let mut input2 = std::fs::File::from(master2.try_clone().unwrap());
    let screen2 = Screen::new(master2);
    // the same shell (it kept its loop state) now reads the new terminal
    input2.write_all(b"two\n").unwrap();
    screen2.wait_for("got:two");
    assert!(env.exists());
    env.husk(&["delete", "--force", &env.id]);
}

#[test]
fn restore_of_a_terminal_container_needs_a_console_socket() {
    let criu = common::require_criu();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path());
    let img = dir.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = Command::new(common::husk_bin())
        .arg("--root")
        .arg(dir.path().join("state"))
        .arg("--criu")
        .arg(&criu)
        .args(["restore", "-d", "--bundle", b.to_str().unwrap()])
        .arg("--image-path")
        .arg(&img)
        .arg(format!("husk-crtty-nosock-{}", std::process::id()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--console-socket"), "{err}");
    assert!(!dir
        .path()
        .join("state")
        .join(format!("husk-crtty-nosock-{}", std::process::id()))
        .exists());
}
