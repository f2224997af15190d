//! Seccomp through the husk CLI: Docker's default profile in a real container, and a NOTIFY rule
//! answered by a seccomp agent listening on linux.seccomp.listenerPath.
mod common;
use common::*;
use std::os::fd::AsFd;

#[test]
fn docker_default_profile_blocks_unshare_and_runs_busybox() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("secdock");
    let id = e.id("secdock");
    let profile: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/seccomp/docker-default.json"
        ))
        .expect("fixture"),
    )
    .expect("fixture json");
    let mut c = e.config();
    c["linux"]["seccomp"] = profile;
    // busybox's unshare applet calls unshare(2); Docker's profile denies it with EPERM.
    c["process"]["args"] = serde_json::json!(["sh", "-c", "echo hi; ls / >/dev/null && echo listed; busybox unshare -m true; echo unshare=$?; grep Seccomp: /proc/self/status"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["run", "--bundle", &b, &id]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(out.contains("hi") && out.contains("listed"), "{out}");
    assert!(
        out.contains("unshare=1") && out.contains("Operation not permitted"),
        "unshare not denied: {out}"
    );
    assert!(
        out.contains("Seccomp:\t2"),
        "not in seccomp filter mode: {out}"
    );
}

#[test]
fn notify_rule_is_answered_by_the_agent() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("secnotify");
    let id = e.id("secnotify");
    let sock = e.bundle().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind agent socket");
    let agent = std::thread::spawn(move || -> (String, usize) {
        let (conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let (fd, n) =
            husk::seccomp::recv_fd_with(conn.as_fd(), &mut buf).expect("receive listener fd");
        let state = String::from_utf8_lossy(&buf[..n]).to_string();
        // Answer every mkdir with EACCES until the container is gone.
        let mut answered = 0;
        while let Ok(req) = husk::seccomp::recv_notification(fd.as_fd()) {
            let _ = husk::seccomp::respond(
                fd.as_fd(),
                husk::seccomp::NotifyResponse {
                    id: req.id,
                    val: 0,
                    error: libc::EACCES,
                    continue_syscall: false,
                },
            );
            answered += 1;
        }
        (state, answered)
    });
    let mut c = e.config();
    c["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": sock,
        "listenerMetadata": "husk-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    c["process"]["args"] = serde_json::json!(["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"]);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["run", "--bundle", &b, &id]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("mkdir=1") && out.contains("Permission denied"),
        "agent's EACCES not seen: {out}"
    );
    let (state, answered) = agent.join().expect("agent thread");
    assert!(answered >= 1, "agent answered no notification");
    assert!(
        state.contains(&id) && state.contains("husk-test") && state.contains("seccompFd"),
        "state sent to the agent: {state}"
    );
}
