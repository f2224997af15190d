//! The shim SIGKILLed while its container runs, under a real containerd: containerd notices
//! the dead shim, runs `<shim> delete` (husk's: `husk delete --force`), reports the task's
//! exit; then `ctr task delete` / `ctr container delete` answer, and nothing of the container is
//! left (processes, cgroups, mounts, bundle, runtime state). The same sequence runs with
//! containerd's runc shim in the same containerd, and husk's outcome as ctr sees it must be the
//! same as runc's.
//!
//! Needs root (fails otherwise, saying so). Env: HUSK_RUNTIME (default: the `husk` next to the shim binary
//! under test, i.e. the same target dir).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-husk-v2");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn husk_runtime() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_RUNTIME") {
        return PathBuf::from(p);
    }
    let p = Path::new(SHIM).with_file_name("husk");
    assert!(
        p.is_file(),
        "no husk next to the shim ({}): build it (cargo build -p husk) or set HUSK_RUNTIME",
        p.display()
    );
    p
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private containerd (husk's shim first in its PATH, husk's state under a private root) with
/// the busybox image; stopped and cleaned on drop, with an `ctr events` stream recorded.
struct Ctrd {
    dir: String,
    ns: String,
    husk_root: PathBuf,
    events: Option<Child>,
    events_file: PathBuf,
    containers: Vec<String>,
}

impl Ctrd {
    fn start() -> Ctrd {
        let husk_root = PathBuf::from(format!("/run/husk-faults-shim-{}", std::process::id()));
        let dir = run(Command::new(repo().join("hack/containerd.sh"))
            .arg("start")
            .env("SHIM_BIN", SHIM)
            .env("HUSK_RUNTIME", husk_runtime())
            .env("HUSK_ROOT", &husk_root));
        let ns = format!("husk-faults-{}", std::process::id());
        let events_file = PathBuf::from(&dir).join("events.log");
        let mut c = Ctrd {
            dir,
            ns,
            husk_root,
            events: None,
            events_file,
            containers: Vec::new(),
        };
        run(Command::new(repo().join("hack/mkimage.sh"))
            .arg(c.sock())
            .env("CTR_NAMESPACE", &c.ns));
        let f = std::fs::File::create(&c.events_file).expect("events file");
        c.events = Some(
            Command::new("ctr")
                .args(["-a", &c.sock(), "events"])
                .stdin(Stdio::null())
                .stdout(f)
                .stderr(Stdio::null())
                .spawn()
                .expect("ctr events"),
        );
        c
    }

    fn sock(&self) -> String {
        format!("{}/containerd.sock", self.dir)
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "10", "60", "ctr", "-a", &self.sock(), "-n", &self.ns]);
        cmd
    }

    fn bundle(&self, id: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}/state/io.containerd.runtime.v2.task/{}/{id}",
            self.dir, self.ns
        ))
    }

    /// The task's (pid, status) as `ctr task ls` shows it; None once it is not listed.
    fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = run(self.ctr().args(["task", "ls"]));
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    /// The exit status of `id` in the recorded events (a /tasks/exit event of its init).
    fn exit_event(&self, id: &str) -> Option<i64> {
        let text = std::fs::read_to_string(&self.events_file).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("/tasks/exit") && l.contains(&self.ns))
            .filter_map(|l| {
                let json = &l[l.find('{')?..];
                serde_json_lite(json)
            })
            .find(|(cid, _)| cid == id)
            .map(|(_, st)| st)
    }
}

/// (container_id, exit_status) of a TaskExit event's JSON as `ctr events` prints it (the shim
/// crate has no JSON parser: the two fields are read by name; a missing exit_status is 0, as
/// protobuf's JSON omits zero values).
fn serde_json_lite(json: &str) -> Option<(String, i64)> {
    let field = |name: &str| -> Option<&str> {
        let key = format!("\"{name}\":");
        let at = json.find(&key)? + key.len();
        let rest = &json[at..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    };
    let id = field("container_id")?.trim_matches('"').to_string();
    let status = field("exit_status").map_or(Some(0), |s| s.parse().ok())?;
    Some((id, status))
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self.ctr().args(["task", "kill", "-s", "KILL", id]).output();
            let _ = self.ctr().args(["task", "delete", "-f", id]).output();
            let _ = self.ctr().args(["c", "rm", id]).output();
        }
        if let Some(mut e) = self.events.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        let _ = Command::new(repo().join("hack/containerd.sh"))
            .args(["stop", &self.dir])
            .output();
        let _ = std::fs::remove_dir(self.husk_root.join(&self.ns));
        let _ = std::fs::remove_dir(&self.husk_root);
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.ns));
        // Runtimes leave the parent of cgroupsPath /<namespace>/<id> behind.
        let _ = Command::new("find")
            .args([
                "/sys/fs/cgroup",
                "-maxdepth",
                "3",
                "-type",
                "d",
                "-name",
                &self.ns,
            ])
            .args(["-exec", "rmdir", "{}", "+"])
            .output();
    }
}

/// What ctr sees of a container whose shim was SIGKILLed.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// The task in `ctr task ls` once containerd noticed: "STOPPED", or "gone".
    task_after_kill: String,
    /// The exit status of the /tasks/exit event containerd published, if any.
    exit_event: Option<i64>,
    /// `ctr task delete`: "ok", "not found" (containerd already removed the task), or its error.
    task_delete: String,
    container_delete_ok: bool,
    /// `ctr task ls` / `ctr c ls` still naming the container at the end.
    listed_at_end: bool,
}

/// The cgroup directories of `pid` in every hierarchy (v1 controllers and cgroup2).
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    let mut dirs = Vec::new();
    for l in s.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
        if path == "/" {
            continue;
        }
        let base = if ctrls.is_empty() {
            if Path::new("/sys/fs/cgroup/unified").is_dir() {
                PathBuf::from("/sys/fs/cgroup/unified")
            } else {
                PathBuf::from("/sys/fs/cgroup")
            }
        } else {
            let c = ctrls.split(',').next().unwrap_or("");
            let c = c.strip_prefix("name=").unwrap_or(c);
            PathBuf::from("/sys/fs/cgroup").join(c)
        };
        let d = base.join(path.trim_start_matches('/'));
        if d.is_dir() {
            dirs.push(d);
        }
    }
    dirs
}

/// Alive and not a zombie, with the same start time as when it was recorded.
fn alive(pid: i32, start: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let after = s.rsplit_once(')').map_or("", |(_, a)| a);
            let f: Vec<&str> = after.split_whitespace().collect();
            f.first().is_some_and(|st| *st != "Z" && *st != "X") && f.get(19) == Some(&start)
        }
        Err(_) => false,
    }
}

fn start_time(pid: i32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = s.rsplit_once(')').map_or("", |(_, a)| a);
    after
        .split_whitespace()
        .nth(19)
        .expect("starttime")
        .to_string()
}

fn kill_shim_while_running(ctrd: &mut Ctrd, runtime: &str, shim_name: &str) -> Outcome {
    let id = format!(
        "faults-{}-{}",
        runtime.split('.').nth(2).unwrap_or("rt"),
        std::process::id()
    );
    ctrd.containers.push(id.clone());
    run(ctrd.ctr().args([
        "run",
        "-d",
        "--runtime",
        runtime,
        "husk.local/busybox:latest",
        &id,
        "sh",
        "-c",
        "sleep 100000 & sleep 100000",
    ]));
    assert!(
        wait_for(Duration::from_secs(30), || ctrd
            .task(&id)
            .is_some_and(|(_, s)| s == "RUNNING")),
        "{runtime}: task not running"
    );
    let (pid, _) = ctrd.task(&id).expect("task");
    let pid_start = start_time(pid);
    // Every process of the container (the init and its child) and its cgroups and mounts.
    let mut procs = vec![(pid, pid_start.clone())];
    assert!(
        wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        }),
        "{runtime}: the container's second process did not start"
    );
    for c in std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        procs.push((c, start_time(c)));
    }
    let cgroups = cgroup_dirs(pid);
    assert!(!cgroups.is_empty(), "{runtime}: container in no cgroup");
    let bundle = ctrd.bundle(&id);
    // The shim: the init's parent (shims are subreapers of their containers).
    let shim_pid: i32 = {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after = st.rsplit_once(')').map_or("", |(_, a)| a);
        after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("ppid")
    };
    let comm = std::fs::read_to_string(format!("/proc/{shim_pid}/cmdline")).unwrap_or_default();
    assert!(
        comm.contains(shim_name) && comm.contains(&id),
        "{runtime}: pid {shim_pid} is not the shim of {id}: {comm:?}"
    );

    // SAFETY: kill(2) of the shim pid just read and checked.
    assert_eq!(unsafe { libc::kill(shim_pid, libc::SIGKILL) }, 0);

    // containerd notices the dead shim and cleans up: the task stops or goes away.
    let mut task_after_kill = String::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            match ctrd.task(&id) {
                None => {
                    task_after_kill = "gone".into();
                    true
                }
                Some((_, s)) if s == "STOPPED" => {
                    task_after_kill = s;
                    true
                }
                Some(_) => false,
            }
        }),
        "{runtime}: containerd still shows the task running after its shim was killed"
    );
    // The exit event comes with the clean-up (waited for, bounded: the outcome compares it).
    let mut exit_event = None;
    wait_for(Duration::from_secs(10), || {
        exit_event = ctrd.exit_event(&id);
        exit_event.is_some()
    });

    let td = ctrd
        .ctr()
        .args(["task", "delete", &id])
        .output()
        .expect("ctr");
    let cd = ctrd.ctr().args(["c", "rm", &id]).output().expect("ctr");
    let listed_at_end = {
        let t = run(ctrd.ctr().args(["task", "ls", "-q"]));
        let c = run(ctrd.ctr().args(["c", "ls", "-q"]));
        t.lines().chain(c.lines()).any(|l| l.trim() == id)
    };
    let outcome = Outcome {
        task_after_kill,
        exit_event,
        task_delete: if td.status.success() {
            "ok".to_string()
        } else if String::from_utf8_lossy(&td.stderr).contains("not found") {
            "not found".to_string()
        } else {
            String::from_utf8_lossy(&td.stderr).trim().to_string()
        },
        container_delete_ok: cd.status.success(),
        listed_at_end,
    };
    eprintln!(
        "{runtime}: {outcome:?}; task delete: {} container delete: {}",
        String::from_utf8_lossy(&td.stderr).trim(),
        String::from_utf8_lossy(&cd.stderr).trim()
    );
    assert!(
        outcome.container_delete_ok,
        "{runtime}: ctr c rm: {}",
        String::from_utf8_lossy(&cd.stderr)
    );
    assert!(!outcome.listed_at_end, "{runtime}: {id} still listed");

    // Nothing of the container is left.
    for (p, start) in &procs {
        assert!(
            wait_for(Duration::from_secs(30), || !alive(*p, start)),
            "{runtime}: container process {p} still running"
        );
    }
    for d in &cgroups {
        assert!(
            wait_for(Duration::from_secs(30), || !d.exists()),
            "{runtime}: cgroup {} left",
            d.display()
        );
    }
    let b = bundle.display().to_string();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&b))
        .map(str::to_string)
        .collect();
    assert!(mounts.is_empty(), "{runtime}: mounts left: {mounts:?}");
    assert!(!bundle.exists(), "{runtime}: bundle {b} left");
    let state = if runtime == "io.containerd.husk.v2" {
        ctrd.husk_root.join(&ctrd.ns).join(&id)
    } else {
        PathBuf::from("/run/containerd/runc")
            .join(&ctrd.ns)
            .join(&id)
    };
    assert!(
        !state.exists(),
        "{runtime}: runtime state {} left",
        state.display()
    );
    ctrd.containers.retain(|c| c != &id);
    outcome
}

#[test]
fn shim_killed_while_container_runs_same_as_runc() {
    assert!(is_root(), "this test needs root (it runs containerd)");
    let mut ctrd = Ctrd::start();
    let runc = kill_shim_while_running(
        &mut ctrd,
        "io.containerd.runc.v2",
        "containerd-shim-runc-v2",
    );
    let husk = kill_shim_while_running(
        &mut ctrd,
        "io.containerd.husk.v2",
        "containerd-shim-husk-v2",
    );
    assert!(
        runc.exit_event.is_some() || runc.task_after_kill == "STOPPED",
        "runc: containerd reported no exit: {runc:?}"
    );
    assert_eq!(husk, runc, "husk's shim (left) vs runc's (right)");
}
