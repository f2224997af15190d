//! The command line: tables of options per command, the parser, help and usage errors.
//!
//! Every option's long name is written once, in `keys!` below: it makes the key type `K`, and
//! the command tables, the parser, help and the lookups in main.rs all go through a `K`. A
//! misspelled key does not compile; a key read for a command whose table lacks it panics in the
//! unit tests (they build every command), and an option a table declares but nothing reads fails
//! them too (`every_declared_option_is_read`).

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// Declares the option keys: `Key = "long-name"`, each once.
macro_rules! keys {
    ($($k:ident = $long:literal,)*) => {
        /// An option's key; its long name is `K::long`.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum K {
            $($k,)*
        }

        impl K {
            /// Every key, in declaration order.
            #[cfg(test)]
            pub const ALL: &'static [K] = &[$(K::$k,)*];

            /// The long name, without dashes.
            pub const fn long(self) -> &'static str {
                match self {
                    $(K::$k => $long,)*
                }
            }
        }
    };
}

keys! {
    AdditionalGids = "additional-gids",
    All = "all",
    Apparmor = "apparmor",
    AutoDedup = "auto-dedup",
    BlkioWeight = "blkio-weight",
    Bundle = "bundle",
    Cap = "cap",
    ConsoleSocket = "console-socket",
    CpuPeriod = "cpu-period",
    CpuQuota = "cpu-quota",
    CpuRtPeriod = "cpu-rt-period",
    CpuRtRuntime = "cpu-rt-runtime",
    CpuShare = "cpu-share",
    CpusetCpus = "cpuset-cpus",
    CpusetMems = "cpuset-mems",
    Criu = "criu",
    Cwd = "cwd",
    Debug = "debug",
    Detach = "detach",
    EmptyNs = "empty-ns",
    Env = "env",
    ExtUnixSk = "ext-unix-sk",
    FileLocks = "file-locks",
    Force = "force",
    Format = "format",
    IgnorePaused = "ignore-paused",
    ImagePath = "image-path",
    Interval = "interval",
    Keep = "keep",
    KernelMemory = "kernel-memory",
    KernelMemoryTcp = "kernel-memory-tcp",
    L3CacheSchema = "l3-cache-schema",
    LazyPages = "lazy-pages",
    LeaveRunning = "leave-running",
    Log = "log",
    LogFormat = "log-format",
    ManageCgroupsMode = "manage-cgroups-mode",
    MemBwSchema = "mem-bw-schema",
    Memory = "memory",
    MemoryReservation = "memory-reservation",
    MemorySwap = "memory-swap",
    NoNewKeyring = "no-new-keyring",
    NoNewPrivs = "no-new-privs",
    NoPivot = "no-pivot",
    NoSubreaper = "no-subreaper",
    PageServer = "page-server",
    ParentPath = "parent-path",
    PidFile = "pid-file",
    PidsLimit = "pids-limit",
    PreDump = "pre-dump",
    PreserveFds = "preserve-fds",
    Process = "process",
    ProcessLabel = "process-label",
    Quiet = "quiet",
    Resources = "resources",
    Root = "root",
    Rootless = "rootless",
    ShellJob = "shell-job",
    Stats = "stats",
    StatusFd = "status-fd",
    SystemdCgroup = "systemd-cgroup",
    TcpEstablished = "tcp-established",
    Tty = "tty",
    User = "user",
    WorkPath = "work-path",
}

/// One option: `--long`, maybe `-s`, maybe a value (named `value` in help).
pub struct Opt {
    pub key: K,
    /// Other long names that parse as this option (not shown in help).
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub default: Option<&'static str>,
    /// May be given several times (all values kept); otherwise a repeat is an error.
    pub multi: bool,
    pub hidden: bool,
    /// Accepted for runc compatibility and deliberately without effect (nothing reads it).
    pub no_effect: bool,
    /// Allowed values, when restricted.
    pub possible: &'static [&'static str],
}

impl Opt {
    pub const fn long(&self) -> &'static str {
        self.key.long()
    }

    fn is_named(&self, name: &[u8]) -> bool {
        self.long().as_bytes() == name || self.aliases.iter().any(|a| a.as_bytes() == name)
    }
}

const fn flag(key: K, short: Option<char>, help: &'static str) -> Opt {
    Opt {
        key,
        aliases: &[],
        short,
        value: None,
        help,
        default: None,
        multi: false,
        hidden: false,
        no_effect: false,
        possible: &[],
    }
}

const fn val(key: K, short: Option<char>, value: &'static str, help: &'static str) -> Opt {
    Opt {
        key,
        aliases: &[],
        short,
        value: Some(value),
        help,
        default: None,
        multi: false,
        hidden: false,
        no_effect: false,
        possible: &[],
    }
}

const fn alias(mut o: Opt, a: &'static [&'static str]) -> Opt {
    o.aliases = a;
    o
}

/// runc's options husk accepts and ignores (hidden from help).
const fn no_effect(mut o: Opt) -> Opt {
    o.no_effect = true;
    o.hidden = true;
    o
}

const fn with_default(mut o: Opt, d: &'static str) -> Opt {
    o.default = Some(d);
    o
}

const fn multi(mut o: Opt) -> Opt {
    o.multi = true;
    o
}

const fn one_of(mut o: Opt, p: &'static [&'static str]) -> Opt {
    o.possible = p;
    o
}

const fn hidden(mut o: Opt) -> Opt {
    o.hidden = true;
    o
}

/// A positional argument; `trailing` takes every remaining argument, dashes included.
pub struct Pos {
    pub name: &'static str,
    pub help: &'static str,
    pub required: bool,
    pub trailing: bool,
    pub default: Option<&'static str>,
}

const fn id() -> Pos {
    Pos {
        name: "ID",
        help: "Container ID",
        required: true,
        trailing: false,
        default: None,
    }
}

pub struct Command {
    pub name: &'static str,
    pub about: &'static str,
    pub opts: &'static [Opt],
    pub pos: &'static [Pos],
}

const FORMATS: &[&str] = &["table", "json"];

pub const GLOBAL: &[Opt] = &[
    val(
        K::Root,
        None,
        "ROOT",
        "Root directory for container state (default /run/husk; for a non-root user $XDG_RUNTIME_DIR/husk)",
    ),
    val(K::Log, None, "LOG", "Log file (default: stderr)"),
    one_of(
        with_default(val(K::LogFormat, None, "LOG_FORMAT", "Log format"), "text"),
        &["text", "json"],
    ),
    flag(K::Debug, None, "Debug logging"),
    flag(K::SystemdCgroup, None, "Use the systemd cgroup driver"),
    hidden(val(
        K::Criu,
        None,
        "CRIU",
        "Accepted for runc compatibility: path to criu",
    )),
    // runc: "ignore cgroup permission errors"; husk decides that by itself (rootless mode).
    no_effect(one_of(
        val(K::Rootless, None, "ROOTLESS", ""),
        &["true", "false", "auto"],
    )),
];

/// The options `create` and `run` share (runc's).
macro_rules! create_opts {
    ($($more:expr),* $(,)?) => {
        &[
            with_default(
                val(
                    K::Bundle,
                    Some('b'),
                    "BUNDLE",
                    "Path to the bundle directory",
                ),
                ".",
            ),
            val(
                K::ConsoleSocket,
                None,
                "CONSOLE_SOCKET",
                "Unix socket that receives the pty master when process.terminal is true",
            ),
            val(
                K::PidFile,
                None,
                "PID_FILE",
                "File to write the init's pid to",
            ),
            flag(
                K::NoPivot,
                None,
                "Use MS_MOVE + chroot instead of pivot_root",
            ),
            flag(
                K::NoNewKeyring,
                None,
                "Do not create a new session keyring",
            ),
            with_default(
                val(
                    K::PreserveFds,
                    None,
                    "PRESERVE_FDS",
                    "Pass this many extra fds (from 3 up) to the container",
                ),
                "0",
            ),
            $($more,)*
        ]
    };
}

const CREATE_OPTS: &[Opt] = create_opts!();

const RUN_OPTS: &[Opt] = create_opts!(
    flag(K::Detach, Some('d'), "Run in the background"),
    flag(K::Keep, None, "Do not delete the container after it exits"),
    // runc: do not become a subreaper. Accepted so runc's callers parse; husk's foreground
    // run stays a subreaper (husk::run), which only changes who reaps orphaned processes.
    no_effect(flag(K::NoSubreaper, None, "")),
);

const EXEC_OPTS: &[Opt] = &[
    val(
        K::Process,
        Some('p'),
        "PROCESS",
        "Path to a runtime-spec Process JSON file",
    ),
    flag(K::Tty, Some('t'), "Allocate a pseudo-TTY"),
    val(K::ConsoleSocket, None, "CONSOLE_SOCKET", ""),
    flag(K::Detach, Some('d'), "Do not wait for the process"),
    val(K::PidFile, None, "PID_FILE", ""),
    val(K::Cwd, None, "CWD", "Working directory in the container"),
    multi(val(
        K::Env,
        Some('e'),
        "ENV",
        "Set an environment variable (KEY=VALUE)",
    )),
    val(K::User, Some('u'), "USER", "UID[:GID] to run as"),
    multi(val(
        K::AdditionalGids,
        Some('g'),
        "ADDITIONAL_GIDS",
        "Additional gids",
    )),
    multi(val(K::Cap, Some('c'), "CAP", "Add a capability (CAP_...)")),
    flag(K::NoNewPrivs, None, ""),
    with_default(val(K::PreserveFds, None, "PRESERVE_FDS", ""), "0"),
    val(K::ProcessLabel, None, "PROCESS_LABEL", ""),
    val(K::Apparmor, None, "APPARMOR", ""),
    flag(K::IgnorePaused, None, "Allow exec in a paused container"),
];

const UPDATE_OPTS: &[Opt] = &[
    val(
        K::Resources,
        Some('r'),
        "RESOURCES",
        "runtime-spec LinuxResources JSON file, or - for stdin",
    ),
    val(K::Memory, None, "MEMORY", ""),
    val(K::MemoryReservation, None, "MEMORY_RESERVATION", ""),
    val(K::MemorySwap, None, "MEMORY_SWAP", ""),
    val(K::KernelMemory, None, "KERNEL_MEMORY", ""),
    val(K::KernelMemoryTcp, None, "KERNEL_MEMORY_TCP", ""),
    // runc's spelling is --cpu-share; --cpu-shares (the cgroup file's name) parses too.
    alias(
        val(
            K::CpuShare,
            None,
            "CPU_SHARE",
            "CPU shares (relative weight)",
        ),
        &["cpu-shares"],
    ),
    val(K::CpuQuota, None, "CPU_QUOTA", ""),
    val(K::CpuPeriod, None, "CPU_PERIOD", ""),
    val(K::CpuRtPeriod, None, "CPU_RT_PERIOD", ""),
    val(K::CpuRtRuntime, None, "CPU_RT_RUNTIME", ""),
    val(K::CpusetCpus, None, "CPUSET_CPUS", ""),
    val(K::CpusetMems, None, "CPUSET_MEMS", ""),
    val(K::PidsLimit, None, "PIDS_LIMIT", ""),
    val(K::BlkioWeight, None, "BLKIO_WEIGHT", ""),
    val(K::L3CacheSchema, None, "L3_CACHE_SCHEMA", ""),
    val(K::MemBwSchema, None, "MEM_BW_SCHEMA", ""),
];

const CHECKPOINT_OPTS: &[Opt] = &[
    with_default(
        val(
            K::ImagePath,
            None,
            "IMAGE_PATH",
            "Directory for the checkpoint images",
        ),
        "checkpoint",
    ),
    val(
        K::WorkPath,
        None,
        "WORK_PATH",
        "Directory for CRIU's log and work files (default: the image directory)",
    ),
    flag(
        K::LeaveRunning,
        None,
        "Leave the container running after the checkpoint",
    ),
    flag(K::TcpEstablished, None, "Allow open TCP connections"),
    flag(K::ExtUnixSk, None, "Allow external unix sockets"),
    flag(K::ShellJob, None, "Allow shell jobs"),
    flag(K::FileLocks, None, "Handle file locks"),
    flag(
        K::PreDump,
        None,
        "Dump memory only and leave the container running (needs dirty-memory tracking)",
    ),
    val(
        K::ParentPath,
        None,
        "PARENT_PATH",
        "Path of the previous (pre-dump) images, relative to the image path",
    ),
    val(
        K::ManageCgroupsMode,
        None,
        "MANAGE_CGROUPS_MODE",
        "How CRIU handles cgroups: soft, full, strict or ignore",
    ),
    multi(val(
        K::EmptyNs,
        None,
        "EMPTY_NS",
        "Namespace to leave empty in the image (network)",
    )),
    flag(
        K::AutoDedup,
        None,
        "Deduplicate memory images against the parent on the fly",
    ),
    flag(
        K::LazyPages,
        None,
        "Dump all but memory, then serve memory pages from --page-server to the destination's criu lazy-pages daemon",
    ),
    val(
        K::PageServer,
        None,
        "PAGE_SERVER",
        "ADDRESS:PORT of the page server (with --lazy-pages: where this side serves pages)",
    ),
    val(
        K::StatusFd,
        None,
        "STATUS_FD",
        "With --lazy-pages: fd CRIU writes a byte to once the page server is ready",
    ),
];

const RESTORE_OPTS: &[Opt] = &[
    with_default(
        val(
            K::ImagePath,
            None,
            "IMAGE_PATH",
            "Directory of the checkpoint images",
        ),
        "checkpoint",
    ),
    val(
        K::Bundle,
        Some('b'),
        "BUNDLE",
        "Bundle whose config.json and rootfs to use (default: the ones saved with the image)",
    ),
    val(K::WorkPath, None, "WORK_PATH", ""),
    flag(
        K::Detach,
        Some('d'),
        "Return once restored instead of waiting for the container to exit",
    ),
    val(K::PidFile, None, "PID_FILE", ""),
    flag(K::TcpEstablished, None, ""),
    flag(K::ExtUnixSk, None, ""),
    flag(K::ShellJob, None, ""),
    flag(K::FileLocks, None, ""),
    val(K::ManageCgroupsMode, None, "MANAGE_CGROUPS_MODE", ""),
    flag(K::NoPivot, None, ""),
    multi(val(K::EmptyNs, None, "EMPTY_NS", "")),
    val(
        K::ConsoleSocket,
        None,
        "CONSOLE_SOCKET",
        "Unix socket the restored terminal's new pty master is sent to",
    ),
    flag(
        K::LazyPages,
        None,
        "Fetch memory on demand from a criu lazy-pages daemon listening in the work directory",
    ),
    flag(
        K::AutoDedup,
        None,
        "Punch restored pages out of the image files",
    ),
    flag(
        K::NoSubreaper,
        None,
        "Without --detach: do not become a subreaper of the restored container",
    ),
];

const ONLY_ID: &[Pos] = &[id()];

pub const COMMANDS: &[Command] = &[
    Command {
        name: "checkpoint",
        about: "Checkpoint a running container with CRIU",
        opts: CHECKPOINT_OPTS,
        pos: ONLY_ID,
    },
    Command {
        name: "restore",
        about: "Restore a container from a CRIU checkpoint",
        opts: RESTORE_OPTS,
        pos: &[Pos {
            help: "ID of the restored container",
            ..id()
        }],
    },
    Command {
        name: "pause",
        about: "Freeze every process of a container",
        opts: &[],
        pos: ONLY_ID,
    },
    Command {
        name: "resume",
        about: "Thaw a paused container",
        opts: &[],
        pos: ONLY_ID,
    },
    Command {
        name: "ps",
        about: "List a container's processes",
        opts: &[one_of(
            with_default(val(K::Format, Some('f'), "FORMAT", ""), "table"),
            FORMATS,
        )],
        pos: &[
            id(),
            Pos {
                name: "PS_ARGS",
                help: "Arguments for ps(1) (default -ef)",
                required: false,
                trailing: true,
                default: None,
            },
        ],
    },
    Command {
        name: "update",
        about: "Change a running container's resource limits",
        opts: UPDATE_OPTS,
        pos: ONLY_ID,
    },
    Command {
        name: "events",
        about: "Stats and OOM events of a container",
        opts: &[
            flag(K::Stats, None, "Print one stats object and exit"),
            with_default(
                val(
                    K::Interval,
                    None,
                    "INTERVAL",
                    "Interval between stats in the stream (e.g. 5s, 500ms)",
                ),
                "5s",
            ),
        ],
        pos: ONLY_ID,
    },
    Command {
        name: "exec",
        about: "Run a new process in a running container",
        opts: EXEC_OPTS,
        pos: &[
            id(),
            Pos {
                name: "COMMAND",
                help: "Command and arguments",
                required: false,
                trailing: true,
                default: None,
            },
        ],
    },
    Command {
        name: "create",
        about: "Create a container (set up, waiting for start)",
        opts: CREATE_OPTS,
        pos: ONLY_ID,
    },
    Command {
        name: "start",
        about: "Start a created container",
        opts: &[],
        pos: ONLY_ID,
    },
    Command {
        name: "state",
        about: "Print a container's state JSON",
        opts: &[],
        pos: ONLY_ID,
    },
    Command {
        name: "kill",
        about: "Send a signal to a container's init (or all its processes)",
        opts: &[flag(K::All, Some('a'), "")],
        pos: &[
            id(),
            Pos {
                name: "SIGNAL",
                help: "",
                required: false,
                trailing: false,
                default: Some("SIGTERM"),
            },
        ],
    },
    Command {
        name: "delete",
        about: "Delete a container",
        opts: &[flag(K::Force, Some('f'), "")],
        pos: ONLY_ID,
    },
    Command {
        name: "run",
        about: "Create and start a container; in the foreground unless --detach",
        opts: RUN_OPTS,
        pos: ONLY_ID,
    },
    Command {
        name: "list",
        about: "List containers",
        opts: &[
            one_of(
                with_default(val(K::Format, Some('f'), "FORMAT", ""), "table"),
                FORMATS,
            ),
            flag(K::Quiet, Some('q'), ""),
        ],
        pos: &[],
    },
    Command {
        name: "features",
        about: "Print the runtime-spec features document",
        opts: &[],
        pos: &[],
    },
    Command {
        name: "spec",
        about: "Write a default config.json",
        opts: &[
            with_default(val(K::Bundle, Some('b'), "BUNDLE", ""), "."),
            flag(K::Rootless, None, ""),
        ],
        pos: &[],
    },
];

const NAME: &str = "husk";
const ABOUT: &str = "Husk: an OCI runtime (runtime-spec 1.2) with runc's command line";

/// Options given, in order, with their values (empty for flags).
pub type Values = Vec<(&'static Opt, OsString)>;

/// What the parser found: option values in order (per long name), positionals, the command.
pub struct Matches {
    pub cmd: &'static Command,
    pub vals: Values,
    pub pos: Vec<OsString>,
}

/// The end of parsing without a command to run: help or version text (stdout, exit 0) or a
/// usage error (stderr, exit 2).
pub enum Exit {
    Print(String),
    Error(String),
}

impl Exit {
    pub fn exit(self) -> ! {
        use std::io::Write;
        match self {
            Exit::Print(s) => {
                let _ = std::io::stdout().write_all(s.as_bytes());
                std::process::exit(0)
            }
            Exit::Error(s) => {
                let _ = std::io::stderr().write_all(s.as_bytes());
                std::process::exit(2)
            }
        }
    }
}

fn usage(cmd: Option<&Command>) -> String {
    match cmd {
        None => format!("Usage: {NAME} [OPTIONS] <COMMAND>"),
        Some(c) => {
            let mut s = format!("Usage: {NAME} {} [OPTIONS]", c.name);
            for p in c.pos {
                let _ = match (p.required, p.trailing) {
                    (true, _) => write!(s, " <{}>", p.name),
                    (false, true) => write!(s, " [{}]...", p.name),
                    (false, false) => write!(s, " [{}]", p.name),
                };
            }
            s
        }
    }
}

fn error(cmd: Option<&Command>, msg: &str) -> Exit {
    Exit::Error(format!(
        "error: {msg}\n\n{}\n\nFor more information, try '--help'.\n",
        usage(cmd)
    ))
}

fn display(o: &Opt) -> String {
    match o.value {
        Some(v) => format!("--{} <{v}>", o.long()),
        None => format!("--{}", o.long()),
    }
}

fn opt_rows(rows: &mut Vec<(String, String)>, opts: &[Opt]) {
    for o in opts.iter().filter(|o| !o.hidden) {
        let short = o.short.map_or("    ".to_string(), |c| format!("-{c}, "));
        let mut left = format!("{short}--{}", o.long());
        if let Some(v) = o.value {
            let _ = write!(left, " <{v}>");
        }
        let mut right = o.help.to_string();
        if let Some(d) = o.default {
            if !right.is_empty() {
                right.push(' ');
            }
            let _ = write!(right, "[default: {d}]");
        }
        if !o.possible.is_empty() {
            if !right.is_empty() {
                right.push(' ');
            }
            let _ = write!(right, "[possible values: {}]", o.possible.join(", "));
        }
        rows.push((left, right));
    }
}

fn table(s: &mut String, title: &str, rows: &[(String, String)]) {
    if rows.is_empty() {
        return;
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let _ = writeln!(s, "\n{title}:");
    for (l, r) in rows {
        let line = format!("  {l:<w$}  {r}");
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// clap-style help of the top level (`None`) or of a command.
pub fn help(cmd: Option<&Command>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", cmd.map_or(ABOUT, |c| c.about));
    let _ = writeln!(s, "{}", usage(cmd));
    match cmd {
        None => {
            let mut rows: Vec<(String, String)> = COMMANDS
                .iter()
                .map(|c| (c.name.to_string(), c.about.to_string()))
                .collect();
            rows.push((
                "help".into(),
                "Print this message or the help of the given subcommand(s)".into(),
            ));
            table(&mut s, "Commands", &rows);
            let mut opts = Vec::new();
            opt_rows(&mut opts, GLOBAL);
            opts.push(("-h, --help".into(), "Print help".into()));
            opts.push(("-V, -v, --version".into(), "Print version".into()));
            table(&mut s, "Options", &opts);
        }
        Some(c) => {
            let args: Vec<(String, String)> = c
                .pos
                .iter()
                .map(|p| {
                    let name = if p.trailing {
                        format!("[{}]...", p.name)
                    } else {
                        format!("<{}>", p.name)
                    };
                    let mut help = p.help.to_string();
                    if let Some(d) = p.default {
                        if !help.is_empty() {
                            help.push(' ');
                        }
                        let _ = write!(help, "[default: {d}]");
                    }
                    (name, help)
                })
                .collect();
            table(&mut s, "Arguments", &args);
            let mut opts = Vec::new();
            opt_rows(&mut opts, c.opts);
            opt_rows(&mut opts, GLOBAL);
            opts.push(("-h, --help".into(), "Print help".into()));
            table(&mut s, "Options", &opts);
        }
    }
    s
}

fn lossy(a: &OsStr) -> String {
    a.to_string_lossy().into_owned()
}

/// Go's strconv.ParseBool, which runc's flags use for `--flag=VALUE`.
fn go_bool(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"false" | b"FALSE" | b"False" => Some(false),
        _ => None,
    }
}

/// Parse `args` (without argv[0]).
///
/// Long options as clap and runc (urfave/cli over Go's flag package) spell them: `--opt value`,
/// `--opt=value`, and runc's single-dash `-opt value` / `-opt=value` (a word after one dash is a
/// long name when it is one, else bundled short options); a flag takes runc's `--flag=true` /
/// `--flag=false`.
pub fn parse(args: Vec<OsString>) -> Result<(Values, Matches), Exit> {
    // Global options given before the command, and after it: a repeat within one level is
    // an error, and the command's level wins (as clap propagates globals).
    let mut globals: Vec<(&'static Opt, OsString)> = Vec::new();
    let mut sub_globals: Vec<(&'static Opt, OsString)> = Vec::new();
    let mut cmd: Option<&'static Command> = None;
    let mut vals: Vec<(&'static Opt, OsString)> = Vec::new();
    let mut pos: Vec<OsString> = Vec::new();
    let mut only_pos = false;
    let mut trailing = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let b = arg.as_bytes();
        // The next positional takes every remaining argument, dashes included.
        let next_is_trailing = cmd.is_some_and(|c| {
            c.pos.get(pos.len()).is_some_and(|p| p.trailing)
                || (c.pos.last().is_some_and(|p| p.trailing) && pos.len() >= c.pos.len())
        });
        if trailing {
            pos.push(arg);
            continue;
        }
        if !only_pos && b == b"--" {
            only_pos = true;
            continue;
        }
        let lookup_long = |name: &[u8]| -> Option<(&'static Opt, bool)> {
            cmd.and_then(|c| c.opts.iter().find(|o| o.is_named(name)))
                .map(|o| (o, false))
                .or_else(|| GLOBAL.iter().find(|o| o.is_named(name)).map(|o| (o, true)))
        };
        let lookup_short = |ch: char| -> Option<(&'static Opt, bool)> {
            cmd.and_then(|c| c.opts.iter().find(|o| o.short == Some(ch)))
                .map(|o| (o, false))
                .or_else(|| {
                    GLOBAL
                        .iter()
                        .find(|o| o.short == Some(ch))
                        .map(|o| (o, true))
                })
        };
        // `--name[=value]`, or runc's `-name[=value]` when `name` is a long name.
        let long = if only_pos {
            None
        } else if let Some(body) = b.strip_prefix(b"--") {
            Some(body)
        } else if let Some(body) = b.strip_prefix(b"-") {
            let name = body.split(|&c| c == b'=').next().unwrap_or(body);
            let known = name.len() > 1
                && (name == b"help"
                    || (name == b"version" && cmd.is_none())
                    || lookup_long(name).is_some());
            known.then_some(body)
        } else {
            None
        };
        if let Some(body) = long {
            let (name, inline) = match body.iter().position(|&c| c == b'=') {
                Some(i) => (
                    &body[..i],
                    Some(OsStr::from_bytes(&body[i + 1..]).to_os_string()),
                ),
                None => (body, None),
            };
            if name == b"help" {
                return Err(Exit::Print(help(cmd)));
            }
            if name == b"version" && cmd.is_none() {
                return Err(Exit::Print(version()));
            }
            let Some((o, global)) = lookup_long(name) else {
                if next_is_trailing {
                    pos.push(arg);
                    trailing = true;
                    continue;
                }
                return Err(error(
                    cmd,
                    &format!("unexpected argument '{}' found", lossy(&arg)),
                ));
            };
            let v = match (o.value, inline) {
                (None, None) => OsString::new(),
                (None, Some(v)) => match go_bool(v.as_bytes()) {
                    Some(true) => OsString::new(),
                    Some(false) => continue,
                    None => {
                        return Err(error(
                            cmd,
                            &format!(
                                "invalid value '{}' for '--{}': a flag takes true or false",
                                lossy(&v),
                                o.long()
                            ),
                        ))
                    }
                },
                (Some(_), Some(v)) => v,
                (Some(_), None) => it.next().ok_or_else(|| no_value(cmd, o))?,
            };
            let into = match (global, cmd) {
                (false, _) => &mut vals,
                (true, None) => &mut globals,
                (true, Some(_)) => &mut sub_globals,
            };
            push(into, o, v, cmd)?;
            continue;
        }
        if !only_pos && b.len() > 1 && b[0] == b'-' {
            let s = lossy(&arg);
            for (i, ch) in s[1..].char_indices() {
                if ch == 'h' {
                    return Err(Exit::Print(help(cmd)));
                }
                // -V as clap, -v as runc.
                if (ch == 'V' || ch == 'v') && cmd.is_none() {
                    return Err(Exit::Print(version()));
                }
                let Some((o, global)) = lookup_short(ch) else {
                    if next_is_trailing && i == 0 {
                        pos.push(arg.clone());
                        trailing = true;
                        break;
                    }
                    return Err(error(cmd, &format!("unexpected argument '-{ch}' found")));
                };
                let into = match (global, cmd) {
                    (false, _) => &mut vals,
                    (true, None) => &mut globals,
                    (true, Some(_)) => &mut sub_globals,
                };
                if o.value.is_none() {
                    push(into, o, OsString::new(), cmd)?;
                    continue;
                }
                // The rest of the word is the value (`-bDIR`, `-b=DIR`), else the next one.
                let rest = &b[1 + i + ch.len_utf8()..];
                let rest = rest.strip_prefix(b"=").unwrap_or(rest);
                let v = if rest.is_empty() {
                    it.next().ok_or_else(|| no_value(cmd, o))?
                } else {
                    OsStr::from_bytes(rest).to_os_string()
                };
                push(into, o, v, cmd)?;
                break;
            }
            continue;
        }
        match cmd {
            None if b == b"help" => {
                return Err(match it.next() {
                    None => Exit::Print(help(None)),
                    Some(n) => match COMMANDS.iter().find(|c| c.name.as_bytes() == n.as_bytes()) {
                        Some(c) => Exit::Print(help(Some(c))),
                        None => error(None, &format!("unrecognized subcommand '{}'", lossy(&n))),
                    },
                });
            }
            None => match COMMANDS.iter().find(|c| c.name.as_bytes() == b) {
                Some(c) => cmd = Some(c),
                None => {
                    return Err(error(
                        None,
                        &format!("unrecognized subcommand '{}'", lossy(&arg)),
                    ))
                }
            },
            Some(c) => {
                if pos.len() >= c.pos.len() && !next_is_trailing {
                    return Err(error(
                        cmd,
                        &format!("unexpected argument '{}' found", lossy(&arg)),
                    ));
                }
                trailing = next_is_trailing;
                pos.push(arg);
            }
        }
    }
    let Some(cmd) = cmd else {
        // As clap: without a command, the help goes to stderr and the exit status is 2.
        return Err(Exit::Error(help(None)));
    };
    let missing: Vec<String> = cmd
        .pos
        .iter()
        .enumerate()
        .filter(|(i, p)| p.required && *i >= pos.len())
        .map(|(_, p)| format!("  <{}>", p.name))
        .collect();
    if !missing.is_empty() {
        return Err(error(
            Some(cmd),
            &format!(
                "the following required arguments were not provided:\n{}",
                missing.join("\n")
            ),
        ));
    }
    globals.extend(sub_globals);
    Ok((globals, Matches { cmd, vals, pos }))
}

/// `--version` in `runc --version`'s shape, which podman and containerd show to users (and from
/// which docker takes the line with "version" in it and the `commit:` line): the version, the
/// commit built from (build.rs), the runtime-spec version implemented, the compiler (runc: `go:`)
/// and the seccomp implementation (runc: `libseccomp:`).
fn version() -> String {
    format!(
        "{NAME} version {}\ncommit: {}\nspec: {}\nrust: {}\nseccomp: built-in BPF compiler (no libseccomp)\n",
        env!("CARGO_PKG_VERSION"),
        env!("HUSK_GIT_COMMIT"),
        husk::spec::OCI_VERSION,
        env!("HUSK_RUSTC_VERSION"),
    )
}

fn no_value(cmd: Option<&Command>, o: &Opt) -> Exit {
    error(
        cmd,
        &format!(
            "a value is required for '{}' but none was supplied",
            display(o)
        ),
    )
}

fn push(
    into: &mut Vec<(&'static Opt, OsString)>,
    o: &'static Opt,
    v: OsString,
    cmd: Option<&Command>,
) -> Result<(), Exit> {
    if !o.multi && into.iter().any(|(x, _)| std::ptr::eq(*x, o)) {
        return Err(error(
            cmd,
            &format!(
                "the argument '{}' cannot be used multiple times",
                display(o)
            ),
        ));
    }
    if !o.possible.is_empty() && !o.possible.iter().any(|p| p.as_bytes() == v.as_bytes()) {
        return Err(error(
            cmd,
            &format!(
                "invalid value '{}' for '{}'\n  [possible values: {}]",
                lossy(&v),
                display(o),
                o.possible.join(", ")
            ),
        ));
    }
    into.push((o, v));
    Ok(())
}

/// Typed access to what was parsed; conversion errors are usage errors.
pub struct Get<'a> {
    pub cmd: Option<&'static Command>,
    pub vals: &'a [(&'static Opt, OsString)],
    pub pos: &'a [OsString],
}

#[cfg(test)]
thread_local! {
    /// The keys read through `Get`, per command (None: the globals), for the tests.
    pub static READ: std::cell::RefCell<Vec<(Option<&'static str>, K)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Get<'_> {
    /// The table this `Get` reads: the command's options, or the globals.
    fn table(&self) -> &'static [Opt] {
        self.cmd.map_or(GLOBAL, |c| c.opts)
    }
    /// The declaration of `key` at this level. Reading a key the level does not declare is a
    /// bug in main.rs, not a usage error: the unit tests build every command and hit it.
    fn decl(&self, key: K) -> &'static Opt {
        #[cfg(test)]
        READ.with(|r| r.borrow_mut().push((self.cmd.map(|c| c.name), key)));
        match self.table().iter().find(|o| o.key == key) {
            Some(o) => o,
            None => panic!(
                "option --{} is read but not declared for {}",
                key.long(),
                self.cmd.map_or("the global options", |c| c.name)
            ),
        }
    }
    fn opt(&self, key: K) -> Option<&OsString> {
        self.decl(key);
        self.vals
            .iter()
            .rev()
            .find(|(o, _)| o.key == key)
            .map(|(_, v)| v)
    }
    pub fn flag(&self, key: K) -> bool {
        self.opt(key).is_some()
    }
    pub fn os(&self, key: K) -> Option<OsString> {
        self.opt(key)
            .cloned()
            .or_else(|| self.decl(key).default.map(OsString::from))
    }
    pub fn path(&self, key: K) -> Option<std::path::PathBuf> {
        self.os(key).map(Into::into)
    }
    fn utf8(&self, key: K, v: OsString) -> Result<String, Exit> {
        v.into_string().map_err(|v| {
            error(
                self.cmd,
                &format!(
                    "invalid UTF-8 was detected in the value of '--{}': {}",
                    key.long(),
                    lossy(&v)
                ),
            )
        })
    }
    pub fn string(&self, key: K) -> Result<Option<String>, Exit> {
        self.os(key).map(|v| self.utf8(key, v)).transpose()
    }
    pub fn strings(&self, key: K) -> Result<Vec<String>, Exit> {
        self.decl(key);
        self.vals
            .iter()
            .filter(|(o, _)| o.key == key)
            .map(|(_, v)| self.utf8(key, v.clone()))
            .collect()
    }
    fn parse_num<T: std::str::FromStr>(&self, key: K, s: &str) -> Result<T, Exit>
    where
        T::Err: std::fmt::Display,
    {
        s.parse::<T>().map_err(|e| {
            let name = display(self.decl(key));
            error(self.cmd, &format!("invalid value '{s}' for '{name}': {e}"))
        })
    }
    pub fn num<T: std::str::FromStr>(&self, key: K) -> Result<Option<T>, Exit>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => self.parse_num(key, &s).map(Some),
        }
    }
    pub fn nums<T: std::str::FromStr>(&self, key: K) -> Result<Vec<T>, Exit>
    where
        T::Err: std::fmt::Display,
    {
        self.strings(key)?
            .iter()
            .map(|s| self.parse_num(key, s))
            .collect()
    }
    /// Positional `i` as a string (its default when absent).
    pub fn pos(&self, i: usize) -> Result<String, Exit> {
        let cmd = self.cmd;
        match self.pos.get(i) {
            Some(v) => v.clone().into_string().map_err(|v| {
                error(
                    cmd,
                    &format!("invalid UTF-8 was detected in argument '{}'", lossy(&v)),
                )
            }),
            None => Ok(cmd
                .and_then(|c| c.pos.get(i))
                .and_then(|p| p.default)
                .unwrap_or("")
                .to_string()),
        }
    }
    /// Positionals from `i` on (a trailing argument).
    pub fn rest(&self, i: usize) -> Result<Vec<String>, Exit> {
        (i..self.pos.len()).map(|k| self.pos(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    /// Minimal arguments that make `cmd` parse: its required positionals.
    fn required(cmd: &Command) -> Vec<&'static str> {
        cmd.pos
            .iter()
            .filter(|p| p.required)
            .map(|_| "shape-id")
            .collect()
    }

    #[test]
    fn every_key_is_declared_once_per_level_and_somewhere() {
        let levels =
            std::iter::once(("global", GLOBAL)).chain(COMMANDS.iter().map(|c| (c.name, c.opts)));
        let mut seen = Vec::new();
        for (name, opts) in levels {
            for (i, o) in opts.iter().enumerate() {
                assert!(
                    !opts[..i].iter().any(|p| p.key == o.key
                        || p.is_named(o.long().as_bytes())
                        || o.aliases.iter().any(|a| p.is_named(a.as_bytes()))
                        || (o.short.is_some() && p.short == o.short)),
                    "{name}: --{} declared twice",
                    o.long()
                );
                seen.push(o.key);
            }
        }
        for k in K::ALL {
            assert!(seen.contains(k), "--{} is in no table", k.long());
        }
    }

    /// Every option a table declares is read when that command is built (nothing parsed and
    /// then silently dropped), except those marked `no_effect`; reading an undeclared one panics.
    #[test]
    fn every_declared_option_is_read() {
        for c in COMMANDS {
            READ.with(|r| r.borrow_mut().clear());
            let mut a = vec![c.name];
            a.extend(required(c));
            assert!(crate::build_cli(argv(&a)).is_ok(), "{a:?}");
            let read = READ.with(|r| r.borrow().clone());
            for (level, opts) in [(Some(c.name), c.opts), (None, GLOBAL)] {
                for o in opts.iter().filter(|o| !o.no_effect) {
                    assert!(
                        read.contains(&(level, o.key)),
                        "{}: --{} (level {level:?}) is parsed but never read",
                        c.name,
                        o.long()
                    );
                }
            }
        }
    }

    /// runc 1.1's options (`runc CMD --help`, the runc-CMD(8) manpages) as containerd (go-runc),
    /// CRI-O, podman/conmon and runc's own integration tests pass them: command ("" = global),
    /// long name, short name, a value (None: a flag).
    const RUNC: &[(&str, &str, Option<char>, Option<&str>)] = &[
        ("", "root", None, Some("/run/shape")),
        ("", "log", None, Some("/tmp/shape.log")),
        ("", "log-format", None, Some("json")),
        ("", "debug", None, None),
        ("", "systemd-cgroup", None, None),
        ("", "criu", None, Some("/usr/sbin/criu")),
        ("", "rootless", None, Some("auto")),
        ("create", "bundle", Some('b'), Some("/b")),
        ("create", "console-socket", None, Some("/s.sock")),
        ("create", "pid-file", None, Some("/p")),
        ("create", "no-pivot", None, None),
        ("create", "no-new-keyring", None, None),
        ("create", "preserve-fds", None, Some("2")),
        ("run", "bundle", Some('b'), Some("/b")),
        ("run", "console-socket", None, Some("/s.sock")),
        ("run", "pid-file", None, Some("/p")),
        ("run", "no-pivot", None, None),
        ("run", "no-new-keyring", None, None),
        ("run", "preserve-fds", None, Some("2")),
        ("run", "detach", Some('d'), None),
        ("run", "keep", None, None),
        ("run", "no-subreaper", None, None),
        ("exec", "process", Some('p'), Some("/proc.json")),
        ("exec", "tty", Some('t'), None),
        ("exec", "detach", Some('d'), None),
        ("exec", "pid-file", None, Some("/p")),
        ("exec", "console-socket", None, Some("/s.sock")),
        ("exec", "cwd", None, Some("/w")),
        ("exec", "env", Some('e'), Some("A=1")),
        ("exec", "user", Some('u'), Some("1:2")),
        ("exec", "cap", Some('c'), Some("CAP_CHOWN")),
        ("exec", "additional-gids", Some('g'), Some("7")),
        ("exec", "no-new-privs", None, None),
        ("exec", "preserve-fds", None, Some("1")),
        (
            "exec",
            "process-label",
            None,
            Some("system_u:system_r:t:s0"),
        ),
        ("exec", "apparmor", None, Some("unconfined")),
        ("exec", "ignore-paused", None, None),
        ("kill", "all", Some('a'), None),
        ("delete", "force", Some('f'), None),
        ("checkpoint", "image-path", None, Some("/img")),
        ("checkpoint", "work-path", None, Some("/work")),
        ("checkpoint", "parent-path", None, Some("../pre")),
        ("checkpoint", "leave-running", None, None),
        ("checkpoint", "tcp-established", None, None),
        ("checkpoint", "ext-unix-sk", None, None),
        ("checkpoint", "shell-job", None, None),
        ("checkpoint", "lazy-pages", None, None),
        ("checkpoint", "status-fd", None, Some("3")),
        ("checkpoint", "page-server", None, Some("127.0.0.1:27")),
        ("checkpoint", "file-locks", None, None),
        ("checkpoint", "pre-dump", None, None),
        ("checkpoint", "manage-cgroups-mode", None, Some("soft")),
        ("checkpoint", "empty-ns", None, Some("network")),
        ("checkpoint", "auto-dedup", None, None),
        ("restore", "console-socket", None, Some("/s.sock")),
        ("restore", "image-path", None, Some("/img")),
        ("restore", "work-path", None, Some("/work")),
        ("restore", "tcp-established", None, None),
        ("restore", "ext-unix-sk", None, None),
        ("restore", "shell-job", None, None),
        ("restore", "file-locks", None, None),
        ("restore", "manage-cgroups-mode", None, Some("full")),
        ("restore", "bundle", Some('b'), Some("/b")),
        ("restore", "detach", Some('d'), None),
        ("restore", "pid-file", None, Some("/p")),
        ("restore", "no-subreaper", None, None),
        ("restore", "no-pivot", None, None),
        ("restore", "empty-ns", None, Some("network")),
        ("restore", "auto-dedup", None, None),
        ("restore", "lazy-pages", None, None),
        ("events", "interval", None, Some("1s")),
        ("events", "stats", None, None),
        ("ps", "format", Some('f'), Some("json")),
        ("list", "format", Some('f'), Some("json")),
        ("list", "quiet", Some('q'), None),
        ("update", "resources", Some('r'), Some("-")),
        ("update", "blkio-weight", None, Some("500")),
        ("update", "cpu-period", None, Some("100000")),
        ("update", "cpu-quota", None, Some("50000")),
        ("update", "cpu-share", None, Some("200")),
        ("update", "cpu-shares", None, Some("200")),
        ("update", "cpu-rt-period", None, Some("1000000")),
        ("update", "cpu-rt-runtime", None, Some("1000")),
        ("update", "cpuset-cpus", None, Some("0")),
        ("update", "cpuset-mems", None, Some("0")),
        ("update", "memory", None, Some("1048576")),
        ("update", "memory-reservation", None, Some("1048576")),
        ("update", "memory-swap", None, Some("-1")),
        ("update", "pids-limit", None, Some("10")),
        ("update", "l3-cache-schema", None, Some("L3:0=f")),
        ("update", "mem-bw-schema", None, Some("MB:0=70")),
        ("spec", "bundle", Some('b'), Some("/b")),
        ("spec", "rootless", None, None),
    ];

    /// Every way a client may write the option: clap's and runc's (Go's flag package).
    fn spellings(long: &str, short: Option<char>, value: Option<&str>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for dash in ["--", "-"] {
            match value {
                Some(v) => {
                    out.push(vec![format!("{dash}{long}"), v.to_string()]);
                    out.push(vec![format!("{dash}{long}={v}")]);
                }
                None => {
                    out.push(vec![format!("{dash}{long}")]);
                    out.push(vec![format!("{dash}{long}=true")]);
                }
            }
        }
        if let Some(s) = short {
            match value {
                Some(v) => {
                    out.push(vec![format!("-{s}"), v.to_string()]);
                    out.push(vec![format!("-{s}={v}")]);
                }
                None => out.push(vec![format!("-{s}")]),
            }
        }
        out
    }

    #[test]
    fn every_runc_spelling_parses_into_its_option() {
        for &(cmd, long, short, value) in RUNC {
            for words in spellings(long, short, value) {
                // Globals before the command (as clients put them) and after it.
                let command = if cmd.is_empty() { "list" } else { cmd };
                let c = COMMANDS.iter().find(|c| c.name == command);
                let c = c.unwrap_or_else(|| panic!("no command {command}"));
                let mut forms = Vec::new();
                if cmd.is_empty() {
                    let mut before: Vec<String> = words.clone();
                    before.push(command.into());
                    forms.push(before);
                }
                let mut after = vec![command.to_string()];
                after.extend(words.iter().cloned());
                forms.push(after);
                for mut a in forms {
                    a.extend(required(c).iter().map(|s| s.to_string()));
                    let (globals, m) =
                        match parse(argv(&a.iter().map(String::as_str).collect::<Vec<_>>())) {
                            Ok(r) => r,
                            Err(Exit::Error(e) | Exit::Print(e)) => panic!("{a:?}: {e}"),
                        };
                    let vals = if cmd.is_empty() { &globals } else { &m.vals };
                    let found = vals.iter().find(|(o, _)| o.is_named(long.as_bytes()));
                    let Some((_, v)) = found else {
                        panic!(
                            "{a:?}: --{long} not found in {:?}",
                            vals.iter().map(|(o, _)| o.long()).collect::<Vec<_>>()
                        );
                    };
                    assert_eq!(v.to_str(), Some(value.unwrap_or("")), "{a:?}");
                    let built =
                        crate::build_cli(argv(&a.iter().map(String::as_str).collect::<Vec<_>>()));
                    assert!(built.is_ok(), "{a:?} parses but does not build");
                }
            }
        }
    }

    #[test]
    fn runc_flag_false_and_version_spellings() {
        let parsed = |a: &[&str]| match parse(argv(a)) {
            Ok((g, m)) => (g.len(), m.vals.len()),
            Err(_) => panic!("{a:?}"),
        };
        assert_eq!(
            parsed(&["--debug=false", "delete", "--force=false", "x"]),
            (0, 0)
        );
        assert_eq!(parsed(&["-debug=0", "delete", "-force=F", "x"]), (0, 0));
        for v in ["-v", "-V", "--version", "-version"] {
            assert!(
                matches!(parse(argv(&[v])), Err(Exit::Print(ref p)) if p.starts_with("husk version")),
                "{v}"
            );
        }
        // A word after one dash that is no long name is still bundled shorts or a short's value.
        let Ok((_, m)) = parse(argv(&["list", "-qfjson"])) else {
            panic!("-qfjson")
        };
        assert_eq!(m.vals.len(), 2);
        assert!(matches!(
            parse(argv(&["list", "-qformat"])),
            Err(Exit::Error(_))
        ));
    }

    /// runc 1.1 options husk does not implement: a clear usage error, never silently ignored.
    #[test]
    fn unimplemented_runc_options_fail_loudly() {
        for a in [
            &["exec", "--cgroup", "sub", "x", "true"][..],
            &["restore", "--lsm-profile", "apparmor:p", "x"],
            &["restore", "--lsm-mount-context", "ctx", "x"],
        ] {
            match parse(argv(a)) {
                Err(Exit::Error(e)) => assert!(e.contains("unexpected argument"), "{a:?}: {e}"),
                _ => panic!("{a:?} parsed"),
            }
        }
    }
}
