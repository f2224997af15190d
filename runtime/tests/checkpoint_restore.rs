//! `husk checkpoint` / `husk restore` with a real CRIU and real containers (needs root).
//!
//! The container is a busybox shell that prints 1, 2, 3, ... to its stdout, a pipe the test reads.
//! After checkpoint + restore the numbers must continue where they stopped: the whole sequence the
//! test sees is exactly 1..=N, without a gap, a repeat or a restart from 1.
//!
//! Every test uses its own state root and image directories (temporary), IDs that carry the test
//! process's pid, and a guard that force-deletes its containers even when an assertion fails.
//! Without a working CRIU (`criu check` saying "Looks good"; hack/criu.sh installs one) the tests
//! fail, saying why.
mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for waiting on the container (a hang guard, not a speed assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// A busybox bundle in a temporary directory, built by `husk spec` plus a rootfs; the host
/// directory `dir/data` is bind-mounted at /data (an external mount for CRIU).
fn bundle(dir: &Path, script: &str) -> PathBuf {
    let b = dir.join("bundle");
    let rootfs = b.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy /bin/busybox (busybox-static)");
    for applet in ["sh", "sleep", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    let out = Command::new(common::husk_bin())
        .args(["spec", "-b"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "husk spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    v["root"]["path"] = "rootfs".into();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]
    }));
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    b
}

const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done";
/// The counter, also writing its latest value into the bind-mounted host directory.
const COUNTER_TO_DATA: &str =
    "i=0; while :; do i=$((i+1)); echo $i; echo $i > /data/last; sleep 0.05; done";

/// A state root, the CRIU to use, and the containers to force-delete at the end.
struct Env {
    dir: tempfile::TempDir,
    criu: PathBuf,
    ids: Mutex<Vec<String>>,
    runs: std::sync::atomic::AtomicUsize,
}

impl Env {
    fn new(criu: PathBuf) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            criu,
            ids: Mutex::new(Vec::new()),
            runs: Default::default(),
        }
    }
    fn id(&self, tag: &str) -> String {
        let id = format!("husk-cr-{}-{tag}", std::process::id());
        self.ids.lock().unwrap().push(id.clone());
        id
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(common::husk_bin());
        c.arg("--root")
            .arg(self.root())
            .arg("--criu")
            .arg(&self.criu);
        c
    }
    /// Run husk with stdin /dev/null, stdout to `out` if given, and stderr to a file (a container
    /// inherits husk's stdio: a pipe there would never see EOF while the container lives).
    fn run(&self, args: &[&str], out: Option<&OwnedFd>) -> Output {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let err_path = self.dir.path().join(format!("stderr-{n}"));
        let err = std::fs::File::create(&err_path).unwrap();
        let mut c = self.cmd();
        c.args(args).stdin(Stdio::null()).stderr(Stdio::from(err));
        match out {
            Some(o) => c.stdout(Stdio::from(o.try_clone().unwrap())),
            None => c.stdout(Stdio::piped()),
        };
        let mut o = c.spawn().unwrap().wait_with_output().unwrap();
        o.stderr = std::fs::read(&err_path).unwrap();
        o
    }
    fn ok(&self, args: &[&str], out: Option<&OwnedFd>) {
        let o = self.run(args, out);
        assert!(
            o.status.success(),
            "husk {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    fn state(&self, id: &str) -> Option<serde_json::Value> {
        let o = self.run(&["state", id], None);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }
    fn start_counter(&self, bundle: &Path, id: &str, out: &OwnedFd) {
        self.ok(&["create", "-b", bundle.to_str().unwrap(), id], Some(out));
        self.ok(&["start", id], None);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self
                .cmd()
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// The numbers a container prints, read from a pipe by a thread.
struct Counter {
    nums: Arc<Mutex<Vec<u64>>>,
    /// The write end handed to containers (kept here so restore can hand it out again).
    w: OwnedFd,
}

impl Counter {
    fn new() -> Counter {
        let (r, w) = nix::unistd::pipe().unwrap();
        let nums = Arc::new(Mutex::new(Vec::new()));
        let n = nums.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(r)).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = line.trim().parse() {
                    n.lock().unwrap().push(v);
                }
            }
        });
        Counter { nums, w }
    }
    fn snapshot(&self) -> Vec<u64> {
        self.nums.lock().unwrap().clone()
    }
    fn last(&self) -> u64 {
        self.snapshot().last().copied().unwrap_or(0)
    }
    /// Wait until the container has printed `n` numbers.
    fn wait_len(&self, n: usize) {
        let until = Instant::now() + PATIENCE;
        while self.snapshot().len() < n {
            assert!(
                Instant::now() < until,
                "counter printed only {:?}",
                self.snapshot()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Wait until the counter prints a value above `v`.
    fn wait_above(&self, v: u64) {
        let until = Instant::now() + PATIENCE;
        while self.last() <= v {
            assert!(
                Instant::now() < until,
                "counter stuck at {:?} (waiting for > {v})",
                self.snapshot().last()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn assert_contiguous_from(nums: &[u64], first: u64) {
    for (i, v) in nums.iter().enumerate() {
        assert_eq!(
            *v,
            first + i as u64,
            "numbers are not contiguous from {first}: {nums:?}"
        );
    }
}

fn cgroup_line(pid: i64, ctrl: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|x| x == ctrl))
        })
        .unwrap_or_default()
        .to_string()
}

fn v1_pids_dir_exists(id: &str) -> bool {
    Path::new("/sys/fs/cgroup/pids").join(id).exists()
}

#[test]
fn checkpoint_then_restore_continues_counting() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER_TO_DATA);
    let id = env.id("count");
    let counter = Counter::new();
    env.start_counter(&b, &id, &counter.w);
    counter.wait_len(5);

    let img = env.dir.path().join("img");
    env.ok(
        &["checkpoint", "--image-path", img.to_str().unwrap(), &id],
        None,
    );
    // without --leave-running the container is gone, the image is complete
    assert!(
        env.state(&id).is_none(),
        "container still exists after checkpoint"
    );
    assert!(!img.join("husk-incomplete").exists());
    assert!(img.join("inventory.img").is_file() && img.join("husk-config.json").is_file());
    assert!(
        !v1_pids_dir_exists(&id),
        "cgroup of the checkpointed container left behind"
    );
    let before = counter.snapshot();
    assert_contiguous_from(&before, 1);

    let pid_file = env.dir.path().join("pid");
    env.ok(
        &[
            "restore",
            "--detach",
            "--image-path",
            img.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ],
        Some(&counter.w),
    );
    let st = env.state(&id).expect("state of the restored container");
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert!(
        cgroup_line(pid, "pids").ends_with(&format!("/{id}")),
        "restored init not in the container's pids cgroup: {}",
        cgroup_line(pid, "pids")
    );
    let stopped_at = *before.last().unwrap();
    counter.wait_above(stopped_at + 5);
    let all = counter.snapshot();
    // the restored shell went on from where it stopped: 1..=N without a restart or a gap
    assert_contiguous_from(&all, 1);
    assert!(all.len() as u64 > stopped_at + 5);
    // the bind mount from the host came back too: the restored shell writes through it
    let last = env.dir.path().join("data/last");
    let until = Instant::now() + PATIENCE;
    loop {
        let v: u64 = std::fs::read_to_string(&last)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        if v > stopped_at + 5 {
            break;
        }
        assert!(Instant::now() < until, "{} stuck at {v}", last.display());
        std::thread::sleep(Duration::from_millis(10));
    }

    env.ok(&["delete", "--force", &id], None);
    assert!(!v1_pids_dir_exists(&id));
}

#[test]
fn leave_running_and_restore_under_another_id() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let a = env.id("orig");
    let copy = env.id("copy");
    let ca = Counter::new();
    env.start_counter(&b, &a, &ca.w);
    ca.wait_len(5);

    let img = env.dir.path().join("img");
    env.ok(
        &[
            "checkpoint",
            "--leave-running",
            "--image-path",
            img.to_str().unwrap(),
            &a,
        ],
        None,
    );
    let at_checkpoint = ca.last();
    let st_a = env.state(&a).expect("original still exists");
    assert_eq!(st_a["status"], "running", "{st_a}");
    ca.wait_above(at_checkpoint + 3);

    let cb = Counter::new();
    env.ok(
        &[
            "restore",
            "-d",
            "--image-path",
            img.to_str().unwrap(),
            &copy,
        ],
        Some(&cb.w),
    );
    cb.wait_len(5);
    let nums = cb.snapshot();
    // the copy starts from the checkpointed value (which the counter had waited past 5), not from 1
    assert!(
        nums[0] > 5,
        "copy started at {} (checkpoint after {at_checkpoint})",
        nums[0]
    );
    // and that value is one the original itself reached (the reader may lag, so wait for it)
    ca.wait_above(nums[0] - 1);
    assert_contiguous_from(&nums, nums[0]);

    let st_a = env.state(&a).unwrap();
    let st_b = env.state(&copy).expect("state of the copy");
    assert_eq!(st_b["status"], "running", "{st_b}");
    assert_eq!(st_a["status"], "running", "{st_a}");
    assert_ne!(st_a["pid"], st_b["pid"]);
    let pid_b = st_b["pid"].as_i64().unwrap();
    assert!(
        cgroup_line(pid_b, "pids").ends_with(&format!("/{copy}")),
        "{}",
        cgroup_line(pid_b, "pids")
    );
    // the original keeps counting on its own
    let a_now = ca.last();
    ca.wait_above(a_now + 2);
    assert_contiguous_from(&ca.snapshot(), 1);

    env.ok(&["delete", "--force", &copy], None);
    env.ok(&["delete", "--force", &a], None);
    assert!(!v1_pids_dir_exists(&a) && !v1_pids_dir_exists(&copy));
}

#[test]
fn restore_from_a_damaged_image_fails_and_leaves_nothing() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let a = env.id("src");
    let bad = env.id("bad");
    let ca = Counter::new();
    env.start_counter(&b, &a, &ca.w);
    ca.wait_len(3);
    let img = env.dir.path().join("img");
    env.ok(
        &[
            "checkpoint",
            "--leave-running",
            "--image-path",
            img.to_str().unwrap(),
            &a,
        ],
        None,
    );

    // damage the image: the process tree record loses its end
    let pstree = img.join("pstree.img");
    let data = std::fs::read(&pstree).unwrap();
    std::fs::write(&pstree, &data[..data.len() / 2]).unwrap();

    let cb = Counter::new();
    let o = env.run(
        &["restore", "-d", "--image-path", img.to_str().unwrap(), &bad],
        Some(&cb.w),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "restore from a damaged image succeeded"
    );
    assert!(
        err.contains("criu restore failed") && err.contains("Error ("),
        "no CRIU reason in: {err}"
    );
    assert!(err.contains("restore.log"), "no log path in: {err}");
    // nothing left: no state, no cgroup, no mount, no process printing
    assert!(env.state(&bad).is_none());
    assert!(!env.root().join(&bad).exists(), "state dir left behind");
    assert!(!v1_pids_dir_exists(&bad), "cgroup left behind");
    assert!(
        !Path::new("/sys/fs/cgroup/unified").join(&bad).exists(),
        "cgroup2 dir left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&bad), "mount left behind");
    assert!(
        cb.snapshot().is_empty(),
        "a restored process printed {:?}",
        cb.snapshot()
    );
    // the source container was not disturbed
    assert_eq!(env.state(&a).unwrap()["status"], "running");
    env.ok(&["delete", "--force", &a], None);
}

#[test]
fn refused_checkpoint_keeps_the_container_running_and_marks_the_image() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let id = env.id("refused");
    let counter = Counter::new();
    // stdin is one end of a unix socketpair held by the test: an external unix socket, which CRIU
    // refuses to dump without --ext-unix-sk
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut c = env.cmd();
    c.args(["create", "-b", b.to_str().unwrap(), &id])
        .stdin(Stdio::from(OwnedFd::from(sock)))
        .stdout(Stdio::from(counter.w.try_clone().unwrap()))
        .stderr(Stdio::null());
    let status = c.status().unwrap();
    assert!(status.success(), "create with a socket as stdin failed");
    env.ok(&["start", &id], None);
    counter.wait_len(3);

    let img = env.dir.path().join("img");
    let o = env.run(
        &["checkpoint", "--image-path", img.to_str().unwrap(), &id],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "checkpoint with an external unix socket succeeded"
    );
    assert!(err.contains("criu dump failed"), "{err}");
    let marker = std::fs::read_to_string(img.join("husk-incomplete")).expect("incomplete marker");
    assert!(marker.contains("failed"), "{marker}");
    // still running and still counting
    assert_eq!(env.state(&id).unwrap()["status"], "running");
    let now = counter.last();
    counter.wait_above(now + 2);
    assert_contiguous_from(&counter.snapshot(), 1);
    // and a restore from that image is refused before CRIU is asked
    let o = env.run(
        &[
            "restore",
            "-d",
            "--image-path",
            img.to_str().unwrap(),
            &env.id("never"),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("incomplete checkpoint"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    env.ok(&["delete", "--force", &id], None);
}

#[test]
fn pre_dump_needs_dirty_memory_tracking() {
    let criu = common::require_criu();
    let env = Env::new(criu.clone());
    let b = bundle(env.dir.path(), COUNTER);
    let id = env.id("predump");
    let counter = Counter::new();
    env.start_counter(&b, &id, &counter.w);
    counter.wait_len(2);
    let img = env.dir.path().join("img");
    let o = env.run(
        &[
            "checkpoint",
            "--pre-dump",
            "--image-path",
            img.to_str().unwrap(),
            &id,
        ],
        None,
    );
    let check = Command::new(&criu)
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .unwrap();
    let kernel_tracks = check.status.success();
    if kernel_tracks {
        assert!(
            o.status.success(),
            "pre-dump failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "pre-dump succeeded without dirty-memory tracking"
        );
        assert!(
            err.contains("--pre-dump") && err.contains("dirty-memory tracking"),
            "{err}"
        );
    }
    // either way the container keeps running
    assert_eq!(env.state(&id).unwrap()["status"], "running");
    env.ok(&["delete", "--force", &id], None);
}

#[test]
fn foreground_restore_from_the_bundle_waits_for_the_container() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let a = env.id("fg-src");
    let fg = env.id("fg");
    let ca = Counter::new();
    env.start_counter(&b, &a, &ca.w);
    ca.wait_len(3);
    let img = env.dir.path().join("img");
    env.ok(
        &["checkpoint", "--image-path", img.to_str().unwrap(), &a],
        None,
    );
    let stopped_at = ca.last();

    // without --detach, restore stays the container's parent and returns its exit status
    let err = std::fs::File::create(env.dir.path().join("fg-stderr")).unwrap();
    let mut child = env
        .cmd()
        .args([
            "restore",
            "--bundle",
            b.to_str().unwrap(),
            "--image-path",
            img.to_str().unwrap(),
            &fg,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(ca.w.try_clone().unwrap()))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap();
    ca.wait_above(stopped_at + 2);
    assert_contiguous_from(&ca.snapshot(), 1);
    assert_eq!(
        env.state(&fg).expect("state while restored")["status"],
        "running"
    );
    env.ok(&["kill", &fg, "KILL"], None);
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(env.dir.path().join("fg-stderr")).unwrap();
    assert_eq!(
        status.code(),
        Some(137),
        "restore exited with {status:?}: {stderr}"
    );
    // and removed the container when it exited
    assert!(env.state(&fg).is_none());
    assert!(!v1_pids_dir_exists(&fg));
}

/// Adds prestart and createRuntime hooks that append "<phase> <state JSON>" lines to `log`.
fn add_logging_hooks(bundle: &Path, log: &Path) {
    let path = bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let hook = |phase: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("{{ printf '{phase} '; cat; echo; }} >> {}", log.display())]
        })
    };
    v["hooks"] = serde_json::json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// The (phase, state) lines a logging hook wrote.
fn hook_lines(log: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (phase, json) = l.split_once(' ').unwrap();
            (phase.to_string(), serde_json::from_str(json).unwrap())
        })
        .collect()
}

#[test]
fn restore_runs_prestart_and_create_runtime_hooks_with_the_restored_pid() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let log = env.dir.path().join("hooks.log");
    add_logging_hooks(&b, &log);
    let id = env.id("hooks");
    let counter = Counter::new();
    env.start_counter(&b, &id, &counter.w);
    counter.wait_len(3);
    let at_create = hook_lines(&log);
    let phases: Vec<&str> = at_create.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases, ["prestart", "createRuntime"], "{at_create:?}");

    let img = env.dir.path().join("img");
    env.ok(
        &["checkpoint", "--image-path", img.to_str().unwrap(), &id],
        None,
    );
    env.ok(
        &[
            "restore",
            "--detach",
            "--image-path",
            img.to_str().unwrap(),
            &id,
        ],
        Some(&counter.w),
    );
    let st = env.state(&id).expect("state of the restored container");
    let pid = st["pid"].as_i64().unwrap();
    let all = hook_lines(&log);
    let at_restore = &all[at_create.len()..];
    let phases: Vec<&str> = at_restore.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases, ["prestart", "createRuntime"], "{all:?}");
    for (phase, s) in at_restore {
        assert_eq!(s["id"], id.as_str(), "{phase}: {s}");
        assert_eq!(s["status"], "creating", "{phase}: {s}");
        assert_eq!(
            s["pid"], pid,
            "{phase} got another pid than the restored init's: {s}"
        );
    }
    // and the restored container runs on
    let n = counter.last();
    counter.wait_above(n + 2);
    env.ok(&["delete", "--force", &id], None);
    assert!(!v1_pids_dir_exists(&id));
}

#[test]
fn a_failing_prestart_hook_fails_the_restore_and_leaves_nothing() {
    let criu = common::require_criu();
    let env = Env::new(criu);
    let b = bundle(env.dir.path(), COUNTER);
    let id = env.id("hookfail");
    let counter = Counter::new();
    env.start_counter(&b, &id, &counter.w);
    counter.wait_len(3);
    let img = env.dir.path().join("img");
    env.ok(
        &["checkpoint", "--image-path", img.to_str().unwrap(), &id],
        None,
    );
    // the bundle given at restore time brings a prestart hook that fails
    let path = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["hooks"] = serde_json::json!({
        "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}]
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let o = env.run(
        &[
            "restore",
            "--detach",
            "--bundle",
            b.to_str().unwrap(),
            "--image-path",
            img.to_str().unwrap(),
            &id,
        ],
        Some(&counter.w),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "restore with a failing hook succeeded");
    assert!(
        err.contains("prestart"),
        "error does not name the hook: {err}"
    );
    assert!(
        env.state(&id).is_none(),
        "state left after a failed restore"
    );
    assert!(
        !v1_pids_dir_exists(&id),
        "cgroup left after a failed restore"
    );
    // nothing of the restored tree survives: the counter stops
    let n = counter.last();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter.last(),
        n,
        "a process of the failed restore still counts"
    );
}

#[test]
fn delete_force_cleans_a_restore_killed_before_criu_forked() {
    assert!(
        common::is_root(),
        "needs root: run the tests as root (CI does)"
    );
    // no CRIU runs here: the state a restore leaves when killed right after saving it (pid 0,
    // cgroups made, the restored root bind-mounted at <state dir>/criu-root)
    let env = Env::new(PathBuf::from("/nonexistent/criu"));
    let b = bundle(env.dir.path(), "sleep 1000");
    let id = env.id("halfrestored");
    let out = Counter::new();
    env.ok(&["create", "-b", b.to_str().unwrap(), &id], Some(&out.w));
    let st = env.state(&id).expect("state");
    let pid = st["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let dir = env.root().join(&id);
    let state_path = dir.join("state.json");
    let mut raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    raw["pid"] = 0.into();
    raw["pid_start"] = 0.into();
    std::fs::write(&state_path, serde_json::to_vec(&raw).unwrap()).unwrap();
    let criu_root = dir.join("criu-root");
    std::fs::create_dir(&criu_root).unwrap();
    nix::mount::mount(
        Some(&b.join("rootfs")),
        &criu_root,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();

    env.ok(&["delete", "--force", &id], None);
    assert!(!dir.exists(), "state directory left behind");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(criu_root.to_str().unwrap()),
        "criu-root mount left behind"
    );
    assert!(!v1_pids_dir_exists(&id), "cgroup left behind");
    // and what was mounted there (the container's rootfs) is untouched
    assert!(
        b.join("rootfs/bin/busybox").is_file(),
        "rootfs damaged by delete"
    );
}

/// CRIU's lazy page server pipe (criu/include/page-pipe.h PIPE_MAX_SIZE pages).
const CRIU_LAZY_PIPE_BYTES: i32 = 819 * 4096;

fn can_set_pipe_size(bytes: i32) -> bool {
    let (r, _w) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes)).is_ok()
}

/// fs.pipe-max-size raised to at least `min` for the test's duration (put back on drop).
struct PipeMaxSize(Option<String>);

impl PipeMaxSize {
    const PATH: &'static str = "/proc/sys/fs/pipe-max-size";
    fn raise(min: u64) -> PipeMaxSize {
        let old = std::fs::read_to_string(Self::PATH).unwrap();
        if old.trim().parse::<u64>().unwrap() >= min {
            return PipeMaxSize(None);
        }
        std::fs::write(Self::PATH, min.to_string()).unwrap();
        PipeMaxSize(Some(old))
    }
}

impl Drop for PipeMaxSize {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lazy migration on one machine: the source is checkpointed with --lazy-pages and serves its
/// memory from a page server on loopback; `criu lazy-pages` fetches it on demand (userfaultfd)
/// for the restored copy, which keeps counting from where the source stopped.
#[test]
fn lazy_pages_restore_fetches_memory_from_the_source_page_server() {
    let criu = common::require_criu();
    let env = Env::new(criu.clone());
    let b = bundle(env.dir.path(), COUNTER);
    let src = env.id("lazysrc");
    let dst = env.id("lazydst");
    let counter = Counter::new();
    env.start_counter(&b, &src, &counter.w);
    counter.wait_len(5);
    let img = env.dir.path().join("img");
    let work_src = env.dir.path().join("work-src");
    let work_dst = env.dir.path().join("work-dst");
    std::fs::create_dir_all(&work_dst).unwrap();
    let port = free_loopback_port();
    let ps = format!("127.0.0.1:{port}");
    let ckpt_args = |status_fd: Option<i32>| {
        let mut a = vec![
            "checkpoint".to_string(),
            "--lazy-pages".into(),
            "--page-server".into(),
            ps.clone(),
            "--image-path".into(),
            img.display().to_string(),
            "--work-path".into(),
            work_src.display().to_string(),
        ];
        if let Some(fd) = status_fd {
            a.push("--status-fd".into());
            a.push(fd.to_string());
        }
        a.push(src.clone());
        a
    };

    if !can_set_pipe_size(CRIU_LAZY_PIPE_BYTES) {
        // as on this machine (no CAP_SYS_RESOURCE, 1 MiB fs.pipe-max-size): a clear refusal up
        // front, and the container keeps running
        let a = ckpt_args(None);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = env.run(&a, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains("pipe-max-size"), "{err}");
        let n = counter.last();
        counter.wait_above(n + 2);
    }
    let _raised = PipeMaxSize::raise(4 << 20);

    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    let a = ckpt_args(Some(std::os::fd::AsRawFd::as_raw_fd(&ready_w)));
    let ck_err = env.dir.path().join("checkpoint.err");
    // the write end goes to husk without FD_CLOEXEC (pipe() sets none)
    let mut ck = env
        .cmd()
        .args(&a)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&ck_err).unwrap()))
        .spawn()
        .unwrap();
    drop(ready_w);
    let mut b1 = [0u8; 1];
    let n = nix::unistd::read(&ready_r, &mut b1).unwrap();
    assert_eq!(
        n,
        1,
        "checkpoint never signalled the page server ready: {}",
        std::fs::read_to_string(&ck_err).unwrap_or_default()
    );
    assert!(
        !img.join("husk-incomplete").exists(),
        "image still marked incomplete once the page server is ready"
    );
    let stopped_at = counter.last();

    let mut daemon = Command::new(&criu)
        .args(["lazy-pages", "--page-server", "--address", "127.0.0.1"])
        .arg("--port")
        .arg(port.to_string())
        .arg("-D")
        .arg(&img)
        .arg("-W")
        .arg(&work_dst)
        .args(["-o", "lazy-pages.log", "-v4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the daemon listens on work-dst/lazy-pages.socket before restore may connect
    let until = Instant::now() + PATIENCE;
    while !work_dst.join("lazy-pages.socket").exists() {
        assert!(Instant::now() < until, "criu lazy-pages never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let restored = env.run(
        &[
            "restore",
            "--detach",
            "--lazy-pages",
            "--image-path",
            img.to_str().unwrap(),
            "--work-path",
            work_dst.to_str().unwrap(),
            &dst,
        ],
        Some(&counter.w),
    );
    if !restored.status.success() {
        let _ = daemon.kill();
        let _ = ck.kill();
        let _ = daemon.wait();
        let _ = ck.wait();
        panic!(
            "lazy restore failed: {}",
            String::from_utf8_lossy(&restored.stderr)
        );
    }
    // once the daemon has fetched every page, the source's dump completes and it is gone
    let status = ck.wait().unwrap();
    assert!(
        status.success(),
        "lazy checkpoint failed: {}",
        std::fs::read_to_string(&ck_err).unwrap_or_default()
    );
    let until = Instant::now() + PATIENCE;
    while daemon.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = daemon.kill();
            panic!("criu lazy-pages did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(env.state(&src).is_none(), "the source still exists");
    let st = env
        .state(&dst)
        .expect("state of the lazily restored container");
    assert_eq!(st["status"], "running", "{st}");
    counter.wait_above(stopped_at + 5);
    assert_contiguous_from(&counter.snapshot(), 1);
    env.ok(&["delete", "--force", &dst], None);
    assert!(!v1_pids_dir_exists(&dst) && !v1_pids_dir_exists(&src));
}
