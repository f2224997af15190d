//! `husk`: the command line (runc's), a thin layer over the `husk` library.
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use husk::container::{self, CreateOpts};
use husk::state::Root;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "husk",
    version,
    about = "Husk: an OCI runtime (runtime-spec 1.2) with runc's command line"
)]
struct Cli {
    /// Root directory for container state (default /run/husk; for a non-root user
    /// $XDG_RUNTIME_DIR/husk).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Use the systemd cgroup driver.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility: path to criu.
    #[arg(long, global = true, hide = true)]
    criu: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Container ID.
    id: String,
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass this many extra fds (from 3 up) to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// Path to a runtime-spec Process JSON file.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Do not wait for the process.
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Add a capability (CAP_...).
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long)]
    no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    #[arg(long)]
    process_label: Option<String>,
    #[arg(long)]
    apparmor: Option<String>,
    /// Allow exec in a paused container.
    #[arg(long)]
    ignore_paused: bool,
    /// Container ID.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct UpdateArgs {
    id: String,
    /// runtime-spec LinuxResources JSON file, or - for stdin.
    #[arg(short, long)]
    resources: Option<String>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    memory_reservation: Option<String>,
    #[arg(long)]
    memory_swap: Option<String>,
    #[arg(long)]
    kernel_memory: Option<String>,
    #[arg(long)]
    kernel_memory_tcp: Option<String>,
    #[arg(long)]
    cpu_shares: Option<u64>,
    #[arg(long)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpu_period: Option<u64>,
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    #[arg(long)]
    blkio_weight: Option<u16>,
    #[arg(long)]
    l3_cache_schema: Option<String>,
    #[arg(long)]
    mem_bw_schema: Option<String>,
}

/// `checkpoint` flags (runc's).
#[derive(clap::Args, Debug)]
struct CheckpointArgs {
    /// Container ID.
    id: String,
    /// Directory for the checkpoint images.
    #[arg(long, default_value = "checkpoint")]
    image_path: PathBuf,
    /// Directory for CRIU's log and work files (default: the image directory).
    #[arg(long)]
    work_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint.
    #[arg(long)]
    leave_running: bool,
    /// Allow open TCP connections.
    #[arg(long)]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long)]
    ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long)]
    shell_job: bool,
    /// Handle file locks.
    #[arg(long)]
    file_locks: bool,
    /// Dump memory only and leave the container running (needs dirty-memory tracking).
    #[arg(long)]
    pre_dump: bool,
    /// Path of the previous (pre-dump) images, relative to the image path.
    #[arg(long)]
    parent_path: Option<PathBuf>,
    /// How CRIU handles cgroups: soft, full, strict or ignore.
    #[arg(long)]
    manage_cgroups_mode: Option<String>,
    /// Namespace to leave empty in the image (network).
    #[arg(long)]
    empty_ns: Vec<String>,
    /// Deduplicate memory images against the parent on the fly.
    #[arg(long)]
    auto_dedup: bool,
}

/// `restore` flags (runc's).
#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// ID of the restored container.
    id: String,
    /// Directory of the checkpoint images.
    #[arg(long, default_value = "checkpoint")]
    image_path: PathBuf,
    /// Bundle whose config.json and rootfs to use (default: the ones saved with the image).
    #[arg(short, long)]
    bundle: Option<PathBuf>,
    #[arg(long)]
    work_path: Option<PathBuf>,
    /// Return once restored instead of waiting for the container to exit.
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    tcp_established: bool,
    #[arg(long)]
    ext_unix_sk: bool,
    #[arg(long)]
    shell_job: bool,
    #[arg(long)]
    file_locks: bool,
    #[arg(long)]
    manage_cgroups_mode: Option<String>,
    #[arg(long)]
    no_pivot: bool,
    #[arg(long)]
    empty_ns: Vec<String>,
    /// Unix socket the restored terminal's new pty master is sent to.
    #[arg(long)]
    console_socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a running container with CRIU.
    Checkpoint(CheckpointArgs),
    /// Restore a container from a CRIU checkpoint.
    Restore(RestoreArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List a container's processes.
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Stats and OOM events of a container.
    Events {
        id: String,
        /// Print one stats object and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats in the stream (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// Create a container (set up, waiting for start).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print a container's state JSON.
    State { id: String },
    /// Send a signal to a container's init (or all its processes).
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container.
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Create and start a container; in the foreground unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Do not delete the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the runtime-spec features document.
    Features,
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
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
    let cli = Cli::parse();
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
                anyhow::bail!("update: kernel memory limits (--kernel-memory, --kernel-memory-tcp) are not supported by this kernel");
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
