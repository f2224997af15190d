//! Build-time facts for `--version` (husk, containerd-shim-husk-v2, husk-cri): shared by their
//! build scripts with `#[path = "../runtime/build_version.rs"] mod version;`.
//!
//! Sets `HUSK_GIT_COMMIT` (the commit the tree was built from: `$HUSK_GIT_COMMIT` when set, as
//! from a packager building a tarball, else `git rev-parse HEAD`, else "unknown") and
//! `HUSK_RUSTC_VERSION` (`rustc --version` of the compiler building the crate, e.g. "1.95.0").
//! Reruns when HEAD moves: on a checkout, a commit, or a fetch that repacks the refs.
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn emit() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=HUSK_GIT_COMMIT");
    let commit = match std::env::var("HUSK_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            for p in git_paths(&dir) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            git(&dir, &["rev-parse", "--verify", "-q", "HEAD"])
                .filter(|c| c.len() >= 7 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=HUSK_GIT_COMMIT={commit}");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "rustc 1.95.0 (f2d3ce0bd 2026-03-21)" -> "1.95.0"
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HUSK_RUSTC_VERSION={rustc_version}");
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The files whose change moves HEAD: HEAD itself, the branch it points to (its loose ref, or
/// the directory a new loose ref appears in) and packed-refs. Only existing paths: cargo reruns
/// a build script on every build while one of its paths is missing.
fn git_paths(dir: &Path) -> Vec<PathBuf> {
    let path = |p: &str| {
        git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", p],
        )
        .map(PathBuf::from)
    };
    let mut out = Vec::new();
    out.extend(path("HEAD"));
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = path(&r) {
            if p.exists() {
                out.push(p);
            } else if let Some(parent) = p.parent() {
                out.push(parent.to_path_buf());
            }
        }
    }
    out.extend(path("packed-refs"));
    out.retain(|p| p.exists());
    out
}
