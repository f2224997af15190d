//! A lean ttrpc transport for the Task service, with the messages of `containerd-shim-protos`.
//!
//! ttrpc's sync `Server` keeps a listener thread, a reaper thread and per connection a handler,
//! a reader and a pool of workers alive: about ten threads in every shim. Here the shim's main
//! loop accepts connections and reads request frames incrementally, without blocking (each
//! read takes what the socket has, `MSG_DONTWAIT`; a frame is dispatched once complete), so a
//! client that stalls in the middle of a frame holds up nobody: reaping, stdio and the other
//! connections go on. That costs a 10-byte header buffer and the partial body per connection,
//! no thread. Each request runs on a short-lived thread
//! (runtime calls take tens of milliseconds and must not stall the reaper), which decodes it,
//! calls the service and writes the response frame itself. An idle shim keeps only the main
//! thread and one thread per pending `Wait`. The requests are dispatched here by method name
//! rather than through the crate's generated handlers, whose per-request context, channels
//! and per-method glue the shim does not need.

use std::io::{ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::proto::{
    MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST,
};
use containerd_shim_protos::ttrpc::{self, Code, MessageHeader, Request, Response};

use crate::service::{Service, TaskService};

/// The Task service under the names containerd uses: task API v2 (containerd 1.6/1.7) and v3
/// (containerd 2), same messages.
const SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

/// Stack of a request thread: protobuf decoding, the service and `Command::spawn` only.
const REQUEST_STACK: usize = 256 * 1024;

pub struct Conn {
    pub reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    /// The frame being read: its header (`hdr_len` bytes so far), then its body (`body_len`
    /// of `body.len()` bytes so far).
    hdr: [u8; MESSAGE_HEADER_LENGTH],
    hdr_len: usize,
    body: Vec<u8>,
    body_len: usize,
}

/// What a non-blocking read got.
enum Got {
    Bytes(usize),
    WouldBlock,
    Closed,
}

/// Reads what the socket has, without blocking (the socket itself stays blocking for the
/// request threads' writes).
fn recv_some(s: &UnixStream, buf: &mut [u8]) -> Got {
    use std::os::fd::AsRawFd;
    loop {
        match nix::sys::socket::recv(s.as_raw_fd(), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Got::Closed,
            Ok(n) => return Got::Bytes(n),
            Err(nix::errno::Errno::EAGAIN) => return Got::WouldBlock,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::debug!("ttrpc read: {e}");
                return Got::Closed;
            }
        }
    }
}

pub struct Server {
    pub listener: UnixListener,
    pub conns: Vec<Conn>,
    task: Arc<TaskService>,
    svc: Arc<Service>,
}

fn write_frame(w: &Mutex<UnixStream>, mh: MessageHeader, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(MESSAGE_HEADER_LENGTH + body.len());
    frame.extend_from_slice(&mh.length.to_be_bytes());
    frame.extend_from_slice(&mh.stream_id.to_be_bytes());
    frame.push(mh.type_);
    frame.push(mh.flags);
    frame.extend_from_slice(body);
    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
    s.write_all(&frame)
}

fn error_response(w: &Mutex<UnixStream>, stream_id: u32, code: Code, msg: String) {
    send_response(
        w,
        stream_id,
        Response {
            status: Some(ttrpc::get_status(code, msg)).into(),
            ..Default::default()
        },
    );
}

fn send_response(w: &Mutex<UnixStream>, stream_id: u32, res: Response) {
    match res.write_to_bytes() {
        Ok(body) => {
            let mh = MessageHeader::new_response(stream_id, body.len() as u32);
            if let Err(e) = write_frame(w, mh, &body) {
                tracing::debug!("ttrpc write: {e}");
            }
        }
        Err(e) => tracing::warn!("encode ttrpc response: {e}"),
    }
}

impl Server {
    pub fn new(listener: UnixListener, svc: Arc<Service>) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            conns: Vec::new(),
            task: Arc::new(TaskService(svc.clone())),
            svc,
        })
    }

    /// Accepts pending connections.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    let conn = s
                        .set_nonblocking(false)
                        .and_then(|_| s.try_clone())
                        .map(|w| Conn {
                            reader: s,
                            writer: Arc::new(Mutex::new(w)),
                            hdr: [0; MESSAGE_HEADER_LENGTH],
                            hdr_len: 0,
                            body: Vec::new(),
                            body_len: 0,
                        });
                    match conn {
                        Ok(c) => self.conns.push(c),
                        Err(e) => tracing::warn!("ttrpc connection: {e}"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("ttrpc accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what connection `i` has and dispatches every frame completed. Returns false when
    /// the connection is closed (the caller drops it).
    pub fn serve(&mut self, i: usize) -> bool {
        let Some(conn) = self.conns.get_mut(i) else {
            return false;
        };
        // A bound per call, so that a client sending without pause cannot hold the main loop.
        let mut frames = 0;
        while frames < 16 {
            if conn.hdr_len < MESSAGE_HEADER_LENGTH {
                match recv_some(&conn.reader, &mut conn.hdr[conn.hdr_len..]) {
                    Got::Bytes(n) => conn.hdr_len += n,
                    Got::WouldBlock => return true,
                    Got::Closed => return false,
                }
                if conn.hdr_len < MESSAGE_HEADER_LENGTH {
                    continue;
                }
                let length =
                    u32::from_be_bytes([conn.hdr[0], conn.hdr[1], conn.hdr[2], conn.hdr[3]]);
                if length as usize > MESSAGE_LENGTH_MAX {
                    tracing::warn!("ttrpc frame of {length} bytes refused");
                    return false;
                }
                // A large zeroed buffer comes from calloc (mmap): its pages are touched only
                // as the body arrives.
                conn.body = vec![0u8; length as usize];
                conn.body_len = 0;
            }
            if conn.body_len < conn.body.len() {
                match recv_some(&conn.reader, &mut conn.body[conn.body_len..]) {
                    Got::Bytes(n) => conn.body_len += n,
                    Got::WouldBlock => return true,
                    Got::Closed => return false,
                }
                if conn.body_len < conn.body.len() {
                    continue;
                }
            }
            let h = conn.hdr;
            let mh = MessageHeader {
                length: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
                stream_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                type_: h[8],
                flags: h[9],
            };
            conn.hdr_len = 0;
            conn.body_len = 0;
            let body = std::mem::take(&mut conn.body);
            if mh.type_ == MESSAGE_TYPE_REQUEST {
                dispatch_request(&self.task, &self.svc, &conn.writer, mh, body);
            }
            frames += 1;
        }
        // More may be waiting: poll reports the connection readable again.
        true
    }
}

/// Runs one request on its own thread, which writes the response.
fn dispatch_request(
    task: &Arc<TaskService>,
    svc: &Arc<Service>,
    writer: &Arc<Mutex<UnixStream>>,
    mh: MessageHeader,
    body: Vec<u8>,
) {
    let w = writer.clone();
    let task = task.clone();
    let svc = svc.clone();
    let spawned = std::thread::Builder::new()
        .name("ttrpc".into())
        .stack_size(REQUEST_STACK)
        .spawn(move || {
            let shutdown = handle(&task, &w, mh, &body);
            drop(body);
            release_heap();
            if shutdown {
                svc.shutdown_if_idle();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("spawn request thread: {e}");
        error_response(
            writer,
            mh.stream_id,
            Code::RESOURCE_EXHAUSTED,
            format!("spawn request thread: {e}"),
        );
    }
}

/// Gives the heap memory freed by a request (decoded messages, runtime output, JSON) back to
/// the kernel: an idle shim then keeps only what its container needs.
pub fn release_heap() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decodes the request message, runs the method, encodes its answer.
fn call<Req: Message, Resp: Message>(
    payload: &[u8],
    method: impl FnOnce(Req) -> ttrpc::Result<Resp>,
) -> Result<Vec<u8>, ttrpc::Status> {
    let req = Req::parse_from_bytes(payload).map_err(|e| {
        ttrpc::get_status(Code::INVALID_ARGUMENT, format!("decode {}: {e}", Req::NAME))
    })?;
    match method(req) {
        Ok(resp) => resp
            .write_to_bytes()
            .map_err(|e| ttrpc::get_status(Code::INTERNAL, format!("encode {}: {e}", Resp::NAME))),
        Err(ttrpc::Error::RpcStatus(s)) => Err(s),
        Err(e) => Err(ttrpc::get_status(Code::UNKNOWN, e.to_string())),
    }
}

/// Runs Task method `method` of the service.
fn dispatch(t: &TaskService, method: &str, p: &[u8]) -> Result<Vec<u8>, ttrpc::Status> {
    match method {
        "State" => call(p, |r| t.state(r)),
        "Create" => call(p, |r| t.create(r)),
        "Start" => call(p, |r| t.start(r)),
        "Delete" => call(p, |r| t.delete(r)),
        "Pids" => call(p, |r| t.pids(r)),
        "Pause" => call(p, |r| t.pause(r)),
        "Resume" => call(p, |r| t.resume(r)),
        "Checkpoint" => call(p, |r| t.checkpoint(r)),
        "Kill" => call(p, |r| t.kill(r)),
        "Exec" => call(p, |r| t.exec(r)),
        "ResizePty" => call(p, |r| t.resize_pty(r)),
        "CloseIO" => call(p, |r| t.close_io(r)),
        "Update" => call(p, |r| t.update(r)),
        "Wait" => call(p, |r| t.wait(r)),
        "Stats" => call(p, |r| t.stats(r)),
        "Connect" => call(p, |r| t.connect(r)),
        "Shutdown" => call(p, |r| t.shutdown(r)),
        other => Err(ttrpc::get_status(
            Code::UNIMPLEMENTED,
            format!("Task method {other} is not implemented by containerd-shim-husk-v2"),
        )),
    }
}

/// Runs one request; returns true when it was an answered Shutdown.
fn handle(task: &TaskService, writer: &Mutex<UnixStream>, mh: MessageHeader, body: &[u8]) -> bool {
    let req = match Request::parse_from_bytes(body) {
        Ok(r) => r,
        Err(e) => {
            error_response(writer, mh.stream_id, Code::INVALID_ARGUMENT, e.to_string());
            return false;
        }
    };
    if !SERVICES.contains(&req.service.as_str()) {
        error_response(
            writer,
            mh.stream_id,
            Code::UNIMPLEMENTED,
            format!(
                "/{}/{} is not implemented by containerd-shim-husk-v2",
                req.service, req.method
            ),
        );
        return false;
    }
    let res = match dispatch(task, &req.method, &req.payload) {
        Ok(payload) => Response {
            status: Some(ttrpc::get_status(Code::OK, String::new())).into(),
            payload,
            ..Default::default()
        },
        Err(status) => Response {
            status: Some(status).into(),
            ..Default::default()
        },
    };
    let ok = res.status.as_ref().is_some_and(|s| s.code.value() == 0);
    send_response(writer, mh.stream_id, res);
    ok && req.method == "Shutdown"
}
