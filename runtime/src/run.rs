//! `run` in the foreground: create + start, then stay as the container's parent (subreaper),
//! forward signals, proxy the terminal when there is no console socket, and return the exit code.
use crate::container::{self, CreateOpts};
use crate::error::{Context, Error, Result};
use crate::state::Root;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

const FORWARDED: [Signal; 12] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

fn wants_terminal(bundle: &std::path::Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false)
}

/// Returns the exit code husk should exit with.
pub fn run(root: &Root, mut opts: CreateOpts, detach: bool, keep: bool) -> Result<i32> {
    let id = opts.id.clone();
    if detach {
        container::create(root, opts)?;
        container::start(root, &id)?;
        return Ok(0);
    }
    let fg = Foreground::prepare()?;

    let mut our_console: Option<OwnedFd> = None;
    if opts.console_socket.is_none() && wants_terminal(&opts.bundle) {
        let (a, b) =
            std::os::unix::net::UnixStream::pair().ctx(|| "socketpair for the terminal".into())?;
        opts.console_fd = Some(OwnedFd::from(b));
        our_console = Some(OwnedFd::from(a));
    }
    let st = container::create(root, opts)?;
    let master = match &our_console {
        Some(sock) => Some(crate::tty::recv_fd(sock.as_raw_fd())?.0),
        None => None,
    };
    drop(our_console);
    let finish = |code: i32| -> Result<i32> {
        if !keep {
            container::delete(root, &id, true)?;
        }
        Ok(code)
    };
    if let Err(e) = container::start(root, &id) {
        let _ = container::delete(root, &id, true);
        return Err(e);
    }
    let code = fg.wait(st.pid, master)?;
    finish(code)
}

/// Staying in the foreground as a process's parent: subreaper, forwarded signals (blocked before
/// the process is cloned so none is lost), and the terminal proxy.
pub struct Foreground {
    sfd: SignalFd,
}

impl Foreground {
    pub fn prepare() -> Result<Foreground> {
        Foreground::prepare_with(true)
    }

    /// As `prepare`, becoming a child subreaper (reaping what the container orphans) only when
    /// `subreaper` is true (`restore --no-subreaper`).
    pub fn prepare_with(subreaper: bool) -> Result<Foreground> {
        if subreaper {
            crate::sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0)
                .ctx(|| "prctl PR_SET_CHILD_SUBREAPER".into())?;
        }
        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(s);
        }
        mask.thread_block().ctx(|| "block signals".into())?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).ctx(|| "signalfd".into())?;
        Ok(Foreground { sfd })
    }

    /// Wait for `pid` to exit, forwarding signals and proxying `master` to our stdio; returns its
    /// exit code (128 + signal when killed).
    pub fn wait(self, pid: i32, master: Option<OwnedFd>) -> Result<i32> {
        let _raw = RawTerminal::new(master.is_some());
        if let Some(m) = &master {
            resize_from_stdin(m.as_fd());
        }
        wait_loop(pid, &self.sfd, master.as_ref())
    }
}

fn resize_from_stdin(master: BorrowedFd<'_>) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into a winsize struct we own; failure (stdin not a tty) is ignored.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
        let _ = crate::tty::set_winsize(master.as_raw_fd(), ws.ws_row, ws.ws_col);
    }
}

fn copy_once(from: i32, to: i32) -> std::io::Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    // SAFETY: reading into and writing from a stack buffer of the given length.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return if n == 0 {
            Ok(0)
        } else {
            Err(std::io::Error::last_os_error())
        };
    }
    let mut off = 0;
    while off < n as usize {
        // SAFETY: as above.
        let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
        if w < 0 {
            return Err(std::io::Error::last_os_error());
        }
        off += w as usize;
    }
    Ok(n as usize)
}

fn wait_loop(init: i32, sfd: &SignalFd, master: Option<&OwnedFd>) -> Result<i32> {
    let mut stdin_open = master.is_some();
    let mut exit: Option<i32> = None;
    loop {
        if let Some(code) = exit {
            // Drain what the container wrote before it exited.
            if let Some(m) = master {
                let _ = nix::fcntl::fcntl(
                    m,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                while matches!(copy_once(m.as_raw_fd(), 1), Ok(n) if n > 0) {}
            }
            return Ok(code);
        }
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    "poll",
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGCHLD) => {
                        exit = reap(init);
                    }
                    Some(Signal::SIGWINCH) => {
                        if let Some(m) = master {
                            resize_from_stdin(m.as_fd());
                        }
                    }
                    Some(s) => {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), s);
                    }
                    None => {}
                }
            }
        }
        if let Some(m) = master {
            if ready.get(1).copied().unwrap_or(false)
                && copy_once(m.as_raw_fd(), 1).unwrap_or(0) == 0
            {
                // EIO once the container side is closed; the exit comes with SIGCHLD.
                exit = exit.or_else(|| wait_init(init));
            }
            if stdin_open
                && ready.get(2).copied().unwrap_or(false)
                && copy_once(0, m.as_raw_fd()).unwrap_or(0) == 0
            {
                stdin_open = false;
            }
        }
    }
}

fn code_of(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Reap every exited child; returns the init's exit code once it is among them.
fn reap(init: i32) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(ws) => {
                if ws.pid().map(|p| p.as_raw()) == Some(init) {
                    code = code_of(ws).or(code);
                }
            }
        }
    }
}

fn wait_init(init: i32) -> Option<i32> {
    waitpid(nix::unistd::Pid::from_raw(init), None)
        .ok()
        .and_then(code_of)
}

/// Puts our stdin in raw mode while a terminal is proxied; restores it on drop.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn new(enable: bool) -> RawTerminal {
        if !enable {
            return RawTerminal(None);
        }
        let stdin = std::io::stdin();
        match nix::sys::termios::tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ =
                    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
                RawTerminal(Some(orig))
            }
            Err(_) => RawTerminal(None),
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}
