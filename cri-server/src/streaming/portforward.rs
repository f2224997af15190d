//! Port-forward into a pod's network namespace (kubelet's portforward protocols).
//!
//! SPDY (`portforward.k8s.io`): per forwarded connection the client opens two streams with
//! headers `streamType` (error / data), `port` and `requestID`; once both are there, husk-cri
//! connects to 127.0.0.1:PORT inside the pod's network namespace and copies the data stream to
//! and from the socket; a failure is written on the error stream.
//!
//! WebSocket (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `portforward.k8s.io`): the ports
//! come from the `port` query parameters; port i has data channel 2i and error channel 2i+1,
//! each starting with the port number (2 bytes, little endian); one connection per port.

use super::spdy;
use super::websocket;
use super::{StreamServer, Upgrade};
use hyper::body::Incoming;
use hyper::Request;
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
const WS_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to 127.0.0.1:`port` (else [::1]) in network namespace `netns` (None: the host's,
/// for a host-network pod). The connect runs on a short-lived thread that enters the namespace
/// and ends with it; the socket stays in the namespace it was made in.
pub fn connect_in_netns(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    let connect = move || -> std::io::Result<std::net::TcpStream> {
        let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
            Ok(s) => Ok(s),
            Err(e4) => {
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4)
            }
        }
    };
    let Some(ns) = netns else {
        return connect();
    };
    std::thread::Builder::new()
        .name("portforward-netns".into())
        .spawn(move || {
            let f = std::fs::File::open(&ns)?;
            // setns(2) changes only this thread's network namespace; the thread ends right
            // after the connect, so no other work ever runs in the pod's namespace.
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::other(format!("setns {}: {e}", ns.display())))?;
            connect()
        })?
        .join()
        .map_err(|_| std::io::Error::other("port-forward connect thread panicked"))?
}

/// The pod's network namespace (None: host network).
fn netns_of(server: &StreamServer, pod: &str) -> Result<Option<PathBuf>, String> {
    let info = server.sandboxes.info(pod).map_err(|e| e.to_string())?;
    if !info.ready || info.pid == 0 {
        return Err(format!("pod sandbox {pod} is not ready"));
    }
    Ok(info.netns_path())
}

async fn connect(
    server: Arc<StreamServer>,
    pod: String,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let r = tokio::task::spawn_blocking(move || {
        let ns = netns_of(&server, &pod)?;
        connect_in_netns(ns, port).map_err(|e| {
            format!(
                "failed to connect to localhost:{port} inside the network namespace of pod \
                 sandbox {pod}: {e}"
            )
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    r.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(r).map_err(|e| e.to_string())
}

/// Copies `rx` (client → pod) and `tcp` (pod → client) until both directions ended; the
/// error, if any, for the error channel.
async fn copy(
    tcp: tokio::net::TcpStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: &super::remotecommand::Out,
    gone: tokio::sync::watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = tcp.into_split();
    let up = async {
        while let Some(d) = rx.recv().await {
            if wr.write_all(&d).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !out.send(buf[..n].to_vec()).await {
                        return;
                    }
                }
            }
        }
    };
    let both = async { tokio::join!(up, down) };
    tokio::select! {
        _ = both => {}
        _ = super::remotecommand::gone(gone) => {}
    }
}

pub(crate) async fn serve(
    server: Arc<StreamServer>,
    mut req: Request<Incoming>,
    up: Upgrade,
    pf: cri::PortForwardRequest,
) -> hyper::Response<super::Body> {
    let pod = pf.pod_sandbox_id.clone();
    match up {
        Upgrade::Spdy => {
            let offered = super::header_list(&req, "x-stream-protocol-version");
            let proto = match super::negotiate(&offered, SPDY_PROTOCOLS) {
                Ok(p) => p,
                Err(e) => return super::forbidden(e),
            };
            let on = hyper::upgrade::on(&mut req);
            let idle = server.idle;
            tokio::spawn(async move {
                let io = match on.await {
                    Ok(u) => hyper_util::rt::TokioIo::new(u),
                    Err(e) => {
                        tracing::debug!("streaming: upgrade: {e}");
                        return;
                    }
                };
                let session = spdy::serve(io, idle);
                spdy_session(server, pod, session).await;
            });
            super::spdy_switch(proto)
        }
        Upgrade::WebSocket => {
            let offered = super::header_list(&req, "sec-websocket-protocol");
            let proto = match super::negotiate(&offered, WS_PROTOCOLS) {
                Ok(p) => p.unwrap_or("channel.k8s.io"),
                Err(e) => return super::forbidden(e),
            };
            // Ports: the query's `port` parameters, else the request's.
            let mut ports: Vec<u16> = Vec::new();
            for kv in req.uri().query().unwrap_or("").split('&') {
                if let Some(v) = kv.strip_prefix("port=") {
                    match v.parse::<u16>() {
                        Ok(p) if p > 0 => ports.push(p),
                        _ => return super::bad_request(format!("invalid port {v:?}")),
                    }
                }
            }
            if ports.is_empty() {
                ports = pf
                    .port
                    .iter()
                    .filter_map(|p| u16::try_from(*p).ok())
                    .collect();
            }
            if ports.is_empty() {
                return super::bad_request("query parameter \"port\" is required".into());
            }
            let resp = match super::ws_switch(&req, (!offered.is_empty()).then_some(proto)) {
                Ok(r) => r,
                Err(r) => return *r,
            };
            let on = hyper::upgrade::on(&mut req);
            let idle = server.idle;
            tokio::spawn(async move {
                let io = match on.await {
                    Ok(u) => hyper_util::rt::TokioIo::new(u),
                    Err(e) => {
                        tracing::debug!("streaming: upgrade: {e}");
                        return;
                    }
                };
                let inputs: Vec<u8> = (0..ports.len()).map(|i| (2 * i) as u8).collect();
                let mut ws =
                    websocket::serve(io, websocket::Framing::of(proto), &inputs, idle).await;
                let mut tasks = Vec::new();
                for (i, port) in ports.iter().enumerate() {
                    let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
                    let prefix = port.to_le_bytes();
                    ws.send_raw(data_ch, &prefix).await;
                    ws.send_raw(err_ch, &prefix).await;
                    let data = ws.output(data_ch);
                    let err = ws.output(err_ch);
                    let rx = ws.inputs.remove(&data_ch);
                    let server = server.clone();
                    let pod = pod.clone();
                    let gone = ws.gone.clone();
                    let port = *port;
                    tasks.push(tokio::spawn(async move {
                        match connect(server, pod, port).await {
                            Ok(tcp) => {
                                if let Some(rx) = rx {
                                    copy(tcp, rx, &data, gone).await;
                                }
                            }
                            Err(e) => {
                                tracing::info!("port-forward: {e}");
                                err.send(e.into_bytes()).await;
                            }
                        }
                        data.close().await;
                        err.close().await;
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
                ws.finish().await;
            });
            resp
        }
    }
}

/// A stream waiting for its partner (same requestID).
struct Half {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
    port: String,
}

async fn spdy_session(server: Arc<StreamServer>, pod: String, mut session: spdy::Session) {
    let mut waiting: HashMap<String, Half> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(s) = session.streams.recv().await {
        // Reap finished forwards as we go.
        while tasks.try_join_next().is_some() {}
        let kind = spdy::header(&s.headers, "streamtype")
            .unwrap_or("")
            .to_string();
        let port = spdy::header(&s.headers, "port").unwrap_or("").to_string();
        // Old clients send no requestID: a data stream then pairs with the error stream
        // opened just before it (ids two apart), as kubelet does.
        let rid = match spdy::header(&s.headers, "requestid") {
            Some(r) => r.to_string(),
            None if kind == "data" => s.id.saturating_sub(2).to_string(),
            None => s.id.to_string(),
        };
        let h = waiting.entry(rid.clone()).or_insert(Half {
            data: None,
            error: None,
            port: port.clone(),
        });
        match kind.as_str() {
            "data" => h.data = Some(s),
            "error" => h.error = Some(s),
            other => {
                tracing::debug!("port-forward: unexpected stream type {other:?}");
                s.tx.reset().await;
                continue;
            }
        }
        if h.data.is_some() && h.error.is_some() {
            let Some(Half {
                data: Some(data),
                error: Some(error),
                port,
            }) = waiting.remove(&rid)
            else {
                continue;
            };
            let server = server.clone();
            let pod = pod.clone();
            let gone = session.gone.clone();
            tasks.spawn(async move {
                let err = super::remotecommand::Out::spdy(error.tx);
                let out = super::remotecommand::Out::spdy(data.tx);
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => match connect(server, pod, p).await {
                        Ok(tcp) => copy(tcp, data.rx, &out, gone).await,
                        Err(e) => {
                            tracing::info!("port-forward: {e}");
                            err.send(e.into_bytes()).await;
                        }
                    },
                    _ => {
                        err.send(format!("invalid port {port:?}").into_bytes())
                            .await;
                    }
                }
                out.close().await;
                err.close().await;
            });
        }
    }
    // The client closed the connection: end every forward.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(waiting);
    session.finish().await;
}
