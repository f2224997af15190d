//! `husk create` SIGKILLed at each step of its work, deterministically and without any hook in
//! husk: husk runs under `strace -e inject=SYSCALL:signal=SIGKILL:when=N` (only husk itself is
//! traced, not its children), which kills it on entry to its Nth call of SYSCALL (the call
//! itself does not happen). N for each step is found by tracing one complete create first; the
//! killed run's own trace then shows that the kill hit that call. Steps: the re-exec from the
//! read-only image, the state dir, its lock, the cgroups (before the first mkdir, half-way
//! through the controllers), each state save, clone, and every message of the parent <-> child
//! sync channel (Go, Ready; RunHooks and HooksDone with hooks; NeedIdMaps, IdMapsDone and
//! InitPid with an intermediate process).
//!
//! After each kill: `husk state` answers (stopped, or an error naming the ID when no state was
//! written), `husk list` works and lists it stopped, `husk start` and `husk kill` refuse naming
//! the ID, `husk delete --force` succeeds, and then nothing is left: no process that came from
//! that husk (found by a tag in the environment every process of the create inherits until it
//! execs), no cgroup directory in any hierarchy, no mount, nothing under the state root, no
//! copy of the binary; a create with the same ID then runs. Processes blocked on the sync
//! channel when husk died must die by themselves (EOF on the channel).
//!
//! Needs root and strace (fails without them). Env: HUSK (default: the husk built with this test).
mod common;

use common::{husk_bin, is_root, Env};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One place to kill husk: before its `nth` call of `syscall` whose traced line contains
/// `needle`, in the reference trace of a complete create.
struct Step {
    name: &'static str,
    syscall: &'static str,
    needle: String,
    nth: usize,
    /// What the kill leaves, checked before delete.
    left: Left,
}

fn step(name: &'static str, syscall: &'static str, needle: &str, nth: usize, left: Left) -> Step {
    Step {
        name,
        syscall,
        needle: needle.to_string(),
        nth,
        left,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Plain,
    Hooks,
    UserNsJoiningNetns,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Left {
    /// No state.json (state answers an error naming the ID).
    NoState,
    /// A state, no container process yet.
    StateOnly,
    /// A state and a child blocked on the sync channel: it must die by itself (EOF).
    ChildDiesAlone,
    /// A state and maybe an init blocked on its start pipe: delete must kill it.
    InitMayWait,
}

struct Fx {
    env: Env,
    id: String,
    tag: String,
    cg_parent: String,
    trace_dir: tempfile::TempDir,
}

impl Fx {
    fn new(name: &str, variant: Variant) -> Fx {
        let mut env = Env::new(&format!("faults-{name}"));
        let id = env.id(&format!("fault-{name}"));
        let cg_parent = format!("husk-faults-{}-{name}", std::process::id());
        let mut c = env.config();
        c["process"]["args"] = serde_json::json!(["sleep", "100000"]);
        c["linux"]["cgroupsPath"] = serde_json::json!(format!("/{cg_parent}/{id}"));
        match variant {
            Variant::Plain => {}
            Variant::Hooks => {
                c["hooks"] = serde_json::json!({
                    "prestart": [{"path": "/bin/true"}],
                    "createRuntime": [{"path": "/bin/true"}],
                });
            }
            Variant::UserNsJoiningNetns => {
                // A new user namespace owning a joined (network) namespace: the parent talks to
                // an intermediate process (id maps), which forks the init and reports its pid.
                let h = 300_000 + (std::process::id() % 300) * 65_536;
                let map = serde_json::json!([{"containerID": 0, "hostID": h, "size": 65536}]);
                c["linux"]["uidMappings"] = map.clone();
                c["linux"]["gidMappings"] = map;
                let ns = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
                ns.retain(|n| n["type"] != "network" && n["type"] != "user");
                ns.push(serde_json::json!({"type": "user"}));
                // husk's own (the host's) network namespace, opened by husk before clone
                ns.push(serde_json::json!({"type": "network", "path": "/proc/self/ns/net"}));
                // sysfs cannot be mounted fresh without a network namespace of the user
                // namespace's own: bind the host's
                for m in c["mounts"].as_array_mut().expect("mounts") {
                    if m["destination"] == "/sys" {
                        *m = serde_json::json!({"destination": "/sys", "type": "bind",
                            "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                    }
                }
            }
        }
        env.write_config(&c);
        Fx {
            env,
            tag: format!("{id}-{}", std::process::id()),
            id,
            cg_parent,
            trace_dir: tempfile::Builder::new()
                .prefix("husk-faults-trace-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn husk(&self, args: &[&str]) -> Output {
        Command::new(husk_bin())
            .arg("--root")
            .arg(&self.env.root)
            .args(args)
            .env("HUSK_FAULT_TAG", &self.tag)
            .stdin(Stdio::null())
            .output()
            .expect("run husk")
    }

    /// `husk create` (optionally under strace with `strace_args`): the container keeps the
    /// stdio it inherits, so it gets /dev/null and a file, never our pipes.
    fn create(&self, strace_args: Option<&[String]>) -> (std::process::ExitStatus, String) {
        let err = self.trace_dir.path().join("create.stderr");
        let errf = std::fs::File::create(&err).expect("stderr file");
        let b = self.env.bundle().display().to_string();
        let root = self.env.root.display().to_string();
        let husk = husk_bin().display().to_string();
        let husk_args = ["--root", &root, "create", "--bundle", &b, &self.id];
        let mut cmd = match strace_args {
            Some(a) => {
                let mut c = Command::new("strace");
                c.args(a).arg("--").arg(&husk).args(husk_args);
                c
            }
            None => {
                let mut c = Command::new(&husk);
                c.args(husk_args);
                c
            }
        };
        let st = cmd
            .env("HUSK_FAULT_TAG", &self.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errf)
            .status()
            .expect("spawn create");
        (st, std::fs::read_to_string(&err).unwrap_or_default())
    }

    fn trace_file(&self, name: &str) -> PathBuf {
        self.trace_dir.path().join(name)
    }

    /// Trace one complete create (then delete it): the syscalls of interest, in order.
    fn reference_trace(&self) -> Vec<String> {
        let out = self.trace_file("reference");
        let args: Vec<String> = [
            "-o",
            &out.display().to_string(),
            "-s",
            "256",
            "-e",
            "trace=open_tree,execveat,mkdir,flock,openat,rename,clone3,sendto,recvfrom",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (st, err) = self.create(Some(&args));
        assert!(st.success(), "traced create failed: {err}");
        let del = self.husk(&["delete", "--force", &self.id]);
        assert!(del.status.success(), "delete after the reference create");
        self.assert_nothing_left("reference");
        std::fs::read_to_string(&out)
            .expect("read trace")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The processes that came from this test's husk runs and have not exec'd (or are still
    /// alive with our environment): zombies have no environment and are not counted.
    fn tagged_processes(&self) -> Vec<i32> {
        let needle = format!("HUSK_FAULT_TAG={}\0", self.tag);
        let mut pids = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
                if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Every cgroup directory of the container (and its parent) that exists, in any hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join(&self.cg_parent);
                if p.exists() {
                    left.push(p);
                }
            }
        }
        if Path::new("/sys/fs/cgroup").join(&self.cg_parent).exists() {
            left.push(Path::new("/sys/fs/cgroup").join(&self.cg_parent));
        }
        left
    }

    fn mounts(&self) -> Vec<String> {
        let bundle = self.env.bundle().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter(|l| l.contains(&bundle) || l.contains(&self.id))
            .map(str::to_string)
            .collect()
    }

    fn root_entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.env.root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.contains(&self.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait (bounded) until no tagged process is left; the ones left otherwise.
    fn wait_no_processes(&self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.tagged_processes();
            if p.is_empty() || Instant::now() > deadline {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_nothing_left(&self, step: &str) {
        let procs = self.wait_no_processes();
        assert!(procs.is_empty(), "{step}: processes left: {procs:?}");
        let cg = self.cgroup_dirs();
        assert!(cg.is_empty(), "{step}: cgroup dirs left: {cg:?}");
        let m = self.mounts();
        assert!(m.is_empty(), "{step}: mounts left: {m:?}");
        let r = self.root_entries();
        assert!(r.is_empty(), "{step}: left under the state root: {r:?}");
        let exe = exe_leftovers();
        assert!(exe.is_empty(), "{step}: husk binary copies left: {exe:?}");
    }

    fn has_state(&self) -> bool {
        self.env.root.join(&self.id).join("state.json").is_file()
    }

    /// Kill husk at `step`, check what it left and that everything later answers correctly.
    fn kill_at(&self, step: &Step, reference: &[String]) {
        let name = step.name;
        let prefix = format!("{}(", step.syscall);
        let calls: Vec<&String> = reference
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        let hits: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(&step.needle))
            .map(|(i, _)| i + 1)
            .collect();
        let n = *hits.get(step.nth - 1).unwrap_or_else(|| {
            panic!(
                "{name}: no call {} of {} with {:?} in the reference trace:\n{}",
                step.nth,
                step.syscall,
                step.needle,
                reference.join("\n")
            )
        });
        let out = self.trace_file(name);
        let args: Vec<String> = vec![
            "-o".into(),
            out.display().to_string(),
            "-s".into(),
            "256".into(),
            "-e".into(),
            format!("trace={}", step.syscall),
            "-e".into(),
            format!("inject={}:signal=SIGKILL:when={n}", step.syscall),
        ];
        let (st, err) = self.create(Some(&args));
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "{name}: husk (under strace) was not killed: {st:?} {err}"
        );
        // The kill hit the intended call: the last call traced is the Nth, on entry, and it is
        // the same call as in the reference trace (same path or message, where the trace shows
        // the arguments on entry).
        let trace = std::fs::read_to_string(&out).expect("read trace");
        let traced: Vec<&str> = trace.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(traced.len(), n, "{name}: calls before the kill:\n{trace}");
        let last = traced[n - 1];
        assert!(
            last.ends_with("= ?"),
            "{name}: the killed call completed: {last}"
        );
        assert!(
            trace.contains("+++ killed by SIGKILL +++"),
            "{name}: trace:\n{trace}"
        );
        if step.syscall != "recvfrom" {
            assert!(
                last.contains(&step.needle),
                "{name}: killed at {last}, wanted a call with {:?}",
                step.needle
            );
        }
        // Calls whose arguments are the same in every run (paths, fds, flags): the same call.
        if ["open_tree", "mkdir", "flock", "openat", "rename", "clone3"].contains(&step.syscall) {
            assert_eq!(
                call_of(last),
                call_of(calls[n - 1]),
                "{name}: not the reference call"
            );
        }

        // What it left.
        if step.left == Left::NoState {
            assert!(!self.has_state(), "{name}: a state was written");
            // Nothing for delete to find: nothing else may be there.
            let cg = self.cgroup_dirs();
            assert!(
                cg.is_empty(),
                "{name}: cgroups made before any state: {cg:?}"
            );
        } else {
            assert!(self.has_state(), "{name}: no state written");
        }
        if step.left == Left::ChildDiesAlone {
            let p = self.wait_no_processes();
            assert!(p.is_empty(), "{name}: a child outlived husk: {p:?}");
        }

        // Every later call answers. An init still doing its set-up after husk died holds the
        // container's lock (inherited) until it closes its fds: "creating" while it does, then
        // it dies (its Ready finds the channel closed) or blocks for `start`: "stopped" either
        // way, as nothing will ever record it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (s, serr) = loop {
            let s = self.husk(&["state", &self.id]);
            let serr = String::from_utf8_lossy(&s.stderr).to_string();
            assert!(!serr.contains("panicked"), "{name}: state panicked: {serr}");
            let creating = serde_json::from_slice::<serde_json::Value>(&s.stdout)
                .is_ok_and(|v| v["status"] == "creating");
            if !creating || Instant::now() > deadline {
                break (s, serr);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if self.has_state() {
            assert!(s.status.success(), "{name}: state failed: {serr}");
            let v: serde_json::Value = serde_json::from_slice(&s.stdout).expect("state json");
            assert_eq!(v["status"], "stopped", "{name}: state: {v}");
            assert_eq!(v["id"], self.id.as_str(), "{name}: state: {v}");
        } else {
            assert!(!s.status.success(), "{name}: state of nothing succeeded");
            assert!(
                serr.contains(&self.id),
                "{name}: state error does not name {}: {serr}",
                self.id
            );
        }
        let l = self.husk(&["list"]);
        assert!(
            l.status.success(),
            "{name}: list: {}",
            String::from_utf8_lossy(&l.stderr)
        );
        let listed = String::from_utf8_lossy(&l.stdout).to_string();
        if self.has_state() {
            let line = listed
                .lines()
                .find(|l| l.starts_with(&format!("{} ", self.id)))
                .unwrap_or_else(|| panic!("{name}: not listed: {listed}"));
            assert!(line.contains("stopped"), "{name}: listed as {line}");
        }
        for cmd in [&["start", &self.id][..], &["kill", &self.id, "KILL"][..]] {
            let o = self.husk(cmd);
            let e = String::from_utf8_lossy(&o.stderr).to_string();
            assert!(!o.status.success(), "{name}: {cmd:?} succeeded");
            assert!(!e.contains("panicked"), "{name}: {cmd:?} panicked: {e}");
            assert!(
                e.contains(&self.id),
                "{name}: {cmd:?} error without the ID: {e}"
            );
        }
        // The test itself is still alive: `kill` did not signal pid 0 (our process group).

        let d = self.husk(&["delete", "--force", &self.id]);
        assert!(
            d.status.success(),
            "{name}: delete --force: {}",
            String::from_utf8_lossy(&d.stderr)
        );
        self.assert_nothing_left(name);

        // The same ID again, to a running container.
        let (st, err) = self.create(None);
        assert!(st.success(), "{name}: create after the kill: {err}");
        let o = self.husk(&["start", &self.id]);
        assert!(
            o.status.success(),
            "{name}: start: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let s = self.husk(&["state", &self.id]);
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).expect("state json");
        assert_eq!(v["status"], "running", "{name}: {v}");
        let d = self.husk(&["delete", "--force", &self.id]);
        assert!(d.status.success(), "{name}: final delete");
        self.assert_nothing_left(&format!("{name} (after the re-create)"));
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        let _ = self.husk(&["delete", "--force", &self.id]);
        for p in self.tagged_processes() {
            // SAFETY: kill(2) of a pid that carries this test's tag.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // Leaves first: the container's dir, then its parent.
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(d.join(&self.id));
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Files or mounts named /run/.husk-exe.PID (what husk's re-exec made before it detached its
/// binary's bind) of a husk that is gone.
fn exe_leftovers() -> Vec<String> {
    let dead = |name: &str| {
        name.strip_prefix(".husk-exe.")
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    let mut left: Vec<String> = std::fs::read_dir("/run")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| dead(n))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        left.extend(
            mi.lines()
                .filter(|l| {
                    l.split(' ')
                        .nth(4)
                        .and_then(|m| m.strip_prefix("/run/"))
                        .is_some_and(dead)
                })
                .map(str::to_string),
        );
    }
    left
}

/// A traced line without its result: `mkdir("/x", 0777)` of `mkdir("/x", 0777)   = 0`.
fn call_of(line: &str) -> &str {
    line.rsplit_once(" = ")
        .map_or(line, |(call, _)| call)
        .trim_end()
}

/// Root and strace are required (hack/setup.sh installs strace): a run without them fails,
/// never counts as passed.
fn require_strace() {
    assert!(is_root(), "these fault tests need root");
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "strace is not installed: bash hack/setup.sh (or apt-get install strace)"
    );
}

fn run_steps(fx: &Fx, steps: &[Step]) {
    // A first create fills what is cached between runs, so the reference trace and the killed
    // runs make the same calls.
    let (st, err) = fx.create(None);
    assert!(st.success(), "warm-up create: {err}");
    assert!(fx.husk(&["delete", "--force", &fx.id]).status.success());
    let reference = fx.reference_trace();
    for s in steps {
        fx.kill_at(s, &reference);
    }
}

/// A container without hooks: the sync channel carries Go and Ready.
#[test]
fn create_killed_at_each_step() {
    require_strace();
    let fx = Fx::new("plain", Variant::Plain);
    let id = &format!("/{}\"", fx.id);
    let root = &format!("{}/{}\"", fx.env.root.display(), fx.id);
    let steps = [
        step(
            "reexec-open-tree",
            "open_tree",
            "/proc/self/exe",
            1,
            Left::NoState,
        ),
        step(
            "reexec-execveat",
            "execveat",
            "AT_EMPTY_PATH",
            1,
            Left::NoState,
        ),
        step("state-dir-mkdir", "mkdir", root, 1, Left::NoState),
        step("lock", "flock", "LOCK_EX", 1, Left::NoState),
        step(
            "state-save-before-cgroups",
            "openat",
            ".state.json.tmp",
            1,
            Left::NoState,
        ),
        step(
            "first-cgroup-mkdir",
            "mkdir",
            "/sys/fs/cgroup/",
            1,
            Left::StateOnly,
        ),
        step("second-controller-mkdir", "mkdir", id, 3, Left::StateOnly),
        step(
            "state-save-before-clone",
            "openat",
            ".state.json.tmp",
            2,
            Left::StateOnly,
        ),
        step(
            "state-rename-before-clone",
            "rename",
            "state.json",
            2,
            Left::StateOnly,
        ),
        step("clone", "clone3", "CLONE_NEWPID", 1, Left::StateOnly),
        step("send-go", "sendto", "\\\"Go\\\"", 1, Left::ChildDiesAlone),
        step("recv-ready", "recvfrom", "Ready", 1, Left::InitMayWait),
        step(
            "final-state-save",
            "openat",
            ".state.json.tmp",
            3,
            Left::InitMayWait,
        ),
        step(
            "final-state-rename",
            "rename",
            "state.json",
            3,
            Left::InitMayWait,
        ),
    ];
    run_steps(&fx, &steps);
}

/// With prestart/createRuntime hooks: RunHooks and HooksDone on the channel too.
#[test]
fn create_with_hooks_killed_at_each_sync_message() {
    require_strace();
    let fx = Fx::new("hooks", Variant::Hooks);
    let steps = [
        step(
            "recv-run-hooks",
            "recvfrom",
            "RunHooks",
            1,
            Left::ChildDiesAlone,
        ),
        step(
            "send-hooks-done",
            "sendto",
            "HooksDone",
            1,
            Left::ChildDiesAlone,
        ),
        step(
            "recv-ready-after-hooks",
            "recvfrom",
            "Ready",
            1,
            Left::InitMayWait,
        ),
    ];
    run_steps(&fx, &steps);
}

/// With an intermediate process (a new user namespace owning a joined network namespace): the
/// channel carries NeedIdMaps, IdMapsDone and InitPid too.
#[test]
fn create_with_intermediate_killed_at_each_sync_message() {
    require_strace();
    let fx = Fx::new("userns", Variant::UserNsJoiningNetns);
    let steps = [
        step(
            "recv-need-id-maps",
            "recvfrom",
            "NeedIdMaps",
            1,
            Left::ChildDiesAlone,
        ),
        step(
            "send-id-maps-done",
            "sendto",
            "IdMapsDone",
            1,
            Left::ChildDiesAlone,
        ),
        step("recv-init-pid", "recvfrom", "InitPid", 1, Left::InitMayWait),
        step(
            "recv-ready-from-init",
            "recvfrom",
            "Ready",
            1,
            Left::InitMayWait,
        ),
    ];
    run_steps(&fx, &steps);
}
