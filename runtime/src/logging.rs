//! Logging set-up: text or runc-compatible JSON lines (`{"level":"error","msg":...,"time":...}`,
//! which containerd's runc client parses), to a file (--log) or stderr.
//!
//! A small `tracing` subscriber of our own (no span registry: husk logs events only), so that
//! nothing is allocated or formatted for a level that is off: its `max_level_hint` makes every
//! disabled `tracing::debug!` a static comparison.
//!
//! With `--debug`, [`phase`] timings are logged as `"phase done"` events carrying `phase` and
//! `elapsed_us` (a JSON number) fields; the container's init logs its own phases (prefixed
//! `init:`) to the same file or stderr, which it keeps open until exec.
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Whether debug logging is on (set by [`init`]): phases take timestamps only then.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// True when `--debug` logging is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// A timed phase of the runtime's work. With debug logging on, dropping it (or [`Phase::done`])
/// logs `phase done` with `phase=<name>` and `elapsed_us=<microseconds>`; otherwise it costs
/// one relaxed load and takes no timestamp.
#[must_use = "a phase is timed until it is dropped"]
pub struct Phase {
    name: &'static str,
    start: Option<Instant>,
}

/// Start timing `name` (logged at debug level when the phase ends).
pub fn phase(name: &'static str) -> Phase {
    Phase {
        name,
        start: debug_enabled().then(Instant::now),
    }
}

impl Phase {
    /// End the phase now.
    pub fn done(self) {}
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            let us = t.elapsed().as_micros() as u64;
            tracing::debug!(phase = self.name, elapsed_us = us, "phase done");
        }
    }
}

enum Value {
    Str(String),
    Num(String),
}

#[derive(Default)]
struct Msg {
    msg: String,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let s = format!("{value:?}");
        if field.name() == "message" {
            self.msg = s;
        } else {
            self.fields.push((field.name(), Value::Str(s)));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.fields
                .push((field.name(), Value::Str(value.to_string())));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name(), Value::Num(value.to_string())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name(), Value::Num(value.to_string())));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .push((field.name(), Value::Num(value.to_string())));
    }
}

/// A JSON string literal (quotes and escapes included), written by serde_json.
fn json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(j) => out.push_str(&j),
        // serializing a &str cannot fail; keep the line valid JSON regardless
        Err(_) => out.push_str("\"\""),
    }
}

struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
    next_span: AtomicU64,
}

impl Sink {
    fn line(&self, level: &Level, m: Msg) -> String {
        let level = match *level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut s = String::with_capacity(128);
        match self.format {
            Format::Json => {
                s.push_str("{\"level\":\"");
                s.push_str(level);
                s.push_str("\",\"msg\":");
                json_str(&mut s, &m.msg);
                s.push_str(",\"time\":\"");
                s.push_str(&time);
                s.push('"');
                for (k, v) in m.fields {
                    s.push(',');
                    json_str(&mut s, k);
                    s.push(':');
                    match v {
                        Value::Str(v) => json_str(&mut s, &v),
                        Value::Num(v) => s.push_str(&v),
                    }
                }
                s.push_str("}\n");
            }
            Format::Text => {
                s.push_str("time=\"");
                s.push_str(&time);
                s.push_str("\" level=");
                s.push_str(level);
                s.push_str(" msg=");
                s.push_str(&format!("{:?}", m.msg));
                for (k, v) in m.fields {
                    s.push(' ');
                    s.push_str(k);
                    s.push('=');
                    match v {
                        Value::Str(v) => s.push_str(&format!("{v:?}")),
                        Value::Num(v) => s.push_str(&v),
                    }
                }
                s.push('\n');
            }
        }
        s
    }
}

impl Subscriber for Sink {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }
    // Spans are not used for output (husk logs events); they only need distinct non-zero ids.
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let level = event.metadata().level();
        if *level > self.max {
            return;
        }
        let mut m = Msg::default();
        event.record(&mut m);
        let line = self.line(level, m);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

/// Install the global subscriber. Returns the raw fd of the log file (kept open in the init until
/// exec), if any.
pub fn init(
    log: Option<&std::path::Path>,
    format: Format,
    debug: bool,
) -> std::io::Result<Option<i32>> {
    let (out, fd): (Box<dyn Write + Send>, Option<i32>) = match log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            (Box::new(f), Some(fd))
        }
        None => (Box::new(std::io::stderr()), None),
    };
    let max = if debug { Level::DEBUG } else { Level::WARN };
    let sink = Sink {
        out: Mutex::new(out),
        format,
        max,
        next_span: AtomicU64::new(1),
    };
    if tracing::subscriber::set_global_default(sink).is_ok() {
        DEBUG.store(debug, Ordering::Relaxed);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_and_keep_numbers() {
        let sink = Sink {
            out: Mutex::new(Box::new(std::io::sink())),
            format: Format::Json,
            max: Level::DEBUG,
            next_span: AtomicU64::new(1),
        };
        let m = Msg {
            msg: "a \"b\"\n\u{1}".into(),
            fields: vec![
                ("phase", Value::Str("init: mounts".into())),
                ("elapsed_us", Value::Num("42".into())),
            ],
        };
        let line = sink.line(&Level::WARN, m);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["msg"], "a \"b\"\n\u{1}");
        assert_eq!(v["phase"], "init: mounts");
        assert_eq!(v["elapsed_us"], 42);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_quote_strings() {
        let sink = Sink {
            out: Mutex::new(Box::new(std::io::sink())),
            format: Format::Text,
            max: Level::DEBUG,
            next_span: AtomicU64::new(1),
        };
        let m = Msg {
            msg: "hello world".into(),
            fields: vec![
                ("dir", Value::Str("/a b".into())),
                ("n", Value::Num("3".into())),
            ],
        };
        let line = sink.line(&Level::DEBUG, m);
        assert!(line.starts_with("time=\""), "{line}");
        assert!(
            line.ends_with(" level=debug msg=\"hello world\" dir=\"/a b\" n=3\n"),
            "{line}"
        );
    }
}
