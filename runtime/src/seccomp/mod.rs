//! seccomp: runtime-spec `linux.seccomp` compiled to classic BPF and installed with
//! seccomp(2), with runc's semantics (see `compile.rs` for the rules).
//!
//! Use:
//! ```text
//! parent/early:  let filter = seccomp::compile(&spec_seccomp)?;            // allocates
//!                (or FilterCache::new(root.join(".seccomp-cache")).compile(&s)?)
//! container init (single-threaded, after clone):
//!                NNP on : install() as the very last step before execve;
//!                NNP off: install() before dropping capabilities (it needs
//!                         CAP_SYS_ADMIN then), as runc does; the profile must then
//!                         allow the syscalls that follow (capset, setuid, ...).
//!                let listener = filter.install()?;                        // no allocation
//!                if let Some(fd) = listener { seccomp::send_fd(sync_sock, fd.as_fd())? }
//! runtime:       let fd = seccomp::recv_fd(sync_sock)?;
//!                seccomp::send_to_listener(listenerPath, listenerMetadata, fd, pid, &state)?
//!                and close its copy of fd.
//! ```
//! Every syscall made after install (sendmsg of the listener fd, execve) goes through
//! the filter, as with runc.
//!
//! BPF is generated here rather than by `seccompiler`: seccompiler 0.5 builds one filter
//! per architecture with a single match action for all rules, and has no NOTIFY action,
//! no x86/x32 sections, no filter flags and no runc-style -ENOSYS stub, all of which the
//! profiles Docker, containerd and CRI-O ship rely on. The program is checked against
//! libseccomp (runc's engine) by tests/seccomp_vs_libseccomp.rs.

mod bpf;
mod cache;
mod compile;
mod notify;
mod spec;
/// The names a seccomp config may use (actions, operators, architectures, flags).
pub use spec::{ACTIONS, ARCHES, FLAGS, OPERATORS};
#[rustfmt::skip]
mod syscall_tables;

use std::os::fd::{FromRawFd, OwnedFd};

pub use cache::{CacheOutcome, FilterCache};
pub use compile::compile;
pub use notify::{
    recv_fd, recv_fd_with, recv_notification, respond, send_fd, send_to_listener, Notification,
    NotifyResponse,
};
pub use spec::parse_seccomp;

/// Errors of the seccomp module; each names the field, path or syscall involved.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Invalid(String),
    #[error("seccomp: unsupported native architecture {0}")]
    UnsupportedNativeArch(&'static str),
    #[error("seccomp: generated program has {len} instructions, more than the kernel's 4096")]
    TooLong { len: usize },
    #[error("seccomp: internal error: {0}")]
    Internal(String),
    #[error("seccomp(SECCOMP_SET_MODE_FILTER, flags {flags:#x}) failed: {errno}{hint}")]
    Install {
        flags: u32,
        errno: nix::errno::Errno,
        hint: &'static str,
    },
    #[error("seccomp cache {path}: {source}")]
    CacheIo {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp listener {path}: {source}")]
    Listener {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp notify: {op} failed: {errno}")]
    Notify {
        op: &'static str,
        errno: nix::errno::Errno,
    },
}

pub type Result<T> = std::result::Result<T, SeccompError>;

/// A compiled filter, ready to be installed.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    program: Vec<libc::sock_filter>,
    flags: u32,
    uses_notify: bool,
}

impl PartialEq for CompiledFilter {
    fn eq(&self, other: &Self) -> bool {
        self.flags == other.flags
            && self.uses_notify == other.uses_notify
            && self.program_bytes() == other.program_bytes()
    }
}

impl CompiledFilter {
    /// The BPF program.
    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program
    }

    /// The program in the kernel's binary layout (8 bytes per instruction, native endian).
    pub fn program_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.program.len() * 8);
        for i in &self.program {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// SECCOMP_FILTER_FLAG_* passed to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether a rule uses SCMP_ACT_NOTIFY (install then returns the listener fd).
    pub fn uses_notify(&self) -> bool {
        self.uses_notify
    }

    /// Evaluates the program for one syscall as the kernel would (for diagnostics and
    /// tests): returns the SECCOMP_RET_* value.
    pub fn evaluate(&self, nr: u32, audit_arch: u32, args: [u64; 6]) -> Option<u32> {
        bpf::interpret(&self.program, nr, audit_arch, args)
    }

    /// Installs the filter on the calling thread (on all threads with TSYNC). Call it as
    /// the very last step before execve: every syscall made afterwards, execve included,
    /// goes through the filter. Without no_new_privs the caller needs CAP_SYS_ADMIN.
    /// Does not allocate. Returns the notify listener fd when a rule uses NOTIFY.
    pub fn install(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads `prog`, which points into `self.program` and outlives
        // the call; the kernel copies the program.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            let errno = nix::errno::Errno::last();
            let hint = match errno {
                nix::errno::Errno::EACCES => {
                    " (no_new_privs is off and the process lacks CAP_SYS_ADMIN)"
                }
                nix::errno::Errno::EINVAL => " (a flag is not supported by this kernel)",
                nix::errno::Errno::EBUSY => {
                    " (another listener already exists in this filter tree)"
                }
                _ => "",
            };
            return Err(SeccompError::Install {
                flags: self.flags,
                errno,
                hint,
            });
        }
        if self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32 == 0 && ret > 0 {
            // With TSYNC (and no listener) a positive return is the id of a thread that
            // could not be synchronised.
            return Err(SeccompError::Install {
                flags: self.flags,
                errno: nix::errno::Errno::ESRCH,
                hint: " (TSYNC: another thread of the process could not be synchronised)",
            });
        }
        if self.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32 != 0 {
            // SAFETY: with NEW_LISTENER the kernel returns a new fd that we now own.
            Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }))
        } else {
            Ok(None)
        }
    }
}
