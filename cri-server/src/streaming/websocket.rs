//! The channel.k8s.io WebSocket framing (apimachinery's wsstream), server side, over
//! tokio-tungstenite: every message starts with its channel number (one byte; in the `base64.`
//! protocols an ASCII digit, the rest base64 in a text message). In `v5.channel.k8s.io` a
//! message `[255, N]` says the peer closed channel N (how the client ends stdin).

use super::remotecommand::Out;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The v5 close-signal channel.
const CLOSE_SIGNAL: u8 = 255;

/// A served WebSocket connection split in channels.
pub struct WsSession {
    /// What the client sends per channel (only the channels asked for as inputs).
    pub inputs: HashMap<u8, mpsc::Receiver<Vec<u8>>>,
    pub gone: watch::Receiver<bool>,
    sink: Option<mpsc::Sender<Message>>,
    base64: bool,
    reader: tokio::task::AbortHandle,
    writer: Option<tokio::task::JoinHandle<()>>,
}

/// Framing options of the negotiated protocol.
#[derive(Clone, Copy, Debug)]
pub struct Framing {
    pub base64: bool,
    pub close_signal: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64."),
            close_signal: protocol.starts_with("v5."),
        }
    }
}

fn encode(base64: bool, ch: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push((b'0' + ch) as char);
        s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::Text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(ch);
        v.extend_from_slice(data);
        Message::Binary(v)
    }
}

impl WsSession {
    /// An output channel: what is sent on the returned [`Out`] goes to the client on `ch`.
    pub fn output(&self, ch: u8) -> Out {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let (done_tx, done_rx) = oneshot::channel();
        let sink = self.sink.clone();
        let b64 = self.base64;
        tokio::spawn(async move {
            if let Some(sink) = sink {
                while let Some(d) = rx.recv().await {
                    for chunk in d.chunks(32 << 10) {
                        if sink.send(encode(b64, ch, chunk)).await.is_err() {
                            let _ = done_tx.send(());
                            return;
                        }
                    }
                }
            }
            let _ = done_tx.send(());
        });
        Out::new(tx, done_rx)
    }

    /// Sends `data` on `ch` now (port-forward's port prefixes, the first empty message).
    pub async fn send_raw(&self, ch: u8, data: &[u8]) {
        if let Some(s) = &self.sink {
            let _ = s.send(encode(self.base64, ch, data)).await;
        }
    }

    /// Closes the connection once what was queued is written (call after closing every
    /// [`Out`]).
    pub async fn finish(mut self) {
        self.reader.abort();
        self.inputs.clear();
        if let Some(s) = self.sink.take() {
            let _ = s.send(Message::Close(None)).await;
        }
        if let Some(w) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Serves the WebSocket on `io` (an upgraded connection); `inputs`: the channels the client
/// may write.
pub async fn serve<IO>(io: IO, framing: Framing, inputs: &[u8], idle: Duration) -> WsSession
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut wr, mut rd) = ws.split();
    let (sink_tx, mut sink_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = sink_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if wr.feed(m).await.is_err() {
                return;
            }
            if (close || sink_rx.is_empty()) && wr.flush().await.is_err() {
                return;
            }
            if close {
                break;
            }
        }
        let _ = wr.close().await;
    });
    let mut senders: HashMap<u8, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut receivers = HashMap::new();
    for ch in inputs {
        let (tx, rx) = mpsc::channel(16);
        senders.insert(*ch, tx);
        receivers.insert(*ch, rx);
    }
    let reader = tokio::spawn(async move {
        loop {
            let m = match tokio::time::timeout(idle, rd.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    tracing::debug!("websocket: read: {e}");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::info!("streaming: websocket idle for {idle:?}: closing it");
                    break;
                }
            };
            let (ch, data) = match m {
                Message::Binary(b) if !b.is_empty() && !framing.base64 => (b[0], b[1..].to_vec()),
                Message::Text(t) if !t.is_empty() && framing.base64 => {
                    let b = t.as_bytes();
                    let Some(ch) = b[0].checked_sub(b'0') else {
                        continue;
                    };
                    match base64::engine::general_purpose::STANDARD.decode(&b[1..]) {
                        Ok(d) => (ch, d),
                        Err(_) => continue,
                    }
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if ch == CLOSE_SIGNAL && framing.close_signal {
                if let Some(c) = data.first() {
                    senders.remove(c);
                }
                continue;
            }
            if data.is_empty() {
                continue;
            }
            if let Some(tx) = senders.get(&ch) {
                if tx.send(data).await.is_err() {
                    senders.remove(&ch);
                }
            }
        }
        drop(senders);
    });
    let reader_abort = reader.abort_handle();
    // `gone` turns true when the reader ends, however it ends (EOF, error, idle, aborted).
    let (gtx, grx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = reader.await;
        let _ = gtx.send(true);
    });
    WsSession {
        inputs: receivers,
        gone: grx,
        sink: Some(sink_tx),
        base64: framing.base64,
        reader: reader_abort,
        writer: Some(writer),
    }
}
