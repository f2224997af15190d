//! Task API calls `ctr` 1.6 cannot make (Update, Connect, State of an exec), made over ttrpc
//! straight to the shim of a container that a real containerd started; `crilog://` stdio (the
//! CRI log written by the shim); Kill/Delete racing process exits; a stalled ttrpc client.
//!
//! Needs root (fails otherwise, saying so). Env: HUSK_RUNTIME (default /usr/sbin/runc).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_sync::{Client, TaskClient};
use containerd_shim_protos::ttrpc::context::Context;
use containerd_shim_protos::ttrpc::Code;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
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

/// A private containerd with the busybox image, stopped (and cleaned) on drop.
struct Ctrd {
    dir: String,
    ns: String,
    containers: Vec<String>,
}

impl Ctrd {
    fn start() -> Ctrd {
        let runtime =
            std::env::var("HUSK_RUNTIME").unwrap_or_else(|_| "/usr/sbin/runc".to_string());
        let dir = run(Command::new(repo().join("hack/containerd.sh"))
            .arg("start")
            .env("SHIM_BIN", env!("CARGO_BIN_EXE_containerd-shim-husk-v2"))
            .env("HUSK_RUNTIME", runtime));
        let ns = format!("husk-api-{}", std::process::id());
        let c = Ctrd {
            dir,
            ns,
            containers: Vec::new(),
        };
        run(Command::new(repo().join("hack/mkimage.sh"))
            .arg(c.sock())
            .env("CTR_NAMESPACE", &c.ns));
        c
    }

    fn sock(&self) -> String {
        format!("{}/containerd.sock", self.dir)
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.args(["-a", &self.sock(), "-n", &self.ns]);
        cmd
    }

    fn run_detached(&mut self, id: &str, args: &[&str]) {
        self.containers.push(id.to_string());
        run(self
            .ctr()
            .args([
                "run",
                "-d",
                "--runtime",
                "io.containerd.husk.v2",
                "husk.local/busybox:latest",
                id,
            ])
            .args(args));
    }

    fn bundle(&self, id: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}/state/io.containerd.runtime.v2.task/{}/{id}",
            self.dir, self.ns
        ))
    }

    fn client(&self, id: &str) -> TaskClient {
        let address = std::fs::read_to_string(self.bundle(id).join("address"))
            .unwrap_or_else(|e| panic!("read shim address of {id}: {e}"));
        let client = Client::connect(address.trim())
            .unwrap_or_else(|e| panic!("connect to shim at {address}: {e}"));
        TaskClient::new(client)
    }
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self.ctr().args(["task", "kill", "-s", "KILL", id]).output();
        }
        for id in &self.containers {
            for _ in 0..100 {
                let ls = self.ctr().args(["task", "ls"]).output();
                let stopped = ls
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .all(|l| !l.starts_with(&format!("{id} ")) || l.contains("STOPPED"))
                    })
                    .unwrap_or(true);
                if stopped {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = self.ctr().args(["task", "delete", id]).output();
            let _ = self.ctr().args(["c", "rm", id]).output();
        }
        let _ = Command::new(repo().join("hack/containerd.sh"))
            .args(["stop", &self.dir])
            .output();
        let root = std::env::var("HUSK_ROOT").unwrap_or_else(|_| "/run/husk".to_string());
        let _ = std::fs::remove_dir(Path::new(&root).join(&self.ns));
        // The runtime leaves the parent of cgroupsPath /<namespace>/<id> behind.
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn memory_limit(pid: u32) -> u64 {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let rel = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("v2 cgroup");
        let v = std::fs::read_to_string(format!("/sys/fs/cgroup{rel}/memory.max")).expect("max");
        return v.trim().parse().unwrap_or(u64::MAX);
    }
    let rel = cg
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let _ = p.next();
            let ctrl = p.next()?;
            let path = p.next()?;
            ctrl.split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("memory cgroup");
    let v = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{rel}/memory.limit_in_bytes"))
        .expect("limit");
    v.trim().parse().expect("limit number")
}

#[test]
fn update_connect_and_exec_state() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut ctrd = Ctrd::start();
    let id = format!("api-{}", std::process::id());
    ctrd.run_detached(&id, &["sleep", "100000"]);
    let client = ctrd.client(&id);

    // Connect reports the shim and the container's init.
    let conn = client
        .connect(
            Context::default(),
            &api::ConnectRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("Connect");
    let shim_pid: u32 = std::fs::read_to_string(ctrd.bundle(&id).join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(conn.shim_pid, shim_pid);
    assert!(conn.task_pid > 0);

    // Update: resources go to `<runtime> update --resources -`.
    let limit: u64 = 48 * 1024 * 1024;
    let resources = format!("{{\"memory\":{{\"limit\":{limit}}}}}");
    client
        .update(
            Context::default(),
            &api::UpdateTaskRequest {
                id: id.clone(),
                resources: MessageField::some(Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                        .into(),
                    value: resources.into_bytes(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .expect("Update");
    assert_eq!(memory_limit(conn.task_pid), limit);

    // State of an unknown exec is NotFound, not a crash.
    let err = client
        .state(
            Context::default(),
            &api::StateRequest {
                id: id.clone(),
                exec_id: "nope".into(),
                ..Default::default()
            },
        )
        .expect_err("state of unknown exec");
    assert!(err.to_string().contains("not found"), "{err}");

    // Checkpoint writes a CRIU image and, without the exit option, leaves the task running.
    let image = std::env::temp_dir().join(format!("husk-shim-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&image);
    let res = client.checkpoint(
        Context::default(),
        &api::CheckpointTaskRequest {
            id: id.clone(),
            path: image.display().to_string(),
            ..Default::default()
        },
    );
    let written = image.join("inventory.img").exists();
    // the CRIU options it used are recorded with the image, for a restore to repeat them
    let recorded = std::fs::read_to_string(image.join("husk-shim-criu.json")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&image);
    res.expect("checkpoint");
    assert!(
        written,
        "no CRIU image (inventory.img) in {}",
        image.display()
    );
    assert!(
        recorded.contains("\"tcp_established\":false"),
        "CRIU options not recorded: {recorded:?}"
    );
    assert_eq!(
        memory_limit(conn.task_pid),
        limit,
        "the task is still running in its cgroup after checkpoint"
    );

    // Create from a checkpoint checks it first: an unusable one is refused with an error naming
    // it, before anything is mounted or run (this shim's container is not touched).
    let missing = format!("/nonexistent/husk-ckpt-{}", std::process::id());
    let err = client
        .create(
            Context::default(),
            &api::CreateTaskRequest {
                id: format!("{id}-r"),
                bundle: ctrd.bundle(&id).display().to_string(),
                checkpoint: missing.clone(),
                ..Default::default()
            },
        )
        .expect_err("create from a missing checkpoint");
    assert!(err.to_string().contains(&missing), "{err}");
    let err = client
        .create(
            Context::default(),
            &api::CreateTaskRequest {
                id: format!("{id}-r"),
                bundle: ctrd.bundle(&id).display().to_string(),
                checkpoint: std::env::temp_dir().display().to_string(),
                parent_checkpoint: missing.clone(),
                ..Default::default()
            },
        )
        .expect_err("create with a parent checkpoint");
    assert!(err.to_string().contains("parent_checkpoint"), "{err}");
    assert_eq!(
        memory_limit(conn.task_pid),
        limit,
        "the container still runs"
    );
}

/// The ttrpc status code of a failed call (UNKNOWN for a transport error).
fn code_of(err: &containerd_shim_protos::ttrpc::Error) -> Code {
    match err {
        containerd_shim_protos::ttrpc::Error::RpcStatus(s) => s.code.enum_value_or(Code::UNKNOWN),
        _ => Code::UNKNOWN,
    }
}

fn timeout(secs: u64) -> Context {
    containerd_shim_protos::ttrpc::context::with_timeout(Duration::from_secs(secs).as_nanos() as i64)
}

/// An OCI process spec for an exec.
fn process_any(args: &[&str]) -> MessageField<Any> {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let spec = format!(
        "{{\"args\":[{}],\"cwd\":\"/\",\"env\":[\"PATH=/usr/sbin:/usr/bin:/sbin:/bin\"],\"user\":{{\"uid\":0,\"gid\":0}},\"terminal\":false}}",
        args.join(",")
    );
    MessageField::some(Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: spec.into_bytes(),
        ..Default::default()
    })
}

fn exec(client: &TaskClient, id: &str, exec_id: &str, args: &[&str]) {
    client
        .exec(
            timeout(30),
            &api::ExecProcessRequest {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                spec: process_any(args),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("Exec {exec_id}: {e}"));
}

fn start(client: &TaskClient, id: &str, exec_id: &str) -> u32 {
    client
        .start(
            timeout(30),
            &api::StartRequest {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("Start {exec_id}: {e}"))
        .pid
}

fn kill(client: &TaskClient, id: &str, exec_id: &str) -> Result<(), Code> {
    client
        .kill(
            timeout(30),
            &api::KillRequest {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: libc::SIGKILL as u32,
                ..Default::default()
            },
        )
        .map(|_| ())
        .map_err(|e| code_of(&e))
}

fn wait(client: &TaskClient, id: &str, exec_id: &str, secs: u64) -> api::WaitResponse {
    client
        .wait(
            timeout(secs),
            &api::WaitRequest {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("Wait {id}/{exec_id}: {e}"))
}

fn delete(client: &TaskClient, id: &str, exec_id: &str) -> Result<api::DeleteResponse, Code> {
    client
        .delete(
            timeout(30),
            &api::DeleteRequest {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        )
        .map_err(|e| code_of(&e))
}

fn reopen_log(client: &TaskClient, id: &str) -> Result<(), containerd_shim_protos::ttrpc::Error> {
    let mut req = api::UpdateTaskRequest {
        id: id.to_string(),
        ..Default::default()
    };
    req.annotations
        .insert("io.husk.cri.reopen-log".into(), "1".into());
    client.update(timeout(30), &req).map(|_| ())
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("husk-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The records of a CRI log file as (stream, tag, content), checking each timestamp.
fn records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_terminator('\n')
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let ts = f.next().unwrap_or_default();
            assert!(
                ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "timestamp {ts:?} in {l:?}"
            );
            let stream = f.next().unwrap_or_default().to_string();
            let tag = f.next().unwrap_or_default().to_string();
            let content = f.next().unwrap_or_default().to_string();
            assert!(stream == "stdout" || stream == "stderr", "{l:?}");
            assert!(tag == "F" || tag == "P", "{l:?}");
            (stream, tag, content)
        })
        .collect()
}

fn of(recs: &[(String, String, String)], stream: &str) -> Vec<(String, String)> {
    recs.iter()
        .filter(|r| r.0 == stream)
        .map(|r| (r.1.clone(), r.2.clone()))
        .collect()
}

fn rec(tag: &str, content: &str) -> (String, String) {
    (tag.to_string(), content.to_string())
}

/// `crilog://` stdio: both streams into one CRI-format file (kubelet's), written by the shim,
/// then reopened (rotation) through Update.
#[test]
fn crilog_writes_cri_records_and_reopens() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let dir = TempDir::new("crilog");
    let log = dir.0.join("c.log");
    let mut ctrd = Ctrd::start();
    let id = format!("crilog-{}", std::process::id());
    // stdout and stderr lines, a 20000-byte line, a prompt without newline (written out as P
    // when output stalls), then after the trigger more lines and an unterminated last line
    // (P at EOF, as containerd writes it).
    let script = "echo out1; echo err1 >&2; echo out2; \
        head -c 20000 /dev/zero | tr '\\0' a; echo; \
        printf 'prompt> '; \
        while [ ! -e /tmp/go ]; do sleep 0.05; done; \
        echo after-reopen; echo err-after >&2; printf tail-at-exit";
    ctrd.containers.push(id.clone());
    run(ctrd.ctr().args([
        "run",
        "-d",
        "--log-uri",
        &format!("crilog://{}", log.display()),
        "--runtime",
        "io.containerd.husk.v2",
        "husk.local/busybox:latest",
        &id,
        "sh",
        "-c",
        script,
    ]));
    let client = ctrd.client(&id);

    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("prompt> ")
    {
        assert!(
            Instant::now() < deadline,
            "no prompt logged: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&log)
        .expect("stat log")
        .permissions()
        .mode()
        & 0o777;
    let rotated = dir.0.join("c.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    reopen_log(&client, &id).expect("Update reopen-log");
    assert!(log.exists(), "reopen created a new file");
    run(ctrd
        .ctr()
        .args(["task", "exec", "--exec-id", "go", &id, "touch", "/tmp/go"]));
    let w = wait(&client, &id, "", 30);
    assert_eq!(w.exit_status, 0);

    let before = records(&rotated);
    let after = records(&log);
    let a = "a".repeat(20000);
    assert_eq!(
        of(&before, "stdout"),
        vec![
            rec("F", "out1"),
            rec("F", "out2"),
            rec("P", &a[..16384]),
            rec("F", &a[16384..]),
            rec("P", "prompt> "),
        ]
    );
    assert_eq!(of(&before, "stderr"), vec![rec("F", "err1")]);
    assert_eq!(
        of(&after, "stdout"),
        vec![rec("F", "after-reopen"), rec("P", "tail-at-exit")]
    );
    assert_eq!(of(&after, "stderr"), vec![rec("F", "err-after")]);
    assert_eq!(mode, 0o640, "log file mode");

    // A container without a crilog has nothing to reopen: an error, not a silent OK.
    let plain = format!("plain-{}", std::process::id());
    ctrd.run_detached(&plain, &["sleep", "100000"]);
    let err = reopen_log(&ctrd.client(&plain), &plain).expect_err("reopen without crilog");
    assert_eq!(code_of(&err), Code::FAILED_PRECONDITION, "{err}");
    assert!(err.to_string().contains("crilog"), "{err}");
}

/// Kill racing the natural exit of short-lived processes answers OK or NotFound (containerd's
/// runc shim: "process already finished", errdefs.ErrNotFound), never another error; Delete
/// racing it answers OK or FailedPrecondition (still running).
#[test]
fn kill_and_delete_race_process_exit() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut ctrd = Ctrd::start();
    let id = format!("race-{}", std::process::id());
    ctrd.run_detached(&id, &["sleep", "100000"]);
    let client = ctrd.client(&id);

    // Never started: FailedPrecondition, as the runc shim ("process not created").
    exec(&client, &id, "unstarted", &["true"]);
    assert_eq!(
        kill(&client, &id, "unstarted"),
        Err(Code::FAILED_PRECONDITION)
    );
    delete(&client, &id, "unstarted").expect("delete an unstarted exec");
    assert_eq!(kill(&client, &id, "unstarted"), Err(Code::NOT_FOUND));

    let iterations = 1000;
    let (mut ok, mut not_found, mut busy) = (0, 0, 0);
    let t0 = Instant::now();
    for i in 0..iterations {
        let e = format!("k{i}");
        exec(&client, &id, &e, &["true"]);
        start(&client, &id, &e);
        match kill(&client, &id, &e) {
            Ok(()) => ok += 1,
            Err(Code::NOT_FOUND) => not_found += 1,
            Err(c) => panic!("iteration {i}: Kill racing exit answered {c:?}"),
        }
        if i % 4 == 0 {
            // Delete right away: FailedPrecondition while it runs, then OK.
            loop {
                match delete(&client, &id, &e) {
                    Ok(_) => break,
                    Err(Code::FAILED_PRECONDITION) => busy += 1,
                    Err(c) => panic!("iteration {i}: Delete racing exit answered {c:?}"),
                }
            }
        } else {
            let w = wait(&client, &id, &e, 30);
            assert!(w.exit_status == 0 || w.exit_status == 137, "{w:?}");
            // After the exit: NotFound, whatever the state of the race was.
            assert_eq!(
                kill(&client, &id, &e),
                Err(Code::NOT_FOUND),
                "iteration {i}"
            );
            delete(&client, &id, &e).unwrap_or_else(|c| panic!("delete {e}: {c:?}"));
        }
    }
    eprintln!(
        "{iterations} exec kills in {:?}: {ok} OK, {not_found} NotFound; {busy} deletes refused while running",
        t0.elapsed()
    );

    // The init: containers that exit at once, killed right after Start (`husk kill` of a
    // container that is not running any more is NotFound too).
    let t0 = Instant::now();
    let (mut ok, mut not_found) = (0, 0);
    for i in 0..20 {
        let c = format!("{id}-i{i}");
        ctrd.run_detached(&c, &["sh", "-c", "exit 0"]);
        let cl = ctrd.client(&c);
        match kill(&cl, &c, "") {
            Ok(()) => ok += 1,
            Err(Code::NOT_FOUND) => not_found += 1,
            Err(code) => panic!("init {i}: Kill racing exit answered {code:?}"),
        }
        wait(&cl, &c, "", 30);
        assert_eq!(
            kill(&cl, &c, ""),
            Err(Code::NOT_FOUND),
            "init {i} after exit"
        );
        // Deleted through containerd, which then shuts the shim down.
        run(ctrd.ctr().args(["task", "delete", &c]));
    }
    eprintln!(
        "20 init kills in {:?}: {ok} OK, {not_found} NotFound",
        t0.elapsed()
    );
}

/// A client that stalls in the middle of a ttrpc frame holds up nobody: exits are reaped and
/// reported, other clients are served, and the stalled frame is served once complete.
#[test]
fn stalled_client_does_not_block_the_shim() {
    use containerd_shim_protos::protobuf::Message;
    use std::io::{Read, Write};
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut ctrd = Ctrd::start();
    let id = format!("stall-{}", std::process::id());
    ctrd.run_detached(&id, &["sleep", "100000"]);
    let client = ctrd.client(&id);
    exec(&client, &id, "short", &["sleep", "1"]);
    start(&client, &id, "short");

    // A frame for Connect, of which only the first half of the header is sent for now.
    let req = containerd_shim_protos::ttrpc::Request {
        service: "containerd.task.v2.Task".into(),
        method: "Connect".into(),
        payload: api::ConnectRequest {
            id: id.clone(),
            ..Default::default()
        }
        .write_to_bytes()
        .expect("encode"),
        ..Default::default()
    }
    .write_to_bytes()
    .expect("encode request");
    let mut frame = Vec::new();
    frame.extend_from_slice(&(req.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes()); // stream id
    frame.extend_from_slice(&[1, 0]); // request, no flags
    frame.extend_from_slice(&req);
    let address = std::fs::read_to_string(ctrd.bundle(&id).join("address")).expect("address");
    let path = address.trim().trim_start_matches("unix://").to_string();
    let mut stalled = std::os::unix::net::UnixStream::connect(&path).expect("connect raw");
    stalled.write_all(&frame[..5]).expect("half a header");

    // The exec exits meanwhile: reaped, Wait answers (to a new client).
    let t0 = Instant::now();
    let w = wait(&ctrd.client(&id), &id, "short", 15);
    assert_eq!(w.exit_status, 0);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Another client is served.
    let conn = ctrd
        .client(&id)
        .connect(
            timeout(10),
            &api::ConnectRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .expect("Connect while a client stalls");
    assert!(conn.task_pid > 0);

    // The rest of the frame, in two pieces: served as one request.
    stalled.write_all(&frame[5..12]).expect("more");
    std::thread::sleep(Duration::from_millis(100));
    stalled.write_all(&frame[12..]).expect("rest");
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hdr = [0u8; 10];
    stalled.read_exact(&mut hdr).expect("response header");
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    assert_eq!(u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]), 1);
    assert_eq!(hdr[8], 2, "a response");
    let mut body = vec![0u8; len];
    stalled.read_exact(&mut body).expect("response body");
    let res = containerd_shim_protos::ttrpc::Response::parse_from_bytes(&body).expect("decode");
    assert_eq!(res.status.code.value(), 0, "{:?}", res.status);
    let c = api::ConnectResponse::parse_from_bytes(&res.payload).expect("ConnectResponse");
    assert_eq!(c.task_pid, conn.task_pid);
}
