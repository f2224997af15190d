//! husk-conformance: a runtime-agnostic OCI runtime conformance suite.
//!
//! Runs every case against each `--runtime` (any binary with runc's command line) and prints
//! TAP-style results; see conformance/README.md.

mod bundle;
mod cases;
mod ctx;
mod proc;

use anyhow::{bail, Context, Result};
use ctx::{Ctx, Outcome, RunEnv, Runtime};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

const USAGE: &str = "\
usage: husk-conformance [options]
  --runtime PATH     runtime binary with runc's CLI (repeatable; default: $RUNTIME)
  --filter SUBSTR    only cases whose name contains SUBSTR (repeatable: any matches)
  --jobs N           cases run in parallel per runtime (default 2)
  --report FILE      with two or more runtimes: write a markdown case x runtime table
  --reference NAME   exit non-zero if another runtime fails a case NAME passes
  --busybox PATH     static busybox for the rootfs (default /bin/busybox)
  --timeout SECS     safety timeout per runtime command / wait (default 30)
  --keep             keep the case directories under /tmp/husk-conformance-<pid>
  --list             list the cases and exit";

struct Opts {
    runtimes: Vec<PathBuf>,
    filters: Vec<String>,
    jobs: usize,
    report: Option<PathBuf>,
    reference: Option<String>,
    busybox: PathBuf,
    keep: bool,
    list: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        runtimes: Vec::new(),
        filters: Vec::new(),
        jobs: 2,
        report: None,
        reference: None,
        busybox: PathBuf::from("/bin/busybox"),
        keep: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = |name: &str| -> Result<String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => bail!("{name} needs a value\n{USAGE}"),
            }
        };
        match key.as_str() {
            "--runtime" => o.runtimes.push(PathBuf::from(val("--runtime")?)),
            "--filter" => o.filters.push(val("--filter")?),
            "--jobs" | "-j" => {
                let v = val("--jobs")?;
                o.jobs = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--jobs: {v:?} is not a positive number"))?;
            }
            "--report" => o.report = Some(PathBuf::from(val("--report")?)),
            "--reference" => o.reference = Some(val("--reference")?),
            "--busybox" => o.busybox = PathBuf::from(val("--busybox")?),
            "--timeout" => {
                let v = val("--timeout")?;
                let secs = v.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                    format!("--timeout: {v:?} is not a positive number of seconds")
                })?;
                ctx::set_timeout(secs);
            }
            "--keep" => o.keep = true,
            "--list" => o.list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.runtimes.is_empty() {
        if let Ok(r) = std::env::var("RUNTIME") {
            for p in r.split(':').filter(|s| !s.is_empty()) {
                o.runtimes.push(PathBuf::from(p));
            }
        }
    }
    Ok(o)
}

/// Resolve a runtime given as a bare name through $PATH.
fn resolve(p: &PathBuf) -> Result<PathBuf> {
    if p.components().count() > 1 {
        if !p.exists() {
            bail!("runtime {} does not exist", p.display());
        }
        return Ok(bundle::abs(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let c = d.join(p);
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("runtime {} not found in $PATH", p.display())
}

#[derive(Clone, Debug)]
enum Res {
    Pass,
    Fail(String),
    Skip(String),
}

impl Res {
    fn word(&self) -> &'static str {
        match self {
            Res::Pass => "pass",
            Res::Fail(_) => "FAIL",
            Res::Skip(_) => "skip",
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run_case(rt: &Runtime, env: &RunEnv, case: &cases::Case) -> Res {
    let mut ctx = match Ctx::new(rt, env, case.name) {
        Ok(c) => c,
        Err(e) => return Res::Fail(format!("setting up the case: {e:#}")),
    };
    let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&mut ctx)));
    let res = match body {
        Ok(Ok(Outcome::Pass)) => Res::Pass,
        Ok(Ok(Outcome::Skip(r))) => Res::Skip(r),
        Ok(Err(e)) => Res::Fail(format!("{e:#}")),
        Err(_) => Res::Fail("the case panicked (a bug in the suite)".into()),
    };
    // Tidy the case's own containers the normal way first (a passing case already did).
    if !matches!(res, Res::Pass) {
        for id in &ctx.ids {
            let _ = ctx.rt_full(&["delete", "--force", id], &[], &[], ctx::timeout());
        }
    }
    match (ctx::finish(&ctx), res) {
        (None, r) => r,
        (Some(left), Res::Fail(f)) => Res::Fail(format!("{f}; {left}")),
        (Some(left), _) => Res::Fail(left),
    }
}

/// `tap`: print results as TAP lines (the runtime under test). A reference runtime's results are
/// printed as `# name: ok|FAIL|skip` comments instead, so that a TAP consumer counts only the
/// runtime under test; its differences are in the summary and the report table.
fn run_runtime(
    rt: &Runtime,
    env: &RunEnv,
    selected: &[&cases::Case],
    jobs: usize,
    tap: bool,
) -> Vec<Res> {
    let n = selected.len();
    let results: Mutex<Vec<Option<Res>>> = Mutex::new(vec![None; n]);
    let printed = Mutex::new(0usize);
    let next = AtomicUsize::new(0);
    let serial = RwLock::new(());
    let print_ready = || {
        let Ok(mut p) = printed.lock() else { return };
        let Ok(r) = results.lock() else { return };
        let out = std::io::stdout();
        let mut out = out.lock();
        while *p < n {
            let Some(res) = &r[*p] else { break };
            let name = selected[*p].name;
            let num = *p + 1;
            let rn = &rt.name;
            let _ = match (res, tap) {
                (Res::Pass, true) => writeln!(out, "ok {num} - {name}"),
                (Res::Fail(why), true) => {
                    writeln!(out, "not ok {num} - {name}: {}", one_line(why))
                }
                (Res::Skip(why), true) => {
                    writeln!(out, "ok {num} - {name} # SKIP {}", one_line(why))
                }
                (Res::Pass, false) => writeln!(out, "# {rn}: ok {num} {name}"),
                (Res::Fail(why), false) => {
                    writeln!(out, "# {rn}: FAIL {num} {name}: {}", one_line(why))
                }
                (Res::Skip(why), false) => {
                    writeln!(out, "# {rn}: skip {num} {name}: {}", one_line(why))
                }
            };
            let _ = out.flush();
            *p += 1;
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let case = selected[i];
                let res = if case.serial {
                    let _g = serial.write();
                    run_case(rt, env, case)
                } else {
                    let _g = serial.read();
                    run_case(rt, env, case)
                };
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(res);
                }
                print_ready();
            });
        }
    });
    print_ready();
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or(Res::Fail("not run".into())))
        .collect()
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("husk-conformance: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> Result<i32> {
    let opts = parse_args()?;
    let all = cases::all();
    {
        let mut seen = std::collections::HashSet::new();
        for c in &all {
            if !seen.insert(c.name) {
                bail!("duplicate case name {}", c.name);
            }
        }
    }
    let selected: Vec<&cases::Case> = all
        .iter()
        .filter(|c| {
            opts.filters.is_empty() || opts.filters.iter().any(|f| c.name.contains(f.as_str()))
        })
        .collect();
    if opts.list {
        for c in &selected {
            println!("{}", c.name);
        }
        return Ok(0);
    }
    if opts.runtimes.is_empty() {
        bail!("no runtime: pass --runtime PATH or set RUNTIME\n{USAGE}");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root (it creates containers)");
    }
    let pid = std::process::id();
    let base = PathBuf::from(format!("/tmp/husk-conformance-{pid}"));
    bundle::mkdir_mode(&base, 0o755)?;
    let template = base.join("rootfs-template");
    // Built before the reaper thread starts (it uses std's Command::output).
    bundle::build_template(&template, &opts.busybox)?;
    proc::init_subreaper()?;
    let env = RunEnv {
        base: base.clone(),
        template,
        host_ns: bundle::host_ns_lines(),
        keep: opts.keep,
    };

    let mut runtimes: Vec<Runtime> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for p in &opts.runtimes {
        let path = resolve(p)?;
        let base_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runtime".into());
        let base_name: String = base_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let k = names.entry(base_name.clone()).or_insert(0);
        *k += 1;
        let name = if *k == 1 {
            base_name
        } else {
            format!("{base_name}{k}")
        };
        runtimes.push(Runtime::new(&path, name));
    }

    let mut table: Vec<(String, Vec<Res>)> = Vec::new();
    let mut exit = 0;
    for rt in &runtimes {
        bundle::mkdir_mode(&rt.root, 0o700)?;
        bundle::mkdir_mode(&env.base.join(&rt.name), 0o755)?;
        println!(
            "# runtime {} ({}){}",
            rt.name,
            rt.path.display(),
            if rt.crun_wrap {
                " via unshare -m with /sys/fs/cgroup/unified unmounted"
            } else {
                ""
            }
        );
        let tap = opts.reference.as_deref() != Some(rt.name.as_str());
        if tap {
            println!("1..{}", selected.len());
        }
        let res = run_runtime(rt, &env, &selected, opts.jobs, tap);
        let passed = res.iter().filter(|r| matches!(r, Res::Pass)).count();
        let failed = res.iter().filter(|r| matches!(r, Res::Fail(_))).count();
        let skipped = res.iter().filter(|r| matches!(r, Res::Skip(_))).count();
        println!(
            "{}: {passed} passed, {failed} failed, {skipped} skipped",
            rt.name
        );
        // The private state root must hold no container state now (husk's documented seccomp
        // filter cache, `.seccomp-cache`, is meant to outlive containers); remove it.
        match std::fs::read_dir(&rt.root) {
            Ok(rd) => {
                let left: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".seccomp-cache")
                    .collect();
                if !left.is_empty() {
                    println!("# warning: {} still holds {:?}", rt.root.display(), left);
                }
            }
            Err(e) => println!("# warning: reading {}: {e}", rt.root.display()),
        }
        let _ = std::fs::remove_dir_all(&rt.root);
        let _ = std::fs::remove_dir(env.base.join(&rt.name));
        if failed > 0 && runtimes.len() == 1 {
            exit = 1;
        }
        table.push((rt.name.clone(), res));
    }
    if !opts.keep {
        let _ = std::fs::remove_dir_all(env.base.join("rootfs-template"));
        let _ = std::fs::remove_dir(&env.base);
    }

    if runtimes.len() > 1 {
        let mut md = String::new();
        md.push_str("| case |");
        for (n, _) in &table {
            md.push_str(&format!(" {n} |"));
        }
        md.push_str("\n|---|");
        for _ in &table {
            md.push_str("---|");
        }
        md.push('\n');
        for (i, c) in selected.iter().enumerate() {
            md.push_str(&format!("| {} |", c.name));
            for (_, r) in &table {
                md.push_str(&format!(" {} |", r[i].word()));
            }
            md.push('\n');
        }
        md.push_str("\n## Failures and skips\n\n");
        for (n, res) in &table {
            for (i, r) in res.iter().enumerate() {
                match r {
                    Res::Fail(w) => md.push_str(&format!(
                        "- {n} `{}` FAIL: {}\n",
                        selected[i].name,
                        one_line(w)
                    )),
                    Res::Skip(w) => md.push_str(&format!(
                        "- {n} `{}` skip: {}\n",
                        selected[i].name,
                        one_line(w)
                    )),
                    Res::Pass => {}
                }
            }
        }
        if let Some(f) = &opts.report {
            std::fs::write(f, &md).with_context(|| format!("write report {}", f.display()))?;
            println!("# report written to {}", f.display());
        }
        println!("# summary");
        for (n, res) in &table {
            let p = res.iter().filter(|r| matches!(r, Res::Pass)).count();
            let f = res.iter().filter(|r| matches!(r, Res::Fail(_))).count();
            let s = res.iter().filter(|r| matches!(r, Res::Skip(_))).count();
            println!("# {n}: {p} passed, {f} failed, {s} skipped");
        }
        if let Some(refname) = &opts.reference {
            let Some((_, refres)) = table.iter().find(|(n, _)| n == refname) else {
                bail!(
                    "--reference {refname}: no such runtime (names: {:?})",
                    table.iter().map(|t| &t.0).collect::<Vec<_>>()
                );
            };
            for (n, res) in &table {
                if n == refname {
                    continue;
                }
                for (i, r) in res.iter().enumerate() {
                    if matches!(refres[i], Res::Pass) && matches!(r, Res::Fail(_)) {
                        println!("# regression vs {refname}: {n} fails {}", selected[i].name);
                        exit = 1;
                    }
                }
            }
        } else if table
            .iter()
            .any(|(_, r)| r.iter().any(|x| matches!(x, Res::Fail(_))))
        {
            exit = 1;
        }
    }
    Ok(exit)
}
