//! SPDY/3.1 as kubectl, crictl and kubelet speak it (client-go's `httpstream/spdy` over
//! moby/spdystream), server side only.
//!
//! Hand-written, on purpose: there is no maintained SPDY crate (SPDY was superseded by HTTP/2
//! and dropped by every HTTP library), yet client-go still upgrades exec/attach/port-forward
//! connections to `SPDY/3.1`. What Kubernetes uses of it is small, so this file implements
//! exactly that:
//!
//! - the frame layout (control frames: 8-byte header, version 3, type, flags, 24-bit length;
//!   data frames: 31-bit stream id, flags, length);
//! - SYN_STREAM (the client opens every stream; the server never does), SYN_REPLY (sent for
//!   each accepted stream, as spdystream does), RST_STREAM, SETTINGS (ignored), PING (echoed),
//!   GOAWAY, HEADERS (ignored), WINDOW_UPDATE (ignored: spdystream does not do flow control
//!   either), DATA with FIN;
//! - name/value header blocks, zlib-compressed with the SPDY/3 dictionary, one compression
//!   context per direction for the whole connection (flate2 with the pure-Rust zlib-rs backend,
//!   which supports preset dictionaries).
//!
//! Not implemented: server push, priorities, credentials, SPDY/2. Frames are bounded (header
//! blocks to 1 MiB once inflated).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status CANCEL.
const RST_CANCEL: u32 = 5;
/// A DATA frame we send carries at most this much.
const MAX_DATA: usize = 32 << 10;
/// Frames we accept (a header block inflated may not exceed this either).
const MAX_FRAME: usize = 1 << 20;

/// Header names and values (names lowercase; a name given several values appears once per
/// value).
pub type Headers = Vec<(String, String)>;

/// The words of the SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1), each
/// preceded there by its 32-bit big-endian length, then [`DICT_TAIL`] as is.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICT_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413\
414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,\
image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate\
max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 zlib dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICT_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICT_TAIL.as_bytes());
        d
    })
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Compresses header blocks (one context for all the blocks a side sends).
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> HeaderEncoder {
        let mut z = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = z.set_dictionary(dictionary());
        HeaderEncoder { z }
    }

    pub fn encode(&mut self, headers: &[(String, String)]) -> io::Result<Vec<u8>> {
        // Several values of one name go in one pair, NUL-separated.
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            match merged.iter_mut().find(|(n, _)| *n == k) {
                Some((_, val)) => {
                    val.push('\0');
                    val.push_str(v);
                }
                None => merged.push((k, v.clone())),
            }
        }
        let mut raw = Vec::new();
        raw.extend_from_slice(&(merged.len() as u32).to_be_bytes());
        for (k, v) in &merged {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.z
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| bad(format!("compress headers: {e}")))?;
            // A sync flush is complete once all input went in and the output had room left.
            if (self.z.total_in() - start) as usize == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Inflates header blocks (one context for all the blocks the peer sends).
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }

    pub fn decode(&mut self, block: &[u8]) -> io::Result<Headers> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let start = self.z.total_in();
        loop {
            let used = (self.z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_FRAME {
                    return Err(bad("header block too large"));
                }
                out.reserve(out.len());
            }
            let before = (self.z.total_in(), self.z.total_out());
            match self
                .z
                .decompress_vec(&block[used..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| bad(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(format!("inflate headers: {e}"))),
            }
            let used = (self.z.total_in() - start) as usize;
            let progressed = (self.z.total_in(), self.z.total_out()) != before;
            if used == block.len() && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                break;
            }
        }
        parse_block(&out)
    }
}

fn parse_block(b: &[u8]) -> io::Result<Headers> {
    let mut pos = 0;
    let u32_at = |pos: &mut usize| -> io::Result<usize> {
        let s = b
            .get(*pos..*pos + 4)
            .ok_or_else(|| bad("short header block"))?;
        *pos += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let n = u32_at(&mut pos)?;
    let mut h = Vec::new();
    for _ in 0..n {
        let kl = u32_at(&mut pos)?;
        let k = b
            .get(pos..pos + kl)
            .ok_or_else(|| bad("short header name"))?;
        pos += kl;
        let vl = u32_at(&mut pos)?;
        let v = b
            .get(pos..pos + vl)
            .ok_or_else(|| bad("short header value"))?;
        pos += vl;
        let k = String::from_utf8_lossy(k).to_ascii_lowercase();
        for v in v.split(|c| *c == 0) {
            h.push((k.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(h)
}

/// The first value of header `name` (lowercase).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A frame as read or to be written (headers uncompressed).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown control frames: read and ignored.
    Other(u16),
}

/// Reads one frame (None at a clean end of the connection).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut HeaderDecoder,
) -> io::Result<Option<Frame>> {
    let mut hdr = [0u8; 8];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = hdr[4];
    let len = u32::from_be_bytes([0, hdr[5], hdr[6], hdr[7]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    let fin = flags & FLAG_FIN != 0;
    let be32 = |b: &[u8], at: usize| -> io::Result<u32> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| bad("short control frame"))
    };
    if hdr[0] & 0x80 == 0 {
        let id = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            id,
            fin,
            data: body,
        }));
    }
    let version = u16::from_be_bytes([hdr[0] & 0x7f, hdr[1]]);
    if version != VERSION {
        return Err(bad(format!("SPDY version {version}")));
    }
    let kind = u16::from_be_bytes([hdr[2], hdr[3]]);
    Ok(Some(match kind {
        SYN_STREAM => {
            let id = be32(&body, 0)? & 0x7fff_ffff;
            let headers = dec.decode(body.get(10..).ok_or_else(|| bad("short SYN_STREAM"))?)?;
            Frame::SynStream { id, fin, headers }
        }
        SYN_REPLY => {
            let id = be32(&body, 0)? & 0x7fff_ffff;
            let headers = dec.decode(body.get(4..).ok_or_else(|| bad("short SYN_REPLY"))?)?;
            Frame::SynReply { id, fin, headers }
        }
        RST_STREAM => Frame::RstStream {
            id: be32(&body, 0)? & 0x7fff_ffff,
            status: be32(&body, 4)?,
        },
        PING => Frame::Ping(be32(&body, 0)?),
        GOAWAY => Frame::GoAway {
            last: be32(&body, 0)? & 0x7fff_ffff,
            status: be32(&body, 4).unwrap_or(0),
        },
        other => Frame::Other(other),
    }))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// The wire bytes of `frame`.
pub fn encode_frame(frame: &Frame, enc: &mut HeaderEncoder) -> io::Result<Vec<u8>> {
    let fl = |fin: bool| if fin { FLAG_FIN } else { 0 };
    Ok(match frame {
        Frame::SynStream { id, fin, headers } => {
            let mut b = Vec::new();
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&enc.encode(headers)?);
            control(SYN_STREAM, fl(*fin), &b)
        }
        Frame::SynReply { id, fin, headers } => {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(&enc.encode(headers)?);
            control(SYN_REPLY, fl(*fin), &b)
        }
        Frame::RstStream { id, status } => {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &b)
        }
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last, status } => {
            let mut b = last.to_be_bytes().to_vec();
            b.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &b)
        }
        Frame::Data { id, fin, data } => {
            let mut f = Vec::with_capacity(8 + data.len());
            f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            f.push(fl(*fin));
            f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(data);
            f
        }
        Frame::Other(_) => Vec::new(),
    })
}

/// One stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; ends at its FIN, a reset or the end of the connection.
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub tx: StreamWriter,
}

/// Writes to one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Frame>,
    activity: Arc<AtomicU64>,
}

impl StreamWriter {
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        touch(&self.activity);
        for chunk in data.chunks(MAX_DATA) {
            self.out
                .send(Frame::Data {
                    id: self.id,
                    fin: false,
                    data: chunk.to_vec(),
                })
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }

    /// Half-closes the stream (DATA with FIN).
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Frame::Data {
                id: self.id,
                fin: true,
                data: Vec::new(),
            })
            .await;
    }

    pub async fn reset(&self) {
        let _ = self
            .out
            .send(Frame::RstStream {
                id: self.id,
                status: RST_CANCEL,
            })
            .await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn touch(a: &AtomicU64) {
    a.store(now_ms(), Ordering::Relaxed);
}

/// A server-side SPDY connection: streams the client opens arrive on `streams`; dropping the
/// session ends the reader and, once every [`StreamWriter`] is gone and what they queued was
/// written, closes the connection.
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    /// Resolves (changes to true) when the connection ended (EOF, error, GOAWAY, idle).
    pub gone: tokio::sync::watch::Receiver<bool>,
    reader: tokio::task::AbortHandle,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Waits (bounded) until what was queued is written and the connection shut down; call
    /// after dropping every writer.
    pub async fn finish(mut self) {
        self.reader.abort();
        // The reader's reply sender goes with the reader; the streams channel too.
        self.streams.close();
        while self.streams.try_recv().is_ok() {}
        if let Some(w) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Serves SPDY on `io` (an upgraded HTTP connection). `idle`: no frame either way for that
/// long ends the connection.
pub fn serve<IO>(io: IO, idle: Duration) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    let activity = Arc::new(AtomicU64::new(now_ms()));
    let writer = tokio::spawn(async move {
        let mut enc = HeaderEncoder::new();
        while let Some(f) = out_rx.recv().await {
            let bytes = match encode_frame(&f, &mut enc) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("spdy: encode: {e}");
                    break;
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
            if out_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    let act = activity.clone();
    let reader = tokio::spawn(async move {
        let mut dec = HeaderDecoder::new();
        let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let read_loop = async {
            loop {
                let frame = match read_frame(&mut rd, &mut dec).await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("spdy: read: {e}");
                        break;
                    }
                };
                touch(&act);
                match frame {
                    Frame::SynStream { id, fin, headers } => {
                        let (tx, rx) = mpsc::channel(16);
                        if !fin {
                            open.insert(id, tx);
                        }
                        if out_tx
                            .send(Frame::SynReply {
                                id,
                                fin: false,
                                headers: Vec::new(),
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                        let s = Stream {
                            id,
                            headers,
                            rx,
                            tx: StreamWriter {
                                id,
                                out: out_tx.clone(),
                                activity: act.clone(),
                            },
                        };
                        if streams_tx.send(s).await.is_err() {
                            // Nobody takes streams any more: refuse it.
                            open.remove(&id);
                            let _ = out_tx
                                .send(Frame::RstStream {
                                    id,
                                    status: RST_CANCEL,
                                })
                                .await;
                        }
                    }
                    Frame::Data { id, fin, data } => {
                        if let Some(tx) = open.get(&id) {
                            if !data.is_empty() && tx.send(data).await.is_err() {
                                open.remove(&id);
                            }
                        }
                        if fin {
                            open.remove(&id);
                        }
                    }
                    Frame::RstStream { id, .. } => {
                        open.remove(&id);
                    }
                    Frame::Ping(id) => {
                        let _ = out_tx.send(Frame::Ping(id)).await;
                    }
                    Frame::GoAway { .. } => break,
                    Frame::SynReply { .. } | Frame::Other(_) => {}
                }
            }
        };
        read_loop.await;
        drop(open);
    });
    let reader_abort = reader.abort_handle();
    // Idle watch: ends the reader (hence the connection) after `idle` without traffic.
    {
        let ra = reader.abort_handle();
        let activity = activity.clone();
        tokio::spawn(async move {
            let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
            loop {
                tokio::time::sleep(tick).await;
                if ra.is_finished() {
                    return;
                }
                let last = activity.load(Ordering::Relaxed);
                if now_ms().saturating_sub(last) >= idle.as_millis() as u64 {
                    tracing::info!("streaming: connection idle for {idle:?}: closing it");
                    ra.abort();
                    return;
                }
            }
        });
    }
    let gone = spawn_gone_watch(reader);
    Session {
        streams: streams_rx,
        gone,
        reader: reader_abort,
        writer: Some(writer),
    }
}

/// A `gone` receiver that turns true when the reader task ends however it ends (EOF, error,
/// GOAWAY, or aborted).
fn spawn_gone_watch(reader: tokio::task::JoinHandle<()>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = reader.await;
        let _ = tx.send(true);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_across_one_context() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for i in 0..5 {
            let h: Headers = vec![
                ("streamtype".into(), "stdout".into()),
                ("port".into(), format!("{}", 8000 + i)),
                ("x".into(), "a".into()),
                ("x".into(), "b".into()),
            ];
            let block = enc.encode(&h).unwrap();
            assert_eq!(dec.decode(&block).unwrap(), h);
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let frames = vec![
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::Data {
                id: 1,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream { id: 3, status: 5 },
            Frame::GoAway { last: 3, status: 0 },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode_frame(f, &mut enc).unwrap());
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(
                read_frame(&mut r, &mut dec).await.unwrap().as_ref(),
                Some(f)
            );
        }
        assert_eq!(read_frame(&mut r, &mut dec).await.unwrap(), None);
    }

    /// A session answers SYN_STREAM with SYN_REPLY, echoes PING, routes DATA to the stream
    /// and ends the stream at FIN; what the server writes comes back as DATA.
    #[tokio::test]
    async fn session_streams_ping_and_fin() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut session = serve(server, Duration::from_secs(3600));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for f in [
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            Frame::Ping(9),
            Frame::Data {
                id: 1,
                fin: true,
                data: b"abc".to_vec(),
            },
        ] {
            wr.write_all(&encode_frame(&f, &mut enc).unwrap())
                .await
                .unwrap();
        }
        let mut s = session.streams.recv().await.unwrap();
        assert_eq!(header(&s.headers, "streamtype"), Some("stdin"));
        assert_eq!(s.rx.recv().await.unwrap(), b"abc");
        assert_eq!(s.rx.recv().await, None);
        s.tx.write(b"out").await.unwrap();
        s.tx.close().await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(read_frame(&mut rd, &mut dec).await.unwrap().unwrap());
        }
        assert!(matches!(got[0], Frame::SynReply { id: 1, .. }), "{got:?}");
        assert!(got.contains(&Frame::Ping(9)), "{got:?}");
        assert!(got.contains(&Frame::Data {
            id: 1,
            fin: false,
            data: b"out".to_vec()
        }));
        assert!(got.contains(&Frame::Data {
            id: 1,
            fin: true,
            data: vec![]
        }));
        drop(s);
        session.finish().await;
        // The server closed its side.
        assert_eq!(read_frame(&mut rd, &mut dec).await.unwrap(), None);
    }

    /// No traffic for the idle time: the connection is closed.
    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let started = std::time::Instant::now();
        let session = serve(server, Duration::from_secs(1));
        let mut gone = session.gone.clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !*gone.borrow_and_update() {
                gone.changed().await.unwrap();
            }
        })
        .await
        .expect("idle connection still open after 10 s");
        assert!(started.elapsed() >= Duration::from_secs(1));
        drop(client);
    }
}
