//! The recording event model and its compact binary encoding (pure: no I/O).
//!
//! Invariant: `decode(encode(events)) == events` for every event, and decoding never panics on
//! arbitrary bytes; it answers a typed [`EventError`] instead. The layout is specified byte for
//! byte in formats/recording-v1.md ("Event batch").

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

/// Microseconds since the session started. Monotonic within a recording.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Offset(pub u64);

impl Offset {
    pub fn from_duration(d: std::time::Duration) -> Self {
        Offset(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.0 / 1000;
        let (h, m, s, ms) = (
            total / 3_600_000,
            (total / 60_000) % 60,
            (total / 1000) % 60,
            total % 1000,
        );
        if h > 0 {
            write!(f, "{h}:{m:02}:{s:02}.{ms:03}")
        } else {
            write!(f, "{m:02}:{s:02}.{ms:03}")
        }
    }
}

/// What a policy decided about a command or statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    /// Held for approval; an `Approval` event follows with the outcome.
    Review,
}

/// A shell command: an exec string, a reconstructed interactive line, or a file operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `exec`, `shell`, `sftp`, `forward`, `control`.
    pub kind: String,
    pub text: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An SQL statement with its parameters and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Option<String>>,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// Result rows exactly as the client saw them (masked), up to the configured cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// True when more rows were sent than the cap allowed to record.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: u64,
    /// `requested`, `approved`, `denied`, `expired`, `cancelled`, `granted`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Exit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One thing that happened in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes the target sent to the user's terminal.
    Output(Bytes),
    /// Bytes the user typed. Off by default: typed passwords must not land in recordings.
    Input(Bytes),
    Resize {
        cols: u16,
        rows: u16,
    },
    Command(Command),
    Query(Query),
    Rows(Rows),
    Error(ErrorEvent),
    Approval(Approval),
    Marker(String),
    Exit(Exit),
}

impl Event {
    pub fn tag(&self) -> u8 {
        match self {
            Event::Output(_) => 1,
            Event::Input(_) => 2,
            Event::Resize { .. } => 3,
            Event::Command(_) => 4,
            Event::Query(_) => 5,
            Event::Rows(_) => 6,
            Event::Error(_) => 7,
            Event::Approval(_) => 8,
            Event::Marker(_) => 9,
            Event::Exit(_) => 10,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::Output(_) => "output",
            Event::Input(_) => "input",
            Event::Resize { .. } => "resize",
            Event::Command(_) => "command",
            Event::Query(_) => "query",
            Event::Rows(_) => "rows",
            Event::Error(_) => "error",
            Event::Approval(_) => "approval",
            Event::Marker(_) => "marker",
            Event::Exit(_) => "exit",
        }
    }

    /// Rough encoded size, used for batching decisions.
    pub fn approx_len(&self) -> usize {
        match self {
            Event::Output(b) | Event::Input(b) => b.len() + 12,
            Event::Marker(s) => s.len() + 12,
            _ => 128,
        }
    }
}

/// An event at its time offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub at: Offset,
    pub event: Event,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event batch truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown event tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("malformed varint at byte {0}")]
    Varint(usize),
    #[error("malformed {kind} event at byte {at}: {why}")]
    Payload {
        kind: &'static str,
        at: usize,
        why: String,
    },
    #[error("event time goes backwards at byte {0}")]
    Backwards(usize),
}

/// Appends one event to `out` (tag, offset, length, payload).
pub fn encode_into(out: &mut Vec<u8>, timed: &Timed) {
    out.push(timed.event.tag());
    put_varint(out, timed.at.0);
    match &timed.event {
        Event::Output(b) | Event::Input(b) => {
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Event::Marker(s) => {
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Event::Resize { cols, rows } => {
            put_varint(out, 4);
            out.put_u16(*cols);
            out.put_u16(*rows);
        }
        Event::Command(v) => put_json(out, v),
        // The per-statement events, written directly: the same JSON serde writes.
        Event::Query(v) => put_payload(out, |o| query_json(o, v)),
        Event::Rows(v) => put_payload(out, |o| rows_json(o, v)),
        Event::Error(v) => put_json(out, v),
        Event::Approval(v) => put_json(out, v),
        Event::Exit(v) => put_json(out, v),
    }
}

pub fn encode(events: &[Timed]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.event.approx_len()).sum());
    for e in events {
        encode_into(&mut out, e);
    }
    out
}

/// Decodes a whole batch. `buf` is shared so output payloads are zero-copy slices of it.
pub fn decode(buf: &Bytes) -> Result<Vec<Timed>, EventError> {
    Decoder::new(buf.clone()).collect()
}

/// Iterates over the events of a batch; stops at the first error.
pub struct Decoder {
    buf: Bytes,
    pos: usize,
    last: u64,
    failed: bool,
}

impl Decoder {
    pub fn new(buf: Bytes) -> Self {
        Decoder {
            buf,
            pos: 0,
            last: 0,
            failed: false,
        }
    }

    fn next_event(&mut self) -> Result<Timed, EventError> {
        let start = self.pos;
        let tag = *self
            .buf
            .get(self.pos)
            .ok_or(EventError::Truncated(self.pos))?;
        self.pos += 1;
        let at = get_varint(&self.buf, &mut self.pos)?;
        if at < self.last {
            return Err(EventError::Backwards(start));
        }
        self.last = at;
        let len = get_varint(&self.buf, &mut self.pos)?;
        let len = usize::try_from(len).map_err(|_| EventError::Truncated(self.pos))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or(EventError::Truncated(self.pos))?;
        let payload = self.buf.slice(self.pos..end);
        self.pos = end;
        let event = match tag {
            1 => Event::Output(payload),
            2 => Event::Input(payload),
            3 => {
                let [a, b, c, d] =
                    <[u8; 4]>::try_from(&payload[..]).map_err(|_| EventError::Payload {
                        kind: "resize",
                        at: start,
                        why: format!("length {} is not 4", payload.len()),
                    })?;
                Event::Resize {
                    cols: u16::from_be_bytes([a, b]),
                    rows: u16::from_be_bytes([c, d]),
                }
            }
            4 => Event::Command(json(&payload, "command", start)?),
            5 => Event::Query(json(&payload, "query", start)?),
            6 => Event::Rows(json(&payload, "rows", start)?),
            7 => Event::Error(json(&payload, "error", start)?),
            8 => Event::Approval(json(&payload, "approval", start)?),
            9 => Event::Marker(String::from_utf8(payload.to_vec()).map_err(|e| {
                EventError::Payload {
                    kind: "marker",
                    at: start,
                    why: e.to_string(),
                }
            })?),
            10 => Event::Exit(json(&payload, "exit", start)?),
            tag => return Err(EventError::UnknownTag { tag, at: start }),
        };
        Ok(Timed {
            at: Offset(at),
            event,
        })
    }
}

impl Iterator for Decoder {
    type Item = Result<Timed, EventError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_event();
        self.failed = r.is_err();
        Some(r)
    }
}

fn put_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no custom impls.
    let start = out.len();
    put_payload(out, |out| {
        if serde_json::to_writer(&mut *out, v).is_err() {
            out.truncate(start);
        }
    });
}

/// A payload that `write` appends to `out`, then moved up behind its length: written in
/// place, with no buffer of its own.
fn put_payload(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    write(out);
    let len = out.len() - start;
    let (head, n) = varint(len as u64);
    out.resize(out.len() + n, 0);
    out.copy_within(start..start + len, start + n);
    out[start..start + n].copy_from_slice(&head[..n]);
}

fn json<T: for<'de> Deserialize<'de>>(
    payload: &[u8],
    kind: &'static str,
    at: usize,
) -> Result<T, EventError> {
    serde_json::from_slice(payload).map_err(|e| EventError::Payload {
        kind,
        at,
        why: e.to_string(),
    })
}

/// `Query` as serde_json writes it.
fn query_json(out: &mut Vec<u8>, q: &Query) {
    out.extend_from_slice(b"{\"sql\":");
    put_json_str(out, &q.sql);
    if !q.params.is_empty() {
        out.extend_from_slice(b",\"params\":");
        put_values(out, &q.params);
    }
    out.extend_from_slice(match q.decision {
        Decision::Allow => b",\"decision\":\"allow\"",
        Decision::Deny => b",\"decision\":\"deny\"",
        Decision::Review => b",\"decision\":\"review\"",
    });
    if let Some(rule) = &q.rule {
        out.extend_from_slice(b",\"rule\":");
        put_json_str(out, rule);
    }
    if let Some(d) = q.duration_us {
        out.extend_from_slice(b",\"duration_us\":");
        put_u64(out, d);
    }
    if let Some(r) = q.rows {
        out.extend_from_slice(b",\"rows\":");
        put_u64(out, r);
    }
    out.push(b'}');
}

/// `Rows` as serde_json writes it.
fn rows_json(out: &mut Vec<u8>, r: &Rows) {
    out.extend_from_slice(b"{\"columns\":[");
    for (i, c) in r.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_json_str(out, c);
    }
    out.extend_from_slice(b"],\"rows\":[");
    for (i, row) in r.rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_values(out, row);
    }
    out.extend_from_slice(if r.truncated {
        b"],\"truncated\":true}"
    } else {
        b"],\"truncated\":false}"
    });
}

/// A JSON array of strings and nulls.
fn put_values(out: &mut Vec<u8>, values: &[Option<String>]) {
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match v {
            Some(v) => put_json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b']');
}

pub(crate) fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `s` as a JSON string, escaped as serde_json escapes it (the audit chain's canonical lines
/// and the recording's hand-encoded events rely on it): `"` and `\\`, the short escapes
/// `\b \f \n \r \t`, other control characters as `\u00xx`; everything else as it is.
pub(crate) fn put_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[from..i]);
        from = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

/// LEB128 unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let (bytes, n) = varint(v);
    out.extend_from_slice(&bytes[..n]);
}

/// `v` as LEB128: the bytes and how many of them are used.
fn varint(mut v: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        bytes[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    bytes[n] = v as u8;
    (bytes, n + 1)
}

pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, EventError> {
    let start = *pos;
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(EventError::Truncated(*pos))?;
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(EventError::Varint(start));
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(EventError::Varint(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_rows_are_written_as_serde_writes_them() {
        let awkward = "sel\"ect '\\x' é 中 \u{7f}\u{1}\n\t";
        let queries = [
            Query {
                sql: "select 1".into(),
                params: Vec::new(),
                decision: Decision::Allow,
                rule: None,
                duration_us: None,
                rows: None,
            },
            Query {
                sql: awkward.into(),
                params: vec![None, Some(awkward.into()), Some(String::new())],
                decision: Decision::Deny,
                rule: Some(awkward.into()),
                duration_us: Some(u64::MAX),
                rows: Some(0),
            },
            Query {
                sql: String::new(),
                params: vec![None],
                decision: Decision::Review,
                rule: Some("r".into()),
                duration_us: Some(17),
                rows: None,
            },
        ];
        for q in &queries {
            let mut ours = Vec::new();
            query_json(&mut ours, q);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(q).unwrap()
            );
        }
        for r in [
            Rows {
                columns: Vec::new(),
                rows: Vec::new(),
                truncated: false,
            },
            Rows {
                columns: vec!["a".into(), awkward.into()],
                rows: vec![
                    vec![Some("1".into()), None],
                    vec![None, Some(awkward.into())],
                ],
                truncated: true,
            },
        ] {
            let mut ours = Vec::new();
            rows_json(&mut ours, &r);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }
        // And through the framing: an event decodes back to itself.
        let events: Vec<Timed> = queries
            .into_iter()
            .map(|q| Timed {
                at: Offset(5),
                event: Event::Query(q),
            })
            .collect();
        let encoded = encode(&events);
        assert_eq!(decode(&Bytes::from(encoded)).unwrap(), events);
    }

    pub(crate) fn every_event() -> Vec<Timed> {
        let d = |at, event| Timed {
            at: Offset(at),
            event,
        };
        vec![
            d(0, Event::Resize { cols: 80, rows: 24 }),
            d(
                10,
                Event::Output(Bytes::from_static(b"\x1b[1mhello\x1b[0m \xe2\x82\xac\r\n")),
            ),
            d(20, Event::Input(Bytes::from_static(b"ls -la\r"))),
            d(
                30,
                Event::Command(Command {
                    kind: "shell".into(),
                    text: "rm -rf /".into(),
                    decision: Decision::Deny,
                    rule: Some("shell-destructive".into()),
                    message: Some("no".into()),
                }),
            ),
            d(
                40,
                Event::Query(Query {
                    sql: "select $1".into(),
                    params: vec![Some("1".into()), None],
                    decision: Decision::Allow,
                    rule: None,
                    duration_us: Some(512),
                    rows: Some(1),
                }),
            ),
            d(
                50,
                Event::Rows(Rows {
                    columns: vec!["email".into()],
                    rows: vec![vec![Some("****".into())], vec![None]],
                    truncated: true,
                }),
            ),
            d(
                60,
                Event::Error(ErrorEvent {
                    message: "boom".into(),
                    code: Some("42501".into()),
                }),
            ),
            d(
                70,
                Event::Approval(Approval {
                    id: 42,
                    state: "approved".into(),
                    by: Some("bob".into()),
                    rule: Some("prod".into()),
                    reason: None,
                }),
            ),
            d(80, Event::Marker("checkpoint".into())),
            d(
                u64::MAX,
                Event::Exit(Exit {
                    status: Some(3),
                    signal: None,
                    reason: Some("eof".into()),
                }),
            ),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let events = every_event();
        let bytes = Bytes::from(encode(&events));
        assert_eq!(decode(&bytes).unwrap(), events);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
        let mut pos = 0;
        assert_eq!(
            get_varint(&[0xff; 11], &mut pos),
            Err(EventError::Varint(0))
        );
    }

    #[test]
    fn a_truncated_batch_is_an_error_or_a_strict_prefix() {
        // Batches are length-framed by their sealed chunk; inside one, a cut at an event
        // boundary is indistinguishable from a shorter batch, and any other cut is an error.
        let events = every_event();
        let bytes = encode(&events);
        for cut in 1..bytes.len() {
            match decode(&Bytes::copy_from_slice(&bytes[..cut])) {
                Ok(got) => assert!(
                    got.len() < events.len() && got[..] == events[..got.len()],
                    "cut at {cut}"
                ),
                Err(
                    EventError::Truncated(_) | EventError::Varint(_) | EventError::Payload { .. },
                ) => {}
                Err(e) => panic!("cut at {cut}: unexpected {e}"),
            }
        }
    }

    #[test]
    fn rejects_unknown_tag_and_backwards_time() {
        assert_eq!(
            decode(&Bytes::from_static(&[99, 0, 0])),
            Err(EventError::UnknownTag { tag: 99, at: 0 })
        );
        let bytes = Bytes::from_static(&[1, 5, 0, 1, 4, 0]);
        assert_eq!(decode(&bytes), Err(EventError::Backwards(3)));
        let bad_resize = Bytes::from_static(&[3, 0, 3, 0, 80, 0]);
        assert!(matches!(
            decode(&bad_resize),
            Err(EventError::Payload { kind: "resize", .. })
        ));
    }
}
