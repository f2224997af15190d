//! Per-runtime and per-case context: running the runtime under test, writing bundles, running
//! the in-container validator, and the after-case leftover checks + forced cleanup.

use crate::bundle::{self, VALIDATOR_PATH};
use crate::proc::{self, Out, Spec};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(30);

/// Safety timeout for one runtime command or one wait (`--timeout`, default 30 s). Hitting it
/// is a failure, never a pass.
pub fn timeout() -> Duration {
    Duration::from_secs(TIMEOUT_SECS.load(Ordering::Relaxed))
}

pub fn set_timeout(secs: u64) {
    TIMEOUT_SECS.store(secs.max(1), Ordering::Relaxed);
}

/// One runtime under test.
pub struct Runtime {
    /// Short name used in output, IDs and the state root (basename, de-duplicated).
    pub name: String,
    pub path: PathBuf,
    /// Private state root: `--root` for every invocation.
    pub root: PathBuf,
    /// crun on a hybrid cgroup host: run it in a private mount namespace with
    /// /sys/fs/cgroup/unified unmounted (see MACHINE.md).
    pub crun_wrap: bool,
}

impl Runtime {
    pub fn new(path: &Path, name: String) -> Runtime {
        let pid = std::process::id();
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Runtime {
            root: PathBuf::from(format!("/run/husk-conformance-{pid}-{name}")),
            crun_wrap: base == "crun" && crun_needs_wrap(),
            name,
            path: bundle::abs(path),
        }
    }

    /// A variant of this runtime that runs a different binary (e.g. a private copy).
    pub fn with_binary(&self, path: &Path) -> Runtime {
        Runtime {
            name: self.name.clone(),
            path: path.to_path_buf(),
            root: self.root.clone(),
            crun_wrap: self.crun_wrap,
        }
    }

    /// Program and argv (without the runtime subcommand arguments) to invoke this runtime.
    pub fn argv(&self, args: &[OsString]) -> (OsString, Vec<OsString>) {
        let mut a: Vec<OsString> = Vec::new();
        let prog: OsString;
        if self.crun_wrap {
            prog = "unshare".into();
            for s in [
                "-m",
                // slave, not private: the private namespace still sees mounts the runner
                // makes shared on the host (rootfsPropagation cases), and nothing done in it
                // (the umount) propagates back to the host.
                "--propagation",
                "slave",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"",
            ] {
                a.push(s.into());
            }
            a.push(self.path.clone().into());
        } else {
            prog = self.path.clone().into();
        }
        a.push("--root".into());
        a.push(self.root.clone().into());
        a.extend(args.iter().cloned());
        (prog, a)
    }
}

/// crun refuses hybrid hosts whose unified hierarchy has controllers enabled.
fn crun_needs_wrap() -> bool {
    fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

/// Shared per-run facts.
pub struct RunEnv {
    /// /tmp/husk-conformance-<pid>
    pub base: PathBuf,
    /// rootfs template
    pub template: PathBuf,
    pub host_ns: Vec<String>,
    pub keep: bool,
}

pub enum Outcome {
    Pass,
    Skip(String),
}

pub type CaseResult = Result<Outcome>;

/// The context of one case run against one runtime.
pub struct Ctx<'a> {
    pub rt: &'a Runtime,
    pub env: &'a RunEnv,
    pub id: String,
    /// The case's private directory (everything of the case lives below it).
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Host directory bind-mounted at /shared in the container when `share()` is used.
    pub shared: PathBuf,
    pub cfg: Value,
    /// Additional `key value` lines for the validator's expect file.
    pub expect: Vec<String>,
    /// Other container IDs this case created (checked and cleaned like `id`).
    pub ids: Vec<String>,
    /// Cleanup actions (commands) to run after the case, e.g. `ip netns del`.
    pub cleanup_cmds: Vec<Vec<String>>,
    /// Helper pids to kill after the case.
    pub helpers: Vec<i32>,
    seq: AtomicU32,
}

impl<'a> Ctx<'a> {
    pub fn new(rt: &'a Runtime, env: &'a RunEnv, case: &str) -> Result<Ctx<'a>> {
        let slug: String = case
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let id = format!("hc-{}-{}-{}", std::process::id(), rt.name, slug);
        let dir = env.base.join(&rt.name).join(&slug);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("rm -r {}", dir.display()))?;
        }
        bundle::mkdir_mode(&dir, 0o755)?;
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        bundle::mkdir_mode(&bundle, 0o755)?;
        bundle::clone_tree(&env.template, &rootfs)?;
        let shared = dir.join("shared");
        bundle::mkdir_mode(&shared, 0o777)?;
        Ok(Ctx {
            rt,
            env,
            cfg: bundle::base_config(&id),
            ids: vec![id.clone()],
            id,
            dir,
            bundle,
            rootfs,
            shared,
            expect: Vec::new(),
            cleanup_cmds: Vec::new(),
            helpers: Vec::new(),
            seq: AtomicU32::new(0),
        })
    }

    /// Replace the hard-linked rootfs with a private copy owned by uid:gid (user namespaces).
    pub fn private_rootfs_owned_by(&mut self, uid: u32, gid: u32) -> Result<()> {
        fs::remove_dir_all(&self.rootfs)
            .with_context(|| format!("rm -r {}", self.rootfs.display()))?;
        bundle::copy_tree_owned(&self.env.template, &self.rootfs, uid, gid)?;
        std::os::unix::fs::lchown(&self.shared, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", self.shared.display()))?;
        Ok(())
    }

    /// Register another container ID used by this case (checked and cleaned like `id`).
    pub fn other_id(&mut self, suffix: &str) -> String {
        let id = format!("{}-{suffix}", self.id);
        self.ids.push(id.clone());
        id
    }

    /// Bind-mount the case's shared host dir at /shared (rw).
    pub fn share(&mut self) {
        let src = self.shared.display().to_string();
        self.add_mount(
            json!({"destination": "/shared", "type": "bind", "source": src,
                              "options": ["rbind", "rw"]}),
        );
    }

    pub fn add_mount(&mut self, m: Value) {
        if let Some(a) = self.cfg["mounts"].as_array_mut() {
            a.push(m);
        }
    }

    pub fn set_args(&mut self, args: &[&str]) {
        self.cfg["process"]["args"] = json!(args);
    }

    pub fn sh(&mut self, script: &str) {
        self.set_args(&["sh", "-c", script]);
    }

    /// Write config.json into the bundle, and the validator inputs into the rootfs.
    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.cfg).context("serialize config.json")?;
        self.save_raw(&text)
    }

    pub fn save_raw(&self, text: &str) -> Result<()> {
        let p = self.bundle.join("config.json");
        fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        let vdir = self.rootfs.join(&bundle::VDIR[1..]);
        if vdir.is_dir() {
            fs::write(vdir.join("config.json"), text)
                .context("write rootfs/.oci-validate/config.json")?;
            let mut lines = self.env.host_ns.clone();
            lines.extend(self.bind_expectations());
            lines.extend(self.expect.iter().cloned());
            lines.push(String::new());
            fs::write(vdir.join("expect"), lines.join("\n"))
                .context("write rootfs/.oci-validate/expect")?;
        }
        Ok(())
    }

    /// `bind <dest> <dev> <ino>` for bind mounts with a host source, for the validator.
    fn bind_expectations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for m in self.cfg["mounts"].as_array().cloned().unwrap_or_default() {
            let opts: Vec<String> = m["options"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let is_bind = m["type"] == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
            if !is_bind {
                continue;
            }
            let (Some(src), Some(dst)) = (m["source"].as_str(), m["destination"].as_str()) else {
                continue;
            };
            let srcp = if src.starts_with('/') {
                PathBuf::from(src)
            } else {
                self.bundle.join(src)
            };
            if let Ok(md) = fs::metadata(&srcp) {
                v.push(format!("bind {dst} {} {}", md.dev(), md.ino()));
            }
        }
        v
    }

    fn outfiles(&self, tag: &str) -> (PathBuf, PathBuf) {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        (
            self.dir.join(format!("{n:02}-{tag}.out")),
            self.dir.join(format!("{n:02}-{tag}.err")),
        )
    }

    /// Run the runtime with `args` (after the global `--root`).
    pub fn rt(&self, args: &[&str]) -> Result<Out> {
        self.rt_full(args, &[], &[], timeout())
    }

    pub fn rt_full(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        extra_fds: &[(i32, &File)],
        timeout: Duration,
    ) -> Result<Out> {
        self.rt_with(self.rt, args, env, extra_fds, timeout)
    }

    pub fn rt_with(
        &self,
        rt: &Runtime,
        args: &[&str],
        env: &[(&str, &str)],
        extra_fds: &[(i32, &File)],
        timeout: Duration,
    ) -> Result<Out> {
        let oargs: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (program, argv) = rt.argv(&oargs);
        let tag = args.first().copied().unwrap_or("rt");
        let (so, se) = self.outfiles(tag);
        proc::run(Spec {
            program,
            args: argv,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdout: &so,
            stderr: &se,
            timeout,
            extra_fds: extra_fds.to_vec(),
            stdin: None,
            cwd: None,
        })
    }

    /// Run a host command (never std's `status()`/`output()`: the reaper owns waitpid).
    pub fn host(&self, program: &str, args: &[&str]) -> Result<Out> {
        let (so, se) = self.outfiles("host");
        proc::run(Spec {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            stdout: &so,
            stderr: &se,
            timeout: timeout(),
            extra_fds: Vec::new(),
            stdin: None,
            cwd: None,
        })
    }

    pub fn host_ok(&self, program: &str, args: &[&str]) -> Result<Out> {
        let o = self.host(program, args)?;
        if !o.ok() {
            bail!("{}", o.describe());
        }
        Ok(o)
    }

    /// Run the runtime with stdin from a file and/or in a given working directory.
    pub fn rt_io(&self, args: &[&str], stdin: Option<&Path>, cwd: Option<&Path>) -> Result<Out> {
        let oargs: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (program, argv) = self.rt.argv(&oargs);
        let (so, se) = self.outfiles(args.first().copied().unwrap_or("rt"));
        proc::run(Spec {
            program,
            args: argv,
            env: Vec::new(),
            stdout: &so,
            stderr: &se,
            timeout: timeout(),
            extra_fds: Vec::new(),
            stdin,
            cwd,
        })
    }

    /// Run and require success.
    pub fn rt_ok(&self, args: &[&str]) -> Result<Out> {
        let o = self.rt(args)?;
        if !o.ok() {
            bail!("{}", o.describe());
        }
        Ok(o)
    }

    /// Run and require failure.
    pub fn rt_fails(&self, args: &[&str], what: &str) -> Result<Out> {
        let o = self.rt(args)?;
        if o.timed_out {
            bail!("{what}: {}", o.describe());
        }
        if o.code == 0 {
            bail!(
                "{what}: expected a non-zero exit, `{}` succeeded",
                o.cmdline
            );
        }
        Ok(o)
    }

    pub fn bundle_str(&self) -> String {
        self.bundle.display().to_string()
    }

    /// save + `create --bundle B ID`.
    pub fn create(&self) -> Result<Out> {
        self.save()?;
        let b = self.bundle_str();
        self.rt_ok(&["create", "--bundle", &b, &self.id])
    }

    pub fn start(&self) -> Result<Out> {
        self.rt_ok(&["start", &self.id])
    }

    pub fn state_of(&self, id: &str) -> Result<Value> {
        let o = self.rt_ok(&["state", id])?;
        serde_json::from_str(&o.stdout)
            .with_context(|| format!("state output is not JSON: {:?}", o.stdout))
    }

    pub fn state(&self) -> Result<Value> {
        self.state_of(&self.id)
    }

    pub fn status(&self) -> Result<String> {
        let s = self.state()?;
        Ok(s["status"].as_str().unwrap_or("").to_string())
    }

    pub fn pid(&self) -> Result<i32> {
        let s = self.state()?;
        let pid = s["pid"]
            .as_i64()
            .ok_or_else(|| anyhow!("state has no numeric pid: {s}"))?;
        Ok(pid as i32)
    }

    pub fn expect_status(&self, want: &str) -> Result<()> {
        let got = self.status()?;
        if got != want {
            bail!("state status: expected {want:?}, got {got:?}");
        }
        Ok(())
    }

    /// Wait until the container process exits; returns its exit code when we could see it.
    pub fn wait_exit(&self, pid: i32) -> Result<Option<i32>> {
        proc::wait_pid(pid, timeout())
            .with_context(|| format!("waiting for container process {pid}"))
    }

    pub fn delete(&self) -> Result<Out> {
        self.rt_ok(&["delete", &self.id])
    }

    /// `run --bundle B ID` of the current config (foreground).
    pub fn run(&self) -> Result<Out> {
        self.save()?;
        let b = self.bundle_str();
        self.rt(&["run", "--bundle", &b, &self.id])
    }

    /// Run the validator (optionally limited to some check groups) as the container process and
    /// turn its report into a result.
    pub fn validate(&mut self, groups: &[&str]) -> CaseResult {
        let mut args = vec![VALIDATOR_PATH];
        args.extend_from_slice(groups);
        self.set_args(&args);
        let o = self.run()?;
        validator_verdict(&o)
    }
}

/// Turn validator output into a verdict.
pub fn validator_verdict(o: &Out) -> CaseResult {
    let fails: Vec<&str> = o
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("not ok"))
        .collect();
    let oks = o.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    if !fails.is_empty() {
        bail!("validator: {}", fails.join("; "));
    }
    if o.code != 0 || oks == 0 {
        bail!("validator did not run cleanly: {}", o.describe());
    }
    Ok(Outcome::Pass)
}

/// Poll a condition (a file appearing, ...) with a generous safety timeout.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout();
    while std::time::Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("gave up waiting for {what} after {:?}", timeout())
}

// -------------------------------------------------------------------------------------------
// Leftovers

#[derive(Default)]
pub struct Leftovers {
    pub state: Vec<PathBuf>,
    pub mounts: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub procs: Vec<(i32, String)>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.procs.is_empty()
    }
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if !self.state.is_empty() {
            v.push(format!("state {:?}", self.state));
        }
        if !self.mounts.is_empty() {
            v.push(format!("mounts {:?}", self.mounts));
        }
        if !self.cgroups.is_empty() {
            v.push(format!("cgroups {:?}", self.cgroups));
        }
        if !self.procs.is_empty() {
            v.push(format!("processes {:?}", self.procs));
        }
        v.join(", ")
    }
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points (from our mountinfo) at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    let mut v: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
        .filter(|p| p == &d || p.starts_with(&format!("{d}/")))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.len()));
    v
}

/// Directories under /sys/fs/cgroup/*/ (a few levels deep) whose name contains `id`.
pub fn cgroups_named(id: &str) -> Vec<PathBuf> {
    fn walk(p: &Path, id: &str, depth: u32, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let path = e.path();
            if e.file_name().to_string_lossy().contains(id) {
                out.push(path.clone());
            }
            walk(&path, id, depth - 1, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, 5, &mut out);
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out
}

/// Live (non-zombie) processes that belong to container `id`: its cgroup path, its environment
/// marker, or its command line (a runtime process) names the ID.
pub fn procs_of(id: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let marker = format!("HC_ID={id}");
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X') | None) {
            continue;
        }
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let envb = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let in_env = envb.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
        let in_cmd = cmd.split(|b| *b == 0).any(|a| a == id.as_bytes());
        let in_cg = cg.lines().any(|l| l.split('/').any(|c| c.contains(id)));
        if in_env || in_cmd || in_cg {
            let name = String::from_utf8_lossy(&cmd).replace('\0', " ");
            v.push((pid, name.trim().to_string()));
        }
    }
    v
}

pub fn state_entries(rt: &Runtime, id: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(&rt.root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(id))
        .map(|e| e.path())
        .collect()
}

pub fn find_leftovers(rt: &Runtime, dir: &Path, ids: &[String]) -> Leftovers {
    let mut l = Leftovers {
        mounts: mounts_under(dir),
        ..Default::default()
    };
    for id in ids {
        l.state.extend(state_entries(rt, id));
        l.cgroups.extend(cgroups_named(id));
        l.procs.extend(procs_of(id));
    }
    l
}

/// Leftovers after a case, giving exiting processes a short grace period.
pub fn check_leftovers(rt: &Runtime, dir: &Path, ids: &[String]) -> Leftovers {
    let mut l = find_leftovers(rt, dir, ids);
    let mut tries = 0;
    while !l.is_empty() && tries < 50 {
        std::thread::sleep(Duration::from_millis(40));
        l = find_leftovers(rt, dir, ids);
        tries += 1;
    }
    l
}

/// Forcefully remove whatever a case left behind.
pub fn force_cleanup(ctx: &Ctx<'_>) {
    for id in &ctx.ids {
        let _ = ctx.rt_full(
            &["delete", "--force", id],
            &[],
            &[],
            Duration::from_secs(15),
        );
    }
    for _ in 0..3 {
        let l = find_leftovers(ctx.rt, &ctx.dir, &ctx.ids);
        if l.is_empty() {
            return;
        }
        for (pid, _) in &l.procs {
            // SAFETY: kill(2) of a process identified as belonging to this case's container.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for m in &l.mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_str()) {
                // SAFETY: umount2 with a valid C string.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        for cg in &l.cgroups {
            let _ = fs::remove_dir(cg);
        }
        for s in &l.state {
            let _ = fs::remove_dir_all(s);
        }
    }
}

/// After a case: helpers, cleanup commands, leftover check, forced cleanup, directory removal.
pub fn finish(ctx: &Ctx<'_>) -> Option<String> {
    for pid in &ctx.helpers {
        proc::kill_wait(*pid);
    }
    // The case's own host-side set-up (netns, host submounts) goes first: it is not the
    // runtime's to clean.
    for c in &ctx.cleanup_cmds {
        if let Some((p, a)) = c.split_first() {
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            let _ = ctx.host(p, &a);
        }
    }
    let l = check_leftovers(ctx.rt, &ctx.dir, &ctx.ids);
    let verdict = if l.is_empty() {
        None
    } else {
        force_cleanup(ctx);
        Some(format!("left behind: {}", l.describe()))
    };
    if !ctx.env.keep && mounts_under(&ctx.dir).is_empty() {
        let _ = fs::remove_dir_all(&ctx.dir);
    }
    verdict
}

#[cfg(test)]
mod tests {
    //! The leftover detectors are what makes "nothing left behind" a real assertion: each is
    //! checked here against a real leftover of its kind (needs root, like the suite).
    use super::*;

    fn unique(tag: &str) -> String {
        format!("hc-selftest-{}-{tag}", std::process::id())
    }

    #[test]
    fn detects_and_forgets_a_mount_under_the_case_dir() {
        let dir = PathBuf::from(format!("/tmp/{}", unique("mnt")));
        let sub = dir.join("m");
        fs::create_dir_all(&sub).expect("mkdir");
        let c = std::ffi::CString::new(sub.display().to_string()).expect("cstring");
        let t = std::ffi::CString::new("tmpfs").expect("cstring");
        // SAFETY: mount(2) of a tmpfs on a directory we just created.
        let rc = unsafe { libc::mount(t.as_ptr(), c.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        assert_eq!(mounts_under(&dir), vec![sub.display().to_string()]);
        // SAFETY: umount2 of the mount made above.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        assert!(mounts_under(&dir).is_empty());
        fs::remove_dir_all(&dir).expect("rm");
    }

    #[test]
    fn detects_a_cgroup_named_after_the_id_in_a_nested_hierarchy() {
        let id = unique("cg");
        let base = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())
            .expect("a writable cgroup hierarchy");
        let d = base.join(format!("{id}-parent")).join(&id);
        fs::create_dir_all(&d).expect("mkdir cgroup");
        let found = cgroups_named(&id);
        assert!(found.contains(&d), "{found:?} lacks {}", d.display());
        fs::remove_dir(&d).expect("rmdir");
        fs::remove_dir(d.parent().expect("parent")).expect("rmdir parent");
        assert!(cgroups_named(&id).is_empty());
    }

    #[test]
    fn detects_a_process_by_its_environment_marker_and_by_its_argv() {
        let id = unique("proc");
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .env("HC_ID", &id)
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // Until the child has exec'd, its environ is still the parent's.
        let seen = wait_for("the child to exec", || {
            procs_of(&id).iter().any(|(p, _)| *p == pid)
        });
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(seen.is_ok(), "process {pid} with HC_ID={id} not detected");
        assert!(procs_of(&id).is_empty());
        // A shell blocked on stdin, with the id as its $0.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x", &id])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sleep with the id as argv");
        let pid = child.id() as i32;
        let seen = wait_for("the child to exec", || {
            procs_of(&id).iter().any(|(p, _)| *p == pid)
        });
        child.kill().expect("kill");
        let _ = child.wait();
        assert!(
            seen.is_ok(),
            "process {pid} with the id in argv not detected"
        );
    }

    #[test]
    fn detects_state_entries_in_the_private_root() {
        let id = unique("state");
        let rt = Runtime {
            name: "t".into(),
            path: PathBuf::from("/bin/true"),
            root: PathBuf::from(format!("/tmp/{}-root", id)),
            crun_wrap: false,
        };
        fs::create_dir_all(rt.root.join(&id)).expect("mkdir state");
        assert_eq!(state_entries(&rt, &id), vec![rt.root.join(&id)]);
        fs::remove_dir_all(&rt.root).expect("rm");
        assert!(state_entries(&rt, &id).is_empty());
    }
}
