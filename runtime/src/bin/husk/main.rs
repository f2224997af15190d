//! `husk`: the command line (runc's), a thin layer over the `husk` library.
//!
//! The parser is our own, small and table-driven (`cli` below), rather than clap: every husk
//! command runs it, and clap's code and the command tree it builds on the heap were a good part
//! of husk's resident set. It follows clap's conventions: global options anywhere,
//! `--opt value`, `--opt=value`, `-o value`, `-ovalue`, bundled short flags, `--`, `-h/--help`
//! on every command, `help [COMMAND]`, `-V/--version`, and usage errors on stderr with exit
//! status 2.
use anyhow::Context as _;
use husk::container::{self, CreateOpts};
use husk::state::Root;
use std::ffi::OsString;
use std::path::PathBuf;

struct Cli {
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    log_format: LogFormat,
    debug: bool,
    systemd_cgroup: bool,
    criu: Option<PathBuf>,
    cmd: Cmd,
}

#[derive(Clone, Copy)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
struct CreateArgs {
    id: String,
    bundle: PathBuf,
    console_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    no_pivot: bool,
    no_new_keyring: bool,
    preserve_fds: i32,
}

#[derive(Debug)]
struct ExecArgs {
    process: Option<PathBuf>,
    tty: bool,
    console_socket: Option<PathBuf>,
    detach: bool,
    pid_file: Option<PathBuf>,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    user: Option<String>,
    additional_gids: Vec<u32>,
    cap: Vec<String>,
    no_new_privs: bool,
    preserve_fds: i32,
    process_label: Option<String>,
    apparmor: Option<String>,
    ignore_paused: bool,
    id: String,
    command: Vec<String>,
}

#[derive(Debug)]
struct UpdateArgs {
    id: String,
    resources: Option<String>,
    memory: Option<String>,
    memory_reservation: Option<String>,
    memory_swap: Option<String>,
    kernel_memory: Option<String>,
    kernel_memory_tcp: Option<String>,
    cpu_shares: Option<u64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<u64>,
    cpu_rt_period: Option<u64>,
    cpu_rt_runtime: Option<i64>,
    cpuset_cpus: Option<String>,
    cpuset_mems: Option<String>,
    pids_limit: Option<i64>,
    blkio_weight: Option<u16>,
    l3_cache_schema: Option<String>,
    mem_bw_schema: Option<String>,
}

/// `checkpoint` flags (runc's).
#[derive(Debug)]
struct CheckpointArgs {
    id: String,
    image_path: PathBuf,
    work_path: Option<PathBuf>,
    leave_running: bool,
    tcp_established: bool,
    ext_unix_sk: bool,
    shell_job: bool,
    file_locks: bool,
    pre_dump: bool,
    parent_path: Option<PathBuf>,
    manage_cgroups_mode: Option<String>,
    empty_ns: Vec<String>,
    auto_dedup: bool,
    lazy_pages: bool,
    page_server: Option<String>,
    status_fd: Option<i32>,
}

/// `restore` flags (runc's).
#[derive(Debug)]
struct RestoreArgs {
    id: String,
    image_path: PathBuf,
    bundle: Option<PathBuf>,
    work_path: Option<PathBuf>,
    detach: bool,
    pid_file: Option<PathBuf>,
    tcp_established: bool,
    ext_unix_sk: bool,
    shell_job: bool,
    file_locks: bool,
    manage_cgroups_mode: Option<String>,
    no_pivot: bool,
    empty_ns: Vec<String>,
    console_socket: Option<PathBuf>,
    lazy_pages: bool,
    auto_dedup: bool,
    no_subreaper: bool,
}

enum Cmd {
    Checkpoint(CheckpointArgs),
    Restore(RestoreArgs),
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Ps {
        format: ListFormat,
        id: String,
        ps_args: Vec<String>,
    },
    Update(UpdateArgs),
    Events {
        id: String,
        stats: bool,
        interval: String,
    },
    Exec(ExecArgs),
    Create(CreateArgs),
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        id: String,
        signal: String,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    Run {
        create: CreateArgs,
        detach: bool,
        keep: bool,
    },
    List {
        format: ListFormat,
        quiet: bool,
    },
    Features,
    Spec {
        bundle: PathBuf,
        rootless: bool,
    },
}

#[derive(Clone, Copy)]
enum ListFormat {
    Table,
    Json,
}

mod cli;
use cli::K;

/// Parse the process's arguments into a `Cli`, or exit as clap would (help, version, usage error).
fn parse_cli() -> Cli {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match build_cli(args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    }
}

fn build_cli(args: Vec<OsString>) -> Result<Cli, cli::Exit> {
    let (globals, m) = cli::parse(args)?;
    let g = cli::Get {
        cmd: None,
        vals: &globals,
        pos: &[],
    };
    let a = cli::Get {
        cmd: Some(m.cmd),
        vals: &m.vals,
        pos: &m.pos,
    };
    let create = |a: &cli::Get<'_>| -> Result<CreateArgs, cli::Exit> {
        Ok(CreateArgs {
            id: a.pos(0)?,
            bundle: a.path(K::Bundle).unwrap_or_else(|| PathBuf::from(".")),
            console_socket: a.path(K::ConsoleSocket),
            pid_file: a.path(K::PidFile),
            no_pivot: a.flag(K::NoPivot),
            no_new_keyring: a.flag(K::NoNewKeyring),
            preserve_fds: a.num(K::PreserveFds)?.unwrap_or(0),
        })
    };
    let list_format = |a: &cli::Get<'_>| -> Result<ListFormat, cli::Exit> {
        Ok(match a.string(K::Format)?.as_deref() {
            Some("json") => ListFormat::Json,
            _ => ListFormat::Table,
        })
    };
    let cmd = match m.cmd.name {
        "checkpoint" => Cmd::Checkpoint(CheckpointArgs {
            id: a.pos(0)?,
            image_path: a.path(K::ImagePath).unwrap_or_else(|| "checkpoint".into()),
            work_path: a.path(K::WorkPath),
            leave_running: a.flag(K::LeaveRunning),
            tcp_established: a.flag(K::TcpEstablished),
            ext_unix_sk: a.flag(K::ExtUnixSk),
            shell_job: a.flag(K::ShellJob),
            file_locks: a.flag(K::FileLocks),
            pre_dump: a.flag(K::PreDump),
            parent_path: a.path(K::ParentPath),
            manage_cgroups_mode: a.string(K::ManageCgroupsMode)?,
            empty_ns: a.strings(K::EmptyNs)?,
            auto_dedup: a.flag(K::AutoDedup),
            lazy_pages: a.flag(K::LazyPages),
            page_server: a.string(K::PageServer)?,
            status_fd: a.num(K::StatusFd)?,
        }),
        "restore" => Cmd::Restore(RestoreArgs {
            id: a.pos(0)?,
            image_path: a.path(K::ImagePath).unwrap_or_else(|| "checkpoint".into()),
            bundle: a.path(K::Bundle),
            work_path: a.path(K::WorkPath),
            detach: a.flag(K::Detach),
            pid_file: a.path(K::PidFile),
            tcp_established: a.flag(K::TcpEstablished),
            ext_unix_sk: a.flag(K::ExtUnixSk),
            shell_job: a.flag(K::ShellJob),
            file_locks: a.flag(K::FileLocks),
            manage_cgroups_mode: a.string(K::ManageCgroupsMode)?,
            no_pivot: a.flag(K::NoPivot),
            empty_ns: a.strings(K::EmptyNs)?,
            console_socket: a.path(K::ConsoleSocket),
            lazy_pages: a.flag(K::LazyPages),
            auto_dedup: a.flag(K::AutoDedup),
            no_subreaper: a.flag(K::NoSubreaper),
        }),
        "pause" => Cmd::Pause { id: a.pos(0)? },
        "resume" => Cmd::Resume { id: a.pos(0)? },
        "ps" => Cmd::Ps {
            format: list_format(&a)?,
            id: a.pos(0)?,
            ps_args: a.rest(1)?,
        },
        "update" => Cmd::Update(UpdateArgs {
            id: a.pos(0)?,
            resources: a.string(K::Resources)?,
            memory: a.string(K::Memory)?,
            memory_reservation: a.string(K::MemoryReservation)?,
            memory_swap: a.string(K::MemorySwap)?,
            kernel_memory: a.string(K::KernelMemory)?,
            kernel_memory_tcp: a.string(K::KernelMemoryTcp)?,
            cpu_shares: a.num(K::CpuShare)?,
            cpu_quota: a.num(K::CpuQuota)?,
            cpu_period: a.num(K::CpuPeriod)?,
            cpu_rt_period: a.num(K::CpuRtPeriod)?,
            cpu_rt_runtime: a.num(K::CpuRtRuntime)?,
            cpuset_cpus: a.string(K::CpusetCpus)?,
            cpuset_mems: a.string(K::CpusetMems)?,
            pids_limit: a.num(K::PidsLimit)?,
            blkio_weight: a.num(K::BlkioWeight)?,
            l3_cache_schema: a.string(K::L3CacheSchema)?,
            mem_bw_schema: a.string(K::MemBwSchema)?,
        }),
        "events" => Cmd::Events {
            id: a.pos(0)?,
            stats: a.flag(K::Stats),
            interval: a.string(K::Interval)?.unwrap_or_else(|| "5s".into()),
        },
        "exec" => Cmd::Exec(ExecArgs {
            process: a.path(K::Process),
            tty: a.flag(K::Tty),
            console_socket: a.path(K::ConsoleSocket),
            detach: a.flag(K::Detach),
            pid_file: a.path(K::PidFile),
            cwd: a.path(K::Cwd),
            env: a.strings(K::Env)?,
            user: a.string(K::User)?,
            additional_gids: a.nums(K::AdditionalGids)?,
            cap: a.strings(K::Cap)?,
            no_new_privs: a.flag(K::NoNewPrivs),
            preserve_fds: a.num(K::PreserveFds)?.unwrap_or(0),
            process_label: a.string(K::ProcessLabel)?,
            apparmor: a.string(K::Apparmor)?,
            ignore_paused: a.flag(K::IgnorePaused),
            id: a.pos(0)?,
            command: a.rest(1)?,
        }),
        "create" => Cmd::Create(create(&a)?),
        "start" => Cmd::Start { id: a.pos(0)? },
        "state" => Cmd::State { id: a.pos(0)? },
        "kill" => Cmd::Kill {
            id: a.pos(0)?,
            signal: a.pos(1)?,
            all: a.flag(K::All),
        },
        "delete" => Cmd::Delete {
            id: a.pos(0)?,
            force: a.flag(K::Force),
        },
        "run" => Cmd::Run {
            create: create(&a)?,
            detach: a.flag(K::Detach),
            keep: a.flag(K::Keep),
        },
        "list" => Cmd::List {
            format: list_format(&a)?,
            quiet: a.flag(K::Quiet),
        },
        "features" => Cmd::Features,
        "spec" => Cmd::Spec {
            bundle: a.path(K::Bundle).unwrap_or_else(|| PathBuf::from(".")),
            rootless: a.flag(K::Rootless),
        },
        other => {
            return Err(cli::Exit::Error(format!(
                "error: command {other} is not implemented\n"
            )))
        }
    };
    Ok(Cli {
        root: g.path(K::Root),
        log: g.path(K::Log),
        log_format: match g.string(K::LogFormat)?.as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        },
        debug: g.flag(K::Debug),
        systemd_cgroup: g.flag(K::SystemdCgroup),
        criu: g.path(K::Criu),
        cmd,
    })
}

fn create_opts(a: CreateArgs, cli: &Cli, log_fd: Option<i32>) -> CreateOpts {
    CreateOpts {
        id: a.id,
        bundle: a.bundle,
        console_socket: a.console_socket,
        console_fd: None,
        pid_file: a.pid_file,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        systemd_cgroup: cli.systemd_cgroup,
        keep_fds: log_fd.into_iter().collect(),
    }
}

fn main() {
    let cli = parse_cli();
    // Building a container: run from a sealed copy of the binary (CVE-2019-5736).
    if matches!(cli.cmd, Cmd::Create(_) | Cmd::Run { .. } | Cmd::Exec(_))
        && !husk::exe::is_sealed_copy()
    {
        let Err(e) = husk::exe::reexec_protected();
        eprintln!("husk: {e}");
        std::process::exit(1);
    }
    let format = match cli.log_format {
        LogFormat::Text => husk::logging::Format::Text,
        LogFormat::Json => husk::logging::Format::Json,
    };
    let log_fd = match husk::logging::init(cli.log.as_deref(), format, cli.debug) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("husk: open log {:?}: {e}", cli.log);
            std::process::exit(1);
        }
    };
    let log_to_file = cli.log.is_some();
    match real_main(cli, log_fd) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            if log_to_file {
                tracing::error!("{msg}");
            }
            eprintln!("husk: {msg}");
            std::process::exit(1);
        }
    }
}

fn real_main(cli: Cli, log_fd: Option<i32>) -> anyhow::Result<i32> {
    let root = Root::new(&cli.root.clone().unwrap_or_else(husk::state::default_root))?;
    match cli.cmd {
        Cmd::Create(ref a) => {
            let a = CreateArgs { ..clone_args(a) };
            container::create(&root, create_opts(a, &cli, log_fd))?;
        }
        Cmd::Start { ref id } => container::start(&root, id)?,
        Cmd::Checkpoint(ref a) => husk::checkpoint::checkpoint(&root, &checkpoint_opts(a, &cli))?,
        Cmd::Restore(ref a) => {
            return Ok(husk::checkpoint::restore(&root, &restore_opts(a, &cli))?)
        }
        Cmd::Pause { ref id } => husk::cgroup_ops::pause(&root, id)?,
        Cmd::Resume { ref id } => husk::cgroup_ops::resume(&root, id)?,
        Cmd::Ps {
            format,
            ref id,
            ref ps_args,
        } => match format {
            ListFormat::Json => husk::emit!(
                "{}",
                serde_json::to_string(&husk::cgroup_ops::pids(&root, id)?)?
            ),
            ListFormat::Table => {
                husk::emit_raw!("{}", husk::cgroup_ops::ps_table(&root, id, ps_args)?)
            }
        },
        Cmd::Update(ref a) => {
            if a.kernel_memory.is_some() || a.kernel_memory_tcp.is_some() {
                // As runc and crun: kernel memory accounting has no separate limit on current
                // kernels; the flags are accepted and ignored, with a warning.
                tracing::warn!(
                    "update: --kernel-memory and --kernel-memory-tcp are ignored (kernel memory \
                     has no separate limit on this kernel)"
                );
            }
            let f = husk::cgroup_ops::UpdateFlags {
                resources: a.resources.clone(),
                memory: a.memory.clone(),
                memory_reservation: a.memory_reservation.clone(),
                memory_swap: a.memory_swap.clone(),
                cpu_shares: a.cpu_shares,
                cpu_quota: a.cpu_quota,
                cpu_period: a.cpu_period,
                cpu_rt_period: a.cpu_rt_period,
                cpu_rt_runtime: a.cpu_rt_runtime,
                cpuset_cpus: a.cpuset_cpus.clone(),
                cpuset_mems: a.cpuset_mems.clone(),
                pids_limit: a.pids_limit,
                blkio_weight: a.blkio_weight,
                l3_cache_schema: a.l3_cache_schema.clone(),
                mem_bw_schema: a.mem_bw_schema.clone(),
            };
            husk::cgroup_ops::update(&root, &a.id, &f)?;
        }
        Cmd::Events {
            ref id,
            stats,
            ref interval,
        } => {
            husk::cgroup_ops::events(&root, id, stats, parse_duration(interval)?)?;
        }
        Cmd::Exec(ref a) => {
            let opts = husk::exec::ExecOpts {
                id: a.id.clone(),
                process_file: a.process.clone(),
                args: a.command.clone(),
                tty: a.tty,
                console_socket: a.console_socket.clone(),
                detach: a.detach,
                pid_file: a.pid_file.clone(),
                cwd: a.cwd.clone(),
                env: a.env.clone(),
                user: a.user.clone(),
                additional_gids: a.additional_gids.clone(),
                caps: a.cap.clone(),
                no_new_privs: a.no_new_privs,
                preserve_fds: a.preserve_fds,
                ignore_paused: a.ignore_paused,
                process_label: a.process_label.clone(),
                apparmor: a.apparmor.clone(),
                keep_fds: log_fd.into_iter().collect(),
            };
            return Ok(husk::exec::exec(&root, opts)?);
        }
        Cmd::State { ref id } => {
            let st = container::state(&root, id)?;
            husk::emit!("{}", serde_json::to_string_pretty(&st.to_oci_json())?);
        }
        Cmd::Kill {
            ref id,
            ref signal,
            all,
        } => {
            let sig = container::parse_signal(signal)?;
            container::kill(&root, id, sig, all)?;
        }
        Cmd::Delete { ref id, force } => container::delete(&root, id, force)?,
        Cmd::Run {
            ref create,
            detach,
            keep,
        } => {
            let opts = create_opts(clone_args(create), &cli, log_fd);
            return Ok(husk::run::run(&root, opts, detach, keep)?);
        }
        Cmd::List { format, quiet } => list(&root, format, quiet)?,
        Cmd::Features => husk::emit!(
            "{}",
            serde_json::to_string_pretty(&husk::features::document())?
        ),
        Cmd::Spec {
            ref bundle,
            rootless,
        } => {
            let path = bundle.join("config.json");
            if path.exists() {
                anyhow::bail!("File {} exists. Remove it first", path.display());
            }
            let v = husk::spec::default_spec(rootless);
            std::fs::write(&path, serde_json::to_string_pretty(&v)?)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(0)
}

fn checkpoint_opts(a: &CheckpointArgs, cli: &Cli) -> husk::checkpoint::CheckpointOpts {
    husk::checkpoint::CheckpointOpts {
        id: a.id.clone(),
        image_path: a.image_path.clone(),
        work_path: a.work_path.clone(),
        leave_running: a.leave_running,
        tcp_established: a.tcp_established,
        ext_unix_sk: a.ext_unix_sk,
        shell_job: a.shell_job,
        file_locks: a.file_locks,
        pre_dump: a.pre_dump,
        parent_path: a.parent_path.clone(),
        manage_cgroups_mode: a.manage_cgroups_mode.clone(),
        empty_ns: a.empty_ns.clone(),
        auto_dedup: a.auto_dedup,
        lazy_pages: a.lazy_pages,
        page_server: a.page_server.clone(),
        status_fd: a.status_fd,
        criu: cli.criu.clone(),
    }
}

fn restore_opts(a: &RestoreArgs, cli: &Cli) -> husk::checkpoint::RestoreOpts {
    husk::checkpoint::RestoreOpts {
        id: a.id.clone(),
        image_path: a.image_path.clone(),
        bundle: a.bundle.clone(),
        work_path: a.work_path.clone(),
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        tcp_established: a.tcp_established,
        ext_unix_sk: a.ext_unix_sk,
        shell_job: a.shell_job,
        file_locks: a.file_locks,
        manage_cgroups_mode: a.manage_cgroups_mode.clone(),
        no_pivot: a.no_pivot,
        empty_ns: a.empty_ns.clone(),
        criu: cli.criu.clone(),
        systemd_cgroup: cli.systemd_cgroup,
        console_socket: a.console_socket.clone(),
        lazy_pages: a.lazy_pages,
        auto_dedup: a.auto_dedup,
        no_subreaper: a.no_subreaper,
    }
}

/// Durations as runc takes them: "5s", "500ms", "1m", or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => anyhow::bail!("invalid duration {s:?}: unit must be ms, s, m or h"),
    };
    if secs <= 0.0 {
        anyhow::bail!("invalid duration {s:?}: must be positive");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn clone_args(a: &CreateArgs) -> CreateArgs {
    CreateArgs {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
    }
}

fn list(root: &Root, format: ListFormat, quiet: bool) -> anyhow::Result<()> {
    let mut states = Vec::new();
    for id in root.list()? {
        // A container deleted or still being created meanwhile is skipped.
        if let Ok(st) = container::state(root, &id) {
            states.push(st);
        }
    }
    if quiet {
        for s in &states {
            husk::emit!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            let v: Vec<_> = states.iter().map(|s| s.to_oci_json()).collect();
            husk::emit!("{}", serde_json::to_string(&v)?);
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = states
                .iter()
                .map(|s| {
                    let j = s.to_oci_json();
                    [
                        s.id.clone(),
                        j["pid"].to_string(),
                        j["status"].as_str().unwrap_or("").to_string(),
                        s.bundle.display().to_string(),
                        j["created"].as_str().unwrap_or("").to_string(),
                        s.owner.clone(),
                    ]
                })
                .collect();
            let head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut w = [0usize; 6];
            for r in std::iter::once(&head).chain(rows.iter()) {
                for (i, c) in r.iter().enumerate() {
                    w[i] = w[i].max(c.len());
                }
            }
            for r in std::iter::once(&head).chain(rows.iter()) {
                let line: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                    .collect();
                husk::emit!("{}", line.join("   ").trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, cli::Exit> {
        build_cli(args.iter().map(OsString::from).collect())
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Err(cli::Exit::Error(e)) => e,
            Err(cli::Exit::Print(p)) => panic!("{args:?}: printed {p}"),
            Ok(_) => panic!("{args:?}: parsed"),
        }
    }

    #[test]
    fn create_flags_in_every_form() {
        let c = parse(&[
            "--root",
            "/r",
            "create",
            "-b/b",
            "--pid-file=/p",
            "--console-socket",
            "/s",
            "--no-pivot",
            "--preserve-fds",
            "2",
            "id1",
            "--log-format=json",
            "--debug",
        ])
        .unwrap_or_else(|_| panic!("parse failed"));
        assert_eq!(c.root, Some(PathBuf::from("/r")));
        assert!(c.debug);
        assert!(matches!(c.log_format, LogFormat::Json));
        let Cmd::Create(a) = c.cmd else {
            panic!("not create")
        };
        assert_eq!(a.id, "id1");
        assert_eq!(a.bundle, PathBuf::from("/b"));
        assert_eq!(a.pid_file, Some(PathBuf::from("/p")));
        assert_eq!(a.console_socket, Some(PathBuf::from("/s")));
        assert!(a.no_pivot && !a.no_new_keyring);
        assert_eq!(a.preserve_fds, 2);
    }

    #[test]
    fn defaults() {
        let Ok(c) = parse(&["run", "x"]) else {
            panic!("parse failed")
        };
        assert!(matches!(c.log_format, LogFormat::Text));
        let Cmd::Run {
            create,
            detach,
            keep,
        } = c.cmd
        else {
            panic!("not run")
        };
        assert_eq!(create.bundle, PathBuf::from("."));
        assert_eq!(create.preserve_fds, 0);
        assert!(!detach && !keep);
        let Ok(c) = parse(&["kill", "x"]) else {
            panic!("parse failed")
        };
        assert!(matches!(c.cmd, Cmd::Kill { ref signal, all: false, .. } if signal == "SIGTERM"));
    }

    #[test]
    fn exec_trailing_command_keeps_its_dashes() {
        let Ok(c) = parse(&[
            "exec", "-t", "-e", "A=1", "--env", "B=2", "-g", "5", "x", "sh", "-c", "--env", "ls",
        ]) else {
            panic!("parse failed")
        };
        let Cmd::Exec(a) = c.cmd else {
            panic!("not exec")
        };
        assert!(a.tty);
        assert_eq!(a.env, ["A=1", "B=2"]);
        assert_eq!(a.additional_gids, [5]);
        assert_eq!(a.id, "x");
        assert_eq!(a.command, ["sh", "-c", "--env", "ls"]);
        let Ok(c) = parse(&["exec", "x", "--", "-weird", "--tty"]) else {
            panic!("parse failed")
        };
        let Cmd::Exec(a) = c.cmd else {
            panic!("not exec")
        };
        assert!(!a.tty);
        assert_eq!(a.command, ["-weird", "--tty"]);
    }

    #[test]
    fn ps_arguments_and_bundled_shorts() {
        let Ok(c) = parse(&["ps", "x", "-ef"]) else {
            panic!("parse failed")
        };
        assert!(
            matches!(c.cmd, Cmd::Ps { ref ps_args, format: ListFormat::Table, .. } if ps_args == &["-ef"])
        );
        let Ok(c) = parse(&["list", "-qfjson"]) else {
            panic!("parse failed")
        };
        assert!(matches!(
            c.cmd,
            Cmd::List {
                quiet: true,
                format: ListFormat::Json
            }
        ));
    }

    #[test]
    fn global_options_repeat_only_across_levels() {
        let Ok(c) = parse(&["--root", "/a", "state", "--root", "/b", "x"]) else {
            panic!("parse failed")
        };
        assert_eq!(c.root, Some(PathBuf::from("/b")));
        assert!(err(&["--root", "/a", "--root", "/b", "list"])
            .contains("cannot be used multiple times"));
        assert!(err(&["create", "-b", "/a", "--bundle", "/b", "x"])
            .contains("'--bundle <BUNDLE>' cannot be used multiple times"));
    }

    #[test]
    fn usage_errors() {
        assert!(err(&[]).contains("Usage: husk [OPTIONS] <COMMAND>"));
        assert!(err(&["create"])
            .contains("the following required arguments were not provided:\n  <ID>"));
        assert!(err(&["create", "a", "b"]).contains("unexpected argument 'b' found"));
        assert!(err(&["create", "--foo", "x"]).contains("unexpected argument '--foo' found"));
        assert!(err(&["create", "-x", "y"]).contains("unexpected argument '-x' found"));
        assert!(
            err(&["create", "--bundle"]).contains("a value is required for '--bundle <BUNDLE>'")
        );
        assert!(err(&["create", "--preserve-fds", "z", "x"])
            .contains("invalid value 'z' for '--preserve-fds <PRESERVE_FDS>'"));
        assert!(err(&["--log-format", "yaml", "list"]).contains("[possible values: text, json]"));
        assert!(err(&["list", "--debug=yes"]).contains("invalid value 'yes' for '--debug'"));
        assert!(err(&["nope"]).contains("unrecognized subcommand 'nope'"));
        assert!(err(&["start", "-V", "x"]).contains("unexpected argument '-V' found"));
    }

    #[test]
    fn help_and_version() {
        let print = |args: &[&str]| match parse(args) {
            Err(cli::Exit::Print(p)) => p,
            _ => panic!("{args:?}: no help"),
        };
        assert!(print(&["--version"]).starts_with(&format!(
            "husk version {}\ncommit: ",
            env!("CARGO_PKG_VERSION")
        )));
        assert_eq!(print(&["-V"]), print(&["--version"]));
        let top = print(&["--help"]);
        for c in cli::COMMANDS {
            assert!(top.contains(&format!("  {}", c.name)), "{top}");
        }
        assert!(!top.contains("--criu"), "hidden option shown: {top}");
        let create = print(&["create", "--help"]);
        assert!(create.starts_with("Create a container"), "{create}");
        assert!(create.contains("-b, --bundle <BUNDLE>"), "{create}");
        assert!(create.contains("[default: .]"), "{create}");
        assert!(create.contains("--root <ROOT>"), "{create}");
        assert_eq!(print(&["help", "create"]), create);
        assert_eq!(print(&["create", "-h"]), create);
        assert_eq!(print(&["help"]), top);
    }
}
