//! Shared helpers for husk's CLI integration tests: a busybox bundle, a private state root, and a
//! guard that force-deletes what a test created.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const HUSK: &str = env!("CARGO_BIN_EXE_husk");

pub fn is_root() -> bool {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// A bundle in a temp dir with a busybox rootfs and the default spec, plus its own state root.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ids: Vec<String>,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("husk-it-{tag}-"))
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is installed");
        for a in [
            "sh", "sleep", "cat", "echo", "head", "dd", "true", "ls", "grep", "id", "kill", "tr",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("symlink");
        }
        let root = PathBuf::from(format!("/run/husk-it-{tag}-{}", std::process::id()));
        let env = Env {
            dir,
            root,
            ids: Vec::new(),
        };
        let mut spec = husk::spec::default_spec(false);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["root"]["readonly"] = serde_json::json!(false);
        env.write_config(&spec);
        env
    }

    pub fn bundle(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.bundle().join("config.json")).expect("read config"),
        )
        .expect("parse config")
    }

    pub fn write_config(&self, v: &serde_json::Value) {
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(v).expect("json"),
        )
        .expect("write config");
    }

    /// Set process.args to `sh -c SCRIPT`.
    pub fn sh(&self, script: &str) {
        let mut c = self.config();
        c["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        self.write_config(&c);
    }

    pub fn id(&mut self, name: &str) -> String {
        let id = format!("it-{name}-{}", std::process::id());
        self.ids.push(id.clone());
        id
    }

    pub fn husk(&self, args: &[&str]) -> Output {
        Command::new(HUSK)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .expect("run husk")
    }

    /// Run husk and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.husk(args);
        assert!(
            o.status.success(),
            "husk {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    pub fn status(&self, id: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["state", id])).expect("state json");
        v["status"].as_str().unwrap_or("").to_string()
    }

    pub fn pid(&self, id: &str) -> i32 {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["state", id])).expect("state json");
        v["pid"].as_i64().unwrap_or(0) as i32
    }

    /// `run --detach` the current config.
    /// The container keeps the stdio it inherits: give it files, not our pipes, so waiting for
    /// husk does not wait for the container.
    pub fn run_detached(&self, id: &str) {
        let b = self.bundle().display().to_string();
        let err = self.dir.path().join(format!("{id}.stderr"));
        let errf = std::fs::File::create(&err).expect("stderr file");
        let st = Command::new(HUSK)
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--detach", "--bundle", &b, id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(errf)
            .status()
            .expect("run husk");
        assert!(
            st.success(),
            "husk run --detach {id}: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = Command::new(HUSK)
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force", id])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The host path of one v1 controller's cgroup of `pid`.
pub fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/pid/cgroup");
    for l in s.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            return PathBuf::from("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
        }
    }
    panic!("no {controller} cgroup for {pid}: {s}");
}

pub fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// The first of `candidates` that exists and passes `criu check` ("Looks good"); otherwise why
/// none did, for the test's failure message.
pub fn first_working_criu(candidates: &[PathBuf]) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for c in candidates.iter().filter(|c| c.is_file()) {
        match Command::new(c).arg("check").output() {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                if text.contains("Looks good") {
                    return Ok(c.clone());
                }
                tried.push(format!("{}: {}", c.display(), text.trim()));
            }
            Err(e) => tried.push(format!("{}: {e}", c.display())),
        }
    }
    Err(if tried.is_empty() {
        "no criu installed".into()
    } else {
        tried.join("; ")
    })
}

/// The husk binary under test: $HUSK, else the one cargo built for this test.
pub fn husk_bin() -> PathBuf {
    std::env::var_os("HUSK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(HUSK))
}

/// The CRIU the checkpoint tests use: the first that passes `criu check` of $HUSK_CRIU, the
/// patched build (hack/migrate/criu-patched.sh, needed for TCP on kernels >= 6.16), the one
/// hack/criu.sh installs, then PATH's; or why there is none.
pub fn working_criu() -> Result<PathBuf, String> {
    static CRIU: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    CRIU.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Some(c) = std::env::var_os("HUSK_CRIU") {
            candidates.push(PathBuf::from(c));
        }
        candidates.push(PathBuf::from("/usr/local/libexec/husk/criu"));
        candidates.push(PathBuf::from("/usr/local/sbin/criu"));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("criu")));
        }
        first_working_criu(&candidates)
    })
    .clone()
}

/// A working CRIU, as root; a test without them fails saying why (CI runs as root and
/// hack/setup.sh installs CRIU, so a skip there would hide a broken set-up).
pub fn require_criu() -> PathBuf {
    assert!(
        is_root(),
        "checkpoint tests need root: run the tests as root (CI does)"
    );
    match working_criu() {
        Ok(c) => c,
        Err(why) => {
            panic!("no working CRIU ({why}): install one with hack/criu.sh (hack/setup.sh does)")
        }
    }
}
