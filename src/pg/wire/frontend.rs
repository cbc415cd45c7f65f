//! Frontend (F) messages: what a client sends. Decoders for the startup phase (no type byte) and
//! the regular phase, and the few builders vigil needs when it is itself the client of an upstream.
//!
//! Invariant: every decoded message keeps its whole frame; a message type vigil does not know is
//! an error, never passed through.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend as pp;

use super::{
    build, frame_total, put_cstr, split_frame, BackendKey, Direction, Reader, WireError,
    PROTOCOL_3_0,
};

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// The first message of a connection (no type byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    SslRequest,
    GssEncRequest,
    /// A CancelRequest: the client quotes the key it was given in BackendKeyData.
    Cancel(BackendKey),
    /// A StartupMessage for protocol 3.0 with its parameters in the order sent (`user`,
    /// `database`, `application_name`, `options`, ...).
    Startup {
        protocol_version: u32,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    /// The value of a startup parameter (the last one, as PostgreSQL does, if repeated).
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Startup::Startup { params, .. } => params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Which object a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn parse(b: u8, r: &Reader<'_>) -> Result<Target, WireError> {
        match b {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            other => Err(r.invalid("kind", other.into())),
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A decoded frontend message. Each variant holds `frame`: the message exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    /// Q: a simple query (one or more statements).
    Query {
        frame: Bytes,
        sql: String,
    },
    /// P: prepare `sql` as the statement `name` ("" is the unnamed statement).
    Parse {
        frame: Bytes,
        name: String,
        sql: String,
        param_types: Vec<u32>,
    },
    /// B: bind parameters to a statement, creating a portal.
    Bind {
        frame: Bytes,
        portal: String,
        statement: String,
        param_formats: Vec<i16>,
        /// Parameter values as zero-copy slices of `frame`; `None` is SQL NULL.
        params: Vec<Option<Bytes>>,
        result_formats: Vec<i16>,
    },
    /// D: describe a statement or portal.
    Describe {
        frame: Bytes,
        target: Target,
        name: String,
    },
    /// E: run a portal; `max_rows` 0 means all.
    Execute {
        frame: Bytes,
        portal: String,
        max_rows: i32,
    },
    /// C: close a statement or portal.
    Close {
        frame: Bytes,
        target: Target,
        name: String,
    },
    Sync {
        frame: Bytes,
    },
    Flush {
        frame: Bytes,
    },
    Terminate {
        frame: Bytes,
    },
    /// d: COPY data; the payload is `frame[5..]` (see [`Frontend::copy_data`]).
    CopyData {
        frame: Bytes,
    },
    CopyDone {
        frame: Bytes,
    },
    CopyFail {
        frame: Bytes,
        message: String,
    },
    /// p: PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse: which one depends
    /// on what the server asked for, so the body stays raw; see [`sasl_initial_response`] and
    /// [`password`].
    AuthResponse {
        frame: Bytes,
        body: Bytes,
    },
    /// F: the legacy fast-path function call. Parsed so the refusal can name the function.
    FunctionCall {
        frame: Bytes,
        function_oid: u32,
        arg_formats: Vec<i16>,
        args: Vec<Option<Bytes>>,
        result_format: i16,
    },
}

impl Frontend {
    /// The message as received: type byte, length and body.
    pub fn frame(&self) -> &Bytes {
        match self {
            Frontend::Query { frame, .. }
            | Frontend::Parse { frame, .. }
            | Frontend::Bind { frame, .. }
            | Frontend::Describe { frame, .. }
            | Frontend::Execute { frame, .. }
            | Frontend::Close { frame, .. }
            | Frontend::Sync { frame }
            | Frontend::Flush { frame }
            | Frontend::Terminate { frame }
            | Frontend::CopyData { frame }
            | Frontend::CopyDone { frame }
            | Frontend::CopyFail { frame, .. }
            | Frontend::AuthResponse { frame, .. }
            | Frontend::FunctionCall { frame, .. } => frame,
        }
    }

    /// The message's name in the protocol documentation, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frontend::Query { .. } => "Query",
            Frontend::Parse { .. } => "Parse",
            Frontend::Bind { .. } => "Bind",
            Frontend::Describe { .. } => "Describe",
            Frontend::Execute { .. } => "Execute",
            Frontend::Close { .. } => "Close",
            Frontend::Sync { .. } => "Sync",
            Frontend::Flush { .. } => "Flush",
            Frontend::Terminate { .. } => "Terminate",
            Frontend::CopyData { .. } => "CopyData",
            Frontend::CopyDone { .. } => "CopyDone",
            Frontend::CopyFail { .. } => "CopyFail",
            Frontend::AuthResponse { .. } => "PasswordMessage",
            Frontend::FunctionCall { .. } => "FunctionCall",
        }
    }

    /// The payload of a CopyData message (empty for any other message).
    pub fn copy_data(&self) -> Bytes {
        match self {
            Frontend::CopyData { frame } if frame.len() >= 5 => frame.slice(5..),
            _ => Bytes::new(),
        }
    }
}

/// Decodes the first message of a connection: a StartupMessage, SSLRequest, GSSENCRequest or
/// CancelRequest. `Ok(None)`: more bytes are needed. A protocol other than 3.0 is refused.
pub fn decode_startup(buf: &mut BytesMut, max_len: usize) -> Result<Option<Startup>, WireError> {
    let Some(mut header) = buf.get(..4) else {
        buf.reserve(4 - buf.len());
        return Ok(None);
    };
    let len = header.get_i32();
    let total = frame_total(len, 8, 0, max_len)?;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let body = frame.slice(4..);
    let mut r = Reader::new(&body, "startup");
    let code = r.u32("protocol version")?;
    let startup = match code {
        SSL_REQUEST_CODE => Startup::SslRequest,
        GSSENC_REQUEST_CODE => Startup::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            r.message = "CancelRequest";
            let pid = r.i32("process id")?;
            let secret = r.i32("secret key")?;
            Startup::Cancel(BackendKey { pid, secret })
        }
        PROTOCOL_3_0 => {
            r.message = "StartupMessage";
            let mut params = Vec::new();
            loop {
                let name = r.string("parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = r.string("parameter value")?;
                params.push((name, value));
            }
            Startup::Startup {
                protocol_version: code,
                params,
            }
        }
        other => {
            return Err(WireError::UnsupportedProtocol {
                major: (other >> 16) as u16,
                minor: (other & 0xffff) as u16,
            })
        }
    };
    r.finish()?;
    Ok(Some(startup))
}

/// Decodes one regular-phase message. `Ok(None)`: more bytes are needed.
pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frontend>, WireError> {
    let Some(frame) = split_frame(buf, max_len)? else {
        return Ok(None);
    };
    parse_frame(frame).map(Some)
}

/// Parses one whole frame (type byte, length, body), as [`decode`] split it off.
pub fn parse_frame(frame: Bytes) -> Result<Frontend, WireError> {
    let tag = frame.first().copied().unwrap_or_default();
    let body = if frame.len() >= 5 {
        frame.slice(5..)
    } else {
        Bytes::new()
    };
    let mut r = Reader::new(&body, message_name(tag));
    let msg = match tag {
        b'Q' => {
            let sql = r.string("query string")?;
            Frontend::Query { frame, sql }
        }
        b'P' => {
            let name = r.string("statement name")?;
            let sql = r.string("query string")?;
            let n = r.count("parameter type count")?;
            let param_types = (0..n)
                .map(|_| r.u32("parameter type"))
                .collect::<Result<_, _>>()?;
            Frontend::Parse {
                frame,
                name,
                sql,
                param_types,
            }
        }
        b'B' => {
            let portal = r.string("portal name")?;
            let statement = r.string("statement name")?;
            let param_formats = formats(&mut r, "parameter format")?;
            let n = r.count("parameter count")?;
            let params = (0..n)
                .map(|_| r.nullable("parameter value"))
                .collect::<Result<_, _>>()?;
            check_format_count(&r, "parameter formats", param_formats.len(), n)?;
            let result_formats = formats(&mut r, "result format")?;
            Frontend::Bind {
                frame,
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            }
        }
        b'D' | b'C' => {
            let target = Target::parse(r.u8("kind")?, &r)?;
            let name = r.string("name")?;
            if tag == b'D' {
                Frontend::Describe {
                    frame,
                    target,
                    name,
                }
            } else {
                Frontend::Close {
                    frame,
                    target,
                    name,
                }
            }
        }
        b'E' => {
            let portal = r.string("portal name")?;
            let max_rows = r.i32("row limit")?;
            Frontend::Execute {
                frame,
                portal,
                max_rows,
            }
        }
        b'S' => Frontend::Sync { frame },
        b'H' => Frontend::Flush { frame },
        b'X' => Frontend::Terminate { frame },
        b'c' => Frontend::CopyDone { frame },
        b'd' => {
            r.take_rest();
            Frontend::CopyData { frame }
        }
        b'f' => {
            let message = r.string("error message")?;
            Frontend::CopyFail { frame, message }
        }
        b'p' => {
            let body = r.take_rest();
            Frontend::AuthResponse { frame, body }
        }
        b'F' => {
            let function_oid = r.u32("function oid")?;
            let arg_formats = formats(&mut r, "argument format")?;
            let n = r.count("argument count")?;
            let args = (0..n)
                .map(|_| r.nullable("argument value"))
                .collect::<Result<_, _>>()?;
            check_format_count(&r, "argument formats", arg_formats.len(), n)?;
            let result_format = r.i16("result format")?;
            Frontend::FunctionCall {
                frame,
                function_oid,
                arg_formats,
                args,
                result_format,
            }
        }
        other => {
            return Err(WireError::UnknownMessage {
                direction: Direction::Frontend,
                tag: other,
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

/// A SASLInitialResponse body: the mechanism the client chose and its first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    pub mechanism: String,
    /// `None` when the client sent length -1 (no initial response).
    pub data: Option<Bytes>,
}

/// Reads the body of an [`Frontend::AuthResponse`] as a SASLInitialResponse.
pub fn sasl_initial_response(body: &Bytes) -> Result<SaslInitialResponse, WireError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.string("mechanism")?;
    let data = r.nullable("initial response")?;
    r.finish()?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// Reads the body of an [`Frontend::AuthResponse`] as a cleartext PasswordMessage.
pub fn password(body: &Bytes) -> Result<&str, WireError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let pw = r.str("password")?;
    r.finish()?;
    Ok(pw)
}

// Builders for vigil as a client of an upstream server.

/// A StartupMessage for protocol 3.0.
pub fn startup_message<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    pp::startup_message(params, &mut out).map_err(|_| WireError::Nul {
        field: "startup parameter",
    })?;
    Ok(out.freeze())
}

pub fn ssl_request() -> Bytes {
    let mut out = BytesMut::new();
    pp::ssl_request(&mut out);
    out.freeze()
}

pub fn cancel_request(key: BackendKey) -> Bytes {
    let mut out = BytesMut::new();
    pp::cancel_request(key.pid, key.secret, &mut out);
    out.freeze()
}

/// A PasswordMessage: a cleartext password or an MD5 hash (`md5...`).
pub fn password_message(password: &[u8]) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    pp::password_message(password, &mut out).map_err(|_| WireError::Nul { field: "password" })?;
    Ok(out.freeze())
}

pub fn sasl_initial_response_message(mechanism: &str, data: &[u8]) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    pp::sasl_initial_response(mechanism, data, &mut out).map_err(|_| WireError::Nul {
        field: "SASL mechanism",
    })?;
    Ok(out.freeze())
}

pub fn sasl_response_message(data: &[u8]) -> Result<Bytes, WireError> {
    build(b'p', |out| {
        out.put_slice(data);
        Ok(())
    })
}

pub fn query(sql: &str) -> Result<Bytes, WireError> {
    build(b'Q', |out| put_cstr(out, sql.as_bytes(), "query"))
}

pub fn terminate() -> Bytes {
    let mut out = BytesMut::new();
    pp::terminate(&mut out);
    out.freeze()
}

fn formats(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<i16>, WireError> {
    let n = r.count(field)?;
    (0..n).map(|_| r.i16(field)).collect()
}

/// Format codes apply to all values (0 or 1 codes) or one each.
fn check_format_count(
    r: &Reader<'_>,
    what: &'static str,
    found: usize,
    expected: usize,
) -> Result<(), WireError> {
    if found > 1 && found != expected {
        return Err(WireError::CountMismatch {
            message: r.message,
            what,
            found,
            expected,
        });
    }
    Ok(())
}

fn message_name(tag: u8) -> &'static str {
    match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'X' => "Terminate",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'p' => "PasswordMessage",
        b'F' => "FunctionCall",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        b
    }

    fn one(tag: u8, body: &[u8]) -> Result<Frontend, WireError> {
        let mut buf = frame(tag, body);
        let m = decode(&mut buf, 1 << 20)?.expect("a whole message");
        assert!(buf.is_empty());
        Ok(m)
    }

    #[test]
    fn startup_message_round_trip() {
        let raw = startup_message([("user", "alice"), ("database", "appdb")]).unwrap();
        let mut buf = BytesMut::from(&raw[..]);
        let s = decode_startup(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(
            s,
            Startup::Startup {
                protocol_version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "appdb".into())
                ]
            }
        );
        assert_eq!(s.param("user"), Some("alice"));
        assert!(buf.is_empty());
    }

    const MAX: usize = super::super::MAX_STARTUP_LEN;

    #[test]
    fn startup_requests() {
        let mut buf = BytesMut::from(&ssl_request()[..]);
        assert_eq!(
            decode_startup(&mut buf, MAX).unwrap(),
            Some(Startup::SslRequest)
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30][..]);
        assert_eq!(
            decode_startup(&mut buf, MAX).unwrap(),
            Some(Startup::GssEncRequest)
        );
        let key = BackendKey {
            pid: 42,
            secret: -7,
        };
        let mut buf = BytesMut::from(&cancel_request(key)[..]);
        assert_eq!(
            decode_startup(&mut buf, MAX).unwrap(),
            Some(Startup::Cancel(key))
        );
    }

    #[test]
    fn startup_needs_more_bytes_then_decodes() {
        let raw = startup_message([("user", "bob")]).unwrap();
        let mut buf = BytesMut::new();
        for (i, b) in raw.iter().enumerate() {
            assert_eq!(decode_startup(&mut buf, MAX).unwrap(), None, "at {i}");
            buf.put_u8(*b);
        }
        assert!(decode_startup(&mut buf, MAX).unwrap().is_some());
    }

    #[test]
    fn startup_errors() {
        // Protocol 2.0 and 3.2 are refused by name.
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0, 2, 0, 0, 0][..]);
        let e = decode_startup(&mut buf, MAX).unwrap_err();
        assert_eq!(e, WireError::UnsupportedProtocol { major: 2, minor: 0 });
        assert!(e.to_string().contains("2.0"), "{e}");
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0, 3, 0, 2, 0][..]);
        assert_eq!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::UnsupportedProtocol { major: 3, minor: 2 }
        );
        // Length smaller than the code.
        let mut buf = BytesMut::from(&[0, 0, 0, 4][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::LengthTooSmall { len: 4, min: 8 }
        ));
        // Over the limit: refused from the header alone.
        let mut buf = BytesMut::from(&[0, 1, 0, 0][..]);
        let e = decode_startup(&mut buf, MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            "message of 65536 bytes exceeds the limit of 10000"
        );
        // A parameter without its terminator; a missing final NUL; trailing bytes.
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::Unterminated { .. }
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 13, 0, 3, 0, 0, b'u', 0, b'v', 0, 0][..]);
        assert!(decode_startup(&mut buf, MAX).unwrap().is_some());
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, b'v', 0][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::Unterminated { .. }
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 1][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::TrailingBytes { extra: 1, .. }
        ));
        // A cancel request with a short key.
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::Truncated { .. }
        ));
        // Invalid UTF-8 in a parameter.
        let mut buf = BytesMut::from(&[0, 0, 0, 13, 0, 3, 0, 0, 0xff, 0, b'v', 0, 0][..]);
        assert!(matches!(
            decode_startup(&mut buf, MAX).unwrap_err(),
            WireError::InvalidUtf8 { .. }
        ));
    }

    #[test]
    fn query() {
        let m = one(b'Q', b"select 1\0").unwrap();
        assert_eq!(m.name(), "Query");
        let Frontend::Query { frame, sql } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(sql, "select 1");
        assert_eq!(&frame[..], &super::query("select 1").unwrap()[..]);
    }

    #[test]
    fn extended_protocol_messages() {
        let mut buf = BytesMut::new();
        pp::parse("s1", "select $1::int", [23u32], &mut buf).unwrap();
        pp::bind(
            "p1",
            "s1",
            [1i16],
            [Some(&b"\0\0\0\x07"[..]), None],
            |v, out| match v {
                Some(v) => {
                    out.put_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            [0i16, 1],
            &mut buf,
        )
        .map_err(|_| ())
        .unwrap();
        pp::describe(b'P', "p1", &mut buf).unwrap();
        pp::execute("p1", 10, &mut buf).unwrap();
        pp::close(b'S', "s1", &mut buf).unwrap();
        pp::sync(&mut buf);
        pp::flush(&mut buf);
        pp::terminate(&mut buf);
        let all = buf.clone().freeze();
        let mut got = Vec::new();
        while let Some(m) = decode(&mut buf, 1 << 20).unwrap() {
            got.push(m);
        }
        assert_eq!(
            got.iter().map(Frontend::name).collect::<Vec<_>>(),
            [
                "Parse",
                "Bind",
                "Describe",
                "Execute",
                "Close",
                "Sync",
                "Flush",
                "Terminate"
            ]
        );
        // The frames concatenate back to the input: nothing is lost or rewritten.
        let joined: Vec<u8> = got.iter().flat_map(|m| m.frame().to_vec()).collect();
        assert_eq!(joined, all.to_vec());
        assert_eq!(
            got[0],
            Frontend::Parse {
                frame: got[0].frame().clone(),
                name: "s1".into(),
                sql: "select $1::int".into(),
                param_types: vec![23]
            }
        );
        let Frontend::Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
            ..
        } = &got[1]
        else {
            panic!()
        };
        assert_eq!((portal.as_str(), statement.as_str()), ("p1", "s1"));
        assert_eq!(param_formats, &[1]);
        assert_eq!(params, &[Some(Bytes::from_static(b"\0\0\0\x07")), None]);
        assert_eq!(result_formats, &[0, 1]);
        assert!(matches!(
            &got[2],
            Frontend::Describe { target: Target::Portal, name, .. } if name == "p1"
        ));
        assert!(matches!(
            &got[3],
            Frontend::Execute { portal, max_rows: 10, .. } if portal == "p1"
        ));
        assert!(matches!(
            &got[4],
            Frontend::Close { target: Target::Statement, name, .. } if name == "s1"
        ));
    }

    #[test]
    fn copy_and_auth_messages() {
        let m = one(b'd', b"1\t2\n").unwrap();
        assert_eq!(&m.copy_data()[..], b"1\t2\n");
        assert!(matches!(one(b'c', b"").unwrap(), Frontend::CopyDone { .. }));
        assert!(matches!(
            one(b'f', b"nope\0").unwrap(),
            Frontend::CopyFail { message, .. } if message == "nope"
        ));
        let raw = sasl_initial_response_message("SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        let mut buf = BytesMut::from(&raw[..]);
        let Some(Frontend::AuthResponse { body, .. }) = decode(&mut buf, 1 << 20).unwrap() else {
            panic!()
        };
        let init = sasl_initial_response(&body).unwrap();
        assert_eq!(init.mechanism, "SCRAM-SHA-256");
        assert_eq!(init.data.as_deref(), Some(&b"n,,n=,r=abc"[..]));
        let raw = password_message(b"secret").unwrap();
        let mut buf = BytesMut::from(&raw[..]);
        let Some(Frontend::AuthResponse { body, .. }) = decode(&mut buf, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(password(&body).unwrap(), "secret");
        assert!(sasl_initial_response(&Bytes::from_static(b"SCRAM\0\0\0\0\x09abc")).is_err());
    }

    #[test]
    fn function_call_is_parsed() {
        // oid 1598 (md5), one text arg "x", text result.
        let body = b"\0\0\x06\x3e\0\x01\0\0\0\x01\0\0\0\x01x\0\0";
        let m = one(b'F', body).unwrap();
        assert_eq!(
            m,
            Frontend::FunctionCall {
                frame: m.frame().clone(),
                function_oid: 1598,
                arg_formats: vec![0],
                args: vec![Some(Bytes::from_static(b"x"))],
                result_format: 0
            }
        );
    }

    #[test]
    fn regular_phase_errors() {
        let e = one(b'z', b"").unwrap_err();
        assert_eq!(e.to_string(), "unknown frontend message type 'z'");
        let e = one(0, b"\0\x03\0\0").unwrap_err();
        assert_eq!(e.to_string(), "unknown frontend message type 0x00");
        // Length below 4, and over the limit from the header alone.
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert!(matches!(
            decode(&mut buf, 100).unwrap_err(),
            WireError::LengthTooSmall { len: 3, min: 4 }
        ));
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 1, 0][..]);
        assert_eq!(
            decode(&mut buf, 100).unwrap_err().to_string(),
            "message of 257 bytes exceeds the limit of 100"
        );
        let mut buf = BytesMut::from(&[b'Q', 0x80, 0, 0, 0][..]);
        assert!(decode(&mut buf, 100).is_err());
        // Missing NUL, trailing bytes, bad UTF-8.
        assert!(matches!(
            one(b'Q', b"select 1").unwrap_err(),
            WireError::Unterminated {
                message: "Query",
                ..
            }
        ));
        assert!(matches!(
            one(b'Q', b"select 1\0x").unwrap_err(),
            WireError::TrailingBytes {
                message: "Query",
                extra: 1
            }
        ));
        assert!(matches!(
            one(b'Q', b"select '\xff'\0").unwrap_err(),
            WireError::InvalidUtf8 { .. }
        ));
        assert!(matches!(
            one(b'S', b"x").unwrap_err(),
            WireError::TrailingBytes { .. }
        ));
        // Counts that do not match the body.
        assert!(matches!(
            one(b'P', b"\0select 1\0\0\x02\0\0\0\x17").unwrap_err(),
            WireError::Truncated { .. }
        ));
        assert!(matches!(
            one(b'P', b"\0select 1\0\xff\xff").unwrap_err(),
            WireError::InvalidValue { .. }
        ));
        // Bind: a value longer than the body; length -2; 2 formats for 3 parameters.
        assert!(matches!(
            one(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0").unwrap_err(),
            WireError::Truncated { .. }
        ));
        assert!(matches!(
            one(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0").unwrap_err(),
            WireError::InvalidValue { value: -2, .. }
        ));
        let e = one(
            b'B',
            b"\0\0\0\x02\0\0\0\0\0\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0\0",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                WireError::CountMismatch {
                    found: 2,
                    expected: 3,
                    ..
                }
            ),
            "{e}"
        );
        // Describe of something that is neither a statement nor a portal.
        assert!(matches!(
            one(b'D', b"X\0").unwrap_err(),
            WireError::InvalidValue { .. }
        ));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let whole = frame(b'Q', b"select 1\0");
        let mut buf = BytesMut::new();
        for b in whole.iter() {
            assert_eq!(decode(&mut buf, 100).unwrap(), None);
            buf.put_u8(*b);
        }
        assert!(decode(&mut buf, 100).unwrap().is_some());
    }
}
