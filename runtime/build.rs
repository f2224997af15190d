//! Embeds the git commit and the compiler version for `husk --version` (see build_version.rs).
#[path = "build_version.rs"]
mod version;

fn main() {
    version::emit();
}
