//! Embeds the git commit and the compiler version for `husk-cri --version`
//! (see ../runtime/build_version.rs).
#[path = "../runtime/build_version.rs"]
mod version;

fn main() {
    version::emit();
}
