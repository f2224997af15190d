//! husk-bench: start-up benchmark of OCI runtimes with runc's command line (husk, runc, crun).
//!
//! Measures, alternating the runtimes in every iteration (rotating the order so that no runtime
//! always goes first), the wall time, CPU time (user+sys) and peak RSS of:
//!   run            `<rt> run` of /bin/true from a busybox bundle
//!   csd            `<rt> create`, `<rt> start`, wait for the container to exit, `<rt> delete`
//!   exec           `<rt> exec ID /bin/true` into a running container
//!   run-seccomp    `run` with Docker's default seccomp profile
//!   batch          N `run`s in a row (total time)
//!   floor          `unshare -fpmuin --mount-proc /bin/true` and fork+exec of /bin/true
//! and, with strace, where the time of `run` and `create` goes (runtime execve, first clone, first
//! namespace, mounts, pivot_root, seccomp, container execve, runtime exit); and husk's own phase
//! timings from `husk --debug --log-format json create` (its `phase done` log lines).
//!
//! The process makes itself a child subreaper (containers started with create/start are orphaned
//! when the runtime exits; they are reaped here, outside the timed sections), and enters a private
//! mount namespace where /sys/fs/cgroup/unified is unmounted so that crun accepts this hybrid host;
//! every runtime runs under the same view. CPU time and peak RSS come from wait4(2) of each runtime
//! command (ru_maxrss is the largest of the command and of the descendants it waited for).
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: husk-bench --bundle DIR --seccomp FILE [--runtime NAME=PATH]... [--quick]
    [--iterations N] [--batch-size N] [--batch-rounds N] [--strace-runs N] [--no-strace]
    [--debug-runs N]
    [--workdir DIR] [--out FILE.md] [--keep-unified] [--[no-]presealed] [--command-line TEXT]

  --bundle DIR       busybox bundle (DIR/rootfs, DIR/config.json), e.g. from hack/mkbundle.sh
  --seccomp FILE     linux.seccomp object in runtime-spec form (Docker's default profile)
  --runtime N=P      a runtime to compare (repeatable; order: the first is the one ratios are
                     computed for, named husk by default)
  --quick            few iterations (CI): 5 per runtime, one batch round, 3 strace runs,
                     3 debug runs
  --debug-runs N     `husk --debug --log-format json create` runs whose phase timings are
                     reported (median), with and without seccomp (default 10; 0: none)
  --presealed        also measure husk started from a sealed memfd copy made once by this
                     harness (\"husk-presealed\"): husk then skips its own copy + re-exec, which
                     isolates that cost (default: on in full mode, off with --quick)
  --out FILE         markdown report (default: hack/bench/out/results.md); raw samples go to
                     FILE with .csv";

struct Opts {
    bundle: PathBuf,
    seccomp: PathBuf,
    runtimes: Vec<(String, PathBuf)>,
    iterations: usize,
    warmup: usize,
    batch_size: usize,
    batch_rounds: usize,
    strace_runs: usize,
    debug_runs: usize,
    workdir: PathBuf,
    out: PathBuf,
    keep_unified: bool,
    presealed: bool,
    command_line: String,
    quick: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let mut bundle = None;
    let mut seccomp = None;
    let mut runtimes = Vec::new();
    let mut quick = false;
    let mut iterations = None;
    let mut batch_size = 50;
    let mut batch_rounds = None;
    let mut strace_runs = None;
    let mut debug_runs = None;
    let mut no_strace = false;
    let mut workdir = None;
    let mut out = PathBuf::from("hack/bench/out/results.md");
    let mut keep_unified = false;
    let mut presealed = None;
    let mut command_line = String::new();
    fn val(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String> {
        args.next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
    }
    fn num(s: String, flag: &str) -> Result<usize> {
        s.parse()
            .with_context(|| format!("{flag}: not a number: {s:?}"))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bundle" => bundle = Some(PathBuf::from(val(&mut args, &a)?)),
            "--seccomp" => seccomp = Some(PathBuf::from(val(&mut args, &a)?)),
            "--runtime" => {
                let v = val(&mut args, &a)?;
                let (n, p) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--runtime wants NAME=PATH, got {v:?}"))?;
                runtimes.push((n.to_string(), PathBuf::from(p)));
            }
            "--quick" => quick = true,
            "--iterations" => iterations = Some(num(val(&mut args, &a)?, &a)?),
            "--batch-size" => batch_size = num(val(&mut args, &a)?, &a)?,
            "--batch-rounds" => batch_rounds = Some(num(val(&mut args, &a)?, &a)?),
            "--strace-runs" => strace_runs = Some(num(val(&mut args, &a)?, &a)?),
            "--no-strace" => no_strace = true,
            "--debug-runs" => debug_runs = Some(num(val(&mut args, &a)?, &a)?),
            "--workdir" => workdir = Some(PathBuf::from(val(&mut args, &a)?)),
            "--out" => out = PathBuf::from(val(&mut args, &a)?),
            "--keep-unified" => keep_unified = true,
            "--presealed" => presealed = Some(true),
            "--no-presealed" => presealed = Some(false),
            "--command-line" => command_line = val(&mut args, &a)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    if runtimes.is_empty() {
        bail!("no runtime given (--runtime NAME=PATH)\n{USAGE}");
    }
    let pid = std::process::id();
    Ok(Opts {
        bundle: bundle.ok_or_else(|| anyhow!("--bundle is required\n{USAGE}"))?,
        seccomp: seccomp.ok_or_else(|| anyhow!("--seccomp is required\n{USAGE}"))?,
        runtimes,
        iterations: iterations.unwrap_or(if quick { 5 } else { 40 }),
        warmup: if quick { 1 } else { 2 },
        batch_size,
        batch_rounds: batch_rounds.unwrap_or(if quick { 1 } else { 7 }),
        strace_runs: if no_strace {
            0
        } else {
            strace_runs.unwrap_or(if quick { 3 } else { 10 })
        },
        debug_runs: debug_runs.unwrap_or(if quick { 3 } else { 10 }),
        workdir: workdir.unwrap_or_else(|| PathBuf::from(format!("/run/husk-bench-{pid}"))),
        out,
        keep_unified,
        presealed: presealed.unwrap_or(!quick),
        command_line,
        quick,
    })
}

// ---------------------------------------------------------------------------------------------
// Process plumbing

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    wall_ms: f64,
    cpu_ms: f64,
    maxrss_kib: i64,
}

impl Sample {
    /// Sequential composition: times and CPU add up, the peak is the larger one.
    fn add(self, o: Sample) -> Sample {
        Sample {
            wall_ms: self.wall_ms + o.wall_ms,
            cpu_ms: self.cpu_ms + o.cpu_ms,
            maxrss_kib: self.maxrss_kib.max(o.maxrss_kib),
        }
    }
}

fn tv_ms(t: libc::timeval) -> f64 {
    t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3
}

/// wait4(2) for one pid, retrying on EINTR. Returns the raw status and the rusage.
fn wait4(pid: libc::pid_t) -> std::io::Result<(i32, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 fills it in. Zeroed is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Reap every exited child that is not waited for elsewhere (orphaned containers).
fn reap_strays() {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if r <= 0 {
            break;
        }
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Run a command to completion with stdin/stdout on /dev/null and stderr in `errfile`; time it
/// and take its rusage. Fails (with the stderr text) unless it exits 0.
fn timed(argv: &[OsString], errfile: &Path) -> Result<Sample> {
    let err = fs::File::create(errfile).with_context(|| format!("create {}", errfile.display()))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let t0 = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {:?}", argv[0]))?;
    let pid = child.id() as libc::pid_t;
    let (status, ru) = wait4(pid).with_context(|| format!("wait4 {pid} ({:?})", argv[0]))?;
    let wall = t0.elapsed();
    // The child was reaped by wait4: std must not wait for it again (dropping Child does not).
    drop(child);
    if status != 0 {
        let text = fs::read_to_string(errfile).unwrap_or_default();
        bail!(
            "{} failed ({}): {}",
            show(argv),
            describe_status(status),
            text.trim()
        );
    }
    Ok(Sample {
        wall_ms: wall.as_secs_f64() * 1e3,
        cpu_ms: tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss,
    })
}

fn show(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// State letter of /proc/PID/stat, None when the process is gone.
fn proc_state(pid: libc::pid_t) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Wait until a container's init has exited: wait4 when it is our child (the usual case: it is
/// re-parented to us, the subreaper, once `create` exits), else poll /proc.
fn wait_exit(pid: libc::pid_t) -> Result<()> {
    match wait4(pid) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
        Err(e) => return Err(anyhow!("wait4 container init {pid}: {e}")),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match proc_state(pid) {
            None | Some('Z') | Some('X') => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("container init {pid} did not exit within 30 s")
            }
            _ => std::thread::sleep(Duration::from_micros(100)),
        }
    }
}

/// What husk does before create/run/exec (runtime/src/exe.rs): copy its own binary into a sealed
/// memfd. Timed in this process (the copy only: no re-exec).
fn memfd_copy(bin: &Path) -> Result<Sample> {
    let t0 = Instant::now();
    drop(sealed_copy(bin)?);
    // Thread CPU time is too coarse for a copy of a few ms: not reported.
    Ok(Sample {
        wall_ms: t0.elapsed().as_secs_f64() * 1e3,
        cpu_ms: f64::NAN,
        maxrss_kib: 0,
    })
}

/// A sealed (seal, shrink, grow, write), executable memfd holding a copy of `bin`.
fn sealed_copy(bin: &Path) -> Result<fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut src = fs::File::open(bin).with_context(|| format!("open {}", bin.display()))?;
    let name = CString::new("husk-bench")?;
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 {
        // Kernels before 6.3 do not know MFD_EXEC (memfds are executable there).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        bail!("memfd_create: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    let mut dst = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut src, &mut dst).context("copy into memfd")?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on our memfd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        bail!("F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    Ok(dst)
}

/// rmdir `<hierarchy>/<id>` and `<hierarchy>/<our own path>/<id>` in every v1 hierarchy
/// (best effort: only empty cgroups can go).
fn remove_cgroups_named(id: &str) {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Ok(dirs) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in dirs.flatten() {
        let hp = h.path();
        let _ = fs::remove_dir(hp.join(id));
        let name = h.file_name().to_string_lossy().into_owned();
        for l in own.lines() {
            let mut f = l.splitn(3, ':');
            let (Some(_), Some(ctl), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if ctl
                .split(',')
                .any(|c| c == name || c == format!("name={name}"))
                && path != "/"
            {
                let _ = fs::remove_dir(hp.join(path.trim_start_matches('/')).join(id));
            }
        }
    }
}

/// A scratch cgroup in the v1 pids hierarchy, next to this process's own.
struct CgroupAttach {
    dir: PathBuf,
    home: PathBuf,
}

impl CgroupAttach {
    fn new() -> Result<Option<CgroupAttach>> {
        let own = fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
        let Some(rel) = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            ctl.split(',')
                .any(|c| c == "pids")
                .then(|| path.to_string())
        }) else {
            return Ok(None); // no v1 pids hierarchy: nothing to measure
        };
        let home = Path::new("/sys/fs/cgroup/pids").join(rel.trim_start_matches('/'));
        if !home.join("cgroup.procs").exists() {
            return Ok(None);
        }
        let dir = home.join(format!("hb{}-attach", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Some(CgroupAttach { dir, home }))
    }

    /// Spawn `sleep`, let the machine be quiet for 20 ms, time the write of its pid to the
    /// scratch cgroup, then the write back home; kill it.
    fn measure(&self) -> Result<(Sample, Sample)> {
        let mut child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn sleep")?;
        let pid = child.id().to_string();
        std::thread::sleep(Duration::from_millis(20));
        let write = |d: &Path| -> Result<Sample> {
            let p = d.join("cgroup.procs");
            let t0 = Instant::now();
            fs::write(&p, &pid).with_context(|| format!("write {pid} to {}", p.display()))?;
            Ok(Sample {
                wall_ms: t0.elapsed().as_secs_f64() * 1e3,
                cpu_ms: f64::NAN,
                maxrss_kib: 0,
            })
        };
        let r = write(&self.dir).and_then(|a| Ok((a, write(&self.home)?)));
        let _ = child.kill();
        let _ = child.wait();
        r
    }

    /// A forked (single-threaded) child moves itself by writing "0" to the scratch cgroup's
    /// `tasks` file (a thread migration of current: the kernel then skips the global
    /// cgroup_threadgroup_rwsem); it times that write and sends the time back through a pipe.
    fn measure_self_tasks(&self) -> Result<Sample> {
        let tasks = CString::new(self.dir.join("tasks").as_os_str().as_encoded_bytes())?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: this process is single-threaded; the child only makes raw syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing our own pipe fds.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            bail!("fork: {e}");
        }
        if pid == 0 {
            // SAFETY: raw syscalls on valid pointers, then _exit; nothing else runs here.
            unsafe {
                let quiet = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 20_000_000,
                };
                libc::nanosleep(&quiet, std::ptr::null_mut());
                let mut t0: libc::timespec = std::mem::zeroed();
                let mut t1: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
                let fd = libc::open(tasks.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1);
                let ns: i64 = if ok {
                    (t1.tv_sec - t0.tv_sec) * 1_000_000_000 + (t1.tv_nsec - t0.tv_nsec)
                } else {
                    -1
                };
                libc::write(fds[1], (&ns as *const i64).cast(), 8);
                libc::_exit(0);
            }
        }
        // SAFETY: our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut ns: i64 = -1;
        // SAFETY: reading 8 bytes into an i64.
        let n = unsafe { libc::read(fds[0], (&mut ns as *mut i64).cast(), 8) };
        // SAFETY: our read end.
        unsafe { libc::close(fds[0]) };
        wait4(pid).with_context(|| format!("wait4 {pid}"))?;
        if n != 8 || ns < 0 {
            bail!(
                "child could not write 0 to {}",
                self.dir.join("tasks").display()
            );
        }
        Ok(Sample {
            wall_ms: ns as f64 / 1e6,
            cpu_ms: f64::NAN,
            maxrss_kib: 0,
        })
    }

    fn remove(self) -> Result<()> {
        fs::remove_dir(&self.dir).with_context(|| format!("rmdir {}", self.dir.display()))
    }
}

fn read_pid(path: &Path) -> Result<libc::pid_t> {
    let s =
        fs::read_to_string(path).with_context(|| format!("read pid file {}", path.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("pid file {}: not a pid: {s:?}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Runtimes and containers

struct Runtime {
    name: String,
    bin: PathBuf,
    root: PathBuf,
}

impl Runtime {
    fn argv(&self, args: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            self.bin.clone().into(),
            "--root".into(),
            self.root.clone().into(),
        ];
        v.extend(args.iter().map(OsString::from));
        v
    }
    fn argv_debug(&self, log: &Path, args: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            self.bin.clone().into(),
            "--root".into(),
            self.root.clone().into(),
            "--debug".into(),
            "--log".into(),
            log.into(),
            "--log-format".into(),
            "json".into(),
        ];
        v.extend(args.iter().map(OsString::from));
        v
    }
}

struct Bench {
    rts: Vec<Runtime>,
    work: PathBuf,
    errfile: PathBuf,
    /// Containers that may exist (runtime index, id): removed with `delete -f` on the way out.
    live: Vec<(usize, String)>,
    seq: usize,
    /// /sys/fs/cgroup/unified is our private tmpfs: clean it after each container.
    scratch_unified: bool,
}

const UNIFIED: &str = "/sys/fs/cgroup/unified";

impl Bench {
    fn id(&mut self, rt: usize, what: &str) -> String {
        self.seq += 1;
        format!(
            "hb{}-{}-{}-{}",
            std::process::id(),
            self.rts[rt].name,
            what,
            self.seq
        )
    }
    fn bundle(&self, name: &str) -> String {
        self.work.join(name).to_string_lossy().into_owned()
    }
    fn forget(&mut self, rt: usize, id: &str) {
        self.live.retain(|(r, i)| !(*r == rt && i == id));
        if self.scratch_unified {
            // What crun leaves on our private tmpfs (see enter_private_mount_ns).
            let _ = fs::remove_dir_all(Path::new(UNIFIED).join(id));
        }
    }

    fn run(&mut self, rt: usize, bundle: &str) -> Result<Sample> {
        let id = self.id(rt, "run");
        self.live.push((rt, id.clone()));
        let s = timed(
            &self.rts[rt].argv(&["run", "--bundle", bundle, &id]),
            &self.errfile,
        )?;
        self.forget(rt, &id);
        Ok(s)
    }

    /// create, start, wait for exit, delete: returns (create, start, wait, delete).
    fn csd(&mut self, rt: usize) -> Result<[Sample; 4]> {
        let id = self.id(rt, "csd");
        let pidfile = self.work.join(format!("{id}.pid"));
        let bundle = self.bundle("true");
        let pf = pidfile.to_string_lossy().into_owned();
        self.live.push((rt, id.clone()));
        let r = &self.rts[rt];
        let c = timed(
            &r.argv(&["create", "--bundle", &bundle, "--pid-file", &pf, &id]),
            &self.errfile,
        )?;
        let pid = read_pid(&pidfile)?;
        let s = timed(&r.argv(&["start", &id]), &self.errfile)?;
        let t0 = Instant::now();
        wait_exit(pid)?;
        let w = Sample {
            wall_ms: t0.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        };
        let d = timed(&r.argv(&["delete", &id]), &self.errfile)?;
        self.forget(rt, &id);
        let _ = fs::remove_file(&pidfile);
        Ok([c, s, w, d])
    }

    /// Start a long-running container (for exec); returns (id, init pid).
    fn start_sleeper(&mut self, rt: usize) -> Result<(String, libc::pid_t)> {
        let id = self.id(rt, "exec");
        let pidfile = self.work.join(format!("{id}.pid"));
        let pf = pidfile.to_string_lossy().into_owned();
        let bundle = self.bundle("sleep");
        self.live.push((rt, id.clone()));
        let r = &self.rts[rt];
        timed(
            &r.argv(&["create", "--bundle", &bundle, "--pid-file", &pf, &id]),
            &self.errfile,
        )?;
        let pid = read_pid(&pidfile)?;
        timed(&r.argv(&["start", &id]), &self.errfile)?;
        let _ = fs::remove_file(&pidfile);
        Ok((id, pid))
    }

    fn stop_sleeper(&mut self, rt: usize, id: &str, pid: libc::pid_t) -> Result<()> {
        let r = &self.rts[rt];
        timed(&r.argv(&["kill", id, "KILL"]), &self.errfile)?;
        wait_exit(pid)?;
        timed(&r.argv(&["delete", id]), &self.errfile)?;
        self.forget(rt, id);
        Ok(())
    }

    fn cleanup(&mut self) {
        for (rt, id) in std::mem::take(&mut self.live) {
            let r = &self.rts[rt];
            if let Err(e) = timed(&r.argv(&["delete", "--force", &id]), &self.errfile) {
                eprintln!("husk-bench: cleanup of {} container {id}: {e:#}", r.name);
                // A runtime that failed half-way may have no state to delete from but
                // cgroups already made: remove the empty ones named after the container.
                remove_cgroups_named(&id);
            }
            if self.scratch_unified {
                let _ = fs::remove_dir_all(Path::new(UNIFIED).join(&id));
            }
        }
        reap_strays();
    }
}

/// Samples: bench -> metric -> participant -> samples.
type Results = BTreeMap<(usize, String), (String, Vec<(String, Vec<Sample>)>)>;

struct Collector {
    results: Results,
    order: usize,
}

impl Collector {
    fn push(&mut self, bench: &str, participant: &str, s: Sample) {
        let key = self
            .results
            .iter()
            .find(|(_, (b, _))| b == bench)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| {
                self.order += 1;
                (self.order, bench.to_string())
            });
        let entry = self
            .results
            .entry(key)
            .or_insert_with(|| (bench.to_string(), Vec::new()));
        match entry.1.iter_mut().find(|(p, _)| p == participant) {
            Some((_, v)) => v.push(s),
            None => entry.1.push((participant.to_string(), vec![s])),
        }
    }
}

/// Alternate participants pair by pair, rotating who goes first in each iteration.
fn alternate(
    n: usize,
    iters: usize,
    warmup: usize,
    mut f: impl FnMut(usize, bool) -> Result<()>,
) -> Result<()> {
    for i in 0..warmup + iters {
        for k in 0..n {
            f((i + k) % n, i >= warmup)?;
            reap_strays();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Set-up

/// Returns a description of the view, and whether /sys/fs/cgroup/unified is our scratch tmpfs.
fn enter_private_mount_ns(keep_unified: bool) -> Result<(String, bool)> {
    // SAFETY: unshare/mount/umount2 with valid NUL-terminated strings; single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = CString::new("/")?;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "mount(/, MS_REC|MS_PRIVATE): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let mi = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let unified = mi
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"));
    if !unified {
        return Ok((
            "no /sys/fs/cgroup/unified mount (nothing to hide)".into(),
            false,
        ));
    }
    if keep_unified {
        return Ok(("/sys/fs/cgroup/unified kept (--keep-unified)".into(), false));
    }
    let p = CString::new("/sys/fs/cgroup/unified")?;
    // SAFETY: valid path.
    if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } != 0 {
        bail!(
            "umount2(/sys/fs/cgroup/unified): {}",
            std::io::Error::last_os_error()
        );
    }
    // Cover the now plain mountpoint with an empty tmpfs private to this namespace: crun (which
    // then runs in v1 mode) still mkdirs /sys/fs/cgroup/unified/<id> and writes a cgroup.procs
    // file there, which would otherwise pile up on the host's /sys/fs/cgroup tmpfs, hidden
    // under the cgroup2 mount. The tmpfs goes away with the namespace.
    let fstype = CString::new("tmpfs")?;
    let opts = CString::new("mode=755,size=16m")?;
    // SAFETY: valid NUL-terminated strings.
    if unsafe {
        libc::mount(
            fstype.as_ptr(),
            p.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    } != 0
    {
        bail!(
            "mount tmpfs on /sys/fs/cgroup/unified: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(("private mount namespace, /sys/fs/cgroup/unified unmounted (crun's hybrid-cgroup workaround) and covered by an empty private tmpfs".into(), true))
}

fn set_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn make_bundles(o: &Opts) -> Result<()> {
    let rootfs = fs::canonicalize(o.bundle.join("rootfs"))
        .with_context(|| format!("bundle rootfs {}", o.bundle.join("rootfs").display()))?;
    if !rootfs.join("bin/busybox").exists() {
        bail!("{} has no bin/busybox", rootfs.display());
    }
    let cfgpath = o.bundle.join("config.json");
    let base: serde_json::Value = serde_json::from_slice(
        &fs::read(&cfgpath).with_context(|| format!("read {}", cfgpath.display()))?,
    )
    .with_context(|| format!("parse {}", cfgpath.display()))?;
    let seccomp: serde_json::Value = serde_json::from_slice(
        &fs::read(&o.seccomp).with_context(|| format!("read {}", o.seccomp.display()))?,
    )
    .with_context(|| format!("parse {}", o.seccomp.display()))?;
    if seccomp.get("defaultAction").is_none() {
        bail!(
            "{}: not a linux.seccomp object (no defaultAction)",
            o.seccomp.display()
        );
    }
    let variants: [(&str, serde_json::Value, bool); 3] = [
        ("true", serde_json::json!(["/bin/true"]), false),
        ("seccomp", serde_json::json!(["/bin/true"]), true),
        ("sleep", serde_json::json!(["/bin/sleep", "1000000"]), false),
    ];
    for (name, args, with_seccomp) in variants {
        let dir = o.workdir.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let mut cfg = base.clone();
        cfg["root"]["path"] = serde_json::Value::String(rootfs.to_string_lossy().into_owned());
        cfg["root"]["readonly"] = serde_json::Value::Bool(true);
        cfg["process"]["terminal"] = serde_json::Value::Bool(false);
        cfg["process"]["args"] = args;
        if with_seccomp {
            cfg["linux"]["seccomp"] = seccomp.clone();
        } else if let Some(l) = cfg["linux"].as_object_mut() {
            l.remove("seccomp");
        }
        let p = dir.join("config.json");
        fs::write(&p, serde_json::to_vec_pretty(&cfg)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn version(bin: &Path) -> String {
    match Command::new(bin)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .trim()
            .to_string(),
        Err(e) => format!("? ({e})"),
    }
}

// ---------------------------------------------------------------------------------------------
// strace breakdown

/// Times (ms since the runtime's own execve) of the interesting events of one traced command.
#[derive(Default, Clone)]
struct Trace {
    events: BTreeMap<&'static str, f64>,
    mounts: usize,
    clones: usize,
    execves: usize,
}

const EVENTS: [(&str, &str); 10] = [
    ("memfd", "memfd_create (copy of the runtime binary)"),
    ("reexec", "runtime re-executes itself (execve/execveat)"),
    ("first_clone", "first clone/clone3/fork"),
    (
        "first_ns",
        "first new namespace (clone CLONE_NEW* or unshare)",
    ),
    ("first_mount", "first mount"),
    ("pivot_root", "pivot_root"),
    (
        "seccomp",
        "first seccomp(SECCOMP_SET_MODE_FILTER) (a load, or a probe)",
    ),
    ("container_execve", "container execve(/bin/true)"),
    ("main_exit", "runtime command exits"),
    ("last_event", "last traced event (any process)"),
];

fn parse_strace(text: &str, container_bin: &str) -> Result<Trace> {
    let mut t = Trace::default();
    let mut t0 = None;
    let mut main_pid = None;
    let mut last = 0.0f64;
    for line in text.lines() {
        // "PID TIMESTAMP REST": strace pads the pid to a fixed width.
        let Some((pid, r)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = r.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        let rest = rest.trim_start();
        let t0v = *t0.get_or_insert(ts);
        main_pid.get_or_insert_with(|| pid.to_string());
        let rel = (ts - t0v) * 1e3;
        last = last.max(rel);
        let mut first = |k: &'static str| {
            t.events.entry(k).or_insert(rel);
        };
        if rest.starts_with("<...") {
            continue; // resumed half of a syscall: the event time is its start
        }
        let name = rest.split('(').next().unwrap_or("");
        match name {
            "clone" | "clone3" | "fork" | "vfork" => {
                t.clones += 1;
                first("first_clone");
                if rest.contains("CLONE_NEW") {
                    first("first_ns");
                }
            }
            "unshare" => first("first_ns"),
            "mount" => {
                t.mounts += 1;
                first("first_mount");
            }
            "pivot_root" => first("pivot_root"),
            "seccomp" if rest.contains("SECCOMP_SET_MODE_FILTER") => first("seccomp"),
            "memfd_create" => first("memfd"),
            "execve" | "execveat" => {
                t.execves += 1;
                if Some(pid) == main_pid.as_deref() && rel > 0.0 {
                    first("reexec");
                }
                if rest.contains(&format!("\"{container_bin}\"")) {
                    first("container_execve");
                }
            }
            _ => {
                if rest.starts_with("+++ exited") && Some(pid) == main_pid.as_deref() {
                    first("main_exit");
                }
            }
        }
    }
    if t0.is_none() {
        bail!("empty strace output");
    }
    t.events.insert("last_event", last);
    Ok(t)
}

fn strace_once(b: &mut Bench, rt: usize, mode: &str) -> Result<Trace> {
    let id = b.id(rt, &format!("st{mode}"));
    let out = b.work.join(format!("{id}.strace"));
    let bundle = b.bundle(if mode == "run-seccomp" {
        "seccomp"
    } else {
        "true"
    });
    let mut argv: Vec<OsString> = [
        "strace",
        "-f",
        "-q",
        "--seccomp-bpf",
        "-ttt",
        "-e",
        "trace=clone,clone3,fork,vfork,execve,execveat,unshare,setns,pivot_root,mount,seccomp,memfd_create",
        "-o",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    argv.push(out.clone().into());
    b.live.push((rt, id.clone()));
    let pidfile = b.work.join(format!("{id}.pid"));
    let pf = pidfile.to_string_lossy().into_owned();
    if mode == "run" || mode == "run-seccomp" {
        argv.extend(b.rts[rt].argv(&["run", "--bundle", &bundle, &id]));
        timed(&argv, &b.errfile)?;
        b.forget(rt, &id);
    } else {
        // strace -f follows the container's init, which waits for `start`: strace only exits once
        // it is gone. So: wait until the container is "created" (create has then exited or is
        // exiting), kill it, then collect strace.
        argv.extend(b.rts[rt].argv(&["create", "--bundle", &bundle, "--pid-file", &pf, &id]));
        let err = fs::File::create(&b.errfile)
            .with_context(|| format!("create {}", b.errfile.display()))?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {}", show(&argv)))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = Command::new(&b.rts[rt].bin)
                .args(b.rts[rt].argv(&["state", &id]).iter().skip(1))
                .stderr(Stdio::null())
                .output();
            if let Ok(st) = st {
                if st.status.success()
                    && String::from_utf8_lossy(&st.stdout).contains("\"created\"")
                    && read_pid(&pidfile).is_ok()
                {
                    break;
                }
            }
            if let Some(status) = child.try_wait().context("waitpid strace")? {
                let text = fs::read_to_string(&b.errfile).unwrap_or_default();
                bail!(
                    "{} exited ({status}) before the container was created: {}",
                    show(&argv),
                    text.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("{}: container not created within 60 s", show(&argv));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        let pid = read_pid(&pidfile)?;
        timed(&b.rts[rt].argv(&["kill", &id, "KILL"]), &b.errfile)?;
        let status = child.wait().context("wait strace")?;
        wait_exit(pid)?;
        if !status.success() {
            let text = fs::read_to_string(&b.errfile).unwrap_or_default();
            bail!("{} failed ({status}): {}", show(&argv), text.trim());
        }
        timed(&b.rts[rt].argv(&["delete", &id]), &b.errfile)?;
        b.forget(rt, &id);
        let _ = fs::remove_file(&pidfile);
    }
    reap_strays();
    let text = fs::read_to_string(&out).with_context(|| format!("read {}", out.display()))?;
    match parse_strace(&text, "/bin/true") {
        Ok(t) => {
            let _ = fs::remove_file(&out);
            Ok(t)
        }
        Err(e) => {
            let keep = std::env::temp_dir().join(format!("{id}.strace"));
            let _ = fs::copy(&out, &keep);
            let _ = fs::remove_file(&out);
            Err(e.context(format!(
                "{} {mode} (trace kept in {})",
                b.rts[rt].name,
                keep.display()
            )))
        }
    }
}

/// `husk --debug --log FILE --log-format json create`, then `start` (logging to the same file),
/// wait for the container's exit, and delete; returns the log.
fn debug_create(b: &mut Bench, rt: usize, bundle: &str) -> Result<String> {
    let log = b.work.join("husk-debug.log");
    let _ = fs::remove_file(&log);
    let id = b.id(rt, "dbg");
    let pidfile = b.work.join(format!("{id}.pid"));
    let pf = pidfile.to_string_lossy().into_owned();
    b.live.push((rt, id.clone()));
    let argv = b.rts[rt].argv_debug(
        &log,
        &["create", "--bundle", bundle, "--pid-file", &pf, &id],
    );
    timed(&argv, &b.errfile)?;
    let pid = read_pid(&pidfile)?;
    timed(&b.rts[rt].argv_debug(&log, &["start", &id]), &b.errfile)?;
    wait_exit(pid)?;
    timed(&b.rts[rt].argv(&["delete", &id]), &b.errfile)?;
    b.forget(rt, &id);
    fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    match real_main() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("husk-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<()> {
    let o = parse_opts()?;
    let (view, scratch_unified) = enter_private_mount_ns(o.keep_unified)?;
    set_subreaper()?;
    fs::create_dir_all(&o.workdir).with_context(|| format!("mkdir {}", o.workdir.display()))?;
    make_bundles(&o)?;
    let mut rts: Vec<Runtime> = o
        .runtimes
        .iter()
        .map(|(n, p)| Runtime {
            name: n.clone(),
            bin: p.clone(),
            root: o.workdir.join(format!("state-{n}")),
        })
        .collect();
    // husk started from a sealed memfd: it then skips its own copy and re-exec
    // (husk::exe::is_sealed_copy), so the difference to "husk" is what that costs.
    let mut _sealed = None;
    if o.presealed {
        if let Some(h) = rts.iter().find(|r| r.name == "husk").map(|r| r.bin.clone()) {
            let f = sealed_copy(&h)?;
            let path = PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(&f)
            ));
            _sealed = Some(f);
            rts.push(Runtime {
                name: "husk-presealed".into(),
                bin: path,
                root: o.workdir.join("state-husk-presealed"),
            });
        }
    }
    let mut b = Bench {
        rts,
        work: o.workdir.clone(),
        errfile: o.workdir.join("stderr"),
        live: Vec::new(),
        seq: 0,
        scratch_unified,
    };
    let r = measure_all(&o, &mut b, &view);
    b.cleanup();
    let removed = fs::remove_dir_all(&o.workdir);
    let (report, csv) = r?;
    if let Err(e) = removed {
        eprintln!("husk-bench: remove {}: {e}", o.workdir.display());
    }
    if let Some(d) = o.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    fs::write(&o.out, &report).with_context(|| format!("write {}", o.out.display()))?;
    let csvp = o.out.with_extension("csv");
    fs::write(&csvp, &csv).with_context(|| format!("write {}", csvp.display()))?;
    print!("{report}");
    eprintln!(
        "husk-bench: report written to {} (raw samples: {})",
        o.out.display(),
        csvp.display()
    );
    Ok(())
}

fn measure_all(o: &Opts, b: &mut Bench, view: &str) -> Result<(String, String)> {
    let n = b.rts.len();
    let names: Vec<String> = b.rts.iter().map(|r| r.name.clone()).collect();
    let mut c = Collector {
        results: BTreeMap::new(),
        order: 0,
    };
    let started = Instant::now();
    let (it, wu) = (o.iterations, o.warmup);
    let seccomp_bundle = b.bundle("seccomp");
    let true_bundle = b.bundle("true");

    // Check that every runtime can do the basic operation before measuring anything.
    for (rt, name) in names.iter().enumerate() {
        b.run(rt, &true_bundle)
            .with_context(|| format!("smoke test of {name}"))?;
    }

    eprintln!("husk-bench: run ({it} iterations per runtime)");
    alternate(n, it, wu, |rt, keep| {
        let s = b.run(rt, &true_bundle)?;
        if keep {
            c.push("run /bin/true", &names[rt], s);
        }
        Ok(())
    })?;

    eprintln!("husk-bench: create+start+delete");
    alternate(n, it, wu, |rt, keep| {
        let [cr, st, w, de] = b.csd(rt)?;
        if keep {
            c.push(
                "create+start+wait+delete",
                &names[rt],
                cr.add(st).add(w).add(de),
            );
            c.push("· create", &names[rt], cr);
            c.push("· start", &names[rt], st);
            c.push("· wait for exit", &names[rt], w);
            c.push("· delete", &names[rt], de);
        }
        Ok(())
    })?;

    eprintln!("husk-bench: exec");
    let mut sleepers = Vec::new();
    for rt in 0..n {
        sleepers.push(b.start_sleeper(rt)?);
    }
    let ids: Vec<String> = sleepers.iter().map(|(i, _)| i.clone()).collect();
    let r = alternate(n, it, wu, |rt, keep| {
        let s = timed(
            &b.rts[rt].argv(&["exec", &ids[rt], "/bin/true"]),
            &b.errfile,
        )?;
        if keep {
            c.push("exec /bin/true", &names[rt], s);
        }
        Ok(())
    });
    for (rt, (id, pid)) in sleepers.into_iter().enumerate() {
        b.stop_sleeper(rt, &id, pid)?;
    }
    r?;

    eprintln!("husk-bench: run with Docker's default seccomp profile");
    alternate(n, it, wu, |rt, keep| {
        let s = b.run(rt, &seccomp_bundle)?;
        if keep {
            c.push("run /bin/true + seccomp", &names[rt], s);
        }
        Ok(())
    })?;

    eprintln!(
        "husk-bench: {} containers in a row ({} rounds)",
        o.batch_size, o.batch_rounds
    );
    let batch_name = format!("{} × run in a row (total)", o.batch_size);
    alternate(n, o.batch_rounds, 0, |rt, keep| {
        let mut total = Sample::default();
        for _ in 0..o.batch_size {
            total = total.add(b.run(rt, &true_bundle)?);
            reap_strays();
        }
        if keep {
            c.push(&batch_name, &names[rt], total);
        }
        Ok(())
    })?;

    eprintln!("husk-bench: floor");
    // Floors: namespaces alone, a bare fork+exec, each runtime binary's own start-up
    // (`--version`: no container work), and the memfd copy husk makes of its binary before
    // create/run/exec (in-process, same calls: memfd_create, copy, seal).
    let mut floors: Vec<(String, Option<Vec<OsString>>)> = vec![
        (
            "unshare -fpmuin --mount-proc /bin/true".into(),
            Some(
                ["unshare", "-fpmuin", "--mount-proc", "/bin/true"]
                    .iter()
                    .map(OsString::from)
                    .collect(),
            ),
        ),
        (
            "fork+exec /bin/true".into(),
            Some(vec![OsString::from("/bin/true")]),
        ),
    ];
    for r in &b.rts {
        floors.push((
            format!("{} --version", r.name),
            Some(vec![r.bin.clone().into(), "--version".into()]),
        ));
    }
    let husk_bin = b
        .rts
        .iter()
        .find(|r| r.name == "husk")
        .map(|r| r.bin.clone());
    if let Some(h) = &husk_bin {
        let size = fs::metadata(h).map(|m| m.len()).unwrap_or(0);
        floors.push((
            format!(
                "memfd copy of the husk binary ({:.1} MB), in-process",
                size as f64 / 1e6
            ),
            None,
        ));
    }
    // The kernel's price for moving a process into a v1 cgroup (every runtime pays it once per
    // container start): the first write to cgroup.procs after a quiet moment takes the
    // cgroup_threadgroup_rwsem for writing (an RCU grace period); one right after is cheap.
    let attach = CgroupAttach::new()?;
    let attach_idx = floors.len();
    if attach.is_some() {
        floors.push((
            "cgroup v1 attach: first write of a pid to pids/…/cgroup.procs".into(),
            None,
        ));
    }
    let r = alternate(floors.len(), it, wu, |k, keep| {
        if k == attach_idx {
            if let Some(a) = &attach {
                let (first, second) = a.measure()?;
                if keep {
                    c.push("floor", &floors[k].0, first);
                    c.push(
                        "floor",
                        "cgroup v1 attach: a second write right after",
                        second,
                    );
                }
                let own = a.measure_self_tasks()?;
                if keep {
                    c.push(
                        "floor",
                        "cgroup v1 attach: the process moves itself (\"0\" to tasks, single-threaded)",
                        own,
                    );
                }
            }
            return Ok(());
        }
        let s = match (&floors[k].1, &husk_bin) {
            (Some(argv), _) => timed(argv, &b.errfile)?,
            (None, Some(h)) => memfd_copy(h)?,
            (None, None) => return Ok(()),
        };
        if keep {
            c.push("floor", &floors[k].0, s);
        }
        Ok(())
    });
    if let Some(a) = attach {
        a.remove()?;
    }
    r?;

    // strace breakdown
    let mut traces: Vec<(String, String, Vec<Trace>)> = Vec::new();
    let mut strace_errors: Vec<String> = Vec::new();
    if o.strace_runs > 0 {
        eprintln!("husk-bench: strace breakdown ({} runs each)", o.strace_runs);
        for mode in ["create", "run", "run-seccomp"] {
            let mut per: Vec<Vec<Trace>> = vec![Vec::new(); n];
            alternate(n, o.strace_runs, 1, |rt, keep| {
                // A failed trace is reported, not fatal: the timings above are worth keeping.
                match strace_once(b, rt, mode) {
                    Ok(t) if keep => per[rt].push(t),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("husk-bench: strace {mode} of {}: {e:#}", names[rt]);
                        strace_errors.push(format!("{mode} of {}: {e:#}", names[rt]));
                        b.cleanup();
                    }
                }
                Ok(())
            })?;
            for (rt, v) in per.into_iter().enumerate() {
                traces.push((mode.to_string(), names[rt].clone(), v));
            }
        }
    }

    // husk's own debug logs of creates, plain and with seccomp (not fatal either)
    let mut debug_logs: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(rt) = b.rts.iter().position(|r| r.name == "husk") {
        if o.debug_runs > 0 {
            eprintln!(
                "husk-bench: husk --debug create ({} runs each)",
                o.debug_runs
            );
        }
        for (label, bundle) in [
            ("create", &true_bundle),
            ("create + seccomp", &seccomp_bundle),
        ] {
            let mut logs = Vec::new();
            for _ in 0..o.debug_runs {
                match debug_create(b, rt, bundle) {
                    Ok(l) => logs.push(l),
                    Err(e) => {
                        eprintln!("husk-bench: husk --debug {label}: {e:#}");
                        strace_errors.push(format!("husk --debug {label}: {e:#}"));
                        b.cleanup();
                    }
                }
                reap_strays();
            }
            debug_logs.push((label.to_string(), logs));
        }
    }

    let elapsed = started.elapsed();
    let mut csv = String::from("benchmark,runtime,sample,wall_ms,cpu_ms,maxrss_kib\n");
    for (bench, parts) in c.results.values() {
        for (p, v) in parts {
            for (i, x) in v.iter().enumerate() {
                let _ = writeln!(
                    csv,
                    "\"{bench}\",\"{p}\",{i},{:.3},{:.3},{}",
                    x.wall_ms, x.cpu_ms, x.maxrss_kib
                );
            }
        }
    }
    Ok((
        render(
            o,
            b,
            view,
            &c.results,
            &traces,
            &strace_errors,
            &debug_logs,
            elapsed,
        ),
        csv,
    ))
}

// ---------------------------------------------------------------------------------------------
// Report

fn stats(v: &[Sample]) -> (f64, f64, f64, f64, f64, f64) {
    let mut w: Vec<f64> = v.iter().map(|s| s.wall_ms).collect();
    let mut cpu: Vec<f64> = v.iter().map(|s| s.cpu_ms).collect();
    let mut rss: Vec<f64> = v.iter().map(|s| s.maxrss_kib as f64 / 1024.0).collect();
    let min = w.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let rss_max = rss.iter().cloned().fold(0.0, f64::max);
    (
        median(&mut w),
        min,
        max,
        median(&mut cpu),
        median(&mut rss),
        rss_max,
    )
}

#[allow(clippy::too_many_arguments)]
fn render(
    o: &Opts,
    b: &Bench,
    view: &str,
    results: &Results,
    traces: &[(String, String, Vec<Trace>)],
    strace_errors: &[String],
    debug_logs: &[(String, Vec<String>)],
    elapsed: Duration,
) -> String {
    let mut s = String::new();
    let now = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(s, "# OCI runtime start-up benchmark\n");
    let _ = writeln!(
        s,
        "- date: {now}; kernel {}; {cpus} CPUs; loadavg at end: {}",
        kernel.trim(),
        load.trim()
    );
    if !o.command_line.is_empty() {
        let _ = writeln!(s, "- command: `{}`", o.command_line);
    }
    let _ = writeln!(
        s,
        "- mode: {}; {} measured iterations per runtime and benchmark after {} warm-up; batch: {} rounds of {}; strace runs: {}; took {:.0} s",
        if o.quick { "quick" } else { "full" },
        o.iterations,
        o.warmup,
        o.batch_rounds,
        o.batch_size,
        o.strace_runs,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- runtimes (alternated in every iteration, order rotated):"
    );
    for r in &b.rts {
        let _ = writeln!(
            s,
            "  - {}: `{}` ({})",
            r.name,
            r.bin.display(),
            version(&r.bin)
        );
    }
    let _ = writeln!(
        s,
        "- cgroup view: {view}; benchmark process is a child subreaper"
    );
    let _ = writeln!(
        s,
        "- bundle: busybox rootfs (read-only), runc-spec default config with args [/bin/true]; seccomp: {}\n",
        o.seccomp.display()
    );

    let _ = writeln!(s, "## Wall time per operation (ms)\n");
    let _ = writeln!(
        s,
        "CPU = user+sys of the runtime command(s) and the descendants they waited for (wait4 rusage), \
median; RSS = ru_maxrss (peak resident set of the command or of a waited-for descendant), median and max.\n"
    );
    let _ = writeln!(
        s,
        "| benchmark | runtime | n | median | min | max | CPU ms | peak RSS MiB (med / max) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for (bench, parts) in results.values() {
        for (p, v) in parts {
            let (med, min, max, cpu, rss, rss_max) = stats(v);
            let rss_txt = if bench == "· wait for exit" || rss_max == 0.0 {
                "–".to_string()
            } else {
                format!("{rss:.1} / {rss_max:.1}")
            };
            let cpu_txt = if bench == "· wait for exit" {
                "–".to_string()
            } else {
                fmt_ms(cpu)
            };
            let _ = writeln!(
                s,
                "| {bench} | {p} | {} | **{}** | {} | {} | {cpu_txt} | {rss_txt} |",
                v.len(),
                fmt_ms(med),
                fmt_ms(min),
                fmt_ms(max)
            );
        }
    }

    // Ratios of the first runtime to the others.
    let first = &b.rts[0].name;
    let others: Vec<&String> = b.rts.iter().skip(1).map(|r| &r.name).collect();
    if !others.is_empty() {
        let _ = writeln!(
            s,
            "\n## Ratios of medians (wall time; < 1 means {first} is faster)\n"
        );
        let mut hdr = "| benchmark |".to_string();
        let mut sep = "|---|".to_string();
        for ot in &others {
            let _ = write!(hdr, " {first}/{ot} |");
            sep.push_str("---:|");
        }
        for ot in &others {
            let _ = write!(hdr, " CPU {first}/{ot} |");
            sep.push_str("---:|");
        }
        let _ = writeln!(s, "{hdr}\n{sep}");
        for (bench, parts) in results.values() {
            if bench == "floor" || bench == "· wait for exit" {
                continue;
            }
            let get = |name: &str| parts.iter().find(|(p, _)| p == name).map(|(_, v)| stats(v));
            let Some(me) = get(first) else { continue };
            let mut row = format!("| {bench} |");
            for ot in &others {
                match get(ot) {
                    Some(x) => {
                        let _ = write!(row, " {:.2} |", me.0 / x.0);
                    }
                    None => row.push_str(" – |"),
                }
            }
            for ot in &others {
                match get(ot) {
                    Some(x) if x.3 > 0.0 => {
                        let _ = write!(row, " {:.2} |", me.3 / x.3);
                    }
                    _ => row.push_str(" – |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
    }

    if !traces.is_empty() {
        let _ = writeln!(
            s,
            "\n## Where the time goes (strace -f --seccomp-bpf -ttt, median of {} runs; ms since the runtime's own execve)\n",
            o.strace_runs
        );
        let _ = writeln!(
            s,
            "Only the listed syscalls stop under strace (--seccomp-bpf), but each stop still costs \
(Go's runtime, which clones threads, most), so absolute numbers are inflated; the order and the gaps are what count. `create` ends when the \
container waits for `start` (its execve happens at start).\n"
        );
        for mode in ["create", "run", "run-seccomp"] {
            let rows: Vec<&(String, String, Vec<Trace>)> =
                traces.iter().filter(|t| t.0 == mode).collect();
            let _ = writeln!(s, "### `{mode}`\n");
            let mut hdr = "| event |".to_string();
            let mut sep = "|---|".to_string();
            for r in &rows {
                let _ = write!(hdr, " {} |", r.1);
                sep.push_str("---:|");
            }
            let _ = writeln!(s, "{hdr}\n{sep}");
            for (k, label) in EVENTS {
                if mode == "create" && (k == "container_execve" || k == "last_event") {
                    continue;
                }
                let mut row = format!("| {label} |");
                for r in &rows {
                    let mut v: Vec<f64> =
                        r.2.iter()
                            .filter_map(|t| t.events.get(k).copied())
                            .collect();
                    let cell = if v.is_empty() {
                        "–".to_string()
                    } else if v.len() < r.2.len() {
                        format!("{} ({}/{})", fmt_ms(median(&mut v)), v.len(), r.2.len())
                    } else {
                        fmt_ms(median(&mut v))
                    };
                    let _ = write!(row, " {cell} |");
                }
                let _ = writeln!(s, "{row}");
            }
            for (label, f) in [
                (
                    "mount() calls",
                    (|t: &Trace| t.mounts) as fn(&Trace) -> usize,
                ),
                ("clone/fork calls", |t: &Trace| t.clones),
                ("execve calls", |t: &Trace| t.execves),
            ] {
                let mut row = format!("| {label} |");
                for r in &rows {
                    let mut v: Vec<f64> = r.2.iter().map(|t| f(t) as f64).collect();
                    let _ = write!(row, " {} |", median(&mut v));
                }
                let _ = writeln!(s, "{row}");
            }
            let _ = writeln!(s);
        }
    }

    if !strace_errors.is_empty() {
        let _ = writeln!(s, "Failed traces (left out of the medians above):\n");
        for e in strace_errors {
            let _ = writeln!(s, "- {}", e.replace('\n', " "));
        }
        let _ = writeln!(s);
    }

    let unshare_floor = results
        .values()
        .filter(|(bench, _)| bench == "floor")
        .flat_map(|(_, parts)| parts.iter())
        .find(|(p, _)| p == "unshare -fpmuin --mount-proc /bin/true")
        .map(|(_, v)| stats(v).0);
    phases_section(&mut s, debug_logs, unshare_floor);
    if let Some((_, logs)) = debug_logs.first() {
        if let Some(log) = logs.first() {
            log_lines_section(&mut s, log);
        }
    }
    s
}

/// One `phase done` line of husk's debug log.
struct PhaseLine {
    name: String,
    /// "husk" or "init" (the container's init logs its phases with an "init: " prefix).
    by: &'static str,
    elapsed_ms: f64,
    /// Start of the phase, ms after the start of `create`'s own phase (the first thing husk
    /// times after its re-exec).
    start_ms: Option<f64>,
}

/// The phase lines of one `husk --debug --log-format json` log.
fn phase_lines(log: &str) -> Vec<PhaseLine> {
    let mut raw: Vec<(String, f64, Option<i64>)> = Vec::new();
    let mut seccomp_outcome: Option<String> = None;
    for l in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if let Some(o) = v["outcome"].as_str() {
            seccomp_outcome = Some(o.to_string());
        }
        let (Some(name), Some(us)) = (v["phase"].as_str(), v["elapsed_us"].as_f64()) else {
            continue;
        };
        // The filter cache's verdict is logged just before the compile phase ends.
        let name = match (name, seccomp_outcome.take()) {
            ("seccomp compile", Some(o)) => format!("seccomp compile (cache: {o})"),
            (n, _) => n.to_string(),
        };
        let end = v["time"].as_str().and_then(parse_rfc3339_ns);
        raw.push((name, us, end.map(|e| e - (us * 1e3) as i64)));
    }
    let t0 = raw
        .iter()
        .find(|(n, _, _)| n == "create")
        .and_then(|(_, _, st)| *st)
        .or_else(|| raw.iter().filter_map(|(_, _, st)| *st).min());
    raw.into_iter()
        .map(|(name, us, st)| PhaseLine {
            by: if name.starts_with("init") {
                "init"
            } else {
                "husk"
            },
            name,
            elapsed_ms: us / 1e3,
            start_ms: match (st, t0) {
                (Some(a), Some(b)) => Some((a - b) as f64 / 1e6),
                _ => None,
            },
        })
        .collect()
}

/// husk's own time per phase: medians over the debug runs, in the order of their start.
fn phases_section(
    s: &mut String,
    debug_logs: &[(String, Vec<String>)],
    unshare_floor: Option<f64>,
) {
    let any = debug_logs.iter().any(|(_, logs)| !logs.is_empty());
    if !any {
        return;
    }
    let _ = writeln!(
        s,
        "## husk's own time: phases of `husk --debug --log-format json create` (ms)\n"
    );
    let _ = writeln!(
        s,
        "From husk's `phase done` log lines (`phase`, `elapsed_us`): phases of the runtime process \
(husk) and of the container's init (init), which logs to the same file; nested phases overlap \
(`create` spans the whole command after the re-exec, `wait for the init's set-up` the init's own \
phases; `exec wait` and `hooks: poststart` are from `start`, run with --debug too). Median (min–max) over the runs; `starts at` is the median start after `create`'s. \
Not included: the process start and the re-exec from the read-only image before `create` (see \
the strace breakdown above)."
    );
    if let Some(f) = unshare_floor {
        let _ = writeln!(
            s,
            "\nFloor for comparison: `unshare -fpmuin --mount-proc /bin/true`, whole command: **{}** ms (median, above).",
            fmt_ms(f)
        );
    }
    for (label, logs) in debug_logs {
        if logs.is_empty() {
            continue;
        }
        let runs: Vec<Vec<PhaseLine>> = logs.iter().map(|l| phase_lines(l)).collect();
        // Phase names in the order of their (median) start; a name that occurs several times in
        // one run (e.g. hooks) is summed per run.
        let mut names: Vec<(String, &'static str)> = Vec::new();
        for r in &runs {
            for p in r {
                if !names.iter().any(|(n, _)| n == &p.name) {
                    names.push((p.name.clone(), p.by));
                }
            }
        }
        let mut rows: Vec<(f64, String)> = Vec::new();
        for (name, by) in &names {
            let mut el: Vec<f64> = Vec::new();
            let mut st: Vec<f64> = Vec::new();
            for r in &runs {
                let mine: Vec<&PhaseLine> = r.iter().filter(|p| &p.name == name).collect();
                if mine.is_empty() {
                    continue;
                }
                el.push(mine.iter().map(|p| p.elapsed_ms).sum());
                if let Some(x) = mine.iter().filter_map(|p| p.start_ms).reduce(f64::min) {
                    st.push(x);
                }
            }
            let min = el.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = el.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let n = el.len();
            let med = median(&mut el);
            let start = median(&mut st);
            rows.push((
                if start.is_nan() { f64::MAX } else { start },
                format!(
                    "| {} | {by} | {n} | **{}** | {}–{} | {} |",
                    name.replace('|', "\\|"),
                    fmt_ms(med),
                    fmt_ms(min),
                    fmt_ms(max),
                    fmt_ms(start)
                ),
            ));
        }
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let _ = writeln!(
            s,
            "\n### `{label}` ({} runs)\n\n| phase | by | n | median | min–max | starts at |\n|---|---|---:|---:|---:|---:|",
            runs.len()
        );
        for (_, r) in rows {
            let _ = writeln!(s, "{r}");
        }
    }
    let _ = writeln!(s);
}

/// The log lines of one debug create, as they came.
fn log_lines_section(s: &mut String, debug_log: &str) {
    let _ = writeln!(
        s,
        "## husk --debug --log-format json create: log lines of one run (ms since the first)\n"
    );
    let lines: Vec<serde_json::Value> = debug_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let timed = lines
        .iter()
        .filter(|v| v.get("elapsed_us").is_some())
        .count();
    let _ = writeln!(s, "{} lines, {timed} of them phase timings.\n", lines.len());
    let t0 = lines
        .first()
        .and_then(|v| v["time"].as_str())
        .and_then(parse_rfc3339_ns);
    let _ = writeln!(s, "| +ms | level | msg |\n|---:|---|---|");
    for v in lines.iter().take(60) {
        let t = v["time"].as_str().and_then(parse_rfc3339_ns);
        let rel = match (t, t0) {
            (Some(a), Some(b)) => fmt_ms((a - b) as f64 / 1e6),
            _ => "?".into(),
        };
        let mut msg = v["msg"].as_str().unwrap_or("").to_string();
        if let Some(obj) = v.as_object() {
            for (k, val) in obj {
                if !["msg", "time", "level"].contains(&k.as_str()) {
                    match val.as_str() {
                        Some(x) => {
                            let _ = write!(msg, " {k}={x}");
                        }
                        None => {
                            let _ = write!(msg, " {k}={val}");
                        }
                    }
                }
            }
        }
        let _ = writeln!(
            s,
            "| {rel} | {} | {} |",
            v["level"].as_str().unwrap_or(""),
            msg.replace('|', "\\|")
        );
    }
    let _ = writeln!(s);
}

/// Nanoseconds since midnight of an RFC 3339 UTC timestamp ("2026-11-29T08:51:22.123456789Z"):
/// enough to compute gaps between log lines of one command.
fn parse_rfc3339_ns(t: &str) -> Option<i64> {
    let time = t.split('T').nth(1)?.trim_end_matches('Z');
    let time = time.split('+').next()?;
    let mut it = time.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec = it.next()?;
    let (s, frac) = sec.split_once('.').unwrap_or((sec, "0"));
    let s: i64 = s.parse().ok()?;
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let ns: i64 = frac.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000_000 + ns)
}
