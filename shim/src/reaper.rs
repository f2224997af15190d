//! Child reaping for the shim.
//!
//! The shim is the subreaper of its containers, so every container process (init and execs)
//! and every runtime command (`husk create`, `husk delete`, ...) is its child. One place reaps
//! them all: the main thread waits for SIGCHLD and calls [`Reaper::reap_all`], which hands each
//! exit status either to the thread waiting on a runtime command or to the process table.
//! Nobody else calls `wait*`, so statuses are never stolen.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Which container process a watched pid belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Init,
    Exec(String),
}

#[derive(Default)]
struct State {
    /// Runtime commands being waited for: pid -> exit status once known.
    commands: HashMap<i32, Option<i32>>,
    /// Container processes whose exit must be reported.
    watched: HashMap<i32, Owner>,
    /// Exits of pids nobody claimed yet, kept only while a launch is in flight (the container
    /// process may exit before its pid file is read).
    unclaimed: HashMap<i32, i32>,
    launching: usize,
}

#[derive(Default)]
pub struct Reaper {
    state: Mutex<State>,
    cond: Condvar,
}

/// Keeps unclaimed exits around while a container process is being launched.
pub struct LaunchGuard<'a> {
    reaper: &'a Reaper,
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.reaper.lock();
        st.launching = st.launching.saturating_sub(1);
        if st.launching == 0 {
            st.unclaimed.clear();
        }
    }
}

/// Converts a wait status into the exit status containerd expects (128+signal when killed).
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding it; the maps stay
        // consistent because every update is a single insert/remove.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns a runtime command whose exit status will be collected by the reaper.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut st = self.lock();
        let child = cmd.spawn()?;
        st.commands.insert(child.id() as i32, None);
        Ok(child)
    }

    /// Waits for the exit status of a command started with [`Reaper::spawn`].
    pub fn wait_command(&self, pid: u32) -> i32 {
        let pid = pid as i32;
        let mut st = self.lock();
        loop {
            if let Some(Some(code)) = st.commands.get(&pid) {
                let code = *code;
                st.commands.remove(&pid);
                return code;
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Marks the start of a container process launch (create or exec).
    pub fn launch(&self) -> LaunchGuard<'_> {
        self.lock().launching += 1;
        LaunchGuard { reaper: self }
    }

    /// Watches a container process. Returns its exit status if it already exited.
    pub fn watch(&self, pid: i32, owner: Owner) -> Option<i32> {
        let mut st = self.lock();
        if let Some(code) = st.unclaimed.remove(&pid) {
            return Some(code);
        }
        st.watched.insert(pid, owner);
        None
    }

    pub fn unwatch(&self, pid: i32) {
        self.lock().watched.remove(&pid);
    }

    /// Signals a watched container process. Returns false if it was already reaped (it is no
    /// longer watched): the pid may belong to another process by now. The reaper's lock is held
    /// across `waitpid` in [`Reaper::reap_all`], so a pid still watched here is at least a
    /// zombie of ours and cannot have been reused.
    pub fn signal(&self, pid: i32, sig: nix::sys::signal::Signal) -> nix::Result<bool> {
        let st = self.lock();
        if !st.watched.contains_key(&pid) {
            return Ok(false);
        }
        nix::sys::signal::kill(Pid::from_raw(pid), sig)?;
        Ok(true)
    }

    /// Reaps every exited child. Returns the container processes that exited.
    pub fn reap_all(&self) -> Vec<(Owner, i32, i32)> {
        let mut exited = Vec::new();
        loop {
            // Held from waitpid until the pid is taken out of `watched` (see `signal`).
            let mut st = self.lock();
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    let Some((pid, code)) = exit_code(status) else {
                        continue;
                    };
                    if let Some(slot) = st.commands.get_mut(&pid) {
                        *slot = Some(code);
                        self.cond.notify_all();
                    } else if let Some(owner) = st.watched.remove(&pid) {
                        exited.push((owner, pid, code));
                    } else if st.launching > 0 {
                        st.unclaimed.insert(pid, code);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid(-1): {e}");
                    break;
                }
            }
        }
        exited
    }
}
