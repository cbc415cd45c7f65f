//! The PostgreSQL v3.0 wire protocol, sans-IO. `frontend` decodes what a client sends (and
//! builds what vigil sends to an upstream as a client); `backend` decodes what a server sends
//! (and builds what vigil sends to its clients as a server). `codec` is the one adapter to tokio.
//!
//! Every decoder is a pure function over a `BytesMut` that answers a message, "need more bytes"
//! (`Ok(None)`, having reserved room for the rest of the frame) or a typed [`WireError`]. A
//! decoded message keeps its whole frame (`Bytes`, type byte and length included) so the proxy
//! forwards exactly what it received; parsed fields are views or small copies. After an error the
//! stream is out of sync and must be closed.

#![deny(clippy::indexing_slicing)]

pub mod backend;
pub mod codec;
pub mod frontend;

use bytes::{Buf, Bytes, BytesMut};

/// PostgreSQL's own limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A sensible default limit for one message after startup. PostgreSQL allows up to 1 GiB; a
/// bastion holding each frame in memory wants less.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 << 20;

/// The protocol version vigil speaks, as the startup packet encodes it (3.0).
pub const PROTOCOL_3_0: u32 = 0x0003_0000;

/// What is wrong with bytes that claim to be protocol messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message length {len} is less than the minimum of {min}")]
    LengthTooSmall { len: i32, min: i32 },
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("unknown {direction} message type {}", describe_tag(*.tag))]
    UnknownMessage { direction: Direction, tag: u8 },
    #[error("unsupported protocol version {major}.{minor}: vigil speaks protocol 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("{message} message: {field} runs past the end of the message")]
    Truncated {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message} message: {field} is missing its NUL terminator")]
    Unterminated {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message} message: {field} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message} message: {extra} unexpected bytes after the last field")]
    TrailingBytes { message: &'static str, extra: usize },
    #[error("{message} message: invalid {field} {value}")]
    InvalidValue {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    #[error(
        "{message} message: {found} {what} for {expected} parameters (must be 0, 1 or {expected})"
    )]
    CountMismatch {
        message: &'static str,
        what: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("{field} contains a NUL byte, which the protocol cannot carry")]
    Nul { field: &'static str },
    #[error("{what}: {count} does not fit in the protocol's field")]
    TooMany { what: &'static str, count: usize },
}

/// Who sent a message: names the side in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Frontend,
    Backend,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Frontend => "frontend",
            Direction::Backend => "backend",
        })
    }
}

/// A server process id and the secret a CancelRequest must quote. `Debug` hides the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

impl std::fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendKey {{ pid: {}, secret: <secret> }}", self.pid)
    }
}

fn describe_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// Splits one typed frame (type byte, length, body) off the front of `buf`.
fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, WireError> {
    let Some(mut header) = buf.get(..5) else {
        buf.reserve(5 - buf.len());
        return Ok(None);
    };
    header.advance(1);
    let len = header.get_i32();
    let total = frame_total(len, 4, 1, max_len)?;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(total).freeze()))
}

/// The size of a whole frame whose length field says `len` (the length counts itself but not
/// the `prefix` type byte), checked against `min` and `max_len`.
fn frame_total(len: i32, min: i32, prefix: usize, max_len: usize) -> Result<usize, WireError> {
    if len < min {
        return Err(WireError::LengthTooSmall { len, min });
    }
    let total = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(prefix))
        .ok_or(WireError::TooLong {
            len: usize::MAX,
            max: max_len,
        })?;
    if total > max_len {
        return Err(WireError::TooLong {
            len: total,
            max: max_len,
        });
    }
    Ok(total)
}

/// A cursor over a message body that never reads past its end.
struct Reader<'a> {
    body: &'a Bytes,
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(body: &'a Bytes, message: &'static str) -> Self {
        Reader {
            body,
            pos: 0,
            message,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.body.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let (taken, _) = self
            .rest()
            .split_at_checked(n)
            .ok_or(WireError::Truncated {
                message: self.message,
                field,
            })?;
        self.pos += n;
        Ok(taken)
    }

    /// `n` bytes as a zero-copy slice of the body.
    fn take_bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, WireError> {
        let start = self.pos;
        self.take(n, field)?;
        Ok(self.body.slice(start..self.pos))
    }

    /// Everything left, as a zero-copy slice.
    fn take_rest(&mut self) -> Bytes {
        let start = self.pos.min(self.body.len());
        self.pos = self.body.len();
        self.body.slice(start..)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        let mut b = self.take(1, field)?;
        Ok(b.get_u8())
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, WireError> {
        let mut b = self.take(2, field)?;
        Ok(b.get_i16())
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        let mut b = self.take(4, field)?;
        Ok(b.get_i32())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let mut b = self.take(4, field)?;
        Ok(b.get_u32())
    }

    /// A non-negative 16-bit count.
    fn count(&mut self, field: &'static str) -> Result<usize, WireError> {
        let n = self.i16(field)?;
        usize::try_from(n).map_err(|_| self.invalid(field, n.into()))
    }

    /// A NUL-terminated string's bytes, without the NUL.
    fn cstr(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let rest = self.rest();
        let end = memchr::memchr(0, rest).ok_or(WireError::Unterminated {
            message: self.message,
            field,
        })?;
        let s = self.take(end, field)?;
        self.pos += 1;
        Ok(s)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let raw = self.cstr(field)?;
        std::str::from_utf8(raw).map_err(|_| WireError::InvalidUtf8 {
            message: self.message,
            field,
        })
    }

    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        self.str(field).map(str::to_owned)
    }

    /// A length-prefixed value: -1 is NULL.
    fn nullable(&mut self, field: &'static str) -> Result<Option<Bytes>, WireError> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| self.invalid(field, len.into()))?;
        self.take_bytes(n, field).map(Some)
    }

    fn invalid(&self, field: &'static str, value: i64) -> WireError {
        WireError::InvalidValue {
            message: self.message,
            field,
            value,
        }
    }

    fn finish(self) -> Result<(), WireError> {
        match self.rest().len() {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes {
                message: self.message,
                extra,
            }),
        }
    }
}

/// Appends a C string, refusing embedded NULs.
fn put_cstr(out: &mut BytesMut, s: &[u8], field: &'static str) -> Result<(), WireError> {
    if memchr::memchr(0, s).is_some() {
        return Err(WireError::Nul { field });
    }
    out.extend_from_slice(s);
    out.extend_from_slice(&[0]);
    Ok(())
}

/// Writes `tag`, a length placeholder and the body `f` writes, then fills in the length.
fn build(
    tag: u8,
    f: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
) -> Result<Bytes, WireError> {
    use bytes::BufMut;
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(tag);
    out.put_i32(0);
    f(&mut out)?;
    let len = i32::try_from(out.len() - 1).map_err(|_| WireError::TooMany {
        what: "message length",
        count: out.len(),
    })?;
    if let Some(slot) = out.get_mut(1..5) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    Ok(out.freeze())
}

fn count_i16(what: &'static str, count: usize) -> Result<i16, WireError> {
    i16::try_from(count).map_err(|_| WireError::TooMany { what, count })
}
