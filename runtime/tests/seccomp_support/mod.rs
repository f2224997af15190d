//! Helpers shared by the seccomp integration tests: loading fixtures and running a
//! forked child under a compiled filter.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use husk::seccomp::{self, CompiledFilter};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::LinuxSeccomp;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seccomp")
        .join(name)
}

pub fn fixture(name: &str) -> LinuxSeccomp {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    seccomp::parse_seccomp(&value).expect("fixture parses")
}

pub fn profile(json: &str) -> LinuxSeccomp {
    let value: serde_json::Value = serde_json::from_str(json).expect("profile is JSON");
    seccomp::parse_seccomp(&value).expect("profile parses")
}

pub fn compiled(json: &str) -> CompiledFilter {
    seccomp::compile(&profile(json)).expect("profile compiles")
}

/// Exit codes the child uses for set-up failures (tests use 0..=99 for their checks).
pub const EXIT_NNP_FAILED: i32 = 200;
pub const EXIT_INSTALL_FAILED: i32 = 201;

/// Forks; the child sets no_new_privs when `nnp`, installs `filter`, runs `body` and
/// exits with its result. `body` runs in the child of a multi-threaded process, so it
/// must only make raw syscalls (no allocation, no locks).
pub fn run_child(filter: &CompiledFilter, nnp: bool, body: impl FnOnce() -> i32) -> WaitStatus {
    // SAFETY: the child only makes raw syscalls (prctl, seccomp, the body's syscalls)
    // and leaves with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // SAFETY: plain prctl/_exit syscalls.
            unsafe {
                if nnp && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(EXIT_NNP_FAILED);
                }
                if filter.install().is_err() {
                    libc::_exit(EXIT_INSTALL_FAILED);
                }
                let code = body();
                libc::_exit(code);
            }
        }
        ForkResult::Parent { child } => wait(child),
    }
}

pub fn wait(child: Pid) -> WaitStatus {
    loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.expect("waitpid"),
        }
    }
}

/// Raw syscall returning (result, errno).
pub fn sys(nr: libc::c_long, args: [u64; 6]) -> (i64, i32) {
    // SAFETY: the tests only pass syscalls and arguments that are harmless in a child
    // about to exit.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    // SAFETY: reading errno of this thread.
    let e = if r < 0 {
        unsafe { *libc::__errno_location() }
    } else {
        0
    };
    (r, e)
}

/// Runs `/bin/busybox <args>` under the filter (with no_new_privs) and returns its exit
/// status and combined stdout/stderr.
pub fn run_busybox(filter: &CompiledFilter, nnp: bool, args: &[&str]) -> (WaitStatus, String) {
    let prog = CString::new("/bin/busybox").expect("cstring");
    let argv_c: Vec<CString> = std::iter::once("busybox")
        .chain(args.iter().copied())
        .map(|a| CString::new(a).expect("cstring"))
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env_c = [CString::new("PATH=/bin:/usr/bin").expect("cstring")];
    let envp: [*const libc::c_char; 2] = [env_c[0].as_ptr(), std::ptr::null()];

    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let w_raw = w.as_raw_fd();
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut out = String::new();
            let mut f = std::fs::File::from(r);
            f.read_to_string(&mut out).expect("read child output");
            out
        });
        let status = run_child(filter, nnp, || {
            // SAFETY: dup2/execve on fds and pointers prepared before fork.
            unsafe {
                libc::dup2(w_raw, 1);
                libc::dup2(w_raw, 2);
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            127
        });
        drop(w);
        (status, reader.join().expect("reader thread"))
    })
}

/// A socketpair for handing fds from the child to the parent.
pub fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fds that we then own.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair");
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
