//! Task API calls `ctr` 1.6 cannot make (Update, Connect, State of an exec), made over ttrpc
//! straight to the shim of a container that a real containerd started.
//!
//! Needs root (skips otherwise). Env: HUSK_RUNTIME (default /usr/sbin/runc).

use std::path::{Path, PathBuf};
use std::process::Command;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_sync::{Client, TaskClient};
use containerd_shim_protos::ttrpc::context::Context;

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
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
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
