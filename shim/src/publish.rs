//! Publishing task events to containerd (`containerd.services.events.ttrpc.v1.Events/Forward`).
//!
//! A blocking ttrpc call on one Unix socket, made by the publishing thread itself: unlike
//! ttrpc's sync `Client` this needs no background threads in an idle shim.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::proto::{
    MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE,
};
use containerd_shim_protos::ttrpc::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("connect {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("ttrpc to {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("encode event: {0}")]
    Encode(String),
    #[error("containerd answered: {0}")]
    Status(String),
}

struct Conn {
    stream: UnixStream,
    next_id: u32,
}

pub struct Publisher {
    address: String,
    conn: Mutex<Option<Conn>>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Publisher {
    pub fn new(address: &str) -> Publisher {
        Publisher {
            address: address
                .strip_prefix("unix://")
                .unwrap_or(address)
                .to_string(),
            conn: Mutex::new(None),
        }
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> PublishError + '_ {
        move |source| PublishError::Io {
            address: self.address.clone(),
            source,
        }
    }

    pub fn publish<M: Message>(
        &self,
        topic: &str,
        namespace: &str,
        event: &M,
    ) -> Result<(), PublishError> {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let data = event
            .write_to_bytes()
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        let envelope = Envelope {
            timestamp: MessageField::some(
                containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                    ..Default::default()
                },
            ),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: MessageField::some(Any {
                // containerd's type URL for its event messages is the message's full name.
                type_url: format!("containerd.events.{}", M::NAME),
                value: data,
                ..Default::default()
            }),
            ..Default::default()
        };
        let fwd = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        let payload = fwd
            .write_to_bytes()
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        let req = Request {
            service: "containerd.services.events.ttrpc.v1.Events".into(),
            method: "Forward".into(),
            payload,
            timeout_nano: TIMEOUT.as_nanos() as i64,
            ..Default::default()
        };
        let body = req
            .write_to_bytes()
            .map_err(|e| PublishError::Encode(e.to_string()))?;

        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // One retry on a fresh connection if containerd closed the old one.
        for attempt in 0..2 {
            if guard.is_none() {
                let stream =
                    UnixStream::connect(&self.address).map_err(|source| PublishError::Connect {
                        address: self.address.clone(),
                        source,
                    })?;
                stream
                    .set_read_timeout(Some(TIMEOUT))
                    .map_err(self.io_err())?;
                stream
                    .set_write_timeout(Some(TIMEOUT))
                    .map_err(self.io_err())?;
                *guard = Some(Conn { stream, next_id: 1 });
            }
            let Some(conn) = guard.as_mut() else { continue };
            match call(conn, &body) {
                Ok(resp) => return check(resp),
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(self.io_err()(e));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check(resp: Response) -> Result<(), PublishError> {
    match resp.status.as_ref() {
        Some(st) if st.code.value() != 0 => Err(PublishError::Status(st.message.clone())),
        _ => Ok(()),
    }
}

fn call(conn: &mut Conn, body: &[u8]) -> std::io::Result<Response> {
    let id = conn.next_id;
    conn.next_id = conn.next_id.wrapping_add(2);
    let mut frame = Vec::with_capacity(MESSAGE_HEADER_LENGTH + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.push(MESSAGE_TYPE_REQUEST);
    frame.push(0);
    frame.extend_from_slice(body);
    conn.stream.write_all(&frame)?;
    loop {
        let mut hdr = [0u8; MESSAGE_HEADER_LENGTH];
        conn.stream.read_exact(&mut hdr)?;
        let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let sid = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if len > MESSAGE_LENGTH_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("ttrpc frame of {len} bytes"),
            ));
        }
        let mut buf = vec![0u8; len];
        conn.stream.read_exact(&mut buf)?;
        if sid != id || hdr[8] != MESSAGE_TYPE_RESPONSE {
            continue;
        }
        return Response::parse_from_bytes(&buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
    }
}
