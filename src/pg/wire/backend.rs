//! Backend (B) messages: what a server sends. The decoder vigil uses on an upstream's stream,
//! and the builders vigil uses when it is the server its clients talk to.
//!
//! Invariant: a decoded message keeps its whole frame, so a frame passes to the client byte for
//! byte unless the masker builds a new DataRow; a message type vigil does not know is an error.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{build, count_i16, put_cstr, split_frame, BackendKey, Direction, Reader, WireError};

/// A decoded backend message. Each variant holds `frame`: the message exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// R: a step of authentication.
    Authentication {
        frame: Bytes,
        auth: Authentication,
    },
    /// K: the key a CancelRequest must quote.
    BackendKeyData {
        frame: Bytes,
        key: BackendKey,
    },
    /// S: a run-time parameter's current value (server_version, client_encoding, TimeZone, ...).
    ParameterStatus {
        frame: Bytes,
        name: String,
        value: String,
    },
    /// Z: the server is ready for a new query cycle.
    ReadyForQuery {
        frame: Bytes,
        status: TransactionStatus,
    },
    /// T: the columns of the rows that follow.
    RowDescription {
        frame: Bytes,
        fields: Vec<FieldDescription>,
    },
    /// D: one row; values are read lazily from the frame.
    DataRow(DataRow),
    /// C: a statement finished; the tag is e.g. `SELECT 3`, `INSERT 0 1`.
    CommandComplete {
        frame: Bytes,
        tag: String,
    },
    EmptyQueryResponse {
        frame: Bytes,
    },
    /// E: an error; fields by their one-byte codes.
    ErrorResponse {
        frame: Bytes,
        fields: ErrorFields,
    },
    /// N: a notice; same fields as an error.
    NoticeResponse {
        frame: Bytes,
        fields: ErrorFields,
    },
    /// t: the parameter types of a described statement.
    ParameterDescription {
        frame: Bytes,
        types: Vec<u32>,
    },
    /// G: the server waits for COPY data from the client.
    CopyInResponse {
        frame: Bytes,
        copy: CopyResponse,
    },
    /// H: COPY data from the server follows.
    CopyOutResponse {
        frame: Bytes,
        copy: CopyResponse,
    },
    /// W: both directions carry COPY data (replication).
    CopyBothResponse {
        frame: Bytes,
        copy: CopyResponse,
    },
    /// d: COPY data; the payload is `frame[5..]` (see [`Backend::copy_data`]).
    CopyData {
        frame: Bytes,
    },
    CopyDone {
        frame: Bytes,
    },
    /// A: a NOTIFY from another session.
    NotificationResponse {
        frame: Bytes,
        pid: i32,
        channel: String,
        payload: String,
    },
    ParseComplete {
        frame: Bytes,
    },
    BindComplete {
        frame: Bytes,
    },
    CloseComplete {
        frame: Bytes,
    },
    NoData {
        frame: Bytes,
    },
    PortalSuspended {
        frame: Bytes,
    },
    /// v: the server supports an older minor version or not all requested `_pq_` options.
    NegotiateProtocolVersion {
        frame: Bytes,
        newest_minor: i32,
        unrecognized: Vec<String>,
    },
}

/// The authentication request or outcome in an `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// The SASL mechanisms the server offers, in its order of preference.
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue {
        data: Bytes,
    },
    SaslFinal {
        data: Bytes,
    },
    /// Kerberos V5 (2), GSSAPI (7, 8), SSPI (9), SCM credentials (6): vigil does not do these.
    Unsupported {
        code: i32,
    },
}

/// The transaction status in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries are rejected until it ends).
    Failed,
}

impl TransactionStatus {
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    /// The table's oid if the column is a plain table column, else 0.
    pub table_oid: u32,
    /// The column's attribute number in that table, else 0.
    pub column_id: i16,
    pub type_oid: u32,
    /// `pg_type.typlen`: negative for variable-width types.
    pub type_size: i16,
    /// `pg_attribute.atttypmod`.
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// The column formats of a Copy{In,Out,Both}Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// 0: textual COPY (columns are all 0); 1: binary.
    pub format: i8,
    pub column_formats: Vec<i16>,
}

/// The fields of an ErrorResponse or NoticeResponse by code (`S`, `V`, `C`, `M`, `D`, `H`, ...).
/// Values are decoded lossily: an error must stay reportable whatever its encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields(pub Vec<(u8, String)>);

impl ErrorFields {
    pub fn get(&self, code: u8) -> Option<&str> {
        self.0
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// The untranslated severity (`V`, since 9.6), else the localized one (`S`).
    pub fn severity(&self) -> &str {
        self.get(b'V').or_else(|| self.get(b'S')).unwrap_or("ERROR")
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> &str {
        self.get(b'C').unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.get(b'M').unwrap_or("")
    }

    pub fn detail(&self) -> Option<&str> {
        self.get(b'D')
    }

    pub fn hint(&self) -> Option<&str> {
        self.get(b'H')
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity(),
            self.message(),
            self.code()
        )?;
        if let Some(d) = self.detail() {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// A DataRow, checked at decode time: its column count and value lengths match the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    frame: Bytes,
    columns: usize,
}

impl DataRow {
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.columns
    }

    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// Where each value lies in [`DataRow::frame`]; `None` is SQL NULL.
    pub fn ranges(&self) -> DataRowRanges<'_> {
        DataRowRanges {
            rest: self.frame.get(7..).unwrap_or_default(),
            offset: 7,
            remaining: self.columns,
        }
    }

    /// Each value as bytes (text or binary per the column's format); `None` is SQL NULL.
    pub fn values(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        self.ranges()
            .map(|r| r.map(|r| self.frame.get(r).unwrap_or_default()))
    }

    /// The value of column `i` as a zero-copy slice: `None` past the end, `Some(None)` for NULL.
    pub fn value(&self, i: usize) -> Option<Option<Bytes>> {
        self.ranges().nth(i).map(|r| r.map(|r| self.frame.slice(r)))
    }
}

/// Iterator over the value ranges of a [`DataRow`].
pub struct DataRowRanges<'a> {
    rest: &'a [u8],
    offset: usize,
    remaining: usize,
}

impl Iterator for DataRowRanges<'_> {
    type Item = Option<Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let (mut len, rest) = self.rest.split_at_checked(4)?;
        let len = len.get_i32();
        self.offset += 4;
        let Ok(n) = usize::try_from(len) else {
            self.rest = rest;
            return Some(None);
        };
        let (_, rest) = rest.split_at_checked(n)?;
        let range = self.offset..self.offset + n;
        self.offset += n;
        self.rest = rest;
        Some(Some(range))
    }
}

impl Backend {
    /// The message as received: type byte, length and body.
    pub fn frame(&self) -> &Bytes {
        match self {
            Backend::DataRow(row) => row.frame(),
            Backend::Authentication { frame, .. }
            | Backend::BackendKeyData { frame, .. }
            | Backend::ParameterStatus { frame, .. }
            | Backend::ReadyForQuery { frame, .. }
            | Backend::RowDescription { frame, .. }
            | Backend::CommandComplete { frame, .. }
            | Backend::EmptyQueryResponse { frame }
            | Backend::ErrorResponse { frame, .. }
            | Backend::NoticeResponse { frame, .. }
            | Backend::ParameterDescription { frame, .. }
            | Backend::CopyInResponse { frame, .. }
            | Backend::CopyOutResponse { frame, .. }
            | Backend::CopyBothResponse { frame, .. }
            | Backend::CopyData { frame }
            | Backend::CopyDone { frame }
            | Backend::NotificationResponse { frame, .. }
            | Backend::ParseComplete { frame }
            | Backend::BindComplete { frame }
            | Backend::CloseComplete { frame }
            | Backend::NoData { frame }
            | Backend::PortalSuspended { frame }
            | Backend::NegotiateProtocolVersion { frame, .. } => frame,
        }
    }

    /// The message's name in the protocol documentation.
    pub fn name(&self) -> &'static str {
        let tag = self.frame().first().copied().unwrap_or_default();
        message_name(tag)
    }

    /// The payload of a CopyData message (empty for any other message).
    pub fn copy_data(&self) -> Bytes {
        match self {
            Backend::CopyData { frame } if frame.len() >= 5 => frame.slice(5..),
            _ => Bytes::new(),
        }
    }
}

/// Decodes one backend message. `Ok(None)`: more bytes are needed.
pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Backend>, WireError> {
    let Some(frame) = split_frame(buf, max_len)? else {
        return Ok(None);
    };
    parse_frame(frame).map(Some)
}

/// Parses one whole frame (type byte, length, body), as [`decode`] split it off.
pub fn parse_frame(frame: Bytes) -> Result<Backend, WireError> {
    let tag = frame.first().copied().unwrap_or_default();
    let body = if frame.len() >= 5 {
        frame.slice(5..)
    } else {
        Bytes::new()
    };
    let mut r = Reader::new(&body, message_name(tag));
    let msg = match tag {
        b'R' => {
            let auth = authentication(&mut r)?;
            Backend::Authentication { frame, auth }
        }
        b'K' => {
            let pid = r.i32("process id")?;
            let secret = r.i32("secret key")?;
            Backend::BackendKeyData {
                frame,
                key: BackendKey { pid, secret },
            }
        }
        b'S' => {
            let name = r.string("parameter name")?;
            let value = r.string("parameter value")?;
            Backend::ParameterStatus { frame, name, value }
        }
        b'Z' => {
            let status = match r.u8("transaction status")? {
                b'I' => TransactionStatus::Idle,
                b'T' => TransactionStatus::InTransaction,
                b'E' => TransactionStatus::Failed,
                other => return Err(r.invalid("transaction status", other.into())),
            };
            Backend::ReadyForQuery { frame, status }
        }
        b'T' => {
            let n = r.count("field count")?;
            let fields = (0..n)
                .map(|_| {
                    Ok(FieldDescription {
                        name: r.string("field name")?,
                        table_oid: r.u32("table oid")?,
                        column_id: r.i16("column attribute number")?,
                        type_oid: r.u32("type oid")?,
                        type_size: r.i16("type size")?,
                        type_modifier: r.i32("type modifier")?,
                        format: r.i16("format code")?,
                    })
                })
                .collect::<Result<_, WireError>>()?;
            Backend::RowDescription { frame, fields }
        }
        b'D' => {
            let columns = r.count("column count")?;
            for _ in 0..columns {
                r.nullable("column value")?;
            }
            r.finish()?;
            return Ok(Backend::DataRow(DataRow { frame, columns }));
        }
        b'C' => {
            let tag = r.string("command tag")?;
            Backend::CommandComplete { frame, tag }
        }
        b'I' => Backend::EmptyQueryResponse { frame },
        b'E' | b'N' => {
            let fields = error_fields(&mut r)?;
            if tag == b'E' {
                Backend::ErrorResponse { frame, fields }
            } else {
                Backend::NoticeResponse { frame, fields }
            }
        }
        b't' => {
            let n = r.count("parameter count")?;
            let types = (0..n)
                .map(|_| r.u32("parameter type"))
                .collect::<Result<_, _>>()?;
            Backend::ParameterDescription { frame, types }
        }
        b'G' | b'H' | b'W' => {
            let format = r.u8("copy format")? as i8;
            if !(0..=1).contains(&format) {
                return Err(r.invalid("copy format", format.into()));
            }
            let n = r.count("column count")?;
            let column_formats = (0..n)
                .map(|_| r.i16("column format"))
                .collect::<Result<_, _>>()?;
            let copy = CopyResponse {
                format,
                column_formats,
            };
            match tag {
                b'G' => Backend::CopyInResponse { frame, copy },
                b'H' => Backend::CopyOutResponse { frame, copy },
                _ => Backend::CopyBothResponse { frame, copy },
            }
        }
        b'd' => {
            r.take_rest();
            Backend::CopyData { frame }
        }
        b'c' => Backend::CopyDone { frame },
        b'A' => {
            let pid = r.i32("process id")?;
            let channel = r.string("channel")?;
            let payload = r.string("payload")?;
            Backend::NotificationResponse {
                frame,
                pid,
                channel,
                payload,
            }
        }
        b'1' => Backend::ParseComplete { frame },
        b'2' => Backend::BindComplete { frame },
        b'3' => Backend::CloseComplete { frame },
        b'n' => Backend::NoData { frame },
        b's' => Backend::PortalSuspended { frame },
        b'v' => {
            let newest_minor = r.i32("newest minor version")?;
            let n = r.i32("option count")?;
            let n = usize::try_from(n).map_err(|_| r.invalid("option count", n.into()))?;
            let mut unrecognized = Vec::new();
            for _ in 0..n {
                unrecognized.push(r.string("option name")?);
            }
            Backend::NegotiateProtocolVersion {
                frame,
                newest_minor,
                unrecognized,
            }
        }
        other => {
            return Err(WireError::UnknownMessage {
                direction: Direction::Backend,
                tag: other,
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

fn authentication(r: &mut Reader<'_>) -> Result<Authentication, WireError> {
    let code = r.i32("authentication code")?;
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let mut salt = [0u8; 4];
            salt.copy_from_slice(r.take(4, "salt")?);
            Authentication::Md5Password { salt }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.string("SASL mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue {
            data: r.take_rest(),
        },
        12 => Authentication::SaslFinal {
            data: r.take_rest(),
        },
        2 | 6 | 7 | 8 | 9 => {
            r.take_rest();
            Authentication::Unsupported { code }
        }
        other => return Err(r.invalid("authentication code", other.into())),
    })
}

fn error_fields(r: &mut Reader<'_>) -> Result<ErrorFields, WireError> {
    let mut fields = Vec::new();
    loop {
        let code = r.u8("field type")?;
        if code == 0 {
            return Ok(ErrorFields(fields));
        }
        let value = r.cstr("field value")?;
        fields.push((code, String::from_utf8_lossy(value).into_owned()));
    }
}

fn message_name(tag: u8) -> &'static str {
    match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'S' => "ParameterStatus",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        b'D' => "DataRow",
        b'C' => "CommandComplete",
        b'I' => "EmptyQueryResponse",
        b'E' => "ErrorResponse",
        b'N' => "NoticeResponse",
        b't' => "ParameterDescription",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'A' => "NotificationResponse",
        b'1' => "ParseComplete",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'n' => "NoData",
        b's' => "PortalSuspended",
        b'v' => "NegotiateProtocolVersion",
        _ => "unknown",
    }
}

// Builders for vigil as the server its clients talk to.

/// Severity of an error or notice vigil sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ends the statement.
    Error,
    /// Ends the session.
    Fatal,
    Warning,
    Notice,
    Info,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// Text fields of the messages vigil builds are cut to this many bytes, so a builder's frame
/// always fits the protocol's length field.
const MAX_TEXT: usize = 16 << 10;

/// An ErrorResponse with severity (`S` and `V`), SQLSTATE (`C`), message (`M`) and an optional
/// detail (`D`). NULs become U+FFFD and each text is cut at 16 KiB.
pub fn error_response(
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) -> Bytes {
    fields_message(b'E', severity, sqlstate, message, detail)
}

/// A NoticeResponse, with the same fields as [`error_response`].
pub fn notice_response(
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) -> Bytes {
    fields_message(b'N', severity, sqlstate, message, detail)
}

pub fn ready_for_query(status: TransactionStatus) -> Bytes {
    small(b'Z', |out| out.put_u8(status.as_byte()))
}

pub fn backend_key_data(key: BackendKey) -> Bytes {
    small(b'K', |out| {
        out.put_i32(key.pid);
        out.put_i32(key.secret);
    })
}

pub fn parameter_status(name: &str, value: &str) -> Bytes {
    small(b'S', |out| {
        put_text(out, name);
        put_text(out, value);
    })
}

pub fn command_complete(tag: &str) -> Bytes {
    small(b'C', |out| put_text(out, tag))
}

pub fn empty_query_response() -> Bytes {
    small(b'I', |_| {})
}

pub fn auth_ok() -> Bytes {
    small(b'R', |out| out.put_i32(0))
}

pub fn auth_cleartext_password() -> Bytes {
    small(b'R', |out| out.put_i32(3))
}

/// AuthenticationSASL offering `mechanisms` (vigil offers `SCRAM-SHA-256`).
pub fn auth_sasl(mechanisms: &[&str]) -> Result<Bytes, WireError> {
    build(b'R', |out| {
        out.put_i32(10);
        for m in mechanisms {
            put_cstr(out, m.as_bytes(), "SASL mechanism")?;
        }
        out.put_u8(0);
        Ok(())
    })
}

pub fn auth_sasl_continue(data: &[u8]) -> Result<Bytes, WireError> {
    build(b'R', |out| {
        out.put_i32(11);
        out.put_slice(data);
        Ok(())
    })
}

pub fn auth_sasl_final(data: &[u8]) -> Result<Bytes, WireError> {
    build(b'R', |out| {
        out.put_i32(12);
        out.put_slice(data);
        Ok(())
    })
}

pub fn row_description(fields: &[FieldDescription]) -> Result<Bytes, WireError> {
    build(b'T', |out| {
        out.put_i16(count_i16("RowDescription fields", fields.len())?);
        for f in fields {
            put_cstr(out, f.name.as_bytes(), "field name")?;
            out.put_u32(f.table_oid);
            out.put_i16(f.column_id);
            out.put_u32(f.type_oid);
            out.put_i16(f.type_size);
            out.put_i32(f.type_modifier);
            out.put_i16(f.format);
        }
        Ok(())
    })
}

/// A DataRow of `values` (`None` is NULL): what the masker sends in place of a row it rewrote.
pub fn data_row<'a>(
    values: impl IntoIterator<Item = Option<&'a [u8]>>,
) -> Result<Bytes, WireError> {
    build(b'D', |out| {
        out.put_i16(0);
        let mut n = 0usize;
        for v in values {
            match v {
                None => out.put_i32(-1),
                Some(v) => {
                    let len = i32::try_from(v.len()).map_err(|_| WireError::TooMany {
                        what: "DataRow value length",
                        count: v.len(),
                    })?;
                    out.put_i32(len);
                    out.put_slice(v);
                }
            }
            n += 1;
        }
        let count = count_i16("DataRow columns", n)?;
        if let Some(slot) = out.get_mut(5..7) {
            slot.copy_from_slice(&count.to_be_bytes());
        }
        Ok(())
    })
}

fn fields_message(
    tag: u8,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) -> Bytes {
    small(tag, |out| {
        for (code, value) in [
            (b'S', Some(severity.as_str())),
            (b'V', Some(severity.as_str())),
            (b'C', Some(sqlstate)),
            (b'M', Some(message)),
            (b'D', detail),
        ] {
            if let Some(v) = value {
                out.put_u8(code);
                put_text(out, v);
            }
        }
        out.put_u8(0);
    })
}

/// A frame whose body `f` keeps small (text through [`put_text`]): its length always fits.
fn small(tag: u8, f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(tag);
    out.put_i32(0);
    f(&mut out);
    let len = i32::try_from(out.len() - 1).unwrap_or(i32::MAX);
    if let Some(slot) = out.get_mut(1..5) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    out.freeze()
}

/// A C string of at most [`MAX_TEXT`] bytes (cut at a character boundary), NULs replaced.
fn put_text(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = s.get(..end).unwrap_or_default();
    if s.contains('\0') {
        out.put_slice(s.replace('\0', "\u{FFFD}").as_bytes());
    } else {
        out.put_slice(s.as_bytes());
    }
    out.put_u8(0);
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

    fn one(tag: u8, body: &[u8]) -> Result<Backend, WireError> {
        let mut buf = frame(tag, body);
        let m = decode(&mut buf, 1 << 20)?.expect("a whole message");
        assert!(buf.is_empty());
        Ok(m)
    }

    fn parse(raw: &Bytes) -> Backend {
        let mut buf = BytesMut::from(&raw[..]);
        let m = decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(m.frame(), raw);
        m
    }

    /// The response PostgreSQL sends to `SELECT 1 AS one`: RowDescription, DataRow,
    /// CommandComplete, ReadyForQuery.
    const SELECT_ONE: &[u8] =
        b"T\0\0\0\x1c\0\x01one\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0\
D\0\0\0\x0b\0\x01\0\0\0\x011\
C\0\0\0\x0dSELECT 1\0\
Z\0\0\0\x05I";

    #[test]
    fn decodes_a_query_response() {
        let mut buf = BytesMut::from(SELECT_ONE);
        let mut got = Vec::new();
        while let Some(m) = decode(&mut buf, 1 << 20).unwrap() {
            got.push(m);
        }
        assert_eq!(got.len(), 4);
        let Backend::RowDescription { fields, .. } = &got[0] else {
            panic!("{:?}", got[0])
        };
        assert_eq!(
            fields,
            &[FieldDescription {
                name: "one".into(),
                table_oid: 0,
                column_id: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0
            }]
        );
        let Backend::DataRow(row) = &got[1] else {
            panic!()
        };
        assert_eq!(row.len(), 1);
        assert_eq!(row.values().collect::<Vec<_>>(), [Some(&b"1"[..])]);
        assert!(matches!(&got[2], Backend::CommandComplete { tag, .. } if tag == "SELECT 1"));
        assert!(matches!(
            got[3],
            Backend::ReadyForQuery {
                status: TransactionStatus::Idle,
                ..
            }
        ));
        let joined: Vec<u8> = got.iter().flat_map(|m| m.frame().to_vec()).collect();
        assert_eq!(joined, SELECT_ONE);
    }

    #[test]
    fn data_row_ranges_and_rebuild() {
        let raw = data_row([Some(&b"alice"[..]), None, Some(&b""[..])]).unwrap();
        let Backend::DataRow(row) = parse(&raw) else {
            panic!()
        };
        assert_eq!(row.len(), 3);
        assert_eq!(
            row.values().collect::<Vec<_>>(),
            [Some(&b"alice"[..]), None, Some(&b""[..])]
        );
        let ranges: Vec<_> = row.ranges().collect();
        assert_eq!(ranges, [Some(11..16), None, Some(24..24)]);
        assert_eq!(row.value(0), Some(Some(Bytes::from_static(b"alice"))));
        assert_eq!(row.value(1), Some(None));
        assert_eq!(row.value(3), None);
        // Rebuilding from the values gives the same frame.
        assert_eq!(data_row(row.values()).unwrap(), raw);
    }

    #[test]
    fn authentication_messages() {
        let auth = |raw: Bytes| match parse(&raw) {
            Backend::Authentication { auth, .. } => auth,
            other => panic!("{other:?}"),
        };
        assert_eq!(auth(auth_ok()), Authentication::Ok);
        assert_eq!(
            auth(auth_cleartext_password()),
            Authentication::CleartextPassword
        );
        assert_eq!(
            auth(auth_sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]).unwrap()),
            Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            }
        );
        assert_eq!(
            auth(auth_sasl_continue(b"r=abc,s=xyz,i=4096").unwrap()),
            Authentication::SaslContinue {
                data: Bytes::from_static(b"r=abc,s=xyz,i=4096")
            }
        );
        assert_eq!(
            auth(auth_sasl_final(b"v=abc").unwrap()),
            Authentication::SaslFinal {
                data: Bytes::from_static(b"v=abc")
            }
        );
        assert_eq!(
            one(b'R', b"\0\0\0\x05\x01\x02\x03\x04").unwrap(),
            Backend::Authentication {
                frame: frame(b'R', b"\0\0\0\x05\x01\x02\x03\x04").freeze(),
                auth: Authentication::Md5Password { salt: [1, 2, 3, 4] }
            }
        );
        assert!(matches!(
            one(b'R', b"\0\0\0\x07").unwrap(),
            Backend::Authentication {
                auth: Authentication::Unsupported { code: 7 },
                ..
            }
        ));
        assert!(one(b'R', b"\0\0\0\x05\x01\x02").is_err());
        assert!(one(b'R', b"\0\0\0\x63").is_err());
        assert!(one(b'R', b"\0\0\0\0\0").is_err());
    }

    #[test]
    fn session_messages_round_trip() {
        let key = BackendKey {
            pid: 1234,
            secret: -99,
        };
        assert!(
            matches!(parse(&backend_key_data(key)), Backend::BackendKeyData { key: k, .. } if k == key)
        );
        assert!(matches!(
            parse(&parameter_status("server_version", "15.8")),
            Backend::ParameterStatus { name, value, .. } if name == "server_version" && value == "15.8"
        ));
        for s in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            assert!(
                matches!(parse(&ready_for_query(s)), Backend::ReadyForQuery { status, .. } if status == s)
            );
        }
        assert!(
            matches!(parse(&command_complete("SELECT 0")), Backend::CommandComplete { tag, .. } if tag == "SELECT 0")
        );
        assert!(matches!(
            parse(&empty_query_response()),
            Backend::EmptyQueryResponse { .. }
        ));
        let fields = vec![FieldDescription {
            name: "email".into(),
            table_oid: 16384,
            column_id: 2,
            type_oid: 25,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        }];
        assert!(
            matches!(parse(&row_description(&fields).unwrap()), Backend::RowDescription { fields: f, .. } if f == fields)
        );
        assert!(format!("{key:?}").contains("<secret>"));
        assert!(!format!("{key:?}").contains("99"));
    }

    #[test]
    fn errors_and_notices() {
        let raw = error_response(
            Severity::Error,
            "42501",
            "vigil: DROP is blocked",
            Some("rule no-destructive-sql"),
        );
        let Backend::ErrorResponse { fields, .. } = parse(&raw) else {
            panic!()
        };
        assert_eq!(fields.severity(), "ERROR");
        assert_eq!(fields.code(), "42501");
        assert_eq!(fields.message(), "vigil: DROP is blocked");
        assert_eq!(fields.detail(), Some("rule no-destructive-sql"));
        assert_eq!(fields.hint(), None);
        assert_eq!(
            fields.to_string(),
            "ERROR: vigil: DROP is blocked (SQLSTATE 42501); rule no-destructive-sql"
        );
        // NULs cannot break the framing; long texts are cut.
        let raw = notice_response(Severity::Notice, "00000", "a\0b", None);
        let Backend::NoticeResponse { fields, .. } = parse(&raw) else {
            panic!()
        };
        assert_eq!(fields.message(), "a\u{FFFD}b");
        let long = "é".repeat(MAX_TEXT);
        let Backend::ErrorResponse { fields, .. } =
            parse(&error_response(Severity::Fatal, "XX000", &long, None))
        else {
            panic!()
        };
        assert_eq!(fields.message().len(), MAX_TEXT);
        // Non-UTF-8 text from a server is kept lossily rather than refused.
        let Backend::ErrorResponse { fields, .. } = one(b'E', b"SERROR\0M\xff\0\0").unwrap() else {
            panic!()
        };
        assert_eq!(fields.message(), "\u{FFFD}");
        assert!(one(b'E', b"SERROR\0").is_err());
    }

    #[test]
    fn copy_and_other_messages() {
        assert_eq!(
            one(b'G', b"\0\0\x02\0\0\0\0").unwrap(),
            Backend::CopyInResponse {
                frame: frame(b'G', b"\0\0\x02\0\0\0\0").freeze(),
                copy: CopyResponse {
                    format: 0,
                    column_formats: vec![0, 0]
                }
            }
        );
        assert!(matches!(
            one(b'H', b"\x01\0\x01\0\x01").unwrap(),
            Backend::CopyOutResponse {
                copy: CopyResponse { format: 1, .. },
                ..
            }
        ));
        assert!(matches!(
            one(b'W', b"\0\0\0").unwrap(),
            Backend::CopyBothResponse { .. }
        ));
        assert!(one(b'H', b"\x02\0\0").is_err());
        let m = one(b'd', b"row\n").unwrap();
        assert_eq!(&m.copy_data()[..], b"row\n");
        assert_eq!(m.name(), "CopyData");
        assert!(matches!(one(b'c', b"").unwrap(), Backend::CopyDone { .. }));
        assert!(matches!(
            one(b'A', b"\0\0\0\x07chan\0hello\0").unwrap(),
            Backend::NotificationResponse { pid: 7, channel, payload, .. } if channel == "chan" && payload == "hello"
        ));
        assert!(matches!(
            one(b't', b"\0\x02\0\0\0\x17\0\0\0\x19").unwrap(),
            Backend::ParameterDescription { types, .. } if types == [23, 25]
        ));
        for (tag, name) in [
            (b'1', "ParseComplete"),
            (b'2', "BindComplete"),
            (b'3', "CloseComplete"),
            (b'n', "NoData"),
            (b's', "PortalSuspended"),
            (b'I', "EmptyQueryResponse"),
        ] {
            assert_eq!(one(tag, b"").unwrap().name(), name);
            assert!(one(tag, b"x").is_err());
        }
        assert!(matches!(
            one(b'v', b"\0\0\0\0\0\0\0\x01_pq_.x\0").unwrap(),
            Backend::NegotiateProtocolVersion { newest_minor: 0, unrecognized, .. } if unrecognized == ["_pq_.x"]
        ));
        assert!(one(b'v', b"\0\0\0\0\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn malformed_backend_messages() {
        assert_eq!(
            one(b'?', b"").unwrap_err().to_string(),
            "unknown backend message type '?'"
        );
        // DataRow: count larger than the values present; a value longer than the body; a
        // negative length other than -1; trailing bytes.
        assert!(one(b'D', b"\0\x02\0\0\0\x01a").is_err());
        assert!(one(b'D', b"\0\x01\0\0\0\x05a").is_err());
        assert!(one(b'D', b"\0\x01\xff\xff\xff\xfe").is_err());
        assert!(one(b'D', b"\0\x01\0\0\0\x01ab").is_err());
        assert!(one(b'D', b"\xff\xff").is_err());
        // RowDescription cut short; ReadyForQuery with an unknown status.
        assert!(one(b'T', b"\0\x01one\0\0\0").is_err());
        assert!(one(b'Z', b"X").is_err());
        assert!(one(b'K', b"\0\0\0\x01").is_err());
        assert!(one(b'S', b"a\0b").is_err());
        let mut buf = BytesMut::from(&b"D\0\0\0\x02"[..]);
        assert!(decode(&mut buf, 100).is_err());
        let mut buf = BytesMut::from(&b"D\0\0\x10\0"[..]);
        assert_eq!(
            decode(&mut buf, 100).unwrap_err().to_string(),
            "message of 4097 bytes exceeds the limit of 100"
        );
    }
}
