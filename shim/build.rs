//! Link setting of the shim binary: keep the linker's `.text.unlikely` / `.text.startup` / ...
//! groups apart, so that code the compiler knows to be cold (panics, error paths) is laid out
//! together instead of between hot functions. The kernel maps a binary's text 64 KiB at a time
//! around each executed page, so this keeps cold code out of every shim's resident set
//! (measured with hack/bench-shim.sh). GNU ld and lld both take the option.
//! Also embeds the git commit and the compiler version for `-v` (see ../runtime/build_version.rs).
#[path = "../runtime/build_version.rs"]
mod version;

fn main() {
    version::emit();
    println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
}
