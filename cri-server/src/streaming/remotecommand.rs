//! Exec and attach streams (kubelet's remotecommand protocols) over SPDY or WebSocket.
//!
//! SPDY (`X-Stream-Protocol-Version`): `channel.k8s.io` (v1), `v2.channel.k8s.io`,
//! `v3.channel.k8s.io` (adds the resize stream), `v4.channel.k8s.io` (the error stream carries a
//! JSON metav1.Status with the exit code). The client opens one stream per channel, named by
//! its `streamType` header (error, stdin, stdout, stderr, resize).
//!
//! WebSocket (`Sec-WebSocket-Protocol`): `channel.k8s.io`, `base64.channel.k8s.io`,
//! `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `v5.channel.k8s.io` (stdin close signal):
//! channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.
//!
//! Exec runs the command through the container's shim (Exec + Start, stdio on FIFOs in
//! `<state>/exec/<exec id>/`), as ExecSync does, but streams the FIFOs; a client that goes away
//! gets its process SIGKILLed and reaped. Attach follows the container's CRI log file from its
//! current end and writes to the container's stdin FIFO.

use super::spdy;
use super::websocket;
use super::{Pending, StreamServer, Upgrade, STREAM_CREATION_TIMEOUT};
use crate::container::exec_sync::mkfifo;
use crate::container::{io_err, ContainerError};
use crate::shim::{Shim, TaskIo};
use hyper::body::Incoming;
use hyper::Request;
use k8s_cri::v1 as cri;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// How long output may still arrive after an exec'd process exited.
const DRAIN: Duration = Duration::from_secs(2);

/// One output channel to the client; [`Out::close`] flushes it.
pub struct Out {
    tx: mpsc::Sender<Vec<u8>>,
    done: oneshot::Receiver<()>,
}

impl Out {
    pub(crate) fn new(tx: mpsc::Sender<Vec<u8>>, done: oneshot::Receiver<()>) -> Out {
        Out { tx, done }
    }

    /// False once the client side is gone.
    pub async fn send(&self, d: Vec<u8>) -> bool {
        self.tx.send(d).await.is_ok()
    }

    /// Ends the channel once what was sent went out (bounded).
    pub async fn close(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.done).await;
    }

    /// An output channel over a SPDY stream (closed with FIN at the end).
    pub fn spdy(w: spdy::StreamWriter) -> Out {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if w.write(&d).await.is_err() {
                    break;
                }
            }
            w.close().await;
            let _ = done_tx.send(());
        });
        Out::new(tx, done_rx)
    }
}

/// The streams of one exec or attach session.
pub struct Channels {
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    pub error: Option<Out>,
    pub resize: Option<mpsc::Receiver<Vec<u8>>>,
    /// Turns true when the client connection is gone.
    pub gone: watch::Receiver<bool>,
    /// v4+: the error channel carries a JSON metav1.Status; before: a plain message on failure.
    pub json_status: bool,
}

/// How a session ended, for the error channel.
pub enum Outcome {
    Success,
    ExitCode(i32, String),
    Error(String),
}

impl Outcome {
    fn encode(&self, json: bool) -> Option<Vec<u8>> {
        let v = match self {
            Outcome::Success if json => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Success => return None,
            Outcome::ExitCode(code, cmd) => {
                let message = format!(
                    "command terminated with non-zero exit code: error executing command \
                     {cmd}, exit code {code}"
                );
                if !json {
                    return Some(message.into_bytes());
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
            Outcome::Error(m) => {
                if !json {
                    return Some(m.clone().into_bytes());
                }
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": m,
                    "reason": "InternalError",
                    "details": {"causes": [{"message": m}]},
                    "code": 500,
                })
            }
        };
        Some(v.to_string().into_bytes())
    }
}

impl Channels {
    /// Flushes and ends the output channels, then reports `outcome` on the error channel.
    pub async fn finish(&mut self, outcome: Outcome) {
        self.stdin = None;
        self.resize = None;
        if let Some(o) = self.stdout.take() {
            o.close().await;
        }
        if let Some(o) = self.stderr.take() {
            o.close().await;
        }
        if let Some(e) = self.error.take() {
            if let Some(b) = outcome.encode(self.json_status) {
                e.send(b).await;
            }
            e.close().await;
        }
    }
}

/// What the session asks for.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn opts_of(p: &Pending) -> Opts {
    match p {
        Pending::Exec(r) => Opts {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::Attach(r) => Opts {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::PortForward(_) => Opts {
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        },
    }
}

/// Answers the upgrade and runs the session on the upgraded connection.
pub(crate) async fn serve(
    server: Arc<StreamServer>,
    mut req: Request<Incoming>,
    up: Upgrade,
    pending: Pending,
) -> hyper::Response<super::Body> {
    let opts = opts_of(&pending);
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
                let version = match proto {
                    Some("v4.channel.k8s.io") => 4,
                    Some("v3.channel.k8s.io") => 3,
                    Some("v2.channel.k8s.io") => 2,
                    _ => 1,
                };
                let mut session = spdy::serve(io, idle);
                let Some(ch) = spdy_channels(&mut session, opts, version).await else {
                    session.finish().await;
                    return;
                };
                run(server, pending, ch).await;
                session.finish().await;
            });
            super::spdy_switch(proto)
        }
        Upgrade::WebSocket => {
            let offered = super::header_list(&req, "sec-websocket-protocol");
            let proto = match super::negotiate(&offered, WS_PROTOCOLS) {
                Ok(p) => p.unwrap_or("channel.k8s.io"),
                Err(e) => return super::forbidden(e),
            };
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
                let framing = websocket::Framing::of(proto);
                let mut inputs = Vec::new();
                if opts.stdin {
                    inputs.push(0u8);
                }
                if opts.tty {
                    inputs.push(4u8);
                }
                let mut ws = websocket::serve(io, framing, &inputs, idle).await;
                // An empty message on the first writable channel tells the client the
                // streams are ready (wsstream does the same).
                let first = if opts.stdout {
                    1
                } else if opts.stderr {
                    2
                } else {
                    3
                };
                ws.send_raw(first, &[]).await;
                let ch = Channels {
                    stdin: ws.inputs.remove(&0),
                    stdout: opts.stdout.then(|| ws.output(1)),
                    stderr: opts.stderr.then(|| ws.output(2)),
                    error: Some(ws.output(3)),
                    resize: ws.inputs.remove(&4),
                    gone: ws.gone.clone(),
                    json_status: proto.starts_with("v4.") || proto.starts_with("v5."),
                };
                run(server, pending, ch).await;
                ws.finish().await;
            });
            resp
        }
    }
}

/// Collects the streams the client announces (as kubelet: error, plus stdin, stdout, stderr
/// as requested, plus resize with a tty from v3 on), within the stream creation timeout.
async fn spdy_channels(session: &mut spdy::Session, opts: Opts, version: u32) -> Option<Channels> {
    let mut expected = 1 + opts.stdin as usize + opts.stdout as usize + opts.stderr as usize;
    if opts.tty && version >= 3 {
        expected += 1;
    }
    let mut ch = Channels {
        stdin: None,
        stdout: None,
        stderr: None,
        error: None,
        resize: None,
        gone: session.gone.clone(),
        json_status: version >= 4,
    };
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while got < expected {
        let s = match tokio::time::timeout_at(deadline, session.streams.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(_) => {
                tracing::info!(
                    "streaming: timed out waiting for {expected} streams (got {got}): closing"
                );
                return None;
            }
        };
        match spdy::header(&s.headers, "streamtype").unwrap_or("") {
            "error" => ch.error = Some(Out::spdy(s.tx)),
            "stdin" => ch.stdin = Some(s.rx),
            "stdout" => ch.stdout = Some(Out::spdy(s.tx)),
            "stderr" => ch.stderr = Some(Out::spdy(s.tx)),
            "resize" => ch.resize = Some(s.rx),
            other => {
                tracing::debug!("streaming: unexpected stream type {other:?}");
                s.tx.reset().await;
                continue;
            }
        }
        got += 1;
    }
    Some(ch)
}

async fn run(server: Arc<StreamServer>, pending: Pending, mut ch: Channels) {
    let outcome = match pending {
        Pending::Exec(r) => exec(&server, r, &mut ch).await,
        Pending::Attach(r) => attach(&server, r, &mut ch).await,
        Pending::PortForward(_) => Some(Outcome::Error("not an exec or attach".into())),
    };
    match outcome {
        Some(o) => ch.finish(o).await,
        // The client went away: nobody to tell.
        None => {
            ch.stdout = None;
            ch.stderr = None;
            ch.error = None;
        }
    }
}

/// Resolves when `gone` turns true (or its sender is dropped).
pub(crate) async fn gone(mut g: watch::Receiver<bool>) {
    while !*g.borrow_and_update() {
        if g.changed().await.is_err() {
            return;
        }
    }
}

#[derive(serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Applies the terminal sizes the client sends (JSON objects, one after the other) through
/// `apply` until the resize channel ends.
async fn resize_loop(
    mut rx: mpsc::Receiver<Vec<u8>>,
    apply: impl Fn(u32, u32) + Send + Sync + Clone + 'static,
) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(d) = rx.recv().await {
        buf.extend_from_slice(&d);
        if buf.len() > 64 << 10 {
            buf.clear();
            continue;
        }
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    consumed = it.byte_offset();
                    let f = apply.clone();
                    let _ = tokio::task::spawn_blocking(move || f(s.width as u32, s.height as u32))
                        .await;
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = buf.len();
                    break;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed.min(buf.len()));
    }
}

/// Copies a FIFO to an output channel until EOF.
async fn pump_out(file: File, out: &Out) {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_file(file) else {
        return;
    };
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !out.send(buf[..n].to_vec()).await {
                    // Nobody reads any more: keep draining so the process does not block.
                    while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
            }
        }
    }
}

/// Copies the client's stdin to a FIFO until it ends; then `on_eof`.
async fn pump_in(
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut tx: tokio::net::unix::pipe::Sender,
) -> tokio::net::unix::pipe::Sender {
    while let Some(d) = rx.recv().await {
        if tx.write_all(&d).await.is_err() {
            break;
        }
    }
    tx
}

struct ExecProc {
    container: String,
    shim: Arc<Shim>,
    exec_id: String,
    dir: PathBuf,
    stdin: Option<tokio::net::unix::pipe::Sender>,
    stdout: Option<File>,
    stderr: Option<File>,
}

fn open_stdin_writer(p: &Path) -> Result<tokio::net::unix::pipe::Sender, ContainerError> {
    // Read-write: never blocks, whether or not the shim opened the read side yet.
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(p)
        .map_err(io_err("open stdin fifo", p))
}

/// Exec + Start of `r.cmd` in the container with FIFOs for the requested streams.
fn start_exec(
    store: &crate::container::Containers,
    r: &cri::ExecRequest,
    rt: tokio::runtime::Handle,
) -> Result<ExecProc, ContainerError> {
    let (id, shim, _) = store.running(&r.container_id)?;
    let spec = store.spec_of(&id)?;
    let process = crate::container::spec::exec_process(&spec, &r.cmd, r.tty);
    let exec_id = crate::sandbox::new_id()?[..32].to_string();
    let dir = store.exec_dir.join(&exec_id);
    std::fs::create_dir(&dir).map_err(io_err("mkdir", &dir))?;
    let made = (|| {
        let _guard = rt.enter();
        let mut io = TaskIo {
            terminal: r.tty,
            ..Default::default()
        };
        let stdin = if r.stdin {
            let p = dir.join("stdin");
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err("mkfifo", &p)(e.into()))?;
            io.stdin = p.display().to_string();
            Some(open_stdin_writer(&p)?)
        } else {
            None
        };
        let stdout = if r.stdout {
            let p = dir.join("stdout");
            let f = mkfifo(&p)?;
            io.stdout = p.display().to_string();
            Some(f)
        } else {
            None
        };
        let stderr = if r.stderr && !r.tty {
            let p = dir.join("stderr");
            let f = mkfifo(&p)?;
            io.stderr = p.display().to_string();
            Some(f)
        } else {
            None
        };
        let shim_err = |source| ContainerError::Shim {
            id: id.clone(),
            source: Box::new(source),
        };
        shim.exec(&exec_id, &process, &io).map_err(shim_err)?;
        if let Err(e) = shim.start_task(&exec_id) {
            let _ = shim.delete(&exec_id);
            return Err(shim_err(e));
        }
        Ok((stdin, stdout, stderr))
    })();
    match made {
        Ok((stdin, stdout, stderr)) => Ok(ExecProc {
            container: id,
            shim,
            exec_id,
            dir,
            stdin,
            stdout,
            stderr,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// Runs an exec session; None when the client went away (the process was killed).
async fn exec(server: &StreamServer, r: cri::ExecRequest, ch: &mut Channels) -> Option<Outcome> {
    let store = server.containers.clone();
    let cmd = format!("{:?}", r.cmd);
    let rt = tokio::runtime::Handle::current();
    let req = r.clone();
    let p = match tokio::task::spawn_blocking(move || start_exec(&store, &req, rt)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Some(Outcome::Error(e.to_string())),
        Err(e) => return Some(Outcome::Error(format!("exec: {e}"))),
    };
    let ExecProc {
        container,
        shim,
        exec_id,
        dir,
        stdin,
        stdout,
        stderr,
    } = p;
    tracing::debug!("container {container}: exec {exec_id} {cmd} started");
    // stdin: copied until the client ends it, then closed (our FIFO writer, and CloseIO).
    let stdin_task = match (stdin, ch.stdin.take()) {
        (Some(tx), Some(rx)) => {
            let shim = shim.clone();
            let id = exec_id.clone();
            Some(tokio::spawn(async move {
                let tx = pump_in(rx, tx).await;
                drop(tx);
                let _ = tokio::task::spawn_blocking(move || shim.close_io(&id)).await;
            }))
        }
        (Some(tx), None) => {
            drop(tx);
            None
        }
        _ => None,
    };
    let resize_task = ch.resize.take().map(|rx| {
        let shim = shim.clone();
        let id = exec_id.clone();
        tokio::spawn(resize_loop(rx, move |w, h| {
            if let Err(e) = shim.resize_pty(&id, w, h) {
                tracing::debug!("exec {id}: resize: {e}");
            }
        }))
    });
    let out_task = {
        let out = ch.stdout.take();
        let err = ch.stderr.take();
        tokio::spawn(async move {
            let a = async {
                if let (Some(f), Some(o)) = (stdout, out.as_ref()) {
                    pump_out(f, o).await;
                }
            };
            let b = async {
                if let (Some(f), Some(o)) = (stderr, err.as_ref()) {
                    pump_out(f, o).await;
                }
            };
            tokio::join!(a, b);
            (out, err)
        })
    };
    let mut wait = {
        let shim = shim.clone();
        let id = exec_id.clone();
        tokio::task::spawn_blocking(move || shim.wait(&id))
    };
    let mut client_gone = false;
    let exit = tokio::select! {
        r = &mut wait => r,
        _ = gone(ch.gone.clone()) => {
            client_gone = true;
            tracing::info!("container {container}: exec {exec_id}: client gone, killing it");
            let s = shim.clone();
            let id = exec_id.clone();
            let _ = tokio::task::spawn_blocking(move || s.kill(&id, libc::SIGKILL as u32, false)).await;
            wait.await
        }
    };
    // Output drains (bounded: a child may hold the FIFO open).
    let mut out_task = out_task;
    let outs = match tokio::time::timeout(DRAIN, &mut out_task).await {
        Ok(Ok(o)) => Some(o),
        _ => {
            out_task.abort();
            None
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    {
        let shim = shim.clone();
        let id = exec_id.clone();
        let dir = dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = shim.delete(&id) {
                tracing::debug!("exec {id}: delete: {e}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    }
    if client_gone {
        return None;
    }
    if let Some((out, err)) = outs {
        ch.stdout = out;
        ch.stderr = err;
    }
    Some(match exit {
        Ok(Ok(0)) => Outcome::Success,
        Ok(Ok(code)) => Outcome::ExitCode(code as i32, cmd),
        Ok(Err(e)) => Outcome::Error(format!("error executing command in container: {e}")),
        Err(e) => Outcome::Error(format!("error executing command in container: {e}")),
    })
}

/// husk-cri's writer on a container's stdin FIFO, shared by its attach sessions: held open so
/// that a session ending does not close the container's stdin (only `stdin_once` does).
pub struct AttachStdin {
    writer: tokio::sync::Mutex<Option<tokio::net::unix::pipe::Sender>>,
}

impl StreamServer {
    /// The stdin writer of container `id` (opened on first use).
    fn attach_stdin(&self, id: &str) -> Result<Arc<AttachStdin>, ContainerError> {
        let mut m = self.stdins.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the containers that stopped (their FIFO writer closes with them).
        m.retain(|cid, _| self.containers.running(cid).is_ok());
        if let Some(s) = m.get(id) {
            return Ok(s.clone());
        }
        let fifo = self.containers.stdin_fifo(id);
        let w = self
            .containers
            .stdin_writer(id)
            .ok_or_else(|| ContainerError::Precondition(format!("container {id}: stdin is closed")))
            .and_then(|f| {
                tokio::net::unix::pipe::Sender::from_file(f).map_err(io_err("stdin fifo", &fifo))
            })?;
        let s = Arc::new(AttachStdin {
            writer: tokio::sync::Mutex::new(Some(w)),
        });
        m.insert(id.to_string(), s.clone());
        Ok(s)
    }
}

/// One CRI log line parsed: `<time> <stream> <P|F> <message>`.
fn parse_log_line(line: &[u8]) -> Option<(bool, bool, &[u8])> {
    let mut it = line.splitn(4, |c| *c == b' ');
    let _time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let msg = it.next().unwrap_or(b"");
    let stderr = match stream {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let partial = tag.split(|c| *c == b':').any(|t| t == b"P");
    Some((stderr, partial, msg))
}

/// The CRI log at `p` opened at its current end, and its inode.
fn open_end(p: &Path) -> Option<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut f = File::open(p).ok()?;
    f.seek(std::io::SeekFrom::End(0)).ok()?;
    let ino = f.metadata().ok()?.ino();
    Some((f, ino))
}

/// Follows the CRI log at `path` from `file` (opened at its end before the session's stdin is
/// forwarded, so that no answer to it is missed), sending each record's message to stdout or
/// stderr (with a tty everything is stdout), until `stop` turns true (then what is there is
/// read to the end).
async fn follow_log(
    path: PathBuf,
    mut file: Option<(File, u64)>,
    tty: bool,
    out: Option<Out>,
    err: Option<Out>,
    mut stop: watch::Receiver<bool>,
) -> (Option<Out>, Option<Out>) {
    use std::os::unix::fs::MetadataExt;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut stopping = false;
    loop {
        let mut read_any = false;
        if let Some((f, _)) = file.as_mut() {
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        read_any = true;
                        pending.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        while let Some(nl) = pending.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Some((is_err, partial, msg)) = parse_log_line(&line[..line.len() - 1]) else {
                continue;
            };
            let mut data = msg.to_vec();
            if !partial {
                data.push(b'\n');
            }
            let target = if is_err && !tty { &err } else { &out };
            if let Some(o) = target {
                if !o.send(data).await {
                    return (out, err);
                }
            }
        }
        if pending.len() > 1 << 20 {
            pending.clear();
        }
        if stopping && !read_any {
            return (out, err);
        }
        if !read_any {
            // Rotated (ReopenContainerLog renamed the file): continue with the new file.
            let cur = std::fs::metadata(&path).map(|m| m.ino()).ok();
            match (&file, cur) {
                (Some((_, ino)), Some(c)) if *ino != c => {
                    file = File::open(&path).ok().and_then(|f| {
                        let ino = f.metadata().ok()?.ino();
                        Some((f, ino))
                    });
                    continue;
                }
                (None, Some(_)) => {
                    file = open_end(&path);
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        stopping = true;
                    }
                }
            }
        }
    }
}

/// Runs an attach session; None when the client went away.
async fn attach(
    server: &StreamServer,
    r: cri::AttachRequest,
    ch: &mut Channels,
) -> Option<Outcome> {
    let store = server.containers.clone();
    let cid = r.container_id.clone();
    let found = tokio::task::spawn_blocking(move || store.running(&cid)).await;
    let (id, shim, rec) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Some(Outcome::Error(e.to_string())),
        Err(e) => return Some(Outcome::Error(format!("attach: {e}"))),
    };
    let tty = rec.config.tty;
    let stdin_once = rec.config.stdin_once;
    // stdin: into the container's FIFO (a container created without stdin: dropped).
    let mut stdin_rx = ch.stdin.take();
    let writer = if stdin_rx.is_some() && rec.config.stdin {
        match server.attach_stdin(&id) {
            Ok(w) => Some(w),
            Err(e) => return Some(Outcome::Error(e.to_string())),
        }
    } else {
        None
    };
    let resize_task = ch.resize.take().map(|rx| {
        let shim = shim.clone();
        let id = id.clone();
        tokio::spawn(resize_loop(rx, move |w, h| {
            if let Err(e) = shim.resize_pty("", w, h) {
                tracing::debug!("attach {id}: resize: {e}");
            }
        }))
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let log = server.containers.output_log(&rec);
    let start = open_end(&log);
    let mut follower = tokio::spawn(follow_log(
        log,
        start,
        tty,
        ch.stdout.take(),
        ch.stderr.take(),
        stop_rx,
    ));
    let mut stdin_done = stdin_rx.is_none();
    let mut result: Option<Outcome> = Some(Outcome::Success);
    let mut follower_done = None;
    loop {
        let store = server.containers.clone();
        let cid = id.clone();
        tokio::select! {
            d = async { match stdin_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } }, if !stdin_done => {
                match d {
                    Some(d) => {
                        if let Some(w) = &writer {
                            let mut g = w.writer.lock().await;
                            if let Some(tx) = g.as_mut() {
                                if tx.write_all(&d).await.is_err() {
                                    *g = None;
                                }
                            }
                        }
                    }
                    None => {
                        stdin_done = true;
                        stdin_rx = None;
                        if stdin_once {
                            // The first session's stdin ends the container's stdin.
                            if let Some(w) = &writer {
                                *w.writer.lock().await = None;
                            }
                            server.containers.close_stdin_writer(&id);
                            let s = shim.clone();
                            let _ = tokio::task::spawn_blocking(move || s.close_io("")).await;
                        } else {
                            // Detach: the container goes on.
                            break;
                        }
                    }
                }
            }
            r = &mut follower, if follower_done.is_none() => {
                // The client stopped reading output.
                follower_done = Some(r.ok());
                result = None;
                break;
            }
            _ = gone(ch.gone.clone()) => {
                result = None;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let running = tokio::task::spawn_blocking(move || store.running(&cid).is_ok())
                    .await
                    .unwrap_or(false);
                if !running {
                    break;
                }
            }
        }
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    let _ = stop_tx.send(true);
    let outs = match follower_done {
        Some(o) => o,
        None => match tokio::time::timeout(Duration::from_secs(5), &mut follower).await {
            Ok(Ok(o)) => Some(o),
            _ => {
                follower.abort();
                None
            }
        },
    };
    if let Some((o, e)) = outs {
        ch.stdout = o;
        ch.stderr = e;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse() {
        assert_eq!(
            parse_log_line(b"2024-01-01T00:00:00.000000000Z stdout F hello world"),
            Some((false, false, &b"hello world"[..]))
        );
        assert_eq!(
            parse_log_line(b"2024-01-01T00:00:00.000000000Z stderr P part"),
            Some((true, true, &b"part"[..]))
        );
        assert_eq!(
            parse_log_line(b"2024-01-01T00:00:00Z stdout F "),
            Some((false, false, &b""[..]))
        );
        assert_eq!(parse_log_line(b"garbage"), None);
    }

    #[test]
    fn statuses_are_kubelets() {
        assert_eq!(
            Outcome::Success.encode(true).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert!(Outcome::Success.encode(false).is_none());
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::ExitCode(3, "[sh]".into()).encode(true).unwrap())
                .unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("command terminated with non-zero exit code: "));
    }
}
