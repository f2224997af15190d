//! husk-cri drives a real containerd-shim-husk-v2 (running the real husk) through the shim v2
//! Task API, as containerd does: start the shim in a bundle, Create, Start, Wait, the TaskExit
//! event on husk-cri's Events service, Delete, Shutdown; nothing left behind.
//!
//! Needs root and the release binaries: HUSK_RUNTIME (husk) and SHIM_BIN
//! (containerd-shim-husk-v2), by default target/release/ of this repository.

use husk_cri::shim::{EventServer, Shim, ShimConfig, TaskIo};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{binary, repo};

/// Removes the test's husk state root and the cgroup parents named after its namespace.
struct Cleanup {
    ns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(Path::new("/run/husk").join(&self.ns));
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let _ = std::fs::remove_dir(c.path().join(&self.ns));
            }
        }
    }
}

#[test]
fn a_task_runs_through_the_shim_and_its_exit_is_reported() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs containers: run it as root"
    );
    let husk = binary("HUSK_RUNTIME", "husk");
    let shim_bin = binary("SHIM_BIN", "containerd-shim-husk-v2");
    assert!(
        husk.is_file(),
        "{} missing: cargo build --release",
        husk.display()
    );
    assert!(
        shim_bin.is_file(),
        "{} missing: cargo build --release",
        shim_bin.display()
    );

    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-shim-")
        .tempdir()
        .expect("tempdir");
    let ns = format!("husk-cri-test-{}", std::process::id());
    let _cleanup = Cleanup { ns: ns.clone() };
    let id = "task1";
    let bundle = tmp.path().join("bundle");
    let st = Command::new("sh")
        .arg(repo().join("hack/mkbundle.sh"))
        .arg(&bundle)
        .status()
        .expect("run hack/mkbundle.sh");
    assert!(st.success(), "hack/mkbundle.sh failed");
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config.json"))
            .expect("parse config.json");
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", "echo hello-from-shim; exit 3"]);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config.json");

    let (events, rx) = EventServer::start(&tmp.path().join("events.sock")).expect("events");
    let scfg = ShimConfig {
        shim_bin,
        runtime: Some(husk),
        address: tmp.path().join("husk-cri.sock"),
        events: tmp.path().join("events.sock"),
    };
    let shim = Shim::start(&scfg, &ns, id, &bundle).expect("start the shim");
    let out = tmp.path().join("stdout");
    let io = TaskIo {
        stdout: format!("file://{}", out.display()),
        stderr: format!("file://{}", tmp.path().join("stderr").display()),
        ..Default::default()
    };
    let pid = shim.create(&io, vec![]).expect("Create");
    assert!(pid > 0);
    let state = shim.state("").expect("State");
    assert_eq!(state.pid, pid);
    shim.start_task("").expect("Start");
    let status = shim.wait("").expect("Wait");
    assert_eq!(status, 3);

    // The shim reported the exit to husk-cri's Events service.
    let exit = loop {
        let ev = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no /tasks/exit event within 30 s");
        assert_eq!(ev.namespace, ns);
        if let Some(e) = ev.task_exit() {
            break e;
        }
    };
    assert_eq!((exit.container_id.as_str(), exit.exit_status), (id, 3));
    assert_eq!(
        std::fs::read_to_string(&out).expect("read stdout").trim(),
        "hello-from-shim"
    );

    assert_eq!(shim.delete("").expect("Delete"), 3);
    let address = shim.address.clone();
    shim.shutdown().expect("Shutdown");
    assert!(
        !Path::new(address.trim_start_matches("unix://")).exists(),
        "the shim's socket is still there after Shutdown"
    );
    // husk has no state for the container any more.
    let list = Command::new(scfg.runtime.clone().unwrap_or_default())
        .args(["--root"])
        .arg(Path::new("/run/husk").join(&ns))
        .args(["list", "-q"])
        .output()
        .expect("husk list");
    assert!(
        String::from_utf8_lossy(&list.stdout).trim().is_empty(),
        "husk still lists {:?}",
        String::from_utf8_lossy(&list.stdout)
    );
    drop(events);
}
