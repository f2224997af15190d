//! `husk-pty-run [--timeout SECS] [--cols N] [--rows N] -- CMD [ARGS...]`
//!
//! Runs CMD as the session leader of a new pseudo-terminal (its stdin, stdout and stderr are the
//! pty's slave, which is its controlling terminal), copies everything it writes to our stdout,
//! and exits with its status. A test tool for clients that insist on a terminal (`ctr run -t`,
//! `ctr task exec -t`, `podman run -t`), in place of util-linux `script`, whose behaviour depends
//! on what its own stdin is. Stdin of this tool is not read. The whole run is bounded: at the
//! deadline the command's process group is killed and the exit status is 124, like timeout(1).

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: husk-pty-run [--timeout SECS] [--cols N] [--rows N] -- CMD [ARGS...]";

struct Opts {
    timeout: Duration,
    cols: u16,
    rows: u16,
    argv: Vec<CString>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        timeout: Duration::from_secs(60),
        cols: 80,
        rows: 24,
        argv: Vec::new(),
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let mut num = |flag: &str| -> Result<u64, String> {
            let v = args.next().ok_or(format!("{flag} needs a value"))?;
            v.to_string_lossy()
                .parse::<u64>()
                .map_err(|e| format!("{flag} {:?}: {e}", v))
        };
        match a.as_str() {
            "--timeout" => o.timeout = Duration::from_secs(num("--timeout")?),
            "--cols" => o.cols = num("--cols")?.try_into().map_err(|_| "--cols too big")?,
            "--rows" => o.rows = num("--rows")?.try_into().map_err(|_| "--rows too big")?,
            "--" => break,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    for a in args {
        o.argv
            .push(CString::new(a.as_bytes()).map_err(|_| "NUL byte in an argument")?);
    }
    if o.argv.is_empty() {
        return Err("no command".into());
    }
    Ok(o)
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// The child side, after fork: new session, the slave as controlling terminal and stdio, exec.
/// Only async-signal-safe calls; never returns.
fn child(slave: libc::c_int, master: libc::c_int, argv: &[*const libc::c_char]) -> ! {
    // SAFETY: plain syscalls on fds we own, in the freshly forked single-threaded child; argv is
    // a NULL-terminated array of pointers into CStrings that outlive the exec.
    unsafe {
        libc::close(master);
        if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            libc::_exit(126);
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) < 0 {
                libc::_exit(126);
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
        libc::execvp(argv[0], argv.as_ptr());
        libc::_exit(127)
    }
}

fn run(o: Opts) -> Result<i32, String> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let ws = libc::winsize {
        ws_row: o.rows,
        ws_col: o.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the out-pointers; name and termios are optional (NULL).
    if unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    } < 0
    {
        return Err(errno("openpty"));
    }
    let mut argv: Vec<*const libc::c_char> = o.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: this program has one thread; the child only runs `child` (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork"));
    }
    if pid == 0 {
        child(slave, master, &argv);
    }
    // SAFETY: our copy of the slave; the child holds its own.
    unsafe { libc::close(slave) };

    let deadline = Instant::now() + o.timeout;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    let mut status: Option<libc::c_int> = None;
    let mut master_open = true;
    let mut quiet_since: Option<Instant> = None;
    loop {
        if status.is_none() {
            let mut st = 0;
            // SAFETY: waitpid on our own child, non-blocking.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            if r == pid {
                status = Some(st);
                // What it wrote just before exiting may still be in the pty: drain it.
                quiet_since = None;
            }
        }
        // Done once the child is gone and the pty has nothing more (EIO: every slave closed,
        // or a grandchild keeps it open but has been silent for a while).
        if let Some(st) = status {
            let quiet = quiet_since.is_some_and(|t| t.elapsed() > Duration::from_millis(300));
            if !master_open || quiet {
                let _ = out.flush();
                return Ok(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    128 + libc::WTERMSIG(st)
                });
            }
        }
        if Instant::now() >= deadline {
            // SAFETY: signals to the child's process group (it is a session leader) and itself.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            let _ = out.flush();
            eprintln!("husk-pty-run: timed out after {:?}; killed", o.timeout);
            return Ok(124);
        }
        if !master_open {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: master,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 50) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(errno("poll"));
        }
        if r == 0 {
            quiet_since.get_or_insert_with(Instant::now);
            continue;
        }
        // SAFETY: reading into a buffer of the given length.
        let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            quiet_since = None;
            out.write_all(&buf[..n as usize])
                .and_then(|_| out.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
        } else if n == 0 {
            master_open = false;
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                // EIO: the last slave fd was closed.
                _ => master_open = false,
            }
        }
    }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("husk-pty-run: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(o) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("husk-pty-run: {e}");
            std::process::exit(125);
        }
    }
}
