//! Recording → asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>), for asciinema's
//! player and `asciinema play`. Pure: the encoder writes into any `io::Write`.
//!
//! Invariant: valid UTF-8 output reaches the cast byte for byte, even when a character is split
//! across two output events (it is emitted whole, in the later one); only bytes that are not
//! UTF-8 become U+FFFD. Event times never decrease. A postgres session, which has no terminal,
//! is cast as the query log a terminal would have shown ([`QueryLog::terminal`]).

use std::io::{self, Write};

use serde::Serialize;

use super::render::{self, QueryLog};
use crate::recording::event::Event;
use crate::recording::format::HeaderInfo;
use crate::recording::{Offset, Timed};

/// Terminal size when the recording has no resize event.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// The whole cast: a header line, then one event per line.
pub fn encode(header: &HeaderInfo, events: &[Timed]) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and serde_json writes only UTF-8.
    let _ = write(header, events, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes the cast to `out`.
pub fn write(header: &HeaderInfo, events: &[Timed], out: &mut dyn Write) -> io::Result<()> {
    // The first resize sizes the terminal in the header; later ones are "r" events.
    let first_resize = events.iter().enumerate().find_map(|(i, t)| match t.event {
        Event::Resize { cols, rows } => Some((i, (cols, rows))),
        _ => None,
    });
    let (width, height) = first_resize.map_or(DEFAULT_SIZE, |(_, size)| size);
    let head = CastHeader {
        version: 2,
        width,
        height,
        timestamp: header.start_unix_us / 1_000_000,
        title: format!(
            "vigil {}: {}@{}",
            header.session_id, header.user, header.target
        ),
        env: CastEnv {
            term: "xterm-256color",
            shell: "/bin/sh",
        },
    };
    serde_json::to_writer(&mut *out, &head)?;
    out.write_all(b"\n")?;

    let mut cast = CastWriter { out, last: 0 };
    if render::is_postgres(header) {
        for frame in render::query_log(QueryLog::terminal(header), events) {
            cast.event(frame.at, "o", &frame.text)?;
        }
        return Ok(());
    }

    let mut output = Utf8Carry::default();
    let mut input = Utf8Carry::default();
    for (i, timed) in events.iter().enumerate() {
        let at = timed.at;
        match &timed.event {
            Event::Output(bytes) => cast.event(at, "o", &output.decode(bytes))?,
            Event::Input(bytes) => cast.event(at, "i", &input.decode(bytes))?,
            Event::Resize { .. } if first_resize.is_some_and(|(first, _)| first == i) => {}
            Event::Resize { cols, rows } => cast.event(at, "r", &format!("{cols}x{rows}"))?,
            Event::Marker(label) => cast.event(at, "m", label)?,
            Event::Command(c) => cast.event(at, "m", &render::command_label(c))?,
            Event::Approval(a) => cast.event(at, "m", &render::approval_label(a))?,
            Event::Error(e) => cast.event(at, "m", &format!("error: {}", e.message))?,
            Event::Query(q) => cast.event(at, "m", &format!("query: {}", q.sql))?,
            Event::Rows(_) | Event::Exit(_) => {}
        }
    }
    // A character cut off by the end of the recording.
    let end = Offset(cast.last);
    cast.event(end, "o", &output.finish())?;
    cast.event(end, "i", &input.finish())
}

#[derive(Serialize)]
struct CastHeader {
    version: u8,
    width: u16,
    height: u16,
    timestamp: u64,
    title: String,
    env: CastEnv,
}

#[derive(Serialize)]
struct CastEnv {
    #[serde(rename = "TERM")]
    term: &'static str,
    #[serde(rename = "SHELL")]
    shell: &'static str,
}

struct CastWriter<'w> {
    out: &'w mut dyn Write,
    /// The time of the last event written, in microseconds: later events are never earlier.
    last: u64,
}

impl CastWriter<'_> {
    /// `[1.250000, "o", "data"]`; nothing for empty data.
    fn event(&mut self, at: Offset, code: &str, data: &str) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.last = self.last.max(at.0);
        let (secs, micros) = (self.last / 1_000_000, self.last % 1_000_000);
        write!(self.out, "[{secs}.{micros:06}, \"{code}\", ")?;
        serde_json::to_writer(&mut *self.out, data)?;
        self.out.write_all(b"]\n")
    }
}

/// Decodes a byte stream cut into events: a character split across two events is held back
/// and emitted whole with the second.
#[derive(Debug, Default)]
struct Utf8Carry {
    /// The start of an incomplete character at the end of the last event (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn decode(&mut self, bytes: &[u8]) -> String {
        let joined;
        let mut rest = if self.pending.is_empty() {
            bytes
        } else {
            joined = [std::mem::take(&mut self.pending).as_slice(), bytes].concat();
            joined.as_slice()
        };
        let mut out = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return out;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(bad..).unwrap_or_default();
                        }
                        None => {
                            // Incomplete at the end: wait for the next event.
                            self.pending = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream: U+FFFD for an incomplete character.
    fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::recording::event::{Approval, Command, Decision, Query, Rows};
    use crate::replay::testing::{at, header, out};

    /// The cast's lines, parsed.
    fn parse(cast: &str) -> (Value, Vec<(String, String, String)>) {
        assert!(cast.ends_with('\n'));
        let mut lines = cast.lines();
        let head = serde_json::from_str(lines.next().unwrap()).unwrap();
        let events = lines
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let time = l[1..l.find(',').unwrap()].to_string();
                (
                    time,
                    v[1].as_str().unwrap().to_string(),
                    v[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (head, events)
    }

    fn ev(time: &str, code: &str, data: &str) -> (String, String, String) {
        (time.into(), code.into(), data.into())
    }

    #[test]
    fn header_and_events_follow_the_v2_spec() {
        let events = [
            at(
                0,
                Event::Resize {
                    cols: 120,
                    rows: 40,
                },
            ),
            out(1_250_000, b"\x1b[1mhi\x1b[0m\r\n"),
            at(1_300_000, Event::Input(Bytes::from_static(b"ls\r"))),
            at(
                2_000_001,
                Event::Resize {
                    cols: 100,
                    rows: 30,
                },
            ),
            at(3_000_000, Event::Marker("checkpoint".into())),
            at(
                3_500_000,
                Event::Command(Command {
                    kind: "shell".into(),
                    text: "rm -rf /".into(),
                    decision: Decision::Deny,
                    rule: None,
                    message: None,
                }),
            ),
            at(
                4_000_000,
                Event::Approval(Approval {
                    id: 3,
                    state: "granted".into(),
                    by: Some("bob".into()),
                    rule: None,
                    reason: None,
                }),
            ),
        ];
        let (head, got) = parse(&encode(&header("ssh"), &events));
        assert_eq!(
            head,
            serde_json::json!({
                "version": 2, "width": 120, "height": 40, "timestamp": 1_795_401_788u64,
                "title": "vigil 20261123T022948Z-1a2b3c4d5e6f: alice@app",
                "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
            })
        );
        assert_eq!(
            got,
            [
                ev("1.250000", "o", "\x1b[1mhi\x1b[0m\r\n"),
                ev("1.300000", "i", "ls\r"),
                ev("2.000001", "r", "100x30"),
                ev("3.000000", "m", "checkpoint"),
                ev("3.500000", "m", "command: rm -rf / [deny]"),
                ev("4.000000", "m", "approval #3 granted by bob"),
            ]
        );
    }

    #[test]
    fn without_a_resize_the_size_is_80x24() {
        let (head, got) = parse(&encode(&header("ssh"), &[out(5, b"x")]));
        assert_eq!(
            (head["width"].as_u64(), head["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(got, [ev("0.000005", "o", "x")]);
    }

    #[test]
    fn a_character_split_across_events_is_emitted_whole() {
        let euro = "€".as_bytes();
        let events = [
            out(1, &[b'a', euro[0]]),
            out(2, &euro[1..2]),
            out(3, &[euro[2], b'b']),
            out(4, b"\xffc\xe2\x82"),
        ];
        let (_, got) = parse(&encode(&header("ssh"), &events));
        assert_eq!(
            got,
            [
                ev("0.000001", "o", "a"),
                ev("0.000003", "o", "€b"),
                ev("0.000004", "o", "\u{fffd}c"),
                ev("0.000004", "o", "\u{fffd}"),
            ]
        );
    }

    #[test]
    fn valid_utf8_survives_every_split() {
        let text = "héllo 日本語 🎉 done\r\n";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let (_, got) = parse(&encode(&header("ssh"), &[out(1, a), out(2, b)]));
            let joined: String = got.iter().map(|e| e.2.as_str()).collect();
            assert_eq!(joined, text, "cut at {cut}");
        }
    }

    #[test]
    fn times_never_decrease() {
        let events = [out(5_000_000, b"a"), out(1_000_000, b"b")];
        let (_, got) = parse(&encode(&header("ssh"), &events));
        assert_eq!(got[1].0, "5.000000");
    }

    #[test]
    fn a_postgres_session_is_cast_as_its_query_log() {
        let events = [
            at(
                1_000_000,
                Event::Query(Query {
                    sql: "select 1 as n".into(),
                    params: Vec::new(),
                    decision: Decision::Allow,
                    rule: None,
                    duration_us: Some(300),
                    rows: Some(1),
                }),
            ),
            at(
                1_000_500,
                Event::Rows(Rows {
                    columns: vec!["n".into()],
                    rows: vec![vec![Some("1".into())]],
                    truncated: false,
                }),
            ),
        ];
        let (head, got) = parse(&encode(&header("postgres"), &events));
        assert_eq!(head["width"], 80);
        assert_eq!(
            got,
            [
                ev("1.000000", "o", "alice@app=> select 1 as n\r\n"),
                ev("1.000500", "o", " n\r\n---\r\n 1\r\n(1 row)\r\n"),
            ]
        );
    }
}
