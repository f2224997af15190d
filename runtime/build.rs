//! Embeds the git commit and the compiler version for `husk --version` (see build_version.rs),
//! and generates CRIU's RPC messages from its rpc.proto (vendored in proto/criu) with prost-build
//! (protoc: Debian's protobuf-compiler, installed by hack/setup.sh; or $PROTOC).
#[path = "build_version.rs"]
mod version;

fn main() {
    version::emit();
    let proto = "proto/criu/rpc.proto";
    println!("cargo:rerun-if-changed={proto}");
    if let Err(e) = prost_build::Config::new().compile_protos(&[proto], &["proto/criu"]) {
        // A build script reports by panicking; say what is missing.
        panic!("generate CRIU's RPC messages from {proto} (needs protoc: apt-get install protobuf-compiler, or set PROTOC): {e}");
    }
}
