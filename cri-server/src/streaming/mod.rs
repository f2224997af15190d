//! The streaming server behind CRI Exec, Attach and PortForward: those RPCs only validate the
//! request and answer a URL `http://ADDR:PORT/{exec,attach,portforward}/<token>` on this
//! server (as kubelet's `cri/streaming` server and containerd's do); kubelet (or crictl,
//! critest) then opens the URL and upgrades the HTTP/1.1 connection to SPDY/3.1 or WebSocket.
//!
//! - tokens: random, single-use, valid for [`TOKEN_TTL`] (kubelet's cache lifetime); an unknown,
//!   used or expired token is answered 404, so only a client that got the URL over the CRI
//!   socket can open the stream;
//! - protocols are negotiated as client-go does: `X-Stream-Protocol-Version` with
//!   `Upgrade: SPDY/3.1`, `Sec-WebSocket-Protocol` with `Upgrade: websocket`;
//! - `spdy`: the SPDY/3.1 framing (hand-written: no maintained crate exists);
//! - `websocket`: the channel.k8s.io WebSocket framing (v4, v5, base64) over tokio-tungstenite;
//! - `remotecommand`: exec and attach over either framing;
//! - `portforward`: port-forward over either framing, connecting inside the pod's network
//!   namespace.
//!
//! A connection without traffic for [`IDLE_TIMEOUT`] (containerd's `stream_idle_timeout`) is
//! closed.

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;

use crate::container::Containers;
use crate::sandbox::Sandboxes;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a URL handed out by Exec/Attach/PortForward stays valid (kubelet's token cache).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// containerd's default `stream_idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// How long the client has to open the streams it announced (kubelet's
/// streamCreationTimeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many tokens wait to be used (older ones are dropped first).
const MAX_TOKENS: usize = 4096;

/// A request waiting for its client.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The streaming server: its address, the token cache and what the handlers need.
pub struct StreamServer {
    addr: SocketAddr,
    tokens: Mutex<HashMap<String, (Pending, Instant)>>,
    pub(crate) containers: Arc<Containers>,
    pub(crate) sandboxes: Arc<Sandboxes>,
    /// The stdin FIFOs of containers created with stdin, held open by husk-cri (see
    /// `remotecommand::AttachStdin`).
    pub(crate) stdins: Mutex<HashMap<String, Arc<remotecommand::AttachStdin>>>,
    pub(crate) idle: Duration,
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// All values of header `name`, split at commas, trimmed.
pub(crate) fn header_list(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The first protocol the client offers that the server supports (client-go's negotiation);
/// Ok(None) when the client offers none.
pub(crate) fn negotiate(
    offered: &[String],
    supported: &[&'static str],
) -> Result<Option<&'static str>, String> {
    if offered.is_empty() {
        return Ok(None);
    }
    for o in offered {
        if let Some(s) = supported.iter().find(|s| **s == o.as_str()) {
            return Ok(Some(*s));
        }
    }
    Err(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server \
         accepts {supported:?}"
    ))
}

/// What the request asks to be upgraded to.
pub(crate) enum Upgrade {
    Spdy,
    WebSocket,
}

fn upgrade_kind(req: &Request<Incoming>) -> Option<Upgrade> {
    let up = header_list(req, "upgrade");
    if up.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        Some(Upgrade::WebSocket)
    } else if up.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}

impl StreamServer {
    /// Binds `addr` (port 0: an ephemeral port) and serves on the current tokio runtime.
    pub fn start(
        addr: SocketAddr,
        containers: Arc<Containers>,
        sandboxes: Arc<Sandboxes>,
    ) -> std::io::Result<Arc<StreamServer>> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let server = Arc::new(StreamServer {
            addr,
            tokens: Mutex::new(HashMap::new()),
            containers,
            sandboxes,
            stdins: Mutex::new(HashMap::new()),
            idle: IDLE_TIMEOUT,
        });
        tracing::info!("streaming server listening on http://{addr}");
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("streaming server: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(s.handle(req).await) }
                    });
                    // A client that connects and sends no request is dropped after 30 s.
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await
                    {
                        tracing::debug!("streaming connection from {peer}: {e}");
                    }
                });
            }
        });
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Caches `p` under a new token; the URL to answer.
    pub fn register(&self, p: Pending) -> Result<String, crate::sandbox::SandboxError> {
        let token = crate::sandbox::new_id()?[..32].to_string();
        let kind = p.kind();
        let now = Instant::now();
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        if t.len() >= MAX_TOKENS {
            if let Some(oldest) = t
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        t.insert(token.clone(), (p, now));
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// Takes the request of `token` if it is valid and of `kind`.
    fn consume(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (p, at) = t.remove(token)?;
        (at.elapsed() < TOKEN_TTL && p.kind() == kind).then_some(p)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        let Some(pending) = self.consume(kind, token) else {
            return plain(
                StatusCode::NOT_FOUND,
                "streaming: unknown or expired token\n",
            );
        };
        let Some(up) = upgrade_kind(&req) else {
            return plain(
                StatusCode::BAD_REQUEST,
                "streaming: this endpoint needs an `Upgrade: SPDY/3.1` or `Upgrade: websocket` \
                 request\n",
            );
        };
        match pending {
            Pending::PortForward(p) => portforward::serve(self, req, up, p).await,
            other => remotecommand::serve(self, req, up, other).await,
        }
    }
}

/// The 101 answer to a SPDY upgrade with `protocol` (None: the client asked for none).
pub(crate) fn spdy_switch(protocol: Option<&str>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        "Upgrade".parse().expect("static"),
    );
    h.insert(hyper::header::UPGRADE, "SPDY/3.1".parse().expect("static"));
    if let Some(p) = protocol.and_then(|p| p.parse().ok()) {
        h.insert("X-Stream-Protocol-Version", p);
    }
    r
}

/// The 101 answer to a WebSocket upgrade with `protocol` (Err: the 400 answer when the key is
/// missing).
pub(crate) fn ws_switch(
    req: &Request<Incoming>,
    protocol: Option<&str>,
) -> Result<Response<Body>, Box<Response<Body>>> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            "streaming: websocket upgrade without Sec-WebSocket-Key\n",
        )));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        "Upgrade".parse().expect("static"),
    );
    h.insert(hyper::header::UPGRADE, "websocket".parse().expect("static"));
    if let Ok(v) = accept.parse() {
        h.insert("Sec-WebSocket-Accept", v);
    }
    if let Some(p) = protocol.and_then(|p| p.parse().ok()) {
        h.insert("Sec-WebSocket-Protocol", p);
    }
    Ok(r)
}

pub(crate) fn forbidden(msg: String) -> Response<Body> {
    plain(StatusCode::FORBIDDEN, msg + "\n")
}

pub(crate) fn bad_request(msg: String) -> Response<Body> {
    plain(StatusCode::BAD_REQUEST, msg + "\n")
}
