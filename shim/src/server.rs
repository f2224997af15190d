//! A lean ttrpc transport for the generated Task service of `containerd-shim-protos`.
//!
//! ttrpc's sync `Server` keeps a listener thread, a reaper thread and per connection a handler,
//! a reader and a pool of workers alive: about ten threads in every shim. Here the shim's main
//! loop accepts connections and reads request frames; each request runs the generated method
//! handler on a short-lived thread (runtime calls take tens of milliseconds and must not stall
//! the reaper), which writes its response frame itself. An idle shim keeps only the main thread
//! and one thread per pending `Wait`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::proto::{
    MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST,
};
use containerd_shim::protos::ttrpc::{
    self, context, Code, MessageHeader, MethodHandler, Request, Response, TtrpcContext,
};

use crate::service::Service;

pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// Stack of a request thread: protobuf decoding, the service and `Command::spawn` only.
const REQUEST_STACK: usize = 256 * 1024;

pub struct Conn {
    pub reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
}

pub struct Server {
    pub listener: UnixListener,
    pub conns: Vec<Conn>,
    methods: Arc<Methods>,
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
    let res = Response {
        status: Some(ttrpc::get_status(code, msg)).into(),
        ..Default::default()
    };
    match res.write_to_bytes() {
        Ok(body) => {
            let mh = MessageHeader::new_response(stream_id, body.len() as u32);
            if let Err(e) = write_frame(w, mh, &body) {
                tracing::debug!("ttrpc write: {e}");
            }
        }
        Err(e) => tracing::warn!("encode ttrpc error response: {e}"),
    }
}

impl Server {
    pub fn new(
        listener: UnixListener,
        methods: Methods,
        svc: Arc<Service>,
    ) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            conns: Vec::new(),
            methods: Arc::new(methods),
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

    /// Reads one frame from connection `i` and dispatches it. Returns false when the
    /// connection is closed (the caller drops it).
    pub fn serve(&self, i: usize) -> bool {
        let Some(conn) = self.conns.get(i) else {
            return false;
        };
        let mut hdr = [0u8; MESSAGE_HEADER_LENGTH];
        if let Err(e) = (&conn.reader).read_exact(&mut hdr) {
            if e.kind() != ErrorKind::UnexpectedEof {
                tracing::debug!("ttrpc read: {e}");
            }
            return false;
        }
        let mh = MessageHeader {
            length: u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]),
            stream_id: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
            type_: hdr[8],
            flags: hdr[9],
        };
        if mh.length as usize > MESSAGE_LENGTH_MAX {
            tracing::warn!("ttrpc frame of {} bytes refused", mh.length);
            return false;
        }
        let mut body = vec![0u8; mh.length as usize];
        if let Err(e) = (&conn.reader).read_exact(&mut body) {
            tracing::debug!("ttrpc read: {e}");
            return false;
        }
        if mh.type_ != MESSAGE_TYPE_REQUEST {
            return true;
        }
        let writer = conn.writer.clone();
        let methods = self.methods.clone();
        let svc = self.svc.clone();
        let fd = conn.reader.as_raw_fd();
        let spawned = std::thread::Builder::new()
            .name("ttrpc".into())
            .stack_size(REQUEST_STACK)
            .spawn(move || {
                if handle(fd, &methods, &writer, mh, &body) {
                    svc.shutdown_if_idle();
                }
            });
        if let Err(e) = spawned {
            tracing::error!("spawn request thread: {e}");
            error_response(
                &conn.writer,
                mh.stream_id,
                Code::RESOURCE_EXHAUSTED,
                format!("spawn request thread: {e}"),
            );
        }
        true
    }
}

/// Runs one request; returns true when it was an answered Shutdown.
fn handle(
    fd: i32,
    methods: &Methods,
    writer: &Mutex<UnixStream>,
    mh: MessageHeader,
    body: &[u8],
) -> bool {
    let req = match Request::parse_from_bytes(body) {
        Ok(r) => r,
        Err(e) => {
            error_response(writer, mh.stream_id, Code::INVALID_ARGUMENT, e.to_string());
            return false;
        }
    };
    let path = format!("/{}/{}", req.service, req.method);
    let Some(method) = methods.get(&path) else {
        error_response(
            writer,
            mh.stream_id,
            Code::UNIMPLEMENTED,
            format!("{path} is not implemented by containerd-shim-husk-v2"),
        );
        return false;
    };
    let shutdown = req.method == "Shutdown";
    let (tx, rx) = std::sync::mpsc::channel();
    let (_cancel_tx, cancel_rx) = crossbeam_channel::bounded(0);
    let ctx = TtrpcContext {
        fd,
        cancel_rx,
        mh,
        res_tx: tx,
        metadata: context::from_pb(&req.metadata),
        timeout_nano: req.timeout_nano,
        conn_ctx: Arc::new(Default::default()),
    };
    if let Err(e) = method.handler(ctx, req) {
        error_response(writer, mh.stream_id, Code::INTERNAL, e.to_string());
        return false;
    }
    for (rmh, rbody) in rx.try_iter() {
        if let Err(e) = write_frame(writer, rmh, &rbody) {
            tracing::debug!("ttrpc write {path}: {e}");
        }
    }
    shutdown
}
