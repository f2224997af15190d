//! config.md "Process" (args, env, cwd, user, rlimits, capabilities, noNewPrivileges,
//! oomScoreAdj, terminal/consoleSize), config-linux.md "Sysctl" and "Seccomp", and the runc CLI's
//! --console-socket / --preserve-fds / LISTEN_FDS.

use super::{case, Case};
use crate::bundle::VALIDATOR_PATH;
use crate::ctx::{timeout, validator_verdict, CaseResult, Ctx, Outcome};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

pub fn cases() -> Vec<Case> {
    vec![
        case("process.args-env-cwd", args_env_cwd),
        case("process.user-uid-gid-groups-umask", user),
        case("process.rlimits", rlimits),
        case("process.rlimit-above-hard-limit-refused", rlimit_above_hard),
        case("process.rlimit-unknown-type-refused", rlimit_unknown),
        case("process.capabilities-reduced-exact", caps_reduced),
        case("process.capabilities-empty", caps_empty),
        case(
            "process.capabilities-non-root-nothing-inherited",
            caps_non_root,
        ),
        case(
            "process.capabilities-unknown-refused-or-ignored",
            caps_unknown,
        ),
        case("process.no-new-privileges-false", nnp_false),
        case("process.oom-score-adj", oom),
        case("process.terminal-console-socket", terminal),
        case("process.preserve-fds", preserve_fds),
        case("process.preserve-fds-with-LISTEN_FDS", listen_fds),
        case("process.no-fd-leak-from-runtime-caller", fd_no_leak),
        case("process.sysctl-namespaced", sysctl_ns),
        case("process.sysctl-non-namespaced-refused", sysctl_host),
        case(
            "process.sysctl-net-without-netns-refused",
            sysctl_net_no_netns,
        ),
        case("process.sysctl-key-with-equals-refused", sysctl_equals),
        case("process.seccomp-errno", seccomp),
        case("process.scheduler-batch-nice", scheduler),
        case("process.io-priority", io_priority),
        case("linux.personality-linux32", personality),
    ]
}

fn args_env_cwd(c: &mut Ctx<'_>) -> CaseResult {
    let id = c.id.clone();
    c.cfg["process"]["env"] = json!([
        "PATH=/bin:/usr/bin",
        "HC_SPACES=a b  c",
        "HC_EQUALS=x=y=z",
        "HC_EMPTY=",
        format!("HC_ID={id}")
    ]);
    c.cfg["process"]["cwd"] = json!("/etc");
    c.set_args(&[
        VALIDATOR_PATH,
        "args",
        "env",
        "cwd",
        "arg with spaces",
        "",
        "quote\"d",
    ]);
    c.save()?;
    let o = c.run()?;
    validator_verdict(&o)
}

fn user(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [1001, 1002, 5], "umask": 23});
    c.validate(&[])
}

fn rlimits(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 4096},
        {"type": "RLIMIT_NPROC", "soft": 1000, "hard": 2000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608},
        {"type": "RLIMIT_MSGQUEUE", "soft": 409600, "hard": 409600}
    ]);
    c.validate(&["rlimits"])
}

/// The hard limit of RLIMIT_NOFILE of this process.
fn nofile_hard() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_max
}

fn can_raise_hard_limits() -> bool {
    // CAP_SYS_RESOURCE is bit 24 of CapEff.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .map(|m| m & (1 << 24) != 0)
        .unwrap_or(true)
}

fn rlimit_above_hard(c: &mut Ctx<'_>) -> CaseResult {
    if can_raise_hard_limits() {
        return Ok(Outcome::Skip(
            "the runner has CAP_SYS_RESOURCE: raising a hard limit is allowed".into(),
        ));
    }
    let want = nofile_hard().saturating_mul(4).max(1 << 20);
    c.cfg["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": want}]);
    c.sh("true");
    let o = c.run()?;
    ensure!(
        o.code != 0,
        "RLIMIT_NOFILE hard {want} above the caller's hard limit was accepted"
    );
    let err = o.stderr.to_lowercase();
    ensure!(
        err.contains("nofile") || err.contains("rlimit"),
        "the error does not name the rlimit: {}",
        o.describe()
    );
    Ok(Outcome::Pass)
}

fn rlimit_unknown(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: the runtime MUST generate an error for values of type it cannot map.
    c.cfg["process"]["rlimits"] = json!([{"type": "RLIMIT_HC_NO_SUCH", "soft": 1, "hard": 1}]);
    c.sh("true");
    let o = c.run()?;
    ensure!(o.code != 0, "an unknown rlimit type was accepted");
    Ok(Outcome::Pass)
}

fn caps_reduced(c: &mut Ctx<'_>) -> CaseResult {
    let s = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    c.cfg["process"]["capabilities"] = json!({
        "bounding": s, "effective": s, "permitted": s,
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    });
    c.validate(&["caps", "nnp"])
}

fn caps_empty(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["capabilities"] =
        json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    c.validate(&["caps"])
}

fn caps_non_root(c: &mut Ctx<'_>) -> CaseResult {
    // CVE-2022-29162 class: inheritable must be exactly as configured (here: empty), so a
    // non-root process gets no capabilities across execve.
    c.cfg["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let s = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_RAW"];
    c.cfg["process"]["capabilities"] =
        json!({"bounding": s, "effective": s, "permitted": s, "inheritable": [], "ambient": []});
    c.validate(&["caps", "user"])
}

fn caps_unknown(c: &mut Ctx<'_>) -> CaseResult {
    // config.md: unknown capabilities — the runtime MUST generate an error for values it
    // cannot map... or (1.1) log a warning and ignore. Either way the known set must be exact.
    c.cfg["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_HC_NO_SUCH"]);
    c.cfg["process"]["capabilities"]["effective"] = json!(["CAP_KILL"]);
    c.cfg["process"]["capabilities"]["permitted"] = json!(["CAP_KILL"]);
    c.cfg["process"]["capabilities"]["ambient"] = json!([]);
    c.set_args(&[VALIDATOR_PATH, "caps"]);
    let o = c.run()?;
    if o.code != 0 && !o.stdout.contains("ok - ") {
        return Ok(Outcome::Pass);
    }
    validator_verdict(&o)
}

fn nnp_false(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["noNewPrivileges"] = json!(false);
    c.validate(&["nnp", "caps"])
}

fn oom(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["oomScoreAdj"] = json!(500);
    c.validate(&["oom"])
}

/// Receive one fd over a unix socket (SCM_RIGHTS).
fn recv_fd(sock: &std::os::unix::net::UnixStream) -> Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 64];
    // SAFETY: msghdr points at our own buffers, sized as given; recvmsg fills them.
    let fd = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            bail!(
                "recvmsg on the console socket: {}",
                std::io::Error::last_os_error()
            );
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            bail!("the console socket message carried no SCM_RIGHTS fd");
        }
        let p = libc::CMSG_DATA(cmsg) as *const i32;
        std::ptr::read_unaligned(p)
    };
    // SAFETY: the kernel just installed this fd in our table; we own it now.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn terminal(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["process"]["terminal"] = json!(true);
    c.cfg["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    c.set_args(&[VALIDATOR_PATH]);
    c.save()?;
    let sock_path = c.dir.join("console.sock");
    let listener =
        UnixListener::bind(&sock_path).with_context(|| format!("bind {}", sock_path.display()))?;
    listener.set_nonblocking(false).context("console socket")?;
    // Accept and read the pty in a thread; the runtime sends the master during create.
    let reader = std::thread::spawn(move || -> Result<String> {
        let (conn, _) = listener.accept().context("accept on the console socket")?;
        let master = recv_fd(&conn)?;
        let mut f = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // EIO once the slave side is closed by everyone.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => return Err(e).context("read from the pty master"),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    });
    let b = c.bundle_str();
    let sp = sock_path.display().to_string();
    let cr = c.rt(&["create", "--bundle", &b, "--console-socket", &sp, &c.id])?;
    if !cr.ok() {
        // Unblock the accept so the thread ends.
        let _ = std::os::unix::net::UnixStream::connect(&sock_path);
        let _ = reader.join();
        bail!("{}", cr.describe());
    }
    let pid = c.pid()?;
    c.start()?;
    let code = c.wait_exit(pid)?;
    let out = match reader.join() {
        Ok(r) => r?,
        Err(_) => bail!("console reader thread panicked"),
    };
    c.delete()?;
    let o = crate::proc::Out {
        code: code.unwrap_or(0),
        stdout: out.replace('\r', ""),
        stderr: String::new(),
        timed_out: false,
        cmdline: "validator on the console".into(),
    };
    validator_verdict(&o)?;
    Ok(Outcome::Pass)
}

fn temp_file(c: &Ctx<'_>, name: &str, content: &str) -> Result<File> {
    let p = c.dir.join(name);
    std::fs::write(&p, content).with_context(|| format!("write {}", p.display()))?;
    File::open(&p).with_context(|| format!("open {}", p.display()))
}

fn preserve_fds(c: &mut Ctx<'_>) -> CaseResult {
    let f3 = temp_file(c, "fd3", "hc-fd-three")?;
    let f4 = temp_file(c, "fd4", "hc-fd-four")?;
    c.sh("cat /proc/self/fd/3; echo; cat /proc/self/fd/4");
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let fds = [(3, &f3), (4, &f4)];
    let o = c.rt_full(
        &["run", "--preserve-fds", "2", "--bundle", &b, &id],
        &[],
        &fds,
        timeout(),
    )?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("hc-fd-three") && o.stdout.contains("hc-fd-four"),
        "preserved fds 3/4 do not carry the caller's files: {:?}",
        o.stdout
    );
    c.expect.push("preserved_fds 2".into());
    c.set_args(&[VALIDATOR_PATH, "fds"]);
    c.save()?;
    let o = c.rt_full(
        &["run", "--preserve-fds", "2", "--bundle", &b, &id],
        &[],
        &fds,
        timeout(),
    )?;
    validator_verdict(&o)
}

fn listen_fds(c: &mut Ctx<'_>) -> CaseResult {
    // sd_listen_fds semantics: with LISTEN_FDS=M and LISTEN_PID=<runtime pid> in the runtime's
    // environment, fds 3..3+M are passed too, before the --preserve-fds ones.
    let f3 = temp_file(c, "fd3", "hc-listen-three")?;
    let f4 = temp_file(c, "fd4", "hc-preserved-four")?;
    c.share();
    c.sh("cat /proc/self/fd/3; echo; cat /proc/self/fd/4; echo; echo LISTEN_FDS=$LISTEN_FDS");
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let fds = [(3, &f3), (4, &f4)];
    // LISTEN_PID must be the runtime's own pid: set it from a shell that then execs the runtime.
    let (prog, argv) = c.rt.argv(
        &["run", "--preserve-fds", "1", "--bundle", &b, &id]
            .iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>(),
    );
    let mut args: Vec<std::ffi::OsString> = vec![
        "-c".into(),
        "LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec \"$0\" \"$@\"".into(),
        prog,
    ];
    args.extend(argv);
    let so = c.dir.join("listen.out");
    let se = c.dir.join("listen.err");
    let o = crate::proc::run(crate::proc::Spec {
        program: "sh".into(),
        args,
        env: Vec::new(),
        stdout: &so,
        stderr: &se,
        timeout: timeout(),
        extra_fds: fds.to_vec(),
        stdin: None,
        cwd: None,
    })?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.contains("hc-listen-three") && o.stdout.contains("hc-preserved-four"),
        "LISTEN_FDS fd 3 and preserved fd 4 not both passed: {:?}",
        o.stdout
    );
    let listen = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("LISTEN_FDS="))
        .unwrap_or("");
    ensure!(
        listen.is_empty() || listen == "1",
        "LISTEN_FDS in the container, when set, must count the listen fds (1), got {listen:?}"
    );
    Ok(Outcome::Pass)
}

fn fd_no_leak(c: &mut Ctx<'_>) -> CaseResult {
    // The caller of the runtime has extra fds open without CLOEXEC; none may reach the container.
    let f5 = temp_file(c, "fd5", "leak")?;
    let f9 = temp_file(c, "fd9", "leak")?;
    c.set_args(&[VALIDATOR_PATH, "fds"]);
    c.save()?;
    let b = c.bundle_str();
    let id = c.id.clone();
    let o = c.rt_full(
        &["run", "--bundle", &b, &id],
        &[],
        &[(5, &f5), (9, &f9)],
        timeout(),
    )?;
    validator_verdict(&o)
}

fn sysctl_ns(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["sysctl"] = json!({
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ip_local_port_range": "20000 40000",
        "kernel.shmmax": "123456789",
        "kernel.msgmax": "9000"
    });
    c.validate(&["sysctl"])
}

fn host_value(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .ok()
        .map(|s| s.trim().to_string())
}

fn refused(c: &mut Ctx<'_>, what: &str) -> CaseResult {
    c.sh("true");
    let o = c.run()?;
    ensure!(o.code != 0, "{what} was accepted");
    Ok(Outcome::Pass)
}

fn sysctl_host(c: &mut Ctx<'_>) -> CaseResult {
    // A sysctl outside any namespace would change the host. Use the host's current value so
    // that even a runtime that wrongly accepts it changes nothing.
    let Some(v) = host_value("vm.swappiness") else {
        return Ok(Outcome::Skip("/proc/sys/vm/swappiness not readable".into()));
    };
    c.cfg["linux"]["sysctl"] = json!({ "vm.swappiness": v });
    refused(c, "the non-namespaced sysctl vm.swappiness")
}

fn sysctl_net_no_netns(c: &mut Ctx<'_>) -> CaseResult {
    let Some(v) = host_value("net.ipv4.ip_forward") else {
        return Ok(Outcome::Skip(
            "/proc/sys/net/ipv4/ip_forward not readable".into(),
        ));
    };
    for n in c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
    {
        if n["type"] == "network" {
            n["type"] = json!("hc-removed");
        }
    }
    c.cfg["linux"]["namespaces"]
        .as_array_mut()
        .context("namespaces")?
        .retain(|n| n["type"] != "hc-removed");
    c.cfg["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": v });
    refused(c, "a net.* sysctl without a private network namespace")
}

fn sysctl_equals(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["sysctl"] = json!({ "kernel.shmmax=1": "1" });
    refused(c, "a sysctl key containing '='")
}

fn seccomp(c: &mut Ctx<'_>) -> CaseResult {
    c.cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    c.share();
    c.sh("if mkdir /shared/newdir 2>/shared/err; then echo created; else echo refused; fi");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    ensure!(
        o.stdout.trim() == "refused",
        "mkdir under the seccomp filter: {:?}",
        o.stdout.trim()
    );
    let err = std::fs::read_to_string(c.shared.join("err")).unwrap_or_default();
    ensure!(
        err.contains("Operation not permitted"),
        "mkdir must fail with EPERM (errnoRet 1), got {err:?}"
    );
    c.cfg["mounts"]
        .as_array_mut()
        .context("mounts")?
        .retain(|m| m["destination"] != "/shared");
    c.validate(&["seccomp", "fds"])
}

/// Fields of /proc/<pid>/stat after the command name (index 0 = field 3, "state").
fn stat_fields(stat: &str) -> Vec<String> {
    stat.rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn scheduler(c: &mut Ctx<'_>) -> CaseResult {
    // config.md process.scheduler: policy and nice apply to the process (and are inherited).
    c.cfg["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    c.sh("cat /proc/self/stat");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    let f = stat_fields(&o.stdout);
    // stat(5): field 19 nice, field 41 policy; index = field - 3.
    let nice = f.get(16).cloned().unwrap_or_default();
    let policy = f.get(38).cloned().unwrap_or_default();
    ensure!(
        policy == "3",
        "scheduling policy {policy:?}, want 3 (SCHED_BATCH)"
    );
    ensure!(nice == "7", "nice {nice:?}, want 7");
    Ok(Outcome::Pass)
}

fn io_priority(c: &mut Ctx<'_>) -> CaseResult {
    // config.md process.ioPriority: class and priority set with ioprio_set.
    c.cfg["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    c.sh("ionice -p $$");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    let out = o.stdout.trim();
    ensure!(
        out == "best-effort: prio 6",
        "ionice reports {out:?}, want \"best-effort: prio 6\""
    );
    Ok(Outcome::Pass)
}

fn personality(c: &mut Ctx<'_>) -> CaseResult {
    // config-linux.md personality: domain LINUX32 makes uname report a 32-bit machine.
    if std::env::consts::ARCH != "x86_64" {
        return Ok(Outcome::Skip(
            "LINUX32 check written for x86_64 hosts".into(),
        ));
    }
    c.cfg["linux"]["personality"] = json!({"domain": "LINUX32"});
    c.sh("uname -m");
    let o = c.run()?;
    ensure!(o.ok(), "{}", o.describe());
    let m = o.stdout.trim();
    ensure!(
        m == "i686",
        "uname -m under personality LINUX32: {m:?}, want i686"
    );
    Ok(Outcome::Pass)
}
