//! Compiles validator/main.rs into a statically linked `oci-validate` (glibc, crt-static) that
//! the runner embeds and copies into every bundle's rootfs: a busybox rootfs has no libc.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from("validator/main.rs");
    println!("cargo:rerun-if-changed=validator/main.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").unwrap_or_default();
    let dest = out.join("oci-validate");
    let mut cmd = Command::new(rustc);
    cmd.arg("--edition=2021")
        .arg("--crate-name=oci_validate")
        .arg("--crate-type=bin")
        .args(["-C", "opt-level=2"])
        .args(["-C", "panic=abort"])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "strip=symbols"]);
    if !target.is_empty() {
        cmd.arg(format!("--target={target}"));
    }
    cmd.arg("-o").arg(&dest).arg(&src);
    let status = cmd
        .status()
        .expect("build.rs: spawning rustc for the static oci-validate");
    if !status.success() {
        panic!(
            "build.rs: rustc failed to build the static oci-validate from {}",
            src.display()
        );
    }
}
