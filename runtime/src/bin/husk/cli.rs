//! The command line: tables of options per command, the parser, help and usage errors.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// One option: `--long`, maybe `-s`, maybe a value (named `value` in help).
pub struct Opt {
    pub long: &'static str,
    pub short: Option<char>,
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub default: Option<&'static str>,
    /// May be given several times (all values kept); otherwise a repeat is an error.
    pub multi: bool,
    pub hidden: bool,
    /// Allowed values, when restricted.
    pub possible: &'static [&'static str],
}

const fn flag(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt {
        long,
        short,
        value: None,
        help,
        default: None,
        multi: false,
        hidden: false,
        possible: &[],
    }
}

const fn val(
    long: &'static str,
    short: Option<char>,
    value: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        long,
        short,
        value: Some(value),
        help,
        default: None,
        multi: false,
        hidden: false,
        possible: &[],
    }
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
        "root",
        None,
        "ROOT",
        "Root directory for container state (default /run/husk; for a non-root user $XDG_RUNTIME_DIR/husk)",
    ),
    val("log", None, "LOG", "Log file (default: stderr)"),
    one_of(
        with_default(val("log-format", None, "LOG_FORMAT", "Log format"), "text"),
        &["text", "json"],
    ),
    flag("debug", None, "Debug logging"),
    flag("systemd-cgroup", None, "Use the systemd cgroup driver"),
    hidden(val(
        "criu",
        None,
        "CRIU",
        "Accepted for runc compatibility: path to criu",
    )),
];

/// The options `create` and `run` share (runc's).
macro_rules! create_opts {
    ($($more:expr),* $(,)?) => {
        &[
            with_default(
                val(
                    "bundle",
                    Some('b'),
                    "BUNDLE",
                    "Path to the bundle directory",
                ),
                ".",
            ),
            val(
                "console-socket",
                None,
                "CONSOLE_SOCKET",
                "Unix socket that receives the pty master when process.terminal is true",
            ),
            val(
                "pid-file",
                None,
                "PID_FILE",
                "File to write the init's pid to",
            ),
            flag(
                "no-pivot",
                None,
                "Use MS_MOVE + chroot instead of pivot_root",
            ),
            flag(
                "no-new-keyring",
                None,
                "Do not create a new session keyring",
            ),
            with_default(
                val(
                    "preserve-fds",
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
    flag("detach", Some('d'), "Run in the background"),
    flag("keep", None, "Do not delete the container after it exits"),
);

const EXEC_OPTS: &[Opt] = &[
    val(
        "process",
        Some('p'),
        "PROCESS",
        "Path to a runtime-spec Process JSON file",
    ),
    flag("tty", Some('t'), "Allocate a pseudo-TTY"),
    val("console-socket", None, "CONSOLE_SOCKET", ""),
    flag("detach", Some('d'), "Do not wait for the process"),
    val("pid-file", None, "PID_FILE", ""),
    val("cwd", None, "CWD", "Working directory in the container"),
    multi(val(
        "env",
        Some('e'),
        "ENV",
        "Set an environment variable (KEY=VALUE)",
    )),
    val("user", Some('u'), "USER", "UID[:GID] to run as"),
    multi(val(
        "additional-gids",
        Some('g'),
        "ADDITIONAL_GIDS",
        "Additional gids",
    )),
    multi(val("cap", Some('c'), "CAP", "Add a capability (CAP_...)")),
    flag("no-new-privs", None, ""),
    with_default(val("preserve-fds", None, "PRESERVE_FDS", ""), "0"),
    val("process-label", None, "PROCESS_LABEL", ""),
    val("apparmor", None, "APPARMOR", ""),
    flag("ignore-paused", None, "Allow exec in a paused container"),
];

const UPDATE_OPTS: &[Opt] = &[
    val(
        "resources",
        Some('r'),
        "RESOURCES",
        "runtime-spec LinuxResources JSON file, or - for stdin",
    ),
    val("memory", None, "MEMORY", ""),
    val("memory-reservation", None, "MEMORY_RESERVATION", ""),
    val("memory-swap", None, "MEMORY_SWAP", ""),
    val("kernel-memory", None, "KERNEL_MEMORY", ""),
    val("kernel-memory-tcp", None, "KERNEL_MEMORY_TCP", ""),
    val("cpu-shares", None, "CPU_SHARES", ""),
    val("cpu-quota", None, "CPU_QUOTA", ""),
    val("cpu-period", None, "CPU_PERIOD", ""),
    val("cpu-rt-period", None, "CPU_RT_PERIOD", ""),
    val("cpu-rt-runtime", None, "CPU_RT_RUNTIME", ""),
    val("cpuset-cpus", None, "CPUSET_CPUS", ""),
    val("cpuset-mems", None, "CPUSET_MEMS", ""),
    val("pids-limit", None, "PIDS_LIMIT", ""),
    val("blkio-weight", None, "BLKIO_WEIGHT", ""),
    val("l3-cache-schema", None, "L3_CACHE_SCHEMA", ""),
    val("mem-bw-schema", None, "MEM_BW_SCHEMA", ""),
];

const CHECKPOINT_OPTS: &[Opt] = &[
    with_default(
        val(
            "image-path",
            None,
            "IMAGE_PATH",
            "Directory for the checkpoint images",
        ),
        "checkpoint",
    ),
    val(
        "work-path",
        None,
        "WORK_PATH",
        "Directory for CRIU's log and work files (default: the image directory)",
    ),
    flag(
        "leave-running",
        None,
        "Leave the container running after the checkpoint",
    ),
    flag("tcp-established", None, "Allow open TCP connections"),
    flag("ext-unix-sk", None, "Allow external unix sockets"),
    flag("shell-job", None, "Allow shell jobs"),
    flag("file-locks", None, "Handle file locks"),
    flag(
        "pre-dump",
        None,
        "Dump memory only and leave the container running (needs dirty-memory tracking)",
    ),
    val(
        "parent-path",
        None,
        "PARENT_PATH",
        "Path of the previous (pre-dump) images, relative to the image path",
    ),
    val(
        "manage-cgroups-mode",
        None,
        "MANAGE_CGROUPS_MODE",
        "How CRIU handles cgroups: soft, full, strict or ignore",
    ),
    multi(val(
        "empty-ns",
        None,
        "EMPTY_NS",
        "Namespace to leave empty in the image (network)",
    )),
    flag(
        "auto-dedup",
        None,
        "Deduplicate memory images against the parent on the fly",
    ),
    flag(
        "lazy-pages",
        None,
        "Dump all but memory, then serve memory pages from --page-server to the destination's criu lazy-pages daemon",
    ),
    val(
        "page-server",
        None,
        "PAGE_SERVER",
        "ADDRESS:PORT of the page server (with --lazy-pages: where this side serves pages)",
    ),
    val(
        "status-fd",
        None,
        "STATUS_FD",
        "With --lazy-pages: fd CRIU writes a byte to once the page server is ready",
    ),
];

const RESTORE_OPTS: &[Opt] = &[
    with_default(
        val(
            "image-path",
            None,
            "IMAGE_PATH",
            "Directory of the checkpoint images",
        ),
        "checkpoint",
    ),
    val(
        "bundle",
        Some('b'),
        "BUNDLE",
        "Bundle whose config.json and rootfs to use (default: the ones saved with the image)",
    ),
    val("work-path", None, "WORK_PATH", ""),
    flag(
        "detach",
        Some('d'),
        "Return once restored instead of waiting for the container to exit",
    ),
    val("pid-file", None, "PID_FILE", ""),
    flag("tcp-established", None, ""),
    flag("ext-unix-sk", None, ""),
    flag("shell-job", None, ""),
    flag("file-locks", None, ""),
    val("manage-cgroups-mode", None, "MANAGE_CGROUPS_MODE", ""),
    flag("no-pivot", None, ""),
    multi(val("empty-ns", None, "EMPTY_NS", "")),
    val(
        "console-socket",
        None,
        "CONSOLE_SOCKET",
        "Unix socket the restored terminal's new pty master is sent to",
    ),
    flag(
        "lazy-pages",
        None,
        "Fetch memory on demand from a criu lazy-pages daemon listening in the work directory",
    ),
    flag(
        "auto-dedup",
        None,
        "Punch restored pages out of the image files",
    ),
    flag(
        "no-subreaper",
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
            with_default(val("format", Some('f'), "FORMAT", ""), "table"),
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
            flag("stats", None, "Print one stats object and exit"),
            with_default(
                val(
                    "interval",
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
        opts: &[flag("all", Some('a'), "")],
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
        opts: &[flag("force", Some('f'), "")],
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
                with_default(val("format", Some('f'), "FORMAT", ""), "table"),
                FORMATS,
            ),
            flag("quiet", Some('q'), ""),
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
            with_default(val("bundle", Some('b'), "BUNDLE", ""), "."),
            flag("rootless", None, ""),
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
        Some(v) => format!("--{} <{v}>", o.long),
        None => format!("--{}", o.long),
    }
}

fn opt_rows(rows: &mut Vec<(String, String)>, opts: &[Opt]) {
    for o in opts.iter().filter(|o| !o.hidden) {
        let short = o.short.map_or("    ".to_string(), |c| format!("-{c}, "));
        let mut left = format!("{short}--{}", o.long);
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
            opts.push(("-V, --version".into(), "Print version".into()));
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

/// Parse `args` (without argv[0]).
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
            cmd.and_then(|c| c.opts.iter().find(|o| o.long.as_bytes() == name))
                .map(|o| (o, false))
                .or_else(|| {
                    GLOBAL
                        .iter()
                        .find(|o| o.long.as_bytes() == name)
                        .map(|o| (o, true))
                })
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
        if !only_pos && b.starts_with(b"--") {
            let body = &b[2..];
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
                (None, Some(v)) => {
                    return Err(error(
                        cmd,
                        &format!(
                            "unexpected value '{}' for '--{}' found; no more were expected",
                            lossy(&v),
                            o.long
                        ),
                    ))
                }
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
                if ch == 'V' && cmd.is_none() {
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

impl Get<'_> {
    fn opt(&self, long: &str) -> Option<(&'static Opt, &OsString)> {
        self.vals
            .iter()
            .rev()
            .find(|(o, _)| o.long == long)
            .map(|(o, v)| (*o, v))
    }
    fn default_of(&self, long: &str) -> Option<&'static str> {
        self.cmd
            .map_or(GLOBAL, |c| c.opts)
            .iter()
            .chain(GLOBAL)
            .find(|o| o.long == long)
            .and_then(|o| o.default)
    }
    pub fn flag(&self, long: &str) -> bool {
        self.opt(long).is_some()
    }
    pub fn os(&self, long: &str) -> Option<OsString> {
        self.opt(long)
            .map(|(_, v)| v.clone())
            .or_else(|| self.default_of(long).map(OsString::from))
    }
    pub fn path(&self, long: &str) -> Option<std::path::PathBuf> {
        self.os(long).map(Into::into)
    }
    pub fn string(&self, long: &str) -> Result<Option<String>, Exit> {
        match self.os(long) {
            None => Ok(None),
            Some(v) => v.into_string().map(Some).map_err(|v| {
                error(
                    self.cmd,
                    &format!(
                        "invalid UTF-8 was detected in the value of '--{long}': {}",
                        lossy(&v)
                    ),
                )
            }),
        }
    }
    pub fn strings(&self, long: &str) -> Result<Vec<String>, Exit> {
        self.vals
            .iter()
            .filter(|(o, _)| o.long == long)
            .map(|(_, v)| {
                v.clone().into_string().map_err(|v| {
                    error(
                        self.cmd,
                        &format!(
                            "invalid UTF-8 was detected in the value of '--{long}': {}",
                            lossy(&v)
                        ),
                    )
                })
            })
            .collect()
    }
    fn parse_num<T: std::str::FromStr>(&self, long: &str, s: &str) -> Result<T, Exit>
    where
        T::Err: std::fmt::Display,
    {
        s.parse::<T>().map_err(|e| {
            let o = self
                .cmd
                .map_or(GLOBAL, |c| c.opts)
                .iter()
                .find(|o| o.long == long);
            let name = o.map_or(format!("--{long}"), display);
            error(self.cmd, &format!("invalid value '{s}' for '{name}': {e}"))
        })
    }
    pub fn num<T: std::str::FromStr>(&self, long: &str) -> Result<Option<T>, Exit>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(long)? {
            None => Ok(None),
            Some(s) => self.parse_num(long, &s).map(Some),
        }
    }
    pub fn nums<T: std::str::FromStr>(&self, long: &str) -> Result<Vec<T>, Exit>
    where
        T::Err: std::fmt::Display,
    {
        self.strings(long)?
            .iter()
            .map(|s| self.parse_num(long, s))
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
