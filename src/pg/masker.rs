//! Column masking, the wire half: replaces the values of masked columns in DataRow (B) bodies
//! and in COPY text and CSV rows, and leaves every other byte as the server sent it. Which
//! columns, and with which [`Method`], comes from `policy::mask`. Pure: no I/O, no tokio.
//!
//! # Masked values
//!
//! A masked value stays valid input for its column's type where that is possible, so clients
//! and drivers still decode it:
//!
//! | method    | text-like types (text, varchar, bpchar, name, unknown, and registered ones such as citext) | any other type |
//! |-----------|-----------------------------------------------------------------------------|----------|
//! | `redact`  | `****`                                                                      | NULL     |
//! | `partial` | every character but the last `min(4, n / 2)` becomes `*` (`*******6789`)   | NULL     |
//! | `hash`    | 16 hex digits of HMAC-SHA256 under the bastion's key                       | NULL     |
//! | `null`    | NULL                                                                        | NULL     |
//!
//! NULL stays NULL under every method. A type-correct constant for other types (0, epoch) would
//! read as real data in sums and charts; NULL says "no value here". `partial` keeps the length
//! and never more than half the characters; it works on UTF-8 characters (vigil's sessions use
//! UTF8 client encoding) and falls back to `****` for bytes that are not UTF-8. `hash` is keyed,
//! so equal values hash equally (joins and GROUP BY still work) but hashes cannot be reversed
//! by hashing a dictionary without the key; 64 bits make accidental collisions rare, not
//! impossible.
//!
//! Binary-format values are masked the same way for text-like types (their binary form is their
//! bytes) and become NULL otherwise.
//!
//! # COPY
//!
//! Text format rows are split on unescaped delimiters; a masked field is unescaped, masked and
//! escaped again (backslash, delimiter, and the control characters PostgreSQL names), NULL is
//! the `NULL` string as given. CSV rows follow PostgreSQL's CSV reader (quote, escape, doubled
//! quotes, delimiters and newlines inside quotes); a masked value is always written quoted, so
//! it can never read as NULL. A masked value that happens to equal a custom text-format NULL
//! string reads as NULL: it shows less, never more. Binary COPY of masked columns is refused by
//! the policy and never reaches this module.

#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::fmt;

use aws_lc_rs::hmac;
use bytes::{BufMut, Bytes, BytesMut};

use crate::policy::mask::{CopyFormat, CopyOptions, Method};

/// Type OIDs of the built-in text-like types.
pub mod oid {
    pub const NAME: u32 = 19;
    pub const TEXT: u32 = 25;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
}

/// How to mask one column: from the policy's [`Method`], the column's type OID and format code
/// (RowDescription). COPY rows are text: `binary` is ignored there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnMask {
    pub method: Method,
    pub type_oid: u32,
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("DataRow: the body is shorter than its column count")]
    MissingColumnCount,
    #[error("DataRow: negative column count {0}")]
    NegativeColumnCount(i16),
    #[error("{0} columns in the row, {1} in its description")]
    ColumnCount(usize, usize),
    #[error("DataRow: column {0}: the body ends inside its length")]
    TruncatedLength(usize),
    #[error("DataRow: column {column}: invalid length {length}")]
    BadLength { column: usize, length: i32 },
    #[error("DataRow: column {column}: {length} bytes announced, {available} left")]
    TruncatedValue {
        column: usize,
        length: usize,
        available: usize,
    },
    #[error("DataRow: {0} bytes after the last column")]
    TrailingBytes(usize),
    #[error("a masked value does not fit in a message")]
    ValueTooLong,
    #[error("COPY: the row ends in a lone backslash")]
    TrailingBackslash,
    #[error("COPY: {0:?} cannot be a text-format delimiter")]
    BadDelimiter(char),
    #[error("COPY: the row ends inside a quoted CSV field")]
    UnterminatedQuote,
    #[error("COPY: binary rows cannot be masked")]
    BinaryCopy,
}

/// Masks values under one bastion key. Cheap to share; `Debug` does not print the key.
pub struct Masker {
    key: hmac::Key,
    text_types: Vec<u32>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("key", &"<secret>")
            .field("text_types", &self.text_types)
            .finish()
    }
}

const REDACTED: &[u8] = b"****";
/// Hex digits kept of the HMAC for `hash`.
const HASH_HEX: usize = 16;

impl Masker {
    /// `key`: the bastion's secret for `hash` (at least 32 random bytes; keep it stable, or
    /// hashes change and joins across sessions stop matching).
    pub fn new(key: &[u8]) -> Masker {
        Masker {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            text_types: vec![
                oid::NAME,
                oid::TEXT,
                oid::UNKNOWN,
                oid::BPCHAR,
                oid::VARCHAR,
            ],
        }
    }

    /// Also treat this type as text-like: extension types without a fixed OID (`citext`),
    /// domains over text. The proxy looks their OIDs up on the upstream.
    pub fn with_text_type(mut self, type_oid: u32) -> Masker {
        if !self.text_types.contains(&type_oid) {
            self.text_types.push(type_oid);
        }
        self
    }

    pub fn is_text_type(&self, type_oid: u32) -> bool {
        self.text_types.contains(&type_oid)
    }

    /// A text-format value, masked; `None` is NULL.
    pub fn mask_text(&self, method: Method, type_oid: u32, value: Option<&[u8]>) -> Option<Bytes> {
        let value = value?;
        if !self.is_text_type(type_oid) {
            return None;
        }
        match method {
            Method::Redact => Some(Bytes::from_static(REDACTED)),
            Method::Partial => Some(partial(value)),
            Method::Hash => Some(self.hash(value)),
            Method::Null => None,
        }
    }

    /// A binary-format value, masked; `None` is NULL. The binary form of the text-like types is
    /// their text, so they mask as text; every other type becomes NULL.
    pub fn mask_binary(
        &self,
        method: Method,
        type_oid: u32,
        value: Option<&[u8]>,
    ) -> Option<Bytes> {
        self.mask_text(method, type_oid, value)
    }

    /// Rebuilds a DataRow (B) body (Int16 column count, then per column an Int32 length, -1
    /// for NULL, and that many bytes) with the masked columns replaced. `masks` has one entry
    /// per column of the row description; other columns are copied as they are.
    pub fn rewrite_data_row(
        &self,
        body: &[u8],
        masks: &[Option<ColumnMask>],
    ) -> Result<Bytes, MaskError> {
        let mut out = BytesMut::with_capacity(body.len());
        self.rewrite_data_row_into(body, masks, &mut out)?;
        Ok(out.freeze())
    }

    /// `rewrite_data_row`, as a whole DataRow message (tag and length) in one buffer.
    pub fn rewrite_data_row_message(
        &self,
        body: &[u8],
        masks: &[Option<ColumnMask>],
    ) -> Result<Bytes, MaskError> {
        let mut out = BytesMut::with_capacity(body.len() + 5);
        out.put_u8(b'D');
        out.put_u32(0);
        self.rewrite_data_row_into(body, masks, &mut out)?;
        let len = u32::try_from(out.len() - 1).map_err(|_| MaskError::ValueTooLong)?;
        if let Some(field) = out.get_mut(1..5) {
            field.copy_from_slice(&len.to_be_bytes());
        }
        Ok(out.freeze())
    }

    fn rewrite_data_row_into(
        &self,
        body: &[u8],
        masks: &[Option<ColumnMask>],
        out: &mut BytesMut,
    ) -> Result<(), MaskError> {
        let (head, mut rest) = body
            .split_first_chunk::<2>()
            .ok_or(MaskError::MissingColumnCount)?;
        let count = i16::from_be_bytes(*head);
        let count = usize::try_from(count).map_err(|_| MaskError::NegativeColumnCount(count))?;
        if count != masks.len() {
            return Err(MaskError::ColumnCount(count, masks.len()));
        }
        out.put_slice(head);
        for (column, mask) in masks.iter().enumerate() {
            let (len, after) = rest
                .split_first_chunk::<4>()
                .ok_or(MaskError::TruncatedLength(column))?;
            let length = i32::from_be_bytes(*len);
            let value = match length {
                -1 => {
                    rest = after;
                    None
                }
                n => {
                    let n =
                        usize::try_from(n).map_err(|_| MaskError::BadLength { column, length })?;
                    let (value, after) =
                        after.split_at_checked(n).ok_or(MaskError::TruncatedValue {
                            column,
                            length: n,
                            available: after.len(),
                        })?;
                    rest = after;
                    Some(value)
                }
            };
            match mask {
                None => {
                    out.put_slice(len);
                    out.put_slice(value.unwrap_or_default());
                }
                Some(m) => {
                    let masked = if m.binary {
                        self.mask_binary(m.method, m.type_oid, value)
                    } else {
                        self.mask_text(m.method, m.type_oid, value)
                    };
                    put_value(out, masked.as_deref())?;
                }
            }
        }
        if !rest.is_empty() {
            return Err(MaskError::TrailingBytes(rest.len()));
        }
        Ok(())
    }

    /// Rewrites one row of `COPY ... TO STDOUT` in text format (the payload of one CopyData
    /// message, with or without its newline). `null` is the NULL string (`\N` by default).
    pub fn rewrite_copy_text_row(
        &self,
        line: &[u8],
        masks: &[Option<ColumnMask>],
        delimiter: u8,
        null: &[u8],
    ) -> Result<Bytes, MaskError> {
        // PostgreSQL refuses these as text-format delimiters; escaping relies on it.
        if delimiter == b'\\'
            || delimiter == b'.'
            || delimiter == b'\n'
            || delimiter == b'\r'
            || delimiter.is_ascii_lowercase()
            || delimiter.is_ascii_digit()
        {
            return Err(MaskError::BadDelimiter(char::from(delimiter)));
        }
        let (body, eol) = split_eol(line);
        let fields = split_text_fields(body, delimiter)?;
        if fields.len() != masks.len() {
            return Err(MaskError::ColumnCount(fields.len(), masks.len()));
        }
        let mut out = BytesMut::with_capacity(line.len());
        for (i, (field, mask)) in fields.iter().zip(masks).enumerate() {
            if i > 0 {
                out.put_u8(delimiter);
            }
            let Some(m) = mask else {
                out.put_slice(field);
                continue;
            };
            let value = if *field == null {
                None
            } else {
                Some(unescape_text(field)?)
            };
            match self.mask_text(m.method, m.type_oid, value.as_deref()) {
                None => out.put_slice(null),
                Some(v) => escape_text(&v, delimiter, &mut out),
            }
        }
        out.put_slice(eol);
        Ok(out.freeze())
    }

    /// Rewrites one row of `COPY ... TO STDOUT` in CSV format. `options` as the policy read
    /// them from the statement (delimiter, quote, escape, NULL string).
    pub fn rewrite_copy_csv_row(
        &self,
        line: &[u8],
        masks: &[Option<ColumnMask>],
        options: &CopyOptions,
    ) -> Result<Bytes, MaskError> {
        let (body, eol) = split_eol(line);
        let fields = split_csv_fields(body, options.delimiter, options.quote, options.escape)?;
        if fields.len() != masks.len() {
            return Err(MaskError::ColumnCount(fields.len(), masks.len()));
        }
        let mut out = BytesMut::with_capacity(line.len());
        for (i, (field, mask)) in fields.iter().zip(masks).enumerate() {
            if i > 0 {
                out.put_u8(options.delimiter);
            }
            let Some(m) = mask else {
                out.put_slice(field.raw);
                continue;
            };
            let value = if !field.quoted && field.raw == options.null.as_slice() {
                None
            } else {
                Some(field.value.as_slice())
            };
            match self.mask_text(m.method, m.type_oid, value) {
                None => out.put_slice(&options.null),
                Some(v) => {
                    out.put_u8(options.quote);
                    for &b in v.iter() {
                        if b == options.quote || b == options.escape {
                            out.put_u8(options.escape);
                        }
                        out.put_u8(b);
                    }
                    out.put_u8(options.quote);
                }
            }
        }
        out.put_slice(eol);
        Ok(out.freeze())
    }

    /// One COPY row in the statement's format. Binary rows are an error: the policy refuses
    /// binary COPY of masked columns.
    pub fn rewrite_copy_row(
        &self,
        line: &[u8],
        masks: &[Option<ColumnMask>],
        options: &CopyOptions,
    ) -> Result<Bytes, MaskError> {
        match options.format {
            CopyFormat::Text => {
                self.rewrite_copy_text_row(line, masks, options.delimiter, &options.null)
            }
            CopyFormat::Csv => self.rewrite_copy_csv_row(line, masks, options),
            CopyFormat::Binary => Err(MaskError::BinaryCopy),
        }
    }

    fn hash(&self, value: &[u8]) -> Bytes {
        let tag = hmac::sign(&self.key, value);
        let mut hex = hex::encode(tag.as_ref());
        hex.truncate(HASH_HEX);
        Bytes::from(hex)
    }
}

fn partial(value: &[u8]) -> Bytes {
    let Ok(s) = std::str::from_utf8(value) else {
        return Bytes::from_static(REDACTED);
    };
    let n = s.chars().count();
    let keep = (n / 2).min(4);
    let hidden = n.saturating_sub(keep);
    let mut out = String::with_capacity(value.len());
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(s.chars().skip(hidden));
    Bytes::from(out)
}

fn put_value(out: &mut BytesMut, value: Option<&[u8]>) -> Result<(), MaskError> {
    match value {
        None => out.put_i32(-1),
        Some(v) => {
            let len = i32::try_from(v.len()).map_err(|_| MaskError::ValueTooLong)?;
            out.put_i32(len);
            out.put_slice(v);
        }
    }
    Ok(())
}

/// The row without its line end, and the line end (`\n`, `\r\n` or nothing).
fn split_eol(line: &[u8]) -> (&[u8], &[u8]) {
    let cut = if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    };
    line.split_at_checked(line.len().saturating_sub(cut))
        .unwrap_or((line, &[]))
}

fn split_text_fields(body: &[u8], delimiter: u8) -> Result<Vec<&[u8]>, MaskError> {
    let mut fields = Vec::new();
    let mut rest = body;
    loop {
        let mut escaped = false;
        let end = rest.iter().position(|&b| {
            if escaped {
                escaped = false;
                false
            } else if b == b'\\' {
                escaped = true;
                false
            } else {
                b == delimiter
            }
        });
        match end.and_then(|i| rest.split_at_checked(i)) {
            Some((field, tail)) => {
                fields.push(field);
                rest = tail.get(1..).unwrap_or_default();
            }
            None => {
                if escaped {
                    return Err(MaskError::TrailingBackslash);
                }
                fields.push(rest);
                return Ok(fields);
            }
        }
    }
}

/// A text-format field's value: `\b \f \n \r \t \v`, octal `\NNN`, hex `\xHH`, and `\` before
/// any other byte is that byte (PostgreSQL's COPY FROM reading).
fn unescape_text(field: &[u8]) -> Result<Vec<u8>, MaskError> {
    let mut out = Vec::with_capacity(field.len());
    let mut it = field.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = it.next().ok_or(MaskError::TrailingBackslash)?;
        let v = match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = c.wrapping_sub(b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            v = v.wrapping_mul(8).wrapping_add(d.wrapping_sub(b'0'));
                            it.next();
                        }
                        _ => break,
                    }
                }
                v
            }
            b'x' => match it.peek().and_then(|&d| hex_digit(d)) {
                Some(first) => {
                    it.next();
                    match it.peek().and_then(|&d| hex_digit(d)) {
                        Some(second) => {
                            it.next();
                            first.wrapping_mul(16).wrapping_add(second)
                        }
                        None => first,
                    }
                }
                None => b'x',
            },
            other => other,
        };
        out.push(v);
    }
    Ok(out)
}

fn hex_digit(d: u8) -> Option<u8> {
    char::from(d)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// Escapes a value as PostgreSQL's COPY TO does in text format.
fn escape_text(value: &[u8], delimiter: u8, out: &mut BytesMut) {
    for &b in value {
        let named = match b {
            b'\\' => Some(b'\\'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            0x0b => Some(b'v'),
            _ if b == delimiter => Some(b),
            _ => None,
        };
        match named {
            Some(n) => {
                out.put_u8(b'\\');
                out.put_u8(n);
            }
            None => out.put_u8(b),
        }
    }
}

struct CsvField<'a> {
    /// As it was on the wire.
    raw: &'a [u8],
    value: Vec<u8>,
    quoted: bool,
}

/// Splits a CSV row the way PostgreSQL's CSV reader does: a quote opens and closes quoting
/// anywhere in a field, inside quotes the escape character takes the next quote or escape
/// literally (a doubled quote when escape and quote are the same), delimiters and newlines
/// inside quotes are data.
fn split_csv_fields(
    body: &[u8],
    delimiter: u8,
    quote: u8,
    escape: u8,
) -> Result<Vec<CsvField<'_>>, MaskError> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut value = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        if in_quotes {
            let next = body.get(i + 1).copied();
            if b == escape && next.is_some_and(|n| n == quote || n == escape) {
                value.extend(next);
                i += 2;
                continue;
            }
            if b == quote {
                in_quotes = false;
            } else {
                value.push(b);
            }
        } else if b == delimiter {
            fields.push(CsvField {
                raw: body.get(start..i).unwrap_or_default(),
                value: std::mem::take(&mut value),
                quoted,
            });
            quoted = false;
            start = i + 1;
        } else if b == quote {
            in_quotes = true;
            quoted = true;
        } else {
            value.push(b);
        }
        i += 1;
    }
    if in_quotes {
        return Err(MaskError::UnterminatedQuote);
    }
    fields.push(CsvField {
        raw: body.get(start..).unwrap_or_default(),
        value,
        quoted,
    });
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"vigil test key, 32 bytes long!!!";

    /// A row, the masks, and the row as the client sees it.
    type RowCase<'a> = (&'a [u8], &'a [Option<ColumnMask>], &'a [u8]);

    fn masker() -> Masker {
        Masker::new(KEY)
    }

    fn mask(method: Method, type_oid: u32) -> Option<ColumnMask> {
        Some(ColumnMask {
            method,
            type_oid,
            binary: false,
        })
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(i16::try_from(values.len()).unwrap());
        for v in values {
            put_value(&mut b, *v).unwrap();
        }
        b.to_vec()
    }

    fn text(method: Method, type_oid: u32, v: &str) -> Option<String> {
        masker()
            .mask_text(method, type_oid, Some(v.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn text_values_table() {
        use Method::*;
        let cases: &[(Method, u32, &str, Option<&str>)] = &[
            (Redact, oid::TEXT, "123-45-6789", Some("****")),
            (Redact, oid::VARCHAR, "", Some("****")),
            (Redact, oid::BPCHAR, "x", Some("****")),
            (Redact, oid::NAME, "x", Some("****")),
            (Redact, oid::UNKNOWN, "x", Some("****")),
            (Redact, 23, "42", None),
            (Redact, 1082, "2024-01-01", None),
            (Redact, 114, "{\"a\":1}", None),
            (Redact, 0, "x", None),
            (Partial, oid::TEXT, "123-45-6789", Some("*******6789")),
            (Partial, oid::TEXT, "12345678", Some("****5678")),
            (Partial, oid::TEXT, "abcdef", Some("***def")),
            (Partial, oid::TEXT, "abc", Some("**c")),
            (Partial, oid::TEXT, "a", Some("*")),
            (Partial, oid::TEXT, "", Some("")),
            (Partial, oid::TEXT, "żółw-ąęść", Some("*****ąęść")),
            (Partial, 23, "123456789", None),
            (Null, oid::TEXT, "x", None),
            (Null, 23, "1", None),
        ];
        for (method, type_oid, input, want) in cases {
            assert_eq!(
                text(*method, *type_oid, input).as_deref(),
                *want,
                "{method} {type_oid} {input:?}"
            );
        }
    }

    #[test]
    fn null_stays_null() {
        let m = masker();
        for method in [Method::Redact, Method::Partial, Method::Hash, Method::Null] {
            assert_eq!(m.mask_text(method, oid::TEXT, None), None);
            assert_eq!(m.mask_binary(method, oid::TEXT, None), None);
        }
    }

    #[test]
    fn partial_of_non_utf8_redacts() {
        let got = masker().mask_text(Method::Partial, oid::TEXT, Some(b"\xff\xfeabc\x81"));
        assert_eq!(got.as_deref(), Some(REDACTED));
    }

    #[test]
    fn hash_is_keyed_stable_and_short() {
        let a = text(Method::Hash, oid::TEXT, "123-45-6789").unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(text(Method::Hash, oid::VARCHAR, "123-45-6789").unwrap(), a);
        assert_ne!(text(Method::Hash, oid::TEXT, "123-45-6788").unwrap(), a);
        let other = Masker::new(b"another key, also 32 bytes long!")
            .mask_text(Method::Hash, oid::TEXT, Some(b"123-45-6789"))
            .unwrap();
        assert_ne!(other.as_ref(), a.as_bytes());
        // Same digest as HMAC-SHA256 computed independently.
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, KEY), b"123-45-6789");
        assert_eq!(a, hex::encode(tag.as_ref()).get(..16).unwrap());
        assert_eq!(text(Method::Hash, 20, "1"), None);
    }

    #[test]
    fn registered_text_types() {
        let citext = 16_385;
        assert_eq!(text(Method::Redact, citext, "x"), None);
        let m = masker().with_text_type(citext);
        assert_eq!(
            m.mask_text(Method::Redact, citext, Some(b"x")).as_deref(),
            Some(REDACTED)
        );
        assert!(format!("{m:?}").contains("<secret>"));
    }

    #[test]
    fn binary_values() {
        let m = masker();
        assert_eq!(
            m.mask_binary(Method::Redact, oid::TEXT, Some(b"secret"))
                .as_deref(),
            Some(REDACTED)
        );
        assert_eq!(
            m.mask_binary(Method::Partial, oid::VARCHAR, Some(b"12345678"))
                .as_deref(),
            Some(&b"****5678"[..])
        );
        assert_eq!(
            m.mask_binary(Method::Redact, 23, Some(&[0, 0, 0, 42])),
            None
        );
        assert_eq!(m.mask_binary(Method::Hash, 17, Some(b"\x00\x01")), None);
    }

    #[test]
    fn data_row_round_trip_without_masks() {
        let body = data_row(&[Some(b"1"), None, Some(b""), Some(b"bob")]);
        let got = masker().rewrite_data_row(&body, &[None; 4]).unwrap();
        assert_eq!(got.as_ref(), body.as_slice());
    }

    #[test]
    fn data_row_masks_only_masked_columns() {
        let body = data_row(&[
            Some(b"1"),
            Some(b"123-45-6789"),
            None,
            Some(b"bob"),
            Some(b"42"),
        ]);
        let masks = [
            None,
            mask(Method::Partial, oid::TEXT),
            mask(Method::Redact, oid::TEXT),
            None,
            mask(Method::Redact, 23),
        ];
        let got = masker().rewrite_data_row(&body, &masks).unwrap();
        let want = data_row(&[Some(b"1"), Some(b"*******6789"), None, Some(b"bob"), None]);
        assert_eq!(got.as_ref(), want.as_slice());
        // The output is itself a well-formed row.
        assert!(masker().rewrite_data_row(&got, &[None; 5]).is_ok());
        // As a whole message: tag, length (itself included), the same body.
        let message = masker().rewrite_data_row_message(&body, &masks).unwrap();
        assert_eq!(message[0], b'D');
        assert_eq!(&message[1..5], &(want.len() as u32 + 4).to_be_bytes());
        assert_eq!(&message[5..], want.as_slice());
        assert!(masker()
            .rewrite_data_row_message(&body[..3], &masks)
            .is_err());
    }

    #[test]
    fn data_row_binary_columns() {
        let body = data_row(&[Some(&[0, 0, 0, 7]), Some(b"alice@example.com")]);
        let masks = [
            Some(ColumnMask {
                method: Method::Hash,
                type_oid: 23,
                binary: true,
            }),
            Some(ColumnMask {
                method: Method::Redact,
                type_oid: oid::TEXT,
                binary: true,
            }),
        ];
        let got = masker().rewrite_data_row(&body, &masks).unwrap();
        assert_eq!(got.as_ref(), data_row(&[None, Some(REDACTED)]).as_slice());
    }

    #[test]
    fn malformed_data_rows() {
        let m = masker();
        let text = mask(Method::Redact, oid::TEXT);
        let cases: &[(&[u8], usize, MaskError)] = &[
            (b"", 0, MaskError::MissingColumnCount),
            (b"\x00", 0, MaskError::MissingColumnCount),
            (b"\xff\xff", 0, MaskError::NegativeColumnCount(-1)),
            (b"\x00\x02\xff\xff\xff\xff", 1, MaskError::ColumnCount(2, 1)),
            (b"\x7f\xff", 1, MaskError::ColumnCount(32_767, 1)),
            (b"\x00\x01", 1, MaskError::TruncatedLength(0)),
            (b"\x00\x01\x00\x00", 1, MaskError::TruncatedLength(0)),
            (
                b"\x00\x01\xff\xff\xff\xfe",
                1,
                MaskError::BadLength {
                    column: 0,
                    length: -2,
                },
            ),
            (
                b"\x00\x01\x80\x00\x00\x00",
                1,
                MaskError::BadLength {
                    column: 0,
                    length: i32::MIN,
                },
            ),
            (
                b"\x00\x01\x00\x00\x00\x05abc",
                1,
                MaskError::TruncatedValue {
                    column: 0,
                    length: 5,
                    available: 3,
                },
            ),
            (
                b"\x00\x01\x7f\xff\xff\xffabc",
                1,
                MaskError::TruncatedValue {
                    column: 0,
                    length: 2_147_483_647,
                    available: 3,
                },
            ),
            (
                b"\x00\x01\x00\x00\x00\x01ab",
                1,
                MaskError::TrailingBytes(1),
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a",
                2,
                MaskError::TruncatedLength(1),
            ),
            (b"\x00\x00x", 0, MaskError::TrailingBytes(1)),
        ];
        for (body, columns, want) in cases {
            for masks in [vec![None; *columns], vec![text; *columns]] {
                assert_eq!(
                    m.rewrite_data_row(body, &masks).as_ref(),
                    Err(want),
                    "{body:?}"
                );
            }
        }
    }

    fn copy_text(line: &[u8], masks: &[Option<ColumnMask>]) -> Result<Vec<u8>, MaskError> {
        masker()
            .rewrite_copy_text_row(line, masks, b'\t', b"\\N")
            .map(|b| b.to_vec())
    }

    #[test]
    fn copy_text_rows() {
        let r = mask(Method::Redact, oid::TEXT);
        let p = mask(Method::Partial, oid::TEXT);
        let cases: &[RowCase] = &[
            (
                b"1\t123-45-6789\tbob\n",
                &[None, r, None],
                b"1\t****\tbob\n",
            ),
            (b"1\t123-45-6789\tbob", &[None, r, None], b"1\t****\tbob"),
            (b"1\t123-45-6789\r\n", &[None, r], b"1\t****\r\n"),
            // NULL stays NULL; other columns are copied untouched, escapes and all
            (b"\\N\ta\\tb\n", &[r, None], b"\\N\ta\\tb\n"),
            // a value of a non-text type becomes NULL
            (b"42\tx\n", &[mask(Method::Redact, 23), None], b"\\N\tx\n"),
            // the masked value is unescaped, masked, escaped again
            (b"secret\\\\x\\ty\n", &[p], b"******\\\\x\\ty\n"),
            (b"\\101\\x42\\x4\\x\\q\n", &[p], b"***xq\n"),
            (b"\n", &[r], b"****\n"),
            (b"a\t\n", &[None, r], b"a\t****\n"),
        ];
        for (line, masks, want) in cases {
            assert_eq!(
                copy_text(line, masks).as_deref(),
                Ok(*want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn copy_text_escapes_a_custom_delimiter() {
        let p = mask(Method::Partial, oid::TEXT);
        let got = masker()
            .rewrite_copy_text_row(b"1|ab\\|cd\\|ef\n", &[None, p], b'|', b"NULL")
            .unwrap();
        assert_eq!(got.as_ref(), b"1|****d\\|ef\n");
        let got = masker()
            .rewrite_copy_text_row(b"NULL|x\n", &[p, p], b'|', b"NULL")
            .unwrap();
        assert_eq!(got.as_ref(), b"NULL|*\n");
    }

    #[test]
    fn malformed_copy_text_rows() {
        let r = mask(Method::Redact, oid::TEXT);
        assert_eq!(
            copy_text(b"a\tb\n", &[r]),
            Err(MaskError::ColumnCount(2, 1))
        );
        assert_eq!(
            copy_text(b"a\n", &[r, r]),
            Err(MaskError::ColumnCount(1, 2))
        );
        assert_eq!(copy_text(b"a\\", &[r]), Err(MaskError::TrailingBackslash));
        assert_eq!(
            copy_text(b"a\\", &[None]),
            Err(MaskError::TrailingBackslash)
        );
        for d in [b'\\', b'.', b'a', b'7', b'\n'] {
            assert_eq!(
                masker().rewrite_copy_text_row(b"x", &[r], d, b"\\N"),
                Err(MaskError::BadDelimiter(char::from(d)))
            );
        }
    }

    fn csv() -> CopyOptions {
        CopyOptions {
            format: CopyFormat::Csv,
            delimiter: b',',
            null: Vec::new(),
            quote: b'"',
            escape: b'"',
            header: false,
        }
    }

    #[test]
    fn copy_csv_rows() {
        let r = mask(Method::Redact, oid::TEXT);
        let p = mask(Method::Partial, oid::TEXT);
        let m = masker();
        let cases: &[RowCase] = &[
            (
                b"1,\"Smith, John\",123-45-6789\n",
                &[None, None, r],
                b"1,\"Smith, John\",\"****\"\n",
            ),
            (
                b"1,\"Smith, John\",x\n",
                &[None, p, None],
                b"1,\"*******John\",x\n",
            ),
            // unquoted empty is NULL, quoted empty is the empty string
            (b",\"\"\n", &[r, r], b",\"****\"\n"),
            (b",\"\"\n", &[p, p], b",\"\"\n"),
            // doubled quotes inside, and in the output
            (
                b"\"say \"\"hi\"\" \"\"now\"\"\"\n",
                &[p],
                b"\"**********now\"\"\"\n",
            ),
            // newlines and delimiters inside quotes are data
            (b"\"a\nb,c\",d\n", &[None, r], b"\"a\nb,c\",\"****\"\n"),
            (b"\"a\nb,c\",d\n", &[r, None], b"\"****\",d\n"),
            (b"x,42\n", &[None, mask(Method::Hash, 23)], b"x,\n"),
        ];
        for (line, masks, want) in cases {
            let got = m
                .rewrite_copy_csv_row(line, masks, &csv())
                .map(|b| b.to_vec());
            assert_eq!(
                got.as_deref(),
                Ok(*want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            m.rewrite_copy_csv_row(b"\"abc\n", &[r], &csv()),
            Err(MaskError::UnterminatedQuote)
        );
        assert_eq!(
            m.rewrite_copy_csv_row(b"a,b\n", &[r], &csv()),
            Err(MaskError::ColumnCount(2, 1))
        );
    }

    #[test]
    fn copy_csv_with_escape_and_null_options() {
        let p = mask(Method::Partial, oid::TEXT);
        let options = CopyOptions {
            delimiter: b';',
            null: b"NULL".to_vec(),
            escape: b'\\',
            ..csv()
        };
        let m = masker();
        let got = m
            .rewrite_copy_csv_row(b"NULL;\"NULL\";\"a\\\"b\\\\cd\"\n", &[p, p, p], &options)
            .unwrap();
        // NULL unquoted stays NULL; "NULL" quoted is a string; `a"b\cd` keeps `\cd`.
        assert_eq!(got.as_ref(), b"NULL;\"**LL\";\"***\\\\cd\"\n");
    }

    #[test]
    fn copy_row_dispatches_on_format() {
        let r = mask(Method::Redact, oid::TEXT);
        let m = masker();
        let text = CopyOptions {
            format: CopyFormat::Text,
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            ..csv()
        };
        assert_eq!(
            m.rewrite_copy_row(b"x\n", &[r], &text).unwrap().as_ref(),
            b"****\n"
        );
        assert_eq!(
            m.rewrite_copy_row(b"x\n", &[r], &csv()).unwrap().as_ref(),
            b"\"****\"\n"
        );
        let binary = CopyOptions {
            format: CopyFormat::Binary,
            ..csv()
        };
        assert_eq!(
            m.rewrite_copy_row(b"x", &[r], &binary),
            Err(MaskError::BinaryCopy)
        );
    }
}
