//! Logging set-up: text or runc-compatible JSON lines (`{"level":"error","msg":...,"time":...}`,
//! which containerd's runc client parses), to a file (--log) or stderr.
use std::io::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
}

#[derive(Default)]
struct Msg {
    msg: String,
    fields: Vec<(String, String)>,
}

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl<S: Subscriber> Layer<S> for Sink {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.max {
            return;
        }
        let mut m = Msg::default();
        event.record(&mut m);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let level = if level == "warn" {
            "warning".to_string()
        } else {
            level
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let line = match self.format {
            Format::Json => {
                let mut v = serde_json::json!({"level": level, "msg": m.msg, "time": time});
                for (k, val) in m.fields {
                    v[k] = serde_json::Value::String(val);
                }
                format!("{v}\n")
            }
            Format::Text => {
                let mut s = format!("time={time:?} level={level} msg={:?}", m.msg);
                for (k, val) in m.fields {
                    s.push_str(&format!(" {k}={val:?}"));
                }
                s.push('\n');
                s
            }
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
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
    };
    let _ = tracing_subscriber::registry().with(sink).try_init();
    Ok(fd)
}
