//! containerd-shim-husk-v2: containerd's shim v2 for the husk OCI runtime.
//!
//! Actions (as containerd invokes them):
//! - `start`: spawn the long-lived shim for one container, print its ttrpc address;
//! - `delete`: clean up after a shim that died;
//! - no action: serve the Task API on the socket passed as fd 3.
//!
//! The binary has its own C `main` (see [`main`]): std's runtime start-up is skipped.
#![cfg_attr(not(test), no_main)]

mod crilog;
mod flags;
mod log;
mod mainloop;
mod metrics;
mod mount;
mod oom;
mod publish;
mod reaper;
mod runtime;
mod server;
mod service;
mod stdio;
mod uri;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options;

use crate::flags::{socket_address, Flags};
use crate::reaper::Reaper;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::service::Service;

/// Why an action of the binary failed: what was being done, then its cause (printed once to
/// stderr, which containerd shows). A few lines instead of `anyhow`, whose error boxes and
/// backtrace capture each per-container shim would carry.
#[derive(Debug)]
struct Failure(String);

type Result<T> = std::result::Result<T, Failure>;

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Failure(format!("{what}: {e}")))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Failure(format!("{}: {e}", what())))
    }
}

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(Failure(format!($($arg)*)))
    };
}

/// The fd the serving shim finds its listening socket on.
const LISTEN_FD: RawFd = 3;

/// glibc tunable given to the serving shim: no cache of exited threads' stacks.
const STACK_CACHE_TUNABLE: &str = "glibc.pthread.stack_cache_size=0";

/// Takes the tunable `start` added out of the environment (glibc read it at start-up), so that
/// the runtime and loggers the shim starts do not inherit it.
fn drop_own_tunable() {
    let Ok(t) = std::env::var("GLIBC_TUNABLES") else {
        return;
    };
    if t == STACK_CACHE_TUNABLE {
        std::env::remove_var("GLIBC_TUNABLES");
    } else if let Some(rest) = t.strip_suffix(&format!(":{STACK_CACHE_TUNABLE}")) {
        std::env::set_var("GLIBC_TUNABLES", rest);
    }
}

/// The C entry point. std's `lang_start` is left out on purpose: at every start it looks up the
/// main thread's stack guard (glibc reads /proc/self/maps for that, through its stdio and scanf
/// code) and installs a stack-overflow signal handler with an alternate signal stack for every
/// thread; all that code would stay mapped in each per-container shim. A stack overflow still
/// hits the guard page (SIGSEGV), only without std's message. SIGPIPE is ignored as std does
/// (children get the default back, std's spawn resets it); `process::exit` flushes stdout.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: sets the disposition of SIGPIPE to SIG_IGN; no handler function is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    shim_main();
    std::process::exit(0)
}

#[cfg_attr(test, allow(dead_code))]
fn shim_main() {
    // std captures argv on glibc from .init_array, also without its runtime start-up.
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match flags::parse(args.get(1..).unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-husk-v2: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        print!("{}", flags::version_text());
        return;
    }
    let res = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => serve(&flags),
        other => Err(Failure(format!("unknown action {other:?}"))),
    };
    if let Err(e) = res {
        eprintln!("containerd-shim-husk-v2: {e}");
        std::process::exit(1);
    }
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf> {
    if !flags.bundle.is_empty() {
        return Ok(PathBuf::from(&flags.bundle));
    }
    std::env::current_dir().context("current directory (the bundle)")
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// `start`: create the socket, spawn the serving shim with it as fd 3, print the address.
fn start(flags: &Flags) -> Result<()> {
    if flags.namespace.is_empty() || flags.id.is_empty() {
        bail!("start: -namespace and -id are required");
    }
    // Runtime options (containerd writes them as an Any on stdin).
    let mut input = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut input);
    let shim_cgroup = Any::parse_from_bytes(&input)
        .ok()
        .and_then(|a| Options::parse_from_bytes(&a.value).ok())
        .map(|o| o.shim_cgroup)
        .unwrap_or_default();

    let address = socket_address(&flags.address, &flags.namespace, &flags.id);
    let path = socket_path(&address);
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                // A shim already serves this container.
                print!("{address}");
                return Ok(());
            }
            std::fs::remove_file(path).with_context(|| format!("remove stale {path}"))?;
            UnixListener::bind(path).with_context(|| format!("bind {path}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("bind {path}")),
    };
    // Only root may talk to the shim (as containerd's shims: CVE-2020-15257).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {path}"))?;
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut cmd = Command::new(exe);
    // Stacks of finished request threads go back to the kernel instead of glibc's cache (the
    // serving shim takes the setting out of its environment again, see `serve`).
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:{STACK_CACHE_TUNABLE}"),
        _ => STACK_CACHE_TUNABLE.to_string(),
    };
    cmd.env("GLIBC_TUNABLES", tunables);
    cmd.args(["-namespace", &flags.namespace, "-id", &flags.id, "-address"])
        .arg(&flags.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if flags.debug {
        cmd.arg("-debug");
    }
    let lfd = listener.as_raw_fd();
    // SAFETY: runs in the child between fork and exec of this single-threaded process; dup2
    // and setsid are async-signal-safe. dup2 clears FD_CLOEXEC on the new fd 3.
    unsafe {
        cmd.pre_exec(move || {
            if lfd == LISTEN_FD {
                let flags = libc::fcntl(lfd, libc::F_GETFD);
                libc::fcntl(lfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(lfd, LISTEN_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("spawn serving shim")?;
    drop(listener);
    let pid = child.id();
    let bundle = bundle_dir(flags)?;
    let _ = std::fs::write(bundle.join("address"), &address);
    let _ = std::fs::write(bundle.join("shim.pid"), pid.to_string());
    if let Err(e) = place_shim(pid, &shim_cgroup) {
        eprintln!("containerd-shim-husk-v2: {e}");
    }
    print!("{address}");
    std::io::stdout().flush().context("write address")?;
    Ok(())
}

/// Moves the shim into the runtime option `ShimCgroup` (when set) and gives it an OOM score one
/// above containerd's, so that the OOM killer picks a shim before containerd.
fn place_shim(pid: u32, shim_cgroup: &str) -> Result<()> {
    if !shim_cgroup.is_empty() {
        let rel = shim_cgroup.trim_start_matches('/');
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dirs: Vec<PathBuf> = if unified {
            vec![Path::new("/sys/fs/cgroup").join(rel)]
        } else {
            std::fs::read_dir("/sys/fs/cgroup")
                .context("read /sys/fs/cgroup")?
                .flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.is_dir())
                .collect()
        };
        for d in dirs {
            let procs = d.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .with_context(|| format!("write {}", procs.display()))?;
        }
    }
    let parent = std::os::unix::process::parent_id();
    let path = format!("/proc/{parent}/oom_score_adj");
    let score: i64 = std::fs::read_to_string(&path)
        .with_context(|| format!("read {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("parse {path}"))?;
    if score < 1000 {
        let own = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&own, (score + 1).to_string()).with_context(|| format!("write {own}"))?;
    }
    Ok(())
}

/// `delete`: the shim died; remove the container with the runtime and unmount its rootfs.
fn delete(flags: &Flags) -> Result<()> {
    let bundle = bundle_dir(flags)?;
    let cfg = RuntimeConfig::load(&bundle)
        .unwrap_or_else(|| RuntimeConfig::resolve("", "", &flags.namespace));
    // The runtime keeps its state in <root>/<id>: nothing to delete when it is gone (the
    // usual case: containerd runs this after every shim exit, also after a clean delete).
    if cfg.root.join(&flags.id).exists() {
        let rt = Runtime::new(cfg, &bundle, None);
        if let Err(e) = rt.delete(&flags.id, true) {
            if !e.is_not_found() {
                eprintln!("containerd-shim-husk-v2: {e}");
            }
        }
    }
    service::unmount_rootfs(&bundle.join("rootfs"));
    // The dead shim's socket (named in the bundle by `start`).
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        let path = socket_path(address.trim());
        if UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let resp = containerd_shim_protos::api::DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(
            containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().context("encode DeleteResponse")?;
    std::io::stdout()
        .write_all(&bytes)
        .context("write DeleteResponse")?;
    Ok(())
}

/// Logs go to the `log` FIFO containerd reads in the bundle (or nowhere).
fn init_logging(debug: bool) {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    let Ok(file) = fifo else { return };
    // The FIFO stays non-blocking: if containerd stops reading, log lines are dropped rather
    // than stalling the shim.
    let max = match std::env::var("HUSK_SHIM_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ if debug => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let _ = tracing::subscriber::set_global_default(log::FifoLog::new(file, max));
}

fn is_socket(fd: &OwnedFd) -> bool {
    // SAFETY: fstat fills a local stat struct for an fd we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// Lowers the shim's footprint: one malloc arena, a recognisable name.
fn tune_process() {
    // SAFETY: mallopt and prctl(PR_SET_NAME) take plain values / a NUL-terminated string.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::prctl(
            libc::PR_SET_NAME,
            c"husk-shim".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

fn serve(flags: &Flags) -> Result<()> {
    if flags.namespace.is_empty() || flags.id.is_empty() {
        bail!("serve: -namespace and -id are required");
    }
    tune_process();
    // Still single-threaded: changing the environment is safe here.
    drop_own_tunable();
    let sigfd = mainloop::block_signals().context("block signals / signalfd")?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    init_logging(flags.debug);

    // SAFETY: fd 3 was set up by `start` as our listening socket; we take ownership.
    let listen = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    if !is_socket(&listen) {
        bail!("fd {LISTEN_FD} is not the listening socket (the shim is started by `start`)");
    }
    // SAFETY: fcntl on the fd we own; the listener must not leak into runtime children.
    unsafe {
        libc::fcntl(LISTEN_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }

    let publisher = match std::env::var("TTRPC_ADDRESS") {
        Ok(addr) if !addr.is_empty() => Some(publish::Publisher::new(&addr)),
        _ => None,
    };
    let reaper = Arc::new(Reaper::default());
    let wake = Arc::new(mainloop::Wake::new().context("eventfd")?);
    let svc = Arc::new(Service::new(
        flags.namespace.clone(),
        publisher,
        reaper.clone(),
        wake.clone(),
    ));
    let listener = UnixListener::from(listen);
    let server = server::Server::new(listener, svc.clone()).context("ttrpc listener")?;

    mainloop::run(svc, reaper, wake, sigfd, server, &flags.id);

    let address = socket_address(&flags.address, &flags.namespace, &flags.id);
    let _ = std::fs::remove_file(socket_path(&address));
    // Exit without tearing down the server threads (containerd closes its side).
    std::process::exit(0);
}
