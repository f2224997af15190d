//! The few protobuf (proto2) encodings CRIU's RPC (images/rpc.proto) needs: varints, strings and
//! nested messages to build a `criu_req`, and a field walker to read a `criu_resp`.
//!
//! Only the wire types that rpc.proto uses appear: varint (0) for int32/uint32/bool/enum and
//! length-delimited (2) for strings and messages. Negative int32 values are encoded as 10-byte
//! varints, as protobuf requires.

/// Builder of one message's bytes.
#[derive(Debug, Default, Clone)]
pub struct Msg {
    buf: Vec<u8>,
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    pub fn new() -> Msg {
        Msg::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn int32(&mut self, field: u32, v: i32) -> &mut Msg {
        self.key(field, 0);
        // int32 is sign-extended to 64 bits on the wire
        put_varint(&mut self.buf, i64::from(v) as u64);
        self
    }

    pub fn uint32(&mut self, field: u32, v: u32) -> &mut Msg {
        self.key(field, 0);
        put_varint(&mut self.buf, u64::from(v));
        self
    }

    pub fn bool(&mut self, field: u32, v: bool) -> &mut Msg {
        self.key(field, 0);
        put_varint(&mut self.buf, u64::from(v));
        self
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Msg {
        self.key(field, 2);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Msg {
        self.bytes(field, v.as_bytes())
    }

    pub fn msg(&mut self, field: u32, m: &Msg) -> &mut Msg {
        let inner = m.buf.clone();
        self.bytes(field, &inner)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// One field of a decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message: {0}")]
pub struct DecodeError(pub &'static str);

fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or(DecodeError("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint longer than 10 bytes"))
}

/// Every (field number, value) of a message, in wire order. Fixed32/fixed64 fields (unused by
/// rpc.proto) are skipped.
pub fn fields(data: &[u8]) -> Result<Vec<(u32, Value<'_>)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = get_varint(data, &mut pos)?;
        let field =
            u32::try_from(key >> 3).map_err(|_| DecodeError("field number out of range"))?;
        match key & 7 {
            0 => out.push((field, Value::Varint(get_varint(data, &mut pos)?))),
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|p| *p <= data.len())
                    .ok_or(DecodeError("truncated fixed64"))?
            }
            2 => {
                let len = usize::try_from(get_varint(data, &mut pos)?)
                    .map_err(|_| DecodeError("length out of range"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= data.len())
                    .ok_or(DecodeError("truncated field"))?;
                out.push((field, Value::Bytes(&data[pos..end])));
                pos = end;
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|p| *p <= data.len())
                    .ok_or(DecodeError("truncated fixed32"))?
            }
            _ => return Err(DecodeError("unsupported wire type")),
        }
    }
    Ok(out)
}

/// The last varint value of `field` (proto2: the last occurrence wins).
pub fn varint(fields: &[(u32, Value<'_>)], field: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(f, v)| match v {
        Value::Varint(x) if *f == field => Some(*x),
        _ => None,
    })
}

/// The last length-delimited value of `field`.
pub fn bytes<'a>(fields: &[(u32, Value<'a>)], field: u32) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(f, v)| match v {
        Value::Bytes(b) if *f == field => Some(*b),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let mut m = Msg::new();
        m.int32(1, 150)
            .int32(2, -1)
            .bool(3, true)
            .uint32(4, 0)
            .string(5, "abc");
        let b = m.into_bytes();
        // field 1 = 150: key 0x08, varint 0x96 0x01 (the protobuf documentation's example)
        assert_eq!(&b[..3], &[0x08, 0x96, 0x01]);
        let f = fields(&b).unwrap();
        assert_eq!(varint(&f, 1), Some(150));
        assert_eq!(varint(&f, 2).map(|v| v as i64 as i32), Some(-1));
        assert_eq!(varint(&f, 3), Some(1));
        assert_eq!(varint(&f, 4), Some(0));
        assert_eq!(bytes(&f, 5), Some(&b"abc"[..]));
        assert_eq!(varint(&f, 9), None);
    }

    #[test]
    fn nested_and_truncated() {
        let mut inner = Msg::new();
        inner.string(1, "key").int32(2, 7);
        let mut outer = Msg::new();
        outer.msg(27, &inner);
        let b = outer.into_bytes();
        let f = fields(&b).unwrap();
        let inner = fields(bytes(&f, 27).unwrap()).unwrap();
        assert_eq!(bytes(&inner, 1), Some(&b"key"[..]));
        assert_eq!(varint(&inner, 2), Some(7));
        assert!(fields(&b[..b.len() - 1]).is_err());
        assert!(fields(&[0x08]).is_err());
    }
}
