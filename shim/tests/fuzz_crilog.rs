//! Property-based fuzz target (proptest) for the shim's CRI log writer (`src/crilog.rs`, the
//! `LineSplitter` that turns a stream's bytes into `<RFC3339Nano> <stdout|stderr> <P|F> <msg>`
//! records). The shim is a binary crate, so the module is compiled into this test from its source.
//!
//! Properties, for arbitrary bytes fed in arbitrary chunks at arbitrary times, with any line
//! limit: every output line is a valid CRI log record (Go RFC3339Nano UTC timestamp of the time
//! given, the stream, P or F, a message of at most `max` bytes without `\n`); and concatenating
//! the messages (P as is, F followed by `\n`) gives back the input exactly, except that a `\r\n`
//! line ending becomes `\n` (documented: containerd drops the `\r` too). With stall flushes in
//! between, the same holds once `\r`s before a `\n` are dropped on both sides. See docs/FUZZING.md.
#![allow(dead_code)]

#[path = "../src/crilog.rs"]
mod crilog;

/// `crilog::parse_uri` decodes with the shim's `uri` module, compiled in the same way.
#[path = "../src/uri.rs"]
mod uri;

use crilog::{rfc3339_nano, LineSplitter, Stream, MAX_LINE};
use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn cases(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

/// Days since 1970-01-01 of a civil date (independent of the code under test).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a Go RFC3339Nano UTC timestamp strictly; returns (secs, nanos).
fn parse_ts(ts: &[u8]) -> Option<(u64, u32)> {
    let s = std::str::from_utf8(ts).ok()?;
    let s = s.strip_suffix('Z')?;
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    let b = main.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &main[r];
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) => {
            // 1..9 digits, no trailing zero (Go trims them).
            if f.is_empty()
                || f.len() > 9
                || f.ends_with('0')
                || !f.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            let mut v: u32 = f.parse().ok()?;
            for _ in f.len()..9 {
                v *= 10;
            }
            v
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some((u64::try_from(secs).ok()?, nanos))
}

/// Checks every record of `out` and returns the messages reconstructed (P: msg, F: msg + \n).
fn records(
    out: &[u8],
    stream: Stream,
    max: usize,
    times: &[SystemTime],
) -> Result<Vec<u8>, TestCaseError> {
    let tag: &[u8] = match stream {
        Stream::Stdout => b"stdout",
        Stream::Stderr => b"stderr",
    };
    prop_assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "output does not end with a newline"
    );
    let mut rebuilt = Vec::new();
    for line in out.split(|&b| b == b'\n').filter(|_| true) {
        // split leaves one empty slice after the final \n
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, |&b| b == b' ');
        let ts = parts.next().unwrap_or_default();
        let st = parts.next().unwrap_or_default();
        let pf = parts.next().unwrap_or_default();
        let msg = parts.next();
        let Some(msg) = msg else {
            return Err(TestCaseError::fail(format!(
                "short record {:?}",
                String::from_utf8_lossy(line)
            )));
        };
        let (secs, nanos) = parse_ts(ts).ok_or_else(|| {
            TestCaseError::fail(format!("bad timestamp {:?}", String::from_utf8_lossy(ts)))
        })?;
        let t = UNIX_EPOCH + Duration::new(secs, nanos);
        prop_assert!(
            times.contains(&t),
            "timestamp {:?} is not a time the data was fed at",
            String::from_utf8_lossy(ts)
        );
        prop_assert_eq!(st, tag);
        prop_assert!(
            pf == b"P" || pf == b"F",
            "tag {:?}",
            String::from_utf8_lossy(pf)
        );
        prop_assert!(
            msg.len() <= max,
            "message of {} bytes, max {}",
            msg.len(),
            max
        );
        rebuilt.extend_from_slice(msg);
        if pf == b"F" {
            rebuilt.push(b'\n');
        }
    }
    Ok(rebuilt)
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Drops every `\r` that directly precedes a `\n` (runs included): with stall flushes, whether a
/// `\r` before a `\n` is kept depends on where the flush fell (a flushed `P` record keeps it).
fn strip_cr_before_lf(b: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    for &c in b {
        if c == b'\n' {
            while out.last() == Some(&b'\r') {
                out.pop();
            }
        }
        out.push(c);
    }
    out
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'\n'),
            3 => Just(b'\r'),
            6 => b'a'..=b'e',
            1 => any::<u8>(),
        ],
        0..400,
    )
}

fn time() -> impl Strategy<Value = SystemTime> {
    // Up to year 9999 (four-digit years), any nanoseconds (incl. 0 and trailing zeros).
    (
        prop_oneof![
            0u64..253_402_300_800,
            Just(0),
            Just(951_782_400),
            Just(4_107_542_399)
        ],
        prop_oneof![
            0u32..1_000_000_000,
            Just(0),
            Just(500_000_000),
            Just(120),
            Just(999_999_999)
        ],
    )
        .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

fn max() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..12, 1 => 12usize..64, 1 => Just(MAX_LINE), 1 => Just(0)]
}

/// Feeds `data` in chunks of the given sizes; `flush_after[i]` calls `flush` (a stall) after
/// chunk i. Returns (output, times used).
fn run(
    stream: Stream,
    max: usize,
    data: &[u8],
    cuts: &[usize],
    flush_after: &[bool],
    times: &[SystemTime],
) -> (Vec<u8>, Vec<SystemTime>) {
    let mut s = LineSplitter::new(stream, max);
    let mut out = Vec::new();
    let mut used = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .copied()
            .unwrap_or(rest.len())
            .max(1)
            .min(rest.len());
        let t = times[i % times.len()];
        used.push(t);
        s.feed(&rest[..n], t, &mut out);
        if flush_after.get(i).copied().unwrap_or(false) {
            s.flush(t, &mut out);
            assert!(s.deadline().is_none(), "deadline after flush");
        } else if s.deadline().is_none() {
            // Nothing pending: the output so far ends at a record boundary of the input.
        }
        rest = &rest[n..];
        i += 1;
    }
    let t = times[i % times.len()];
    used.push(t);
    s.flush(t, &mut out);
    (out, used)
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn records_are_valid_and_reproduce_the_input(
        stdout in any::<bool>(),
        max in max(),
        data in data(),
        cuts in prop::collection::vec(1usize..50, 1..20),
        times in prop::collection::vec(time(), 1..4),
    ) {
        let stream = if stdout { Stream::Stdout } else { Stream::Stderr };
        let (out, used) = run(stream, max, &data, &cuts, &[], &times);
        let rebuilt = records(&out, stream, max.max(1), &used)?;
        let expected = crlf_to_lf(&data);
        prop_assert!(
            rebuilt == expected,
            "rebuilt {:?} != input {:?}",
            String::from_utf8_lossy(&rebuilt),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn stall_flushes_keep_the_content(
        max in max(),
        data in data(),
        cuts in prop::collection::vec(1usize..50, 1..20),
        flush_after in prop::collection::vec(any::<bool>(), 0..40),
        times in prop::collection::vec(time(), 1..4),
    ) {
        let (out, used) = run(Stream::Stderr, max, &data, &cuts, &flush_after, &times);
        let rebuilt = records(&out, Stream::Stderr, max.max(1), &used)?;
        prop_assert_eq!(strip_cr_before_lf(&rebuilt), strip_cr_before_lf(&data));
    }

    #[test]
    fn timestamps_round_trip(t in time()) {
        let mut v = Vec::new();
        rfc3339_nano(t, &mut v);
        let (secs, nanos) = parse_ts(&v).ok_or_else(|| TestCaseError::fail(format!("bad {:?}", String::from_utf8_lossy(&v))))?;
        prop_assert_eq!(UNIX_EPOCH + Duration::new(secs, nanos), t);
    }
}
