//! A small `tracing` subscriber writing one line per event to containerd's `log` FIFO (logrus
//! text format: `time=... level=... msg=...`). Kept tiny on purpose: the shim runs once per
//! container, and a full formatting stack with filters costs memory in each of them.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

pub struct FifoLog {
    out: Mutex<File>,
    max: Level,
}

struct Msg(String);

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl FifoLog {
    pub fn new(out: File, max: Level) -> FifoLog {
        FifoLog {
            out: Mutex::new(out),
            max,
        }
    }
}

impl Subscriber for FifoLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut msg = Msg(String::new());
        event.record(&mut msg);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        // Seconds with microseconds, formatted as integers (no float formatting code).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "time={}.{:06} level={level} msg={:?} runtime=io.containerd.husk.v2 pid={}\n",
            t.as_secs(),
            t.subsec_micros(),
            msg.0,
            std::process::id()
        );
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}
