//! Fault points: deterministic crashes for the fault-injection tests (cri-server/tests/faults.rs).
//!
//! husk-cri calls [`hit`] with a name at the steps of RunPodSandbox, CreateContainer,
//! StartContainer, RemoveContainer and image pulls where a crash leaves the most half-made
//! state. When the environment variable `HUSK_CRI_FAILPOINT` equals that name, the process logs
//! an error naming the point and SIGKILLs itself: a crash (no destructor, no cleanup, no exit
//! handler runs), exactly as if the node had killed it there. The variable is read once.
//!
//! A test knob, harmless in production: unset (the normal case) every call is one comparison
//! with an empty string; set, it can only crash the process whose own environment sets it.
//!
//! The points (see each call site):
//! - `sandbox-after-cni`: the netns is pinned and CNI ADD ran, the pause task not started.
//! - `sandbox-after-pause-start`: the pause task runs, its record still says not ready.
//! - `container-after-snapshot`: the writable layer and bundle exist, no record yet.
//! - `container-start-after-task-create`: the shim's task is created, the record still says
//!   created.
//! - `container-start-after-task-start`: the task runs, the record still says created.
//! - `container-finish-after-task-delete`: a container's task ended and was deleted, its shim
//!   not yet shut down.
//! - `container-remove-after-task-delete`: the task and its shim are gone, the bundle, writable
//!   layer and record are still there.
//! - `pull-after-blob`: the image config blob is in the content store, no layer or record yet.
//! - `pull-during-unpack`: a layer is half unpacked in the store's tmp/.
//! - `pull-before-record`: every blob and layer is in place, the image record is not written.

use std::sync::OnceLock;

/// The environment variable naming the one fault point that crashes this process.
pub const ENV: &str = "HUSK_CRI_FAILPOINT";

static ARMED: OnceLock<String> = OnceLock::new();

/// Crashes the process (SIGKILL to itself) when `name` is the armed fault point.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var(ENV).unwrap_or_default());
    if armed.is_empty() || armed != name {
        return;
    }
    tracing::error!("fault point {name}: {ENV} is set to it: crashing (SIGKILL)");
    crash();
}

/// SIGKILL to this process; never returns.
fn crash() -> ! {
    // kill(2) on our own pid with SIGKILL cannot be caught, blocked or ignored: the kernel ends
    // the process before the call returns.
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    // Unreachable in practice; abort (still no cleanup) if the kill somehow failed.
    std::process::abort()
}
