//! Rootless husk: an unprivileged user (created by the test) runs a container in a user namespace
//! that maps only its own uid, with create/start/exec/delete and no cgroups.
mod common;
use common::*;
use std::process::Command;

struct User {
    name: String,
    uid: u32,
}

impl User {
    fn create() -> User {
        let name = format!("hkrl{}", std::process::id() % 100_000);
        let st = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let out = Command::new("id")
            .args(["-u", &name])
            .output()
            .expect("id -u");
        let uid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("uid");
        User { name, uid }
    }
    /// Run husk as this user, with a clean environment. Output goes through files: a created
    /// container keeps the stdio it inherits, and a pipe would never reach EOF.
    fn husk(&self, root: &std::path::Path, args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let (o, e) = (dir.path().join("out"), dir.path().join("err"));
        let status = Command::new("setpriv")
            .args([
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.uid),
                "--clear-groups".into(),
            ])
            .args(["env", "-i", "PATH=/usr/bin:/bin", HUSK, "--root"])
            .arg(root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&o).expect("out file"))
            .stderr(std::fs::File::create(&e).expect("err file"))
            .status()
            .expect("setpriv husk");
        std::process::Output {
            status,
            stdout: std::fs::read(&o).unwrap_or_default(),
            stderr: std::fs::read(&e).unwrap_or_default(),
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown_r(p: &std::path::Path, uid: u32) {
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success());
}

#[test]
fn unprivileged_user_runs_a_container() {
    assert!(
        is_root(),
        "needs root to create the test user: run the tests as root (CI does)"
    );
    if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .is_ok_and(|v| v.trim() == "0")
    {
        panic!("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0): enable them to run this test (sysctl -w kernel.unprivileged_userns_clone=1)");
    }
    let user = User::create();
    let mut e = Env::new("rootless");
    let id = e.id("rootless");
    let spec = husk::spec::default_spec(true);
    let mut c = spec.clone();
    // `husk spec --rootless` maps the caller; here the caller is the test user.
    c["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": user.uid, "size": 1}]);
    c["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": user.uid, "size": 1}]);
    c["process"]["terminal"] = serde_json::json!(false);
    c["root"]["readonly"] = serde_json::json!(false);
    c["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo > /dev/null && echo devnull-ok"
    ]);
    e.write_config(&c);
    let root = e.bundle().join("state");
    chown_r(e.bundle(), user.uid);
    let b = e.bundle().display().to_string();
    let o = user.husk(&root, &["run", "--bundle", &b, &id]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "rootless run: {} {}",
        out,
        String::from_utf8_lossy(&o.stderr)
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let map: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        map,
        ["0".to_string(), user.uid.to_string(), "1".to_string()],
        "{out}"
    );
    assert!(out.contains("devnull-ok"), "{out}");

    // create / start / exec / kill / delete as the same user.
    c["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    e.write_config(&c);
    chown_r(e.bundle(), user.uid);
    let id2 = e.id("rootless2");
    let ok = |args: &[&str]| {
        let o = user.husk(&root, args);
        assert!(
            o.status.success(),
            "rootless husk {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    ok(&["create", "--bundle", &b, &id2]);
    ok(&["start", &id2]);
    assert!(ok(&["state", &id2]).contains("\"running\""));
    assert_eq!(ok(&["exec", &id2, "id", "-u"]).trim(), "0");
    ok(&["delete", "--force", &id2]);
    assert!(user.husk(&root, &["state", &id2]).status.code() != Some(0));
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n.to_string_lossy().starts_with('.')),
        "state left: {left:?}"
    );
}
