//! Calls the OCI runtime binary (`husk`, or `runc` while husk is being written).
//!
//! The shim never forks containers itself: every container operation is one invocation of the
//! runtime binary, with runc's CLI (`--root`, `--log`, `--log-format json`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::reaper::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{binary} {action}: {msg}")]
    Failed {
        binary: String,
        action: String,
        msg: String,
    },
    #[error("spawn {binary} {action}: {source}")]
    Spawn {
        binary: String,
        action: String,
        source: std::io::Error,
    },
    #[error("{binary} {action}: parse output: {source}")]
    Output {
        binary: String,
        action: String,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Whether the runtime said the container does not exist (or is already gone).
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::Failed { msg, .. } => {
                let m = msg.to_ascii_lowercase();
                m.contains("does not exist")
                    || m.contains("not found")
                    || m.contains("container not running")
                    || m.contains("process already finished")
                    || m.contains("no such process")
            }
            _ => false,
        }
    }
}

/// What the shim persists in the bundle so that `delete` can clean up after a dead shim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeConfig {
    pub binary: PathBuf,
    pub root: PathBuf,
}

pub const CONFIG_FILE: &str = "husk-shim.json";

impl RuntimeConfig {
    /// Picks the runtime binary: the runc option `BinaryName`, then `HUSK_RUNTIME`, then `husk`
    /// next to the shim binary, then `husk` on PATH.
    pub fn resolve(binary_name: &str, root: &str, namespace: &str) -> RuntimeConfig {
        let binary = if !binary_name.is_empty() {
            find_binary(binary_name)
        } else if let Some(env) = std::env::var_os("HUSK_RUNTIME").filter(|v| !v.is_empty()) {
            find_binary(&env.to_string_lossy())
        } else {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("husk")))
                .filter(|p| p.is_file());
            beside.unwrap_or_else(|| find_binary("husk"))
        };
        let base = if !root.is_empty() {
            PathBuf::from(root)
        } else if let Some(env) = std::env::var_os("HUSK_ROOT").filter(|v| !v.is_empty()) {
            PathBuf::from(env)
        } else {
            PathBuf::from("/run/husk")
        };
        RuntimeConfig {
            binary,
            root: base.join(namespace),
        }
    }

    pub fn save(&self, bundle: &Path) -> Result<(), RuntimeError> {
        let path = bundle.join(CONFIG_FILE);
        let io_err = |source| RuntimeError::Io {
            path: path.display().to_string(),
            source,
        };
        // JSON strings are UTF-8: say which path is not, rather than serde's generic error.
        if self.binary.to_str().is_none() || self.root.to_str().is_none() {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "runtime binary {} or root {} is not UTF-8",
                    self.binary.display(),
                    self.root.display()
                ),
            )));
        }
        let text = serde_json::to_vec(self)
            .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        std::fs::write(&path, text).map_err(io_err)
    }

    pub fn load(bundle: &Path) -> Option<RuntimeConfig> {
        let data = std::fs::read(bundle.join(CONFIG_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

fn find_binary(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// Standard streams given to a runtime invocation that starts a container process.
pub struct ProcStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

pub struct Runtime {
    pub cfg: RuntimeConfig,
    /// `--log` file (JSON lines) in the bundle; errors are read back from it.
    log: PathBuf,
    reaper: Option<Arc<Reaper>>,
}

#[derive(Clone, Copy)]
pub struct CreateOpts<'a> {
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// CRIU options a checkpoint was taken with (from containerd's `CheckpointOptions`). The shim
/// records them next to the image (see [`CRIU_FLAGS_FILE`]) because a restore must repeat them
/// (an image with established TCP connections restores only with `--tcp-established`, ...)
/// and containerd's Create request carries none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CriuFlags {
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub empty_ns: Vec<String>,
    pub manage_cgroups_mode: String,
}

/// Where the shim records [`CriuFlags`] in a checkpoint image directory.
pub const CRIU_FLAGS_FILE: &str = "husk-shim-criu.json";

impl CriuFlags {
    /// runc's flags for these options (the same for `checkpoint` and `restore`).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        for (on, flag) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        for ns in &self.empty_ns {
            args.push("--empty-ns".into());
            args.push(ns.into());
        }
        if !self.manage_cgroups_mode.is_empty() {
            args.push("--manage-cgroups-mode".into());
            args.push((&self.manage_cgroups_mode).into());
        }
        args
    }

    /// Records the flags in the image directory `image`.
    pub fn save(&self, image: &Path) -> Result<(), RuntimeError> {
        let path = image.join(CRIU_FLAGS_FILE);
        let io_err = |source| RuntimeError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_vec(self)
            .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        std::fs::write(&path, text).map_err(io_err)
    }

    /// The flags recorded in `image`; none when the image was not written through this shim
    /// (as containerd's runc shim restores: without CRIU options).
    pub fn load(image: &Path) -> Result<CriuFlags, RuntimeError> {
        let path = image.join(CRIU_FLAGS_FILE);
        let io_err = |source| RuntimeError::Io {
            path: path.display().to_string(),
            source,
        };
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CriuFlags::default()),
            Err(e) => return Err(io_err(e)),
        };
        let invalid =
            |msg: String| io_err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
        serde_json::from_slice(&data).map_err(|e| invalid(e.to_string()))
    }
}

/// `<runtime> restore` as the shim runs it at Start of a task created from a checkpoint.
pub struct RestoreOpts<'a> {
    pub image_path: &'a Path,
    pub work_path: Option<&'a Path>,
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub criu: &'a CriuFlags,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig, bundle: &Path, reaper: Option<Arc<Reaper>>) -> Runtime {
        Runtime {
            cfg,
            log: bundle.join("log.json"),
            reaper,
        }
    }

    fn binary_name(&self) -> String {
        self.cfg.binary.display().to_string()
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.arg("--root")
            .arg(&self.cfg.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        cmd
    }

    fn log_offset(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The last error message the runtime wrote to its log after `offset`.
    fn log_error(&self, offset: u64) -> Option<String> {
        let mut f = File::open(&self.log).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        let mut last = None;
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<LogLine>(line) {
                if matches!(v.level.as_deref(), Some("error" | "fatal")) {
                    if let Some(msg) = v.msg {
                        last = Some(msg);
                    }
                }
            } else if !line.trim().is_empty() {
                last = Some(line.trim().to_string());
            }
        }
        last
    }

    /// Runs the runtime; returns its stdout. `stdio` replaces the standard streams (for
    /// create/exec, whose streams become the container's).
    fn run(
        &self,
        action: &str,
        args: Vec<OsString>,
        stdio: Option<ProcStdio>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let offset = self.log_offset();
        let mut cmd = self.command(&args);
        let capture = stdio.is_none();
        match stdio {
            Some(io) => {
                cmd.stdin(io.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stdout(io.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stderr(io.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
            }
            None => {
                cmd.stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
                cmd.stdout(Stdio::piped());
                cmd.stderr(Stdio::piped());
            }
        }
        let spawn_err = |source| RuntimeError::Spawn {
            binary: self.binary_name(),
            action: action.to_string(),
            source,
        };
        let mut child = match &self.reaper {
            Some(r) => r.spawn(&mut cmd),
            None => cmd.spawn(),
        }
        .map_err(spawn_err)?;
        // The command and its stdio handles (held by `cmd`) are closed here so that the
        // container's pipes see EOF once the container closes them.
        drop(cmd);
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(data).map_err(spawn_err)?;
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        if capture {
            if let Some(mut o) = child.stdout.take() {
                o.read_to_end(&mut out).map_err(spawn_err)?;
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_end(&mut err).map_err(spawn_err)?;
            }
        }
        let code = match &self.reaper {
            Some(r) => r.wait_command(child.id()),
            None => child.wait().map_err(spawn_err)?.code().unwrap_or(128 + 9),
        };
        if code == 0 {
            return Ok(out);
        }
        let msg = self.log_error(offset).unwrap_or_else(|| {
            let e = String::from_utf8_lossy(&err).trim().to_string();
            if e.is_empty() {
                format!("exit status {code}")
            } else {
                e
            }
        });
        Err(RuntimeError::Failed {
            binary: self.binary_name(),
            action: action.to_string(),
            msg,
        })
    }

    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOpts,
        stdio: ProcStdio,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            opts.pid_file.into(),
        ];
        if let Some(s) = opts.console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        if opts.no_pivot {
            args.push("--no-pivot".into());
        }
        if opts.no_new_keyring {
            args.push("--no-new-keyring".into());
        }
        args.push(id.into());
        self.run("create", args, Some(stdio), None).map(|_| ())
    }

    /// `restore --detach`: the restored init gets `stdio` (CRIU hands the runtime's own fds 0-2
    /// to it in place of the checkpointed container's pipes) and, once the runtime exited, the
    /// shim (subreaper) as its parent.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        opts: &RestoreOpts,
        stdio: ProcStdio,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            "--image-path".into(),
            opts.image_path.into(),
        ];
        if let Some(w) = opts.work_path {
            args.push("--work-path".into());
            args.push(w.into());
        }
        args.extend([
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            opts.pid_file.into(),
            "--detach".into(),
        ]);
        if let Some(s) = opts.console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        if opts.no_pivot {
            args.push("--no-pivot".into());
        }
        args.extend(opts.criu.args());
        args.push(id.into());
        self.run("restore", args, Some(stdio), None).map(|_| ())
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", vec!["start".into(), id.into()], None, None)
            .map(|_| ())
    }

    pub fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcStdio,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--process".into(),
            process_file.into(),
            "--pid-file".into(),
            pid_file.into(),
            "--detach".into(),
        ];
        if let Some(s) = console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        args.push(id.into());
        self.run("exec", args, Some(stdio), None).map(|_| ())
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.run("kill", args, None, None).map(|_| ())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run("delete", args, None, None).map(|_| ())
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", vec!["pause".into(), id.into()], None, None)
            .map(|_| ())
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", vec!["resume".into(), id.into()], None, None)
            .map(|_| ())
    }

    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), RuntimeError> {
        let args = vec!["update".into(), "--resources".into(), "-".into(), id.into()];
        self.run("update", args, None, Some(resources_json))
            .map(|_| ())
    }

    pub fn ps(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        let args = vec!["ps".into(), "--format".into(), "json".into(), id.into()];
        let out = self.run("ps", args, None, None)?;
        let text = String::from_utf8_lossy(&out);
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(Vec::new());
        }
        let out_err = |source| RuntimeError::Output {
            binary: self.binary_name(),
            action: "ps".into(),
            source,
        };
        // An array of pids; anything else (or a pid out of range) is an error.
        serde_json::from_str(text).map_err(out_err)
    }
}

/// One line of the runtime's `--log-format json` log (logrus' fields, as runc and husk write).
#[derive(serde::Deserialize)]
struct LogLine {
    level: Option<String>,
    msg: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_round_trips() {
        let dir = std::env::temp_dir().join(format!("husk-shim-rtcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = RuntimeConfig {
            binary: PathBuf::from("/usr/local/bin/hu\"sk"),
            root: PathBuf::from("/run/husk/ns"),
        };
        cfg.save(&dir).unwrap();
        assert_eq!(RuntimeConfig::load(&dir), Some(cfg));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn criu_flags_round_trip_and_map_to_runc_flags() {
        let dir = std::env::temp_dir().join(format!("husk-shim-criu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(CriuFlags::load(&dir).unwrap(), CriuFlags::default());
        let f = CriuFlags {
            tcp_established: true,
            file_locks: true,
            empty_ns: vec!["network".into()],
            manage_cgroups_mode: "soft".into(),
            ..Default::default()
        };
        f.save(&dir).unwrap();
        assert_eq!(CriuFlags::load(&dir).unwrap(), f);
        let args: Vec<String> = f
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--tcp-established",
                "--file-locks",
                "--empty-ns",
                "network",
                "--manage-cgroups-mode",
                "soft"
            ]
        );
        std::fs::write(dir.join(CRIU_FLAGS_FILE), "{broken").unwrap();
        let e = CriuFlags::load(&dir).unwrap_err().to_string();
        assert!(e.contains(CRIU_FLAGS_FILE), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
