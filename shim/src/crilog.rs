//! The CRI container log (`crilog:///ABS/PATH`): the shim writes a container's stdout and
//! stderr into one file in the format kubelet reads (cri-api "RFC3339Nano-timestamp stream P|F
//! line", one record per line):
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F the line
//! 2016-10-06T00:17:09.669794202Z stderr P the first 16 KiB of a longer line
//! ```
//!
//! As containerd's CRI logger (`redirectLogs`) does: `F` closes a line that ended in `\n` (a
//! `\r\n` ending is dropped as well), a line longer than [`MAX_LINE`] is cut into `P` records of
//! [`MAX_LINE`] bytes and its rest, and what is left without a newline at EOF is written as `P`.
//! In addition, a partial line held for [`STALL_FLUSH`] is written out as `P` (a prompt or a
//! progress line shows up in the log without waiting for its newline; kubelet joins `P`
//! records with the rest of the line that follows).
//!
//! Every record is written by one `write` to a file opened `O_APPEND`, so the records of the
//! two streams (and of several processes logging to the same file) never interleave inside a
//! line. The data goes from the container's pipes to the file in the shim's main loop; it does
//! not pass through the CRI server.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The URI scheme of a CRI log given as stdout/stderr of a task.
pub const SCHEME: &str = "crilog://";

/// Longest line content in one record (kubelet's and containerd's default, 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// A partial line held this long is written out as a `P` record.
pub const STALL_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CriLogError {
    #[error("crilog URI {uri:?}: the path must be absolute (crilog:///ABS/PATH)")]
    NotAbsolute { uri: String },
    #[error("open CRI log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("crilog URI {uri:?}: {what:?} is not a known setting (max-size=BYTES)")]
    Query { uri: String, what: String },
}

/// Which stream a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// Where a `crilog://` URI writes: `crilog:///ABS/PATH[?max-size=BYTES]`. With a max size
/// the shim rotates the file itself once it grows past it (renamed to `PATH.1`, replacing the
/// one before): for a log nobody rotates (husk-cri's `output.log` of a container without a
/// log path, which attach reads). A `?` in the path is written `%3F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub max_size: Option<u64>,
}

/// The target of a `crilog://` URI, or None for another kind of stdio.
pub fn parse_uri(uri: &str) -> Option<Result<Target, CriLogError>> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (raw_path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = crate::uri::percent_decode(raw_path);
    if !path.starts_with('/') {
        return Some(Err(CriLogError::NotAbsolute {
            uri: uri.to_string(),
        }));
    }
    let mut max_size = None;
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        match kv.split_once('=') {
            Some(("max-size", v)) => match v.parse::<u64>() {
                Ok(n) if n > 0 => max_size = Some(n),
                _ => {
                    return Some(Err(CriLogError::Query {
                        uri: uri.to_string(),
                        what: kv.to_string(),
                    }))
                }
            },
            _ => {
                return Some(Err(CriLogError::Query {
                    uri: uri.to_string(),
                    what: kv.to_string(),
                }))
            }
        }
    }
    Some(Ok(Target {
        path: PathBuf::from(path),
        max_size,
    }))
}

/// The log file of one process (shared by its stdout and stderr); reopened on request.
pub struct CriLog {
    path: PathBuf,
    max_size: Option<u64>,
    /// The open file and how many bytes it holds.
    file: Mutex<(File, u64)>,
}

fn open(path: &Path) -> Result<File, CriLogError> {
    // As containerd: O_APPEND|O_CREATE, mode 0640, and the directory must exist (kubelet
    // creates the pod's log directory).
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| CriLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn size_of(f: &File) -> u64 {
    f.metadata().map(|m| m.len()).unwrap_or(0)
}

impl CriLog {
    pub fn open(target: Target) -> Result<CriLog, CriLogError> {
        let file = open(&target.path)?;
        let size = size_of(&file);
        Ok(CriLog {
            path: target.path,
            max_size: target.max_size,
            file: Mutex::new((file, size)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (kubelet renamed the file to rotate it): later records go to the
    /// new file. On error the old file stays in use.
    pub fn reopen(&self) -> Result<(), CriLogError> {
        let file = open(&self.path)?;
        let size = size_of(&file);
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = (file, size);
        Ok(())
    }

    /// Appends whole records (each ends in `\n`); past the max size, rotates first.
    fn write(&self, records: &[u8]) {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(max) = self.max_size {
            if g.1 > 0 && g.1 + records.len() as u64 > max {
                let mut old = self.path.clone().into_os_string();
                old.push(".1");
                match std::fs::rename(&self.path, &old).map_err(|source| CriLogError::Open {
                    path: PathBuf::from(&old),
                    source,
                }) {
                    Ok(()) => match open(&self.path) {
                        Ok(f) => *g = (f, 0),
                        Err(e) => tracing::warn!("rotate CRI log: {e}"),
                    },
                    Err(e) => tracing::warn!("rotate CRI log: {e}"),
                }
            }
        }
        match (&g.0).write_all(records) {
            Ok(()) => g.1 += records.len() as u64,
            // As containerd: the output is still drained (the container must not block).
            Err(e) => tracing::warn!("write CRI log {}: {e}", self.path.display()),
        }
    }
}

/// Formats `t` as Go's `time.RFC3339Nano` does in UTC: `2006-01-02T15:04:05.999999999Z`
/// (trailing zeros of the fraction dropped, and the dot with them when it is zero).
pub fn rfc3339_nano(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut nanos = d.subsec_nanos();
    if nanos != 0 {
        let mut digits = 9;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{nanos:0digits$}");
    }
    out.push(b'Z');
}

/// Turns one stream's bytes into CRI log records (the line splitting, without I/O).
pub struct LineSplitter {
    stream: Stream,
    max: usize,
    /// The start of a line not ended yet (at most `max` bytes, plus a `\r` that may be the
    /// start of a `\r\n` ending).
    pending: Vec<u8>,
    /// Since when `pending` holds a partial line.
    since: Option<Instant>,
}

impl LineSplitter {
    pub fn new(stream: Stream, max: usize) -> LineSplitter {
        LineSplitter {
            stream,
            max: max.max(1),
            pending: Vec::new(),
            since: None,
        }
    }

    fn record(&self, now: SystemTime, tag: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
        rfc3339_nano(now, out);
        out.push(b' ');
        out.extend_from_slice(self.stream.tag());
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        for p in parts {
            out.extend_from_slice(p);
        }
        out.push(b'\n');
    }

    /// Writes the first `max` bytes of `pending` as a `P` record and keeps the rest (at most
    /// the `\r` held back after a full record).
    fn cut(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let n = self.pending.len().min(self.max);
        self.record(now, b'P', &[&self.pending[..n]], out);
        self.pending.drain(..n);
    }

    /// Appends to `out` the records completed by `data` (read at `now`).
    pub fn feed(&mut self, data: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        let mut rest = data;
        while !rest.is_empty() {
            // Content that still fits in this record; a newline may follow it.
            let room = self.max.saturating_sub(self.pending.len());
            let scan = rest.len().min(room + 1);
            if let Some(i) = rest[..scan].iter().position(|&b| b == b'\n') {
                // A full line: pending + rest[..i], without its \r\n or \n.
                let mut line = &rest[..i];
                let mut pend: &[u8] = &self.pending;
                if line.is_empty() {
                    if pend.last() == Some(&b'\r') {
                        pend = &pend[..pend.len() - 1];
                    }
                } else if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                self.record(now, b'F', &[pend, line], out);
                self.pending.clear();
                rest = &rest[i + 1..];
                continue;
            }
            if self.pending.len() > self.max {
                // A full record and a \r that turned out not to start \r\n.
                self.cut(now, out);
                continue;
            }
            let take = rest.len().min(room);
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.max && !rest.is_empty() {
                match rest {
                    // Maybe the \r of a \r\n: the next read decides.
                    [b'\r'] => {
                        self.pending.push(b'\r');
                        rest = &[];
                    }
                    [b'\r', b'\n', ..] => {
                        self.record(now, b'F', &[&self.pending], out);
                        self.pending.clear();
                        rest = &rest[2..];
                    }
                    _ => self.cut(now, out),
                }
            }
        }
        if self.pending.is_empty() {
            self.since = None;
            if self.pending.capacity() > 4096 {
                self.pending = Vec::new();
            }
        } else if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Writes what is left of an unterminated line as `P` (EOF, or a stall).
    pub fn flush(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        if self.pending.len() > self.max {
            self.cut(now, out);
        }
        if !self.pending.is_empty() {
            self.record(now, b'P', &[&self.pending], out);
        }
        self.pending = Vec::new();
        self.since = None;
    }

    /// When the partial line held now is due to be flushed.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + STALL_FLUSH)
    }
}

/// One stream of a process going to its CRI log (driven by the main loop).
pub struct CriSink {
    pub log: std::sync::Arc<CriLog>,
    pub lines: LineSplitter,
}

impl CriSink {
    pub fn new(log: std::sync::Arc<CriLog>, stream: Stream) -> CriSink {
        CriSink {
            log,
            lines: LineSplitter::new(stream, MAX_LINE),
        }
    }

    /// Logs the complete lines in `data`.
    pub fn feed(&mut self, data: &[u8]) {
        let mut out = Vec::new();
        self.lines.feed(data, SystemTime::now(), &mut out);
        if !out.is_empty() {
            self.log.write(&out);
        }
    }

    /// Logs the partial line held (EOF or stall).
    pub fn flush(&mut self) {
        let mut out = Vec::new();
        self.lines.flush(SystemTime::now(), &mut out);
        if !out.is_empty() {
            self.log.write(&out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn ts(t: SystemTime) -> String {
        let mut v = Vec::new();
        rfc3339_nano(t, &mut v);
        String::from_utf8(v).expect("ascii")
    }

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        assert_eq!(
            ts(at(1475713029, 669794202)),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(ts(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(ts(at(951782400, 500_000_000)), "2000-02-29T00:00:00.5Z");
        assert_eq!(ts(at(4107542399, 120)), "2100-02-28T23:59:59.00000012Z");
        assert_eq!(
            ts(at(1704067199, 999_999_999)),
            "2023-12-31T23:59:59.999999999Z"
        );
    }

    /// Feeds `chunks` one by one, then EOF; returns the records without timestamps.
    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(Stream::Stderr, max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, at(1, 0), &mut out);
        }
        s.flush(at(1, 0), &mut out);
        let text = String::from_utf8(out).expect("utf8");
        text.split_terminator('\n')
            .map(|l| {
                l.strip_prefix("1970-01-01T00:00:01Z ")
                    .unwrap_or_else(|| panic!("timestamp of {l:?}"))
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn full_lines_and_empty_lines() {
        assert_eq!(
            split(16, &[b"a\n\nbc\r\n"]),
            ["stderr F a", "stderr F ", "stderr F bc"]
        );
    }

    #[test]
    fn lines_across_reads() {
        assert_eq!(
            split(16, &[b"hel", b"lo\nwor", b"ld\r", b"\n"]),
            ["stderr F hello", "stderr F world"]
        );
    }

    #[test]
    fn unterminated_last_line_is_partial_at_eof() {
        assert_eq!(split(16, &[b"one\ntwo"]), ["stderr F one", "stderr P two"]);
        assert!(split(16, &[b""]).is_empty());
    }

    #[test]
    fn long_lines_are_cut_at_max() {
        // exactly max: one F record; max+1: P of max then F of the rest
        assert_eq!(split(4, &[b"abcd\n"]), ["stderr F abcd"]);
        assert_eq!(split(4, &[b"abcde\n"]), ["stderr P abcd", "stderr F e"]);
        assert_eq!(
            split(4, &[b"ab", b"cdefghij", b"k\n"]),
            ["stderr P abcd", "stderr P efgh", "stderr F ijk"]
        );
        // a \r\n right after a full record ends it
        assert_eq!(
            split(4, &[b"abcd\r", b"\nx\n"]),
            ["stderr F abcd", "stderr F x"]
        );
        assert_eq!(split(4, &[b"abcd\r\n"]), ["stderr F abcd"]);
        // a lone \r is content
        assert_eq!(split(4, &[b"abcd\rx\n"]), ["stderr P abcd", "stderr F \rx"]);
        assert_eq!(
            split(4, &[b"abcd\r", b"x\n"]),
            ["stderr P abcd", "stderr F \rx"]
        );
        assert_eq!(
            split(4, &[b"abcd\r", b"\r\n"]),
            ["stderr P abcd", "stderr F \r"]
        );
        assert_eq!(split(4, &[b"abcd\r"]), ["stderr P abcd", "stderr P \r"]);
    }

    #[test]
    fn a_16k_line_in_many_reads() {
        let line = vec![b'x'; MAX_LINE * 2 + 10];
        let mut chunks: Vec<&[u8]> = line.chunks(1000).collect();
        chunks.push(b"\n");
        let recs = split(MAX_LINE, &chunks);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].len(), "stderr P ".len() + MAX_LINE);
        assert!(recs[0].starts_with("stderr P x"));
        assert_eq!(recs[1].len(), "stderr P ".len() + MAX_LINE);
        assert_eq!(recs[2], format!("stderr F {}", "x".repeat(10)));
    }

    #[test]
    fn stall_deadline_set_only_while_partial() {
        let mut s = LineSplitter::new(Stream::Stdout, 16);
        let mut out = Vec::new();
        s.feed(b"done\n", at(1, 0), &mut out);
        assert!(s.deadline().is_none());
        s.feed(b"prompt> ", at(1, 0), &mut out);
        assert!(s.deadline().is_some());
        out.clear();
        s.flush(at(2, 0), &mut out);
        assert_eq!(out, b"1970-01-01T00:00:02Z stdout P prompt> \n");
        assert!(s.deadline().is_none());
    }

    #[test]
    fn crilog_uris() {
        assert!(parse_uri("/run/fifo").is_none());
        assert!(parse_uri("file:///x").is_none());
        let p = parse_uri("crilog:///var/log/pods/a%20b/c/0.log")
            .expect("crilog")
            .expect("absolute");
        assert_eq!(
            p,
            Target {
                path: PathBuf::from("/var/log/pods/a b/c/0.log"),
                max_size: None
            }
        );
        assert!(matches!(
            parse_uri("crilog://rel/0.log"),
            Some(Err(CriLogError::NotAbsolute { .. }))
        ));
        let p = parse_uri("crilog:///run/x/output%3F.log?max-size=4096")
            .expect("crilog")
            .expect("valid");
        assert_eq!(
            p,
            Target {
                path: PathBuf::from("/run/x/output?.log"),
                max_size: Some(4096)
            }
        );
        for bad in [
            "crilog:///x?max-size=0",
            "crilog:///x?max-size=lots",
            "crilog:///x?size=1",
        ] {
            assert!(
                matches!(parse_uri(bad), Some(Err(CriLogError::Query { .. }))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_max_size_rotates_to_dot_1() {
        let dir = std::env::temp_dir().join(format!("husk-crilog-max-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("output.log");
        let log = std::sync::Arc::new(
            CriLog::open(Target {
                path: path.clone(),
                max_size: Some(200),
            })
            .expect("open"),
        );
        let mut out = CriSink::new(log.clone(), Stream::Stdout);
        for i in 0..40 {
            out.feed(format!("line {i:02}\n").as_bytes());
        }
        let cur = std::fs::read_to_string(&path).expect("current");
        let old = std::fs::read_to_string(dir.join("output.log.1")).expect("rotated");
        let files = std::fs::read_dir(&dir).expect("ls").count();
        let _ = std::fs::remove_dir_all(&dir);
        // Whole records only, each file within the bound, the newest line last, two files.
        assert!(
            cur.len() <= 200 && old.len() <= 200,
            "{} {}",
            cur.len(),
            old.len()
        );
        assert!(cur.ends_with(" stdout F line 39\n"), "{cur:?}");
        assert!(old
            .lines()
            .chain(cur.lines())
            .all(|l| l.contains(" stdout F line ")));
        let last_old: u32 = old
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .parse()
            .expect("n");
        let first_cur: u32 = cur
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("")
            .parse()
            .expect("n");
        assert_eq!(
            last_old + 1,
            first_cur,
            "no record lost between the two files"
        );
        assert_eq!(files, 2);
    }

    #[test]
    fn reopen_creates_a_new_file_with_0640() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("husk-crilog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("0.log");
        let target = |path: &Path| Target {
            path: path.to_path_buf(),
            max_size: None,
        };
        let log = std::sync::Arc::new(CriLog::open(target(&path)).expect("open"));
        let mut out = CriSink::new(log.clone(), Stream::Stdout);
        out.feed(b"before\n");
        std::fs::rename(&path, dir.join("0.log.1")).expect("rename");
        log.reopen().expect("reopen");
        out.feed(b"after\n");
        let old = std::fs::read_to_string(dir.join("0.log.1")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        // A missing directory is an error naming the path (no mkdir, as containerd).
        let missing = dir.join("nodir/0.log");
        let err = CriLog::open(target(&missing)).err().expect("missing dir");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(old.ends_with(" stdout F before\n"), "{old:?}");
        assert!(new.ends_with(" stdout F after\n"), "{new:?}");
        assert!(!new.contains("before"));
        assert_eq!(mode & !0o022, 0o640 & !0o022, "mode {mode:o}");
        assert!(err.to_string().contains(&missing.display().to_string()));
    }
}
