//! `husk --version` prints what `runc --version` prints, in the same shape, and each field is
//! true: podman and containerd show this text to users, and docker reads the line with "version"
//! in it and the `commit:` line.
use std::process::Command;

const HUSK: &str = env!("CARGO_BIN_EXE_husk");

fn husk(args: &[&str]) -> String {
    let out = Command::new(HUSK).args(args).output().expect("run husk");
    assert!(out.status.success(), "husk {args:?}: {out:?}");
    assert!(out.stderr.is_empty(), "husk {args:?}: stderr {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The commit the binary must name: what a packager passed, else the checkout's HEAD (cargo
/// rebuilds husk when HEAD moves), else "unknown" (built outside git).
fn expected_commit() -> String {
    if let Ok(c) = std::env::var("HUSK_GIT_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.strip_prefix(key)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or_else(|| panic!("expected `{key}: ...`, got {line:?}"))
}

#[test]
fn version_has_runcs_fields() {
    let text = husk(&["--version"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");

    // runc: "runc version 1.1.5+ds1"
    assert_eq!(
        lines[0],
        format!("husk version {}", env!("CARGO_PKG_VERSION"))
    );

    // runc: "commit: <git describe>": the full sha of the tree husk was built from
    let commit = field(lines[1], "commit");
    assert_eq!(commit, expected_commit(), "{text}");
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit:?}"
    );

    // runc: "spec: 1.0.2-dev": the runtime-spec version implemented, as `husk features` and
    // `husk spec` say it
    let spec = field(lines[2], "spec");
    assert_eq!(spec, husk::spec::OCI_VERSION);
    assert_eq!(spec, "1.2.0");
    let features: serde_json::Value =
        serde_json::from_str(&husk(&["features"])).expect("features is JSON");
    assert_eq!(features["ociVersionMax"], spec);
    assert_eq!(husk::spec::default_spec(false)["ociVersion"], spec);

    // runc: "go: go1.19.8": the compiler that built husk
    let rust = field(lines[3], "rust");
    let parts: Vec<&str> = rust.split('.').collect();
    assert!(
        parts.len() >= 3 && parts[0] == "1" && parts[1].parse::<u32>().is_ok_and(|m| m >= 80),
        "{rust:?}"
    );

    // runc: "libseccomp: 2.5.4": husk compiles seccomp filters itself
    let seccomp = field(lines[4], "seccomp");
    assert!(seccomp.contains("built-in BPF compiler"), "{seccomp:?}");

    // docker takes the first line containing "version" as "<runtime> version <version>"
    assert!(lines[1..].iter().all(|l| !l.contains("version")), "{text}");
}

#[test]
fn short_flag_and_anywhere_before_the_command() {
    let v = husk(&["--version"]);
    assert_eq!(husk(&["-V"]), v);
    assert_eq!(husk(&["--root", "/nonexistent", "--version"]), v);
}
