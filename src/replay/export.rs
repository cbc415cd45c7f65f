//! Recording → JSON lines (every event, lossless) or plain text (what a reader wants: the screen
//! lines of an ssh session, the query log of a postgres one).
//!
//! Invariant: the JSON export loses nothing: output and input bytes are a UTF-8 string `data`
//! when they are valid UTF-8 and base64 `data_b64` otherwise, and structured events carry every
//! recorded field under its recorded name.

use std::io::{self, Write};

use base64::Engine as _;
use serde::Serialize;

use super::render::{self, QueryLog};
use super::strip::LineAssembler;
use crate::recording::event::{Approval, Command, ErrorEvent, Exit, Query, Rows};
use crate::recording::format::{HeaderInfo, Status, TrailerInfo};
use crate::recording::{Event, Timed};

/// The whole export: a summary line (header, and trailer when the recording was closed), then one
/// object per event: `{"t":1.25,"type":"output","data":"…"}`.
pub fn to_json_lines(
    header: &HeaderInfo,
    trailer: Option<&TrailerInfo>,
    events: &[Timed],
) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and serde_json writes only UTF-8.
    let _ = write_json_lines(header, trailer, events, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`to_json_lines`], written to `out` as it goes.
pub fn write_json_lines(
    header: &HeaderInfo,
    trailer: Option<&TrailerInfo>,
    events: &[Timed],
    out: &mut dyn Write,
) -> io::Result<()> {
    let summary = Summary {
        id: &header.session_id,
        protocol: &header.protocol,
        user: &header.user,
        target: &header.target,
        start: &header.start,
        start_unix_us: header.start_unix_us,
        client: header.client.as_deref(),
        trailer: trailer.map(|t| TrailerSummary {
            status: t.status,
            reason: &t.reason,
            end: &t.end,
            end_unix_us: t.end_unix_us,
            duration_us: t.duration_us,
            events: t.events,
            commands: t.commands,
            queries: t.queries,
            blocked: t.blocked,
            approved: t.approved,
        }),
    };
    serde_json::to_writer(&mut *out, &summary)?;
    out.write_all(b"\n")?;
    for timed in events {
        let line = Line {
            t: timed.at.as_secs_f64(),
            kind: timed.event.name(),
            body: Body::of(&timed.event),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The session as text: for ssh the lines its screen showed, for postgres the query log with
/// times, result tables, errors and policy decisions.
pub fn to_text(header: &HeaderInfo, events: &[Timed]) -> String {
    if render::is_postgres(header) {
        return render::query_log(QueryLog::stamped(), events)
            .into_iter()
            .map(|f| f.text)
            .collect();
    }
    let mut asm = LineAssembler::new();
    let mut out = Vec::new();
    for timed in events {
        if let Event::Output(bytes) = &timed.event {
            asm.feed(bytes, &mut out);
        }
    }
    asm.finish(&mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[derive(Serialize)]
struct Summary<'a> {
    id: &'a str,
    protocol: &'a str,
    user: &'a str,
    target: &'a str,
    start: &'a str,
    start_unix_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(flatten)]
    trailer: Option<TrailerSummary<'a>>,
}

#[derive(Serialize)]
struct TrailerSummary<'a> {
    status: Option<Status>,
    reason: &'a str,
    end: &'a str,
    end_unix_us: u64,
    duration_us: u64,
    events: u64,
    commands: u64,
    queries: u64,
    blocked: u64,
    approved: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    /// Seconds since the session started.
    t: f64,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: Body<'a>,
}

/// An event's fields, flattened beside `t` and `type`.
#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Text { data: &'a str },
    Binary { data_b64: String },
    Resize { cols: u16, rows: u16 },
    Marker { label: &'a str },
    Command(&'a Command),
    Query(&'a Query),
    Rows(&'a Rows),
    Error(&'a ErrorEvent),
    Approval(&'a Approval),
    Exit(&'a Exit),
}

impl<'a> Body<'a> {
    fn of(event: &'a Event) -> Self {
        match event {
            Event::Output(bytes) | Event::Input(bytes) => match std::str::from_utf8(bytes) {
                Ok(data) => Body::Text { data },
                Err(_) => Body::Binary {
                    data_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
                },
            },
            Event::Resize { cols, rows } => Body::Resize {
                cols: *cols,
                rows: *rows,
            },
            Event::Marker(label) => Body::Marker { label },
            Event::Command(c) => Body::Command(c),
            Event::Query(q) => Body::Query(q),
            Event::Rows(r) => Body::Rows(r),
            Event::Error(e) => Body::Error(e),
            Event::Approval(a) => Body::Approval(a),
            Event::Exit(e) => Body::Exit(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::*;
    use crate::recording::event::Decision;
    use crate::replay::testing::{at, header, out};

    fn lines(s: &str) -> Vec<Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_first_line_summarises_header_and_trailer() {
        let h = header("ssh");
        let open = lines(&to_json_lines(&h, None, &[]));
        assert_eq!(
            open,
            [json!({
                "id": "20261123T022948Z-1a2b3c4d5e6f", "protocol": "ssh", "user": "alice",
                "target": "app", "start": "2026-11-23T02:29:48.000000Z",
                "start_unix_us": 1_795_401_788_000_000u64,
            })]
        );
        let trailer = TrailerInfo {
            session_id: h.session_id.clone(),
            status: Some(Status::Closed),
            reason: "eof".into(),
            end: "2026-11-23T02:30:48.000000Z".into(),
            end_unix_us: 1_795_401_848_000_000,
            duration_us: 60_000_000,
            events: 3,
            commands: 1,
            blocked: 1,
            ..TrailerInfo::default()
        };
        let closed = &lines(&to_json_lines(&h, Some(&trailer), &[]))[0];
        assert_eq!(closed["id"], "20261123T022948Z-1a2b3c4d5e6f");
        assert_eq!(closed["status"], "closed");
        assert_eq!(closed["duration_us"], 60_000_000);
        assert_eq!(closed["blocked"], 1);
        assert_eq!(closed["end"], "2026-11-23T02:30:48.000000Z");
    }

    #[test]
    fn every_event_is_one_object_with_its_fields() {
        let events = [
            at(0, Event::Resize { cols: 80, rows: 24 }),
            out(1_250_000, "ok €\r\n".as_bytes()),
            out(1_500_000, b"\xe2\x82"),
            at(2_000_000, Event::Input(Bytes::from_static(b"ls\r"))),
            at(
                3_000_000,
                Event::Command(Command {
                    kind: "shell".into(),
                    text: "ls".into(),
                    decision: Decision::Allow,
                    rule: None,
                    message: None,
                }),
            ),
            at(4_000_000, Event::Marker("m".into())),
            at(
                5_000_000,
                Event::Exit(Exit {
                    status: Some(0),
                    signal: None,
                    reason: None,
                }),
            ),
        ];
        let got = lines(&to_json_lines(&header("ssh"), None, &events));
        assert_eq!(
            got[1..],
            [
                json!({"t": 0.0, "type": "resize", "cols": 80, "rows": 24}),
                json!({"t": 1.25, "type": "output", "data": "ok €\r\n"}),
                json!({"t": 1.5, "type": "output", "data_b64": "4oI="}),
                json!({"t": 2.0, "type": "input", "data": "ls\r"}),
                json!({"t": 3.0, "type": "command", "kind": "shell", "text": "ls",
                       "decision": "allow"}),
                json!({"t": 4.0, "type": "marker", "label": "m"}),
                json!({"t": 5.0, "type": "exit", "status": 0}),
            ]
        );
    }

    #[test]
    fn output_bytes_round_trip_exactly() {
        let raw: Vec<u8> = (0..=255).collect();
        let events = [out(1, &raw), out(2, "text ✓".as_bytes())];
        let got = lines(&to_json_lines(&header("ssh"), None, &events));
        let b64 = got[1]["data_b64"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, raw);
        assert_eq!(got[2]["data"], "text ✓");
    }

    #[test]
    fn structured_events_keep_every_field() {
        let q = Query {
            sql: "select $1".into(),
            params: vec![Some("x".into()), None],
            decision: Decision::Deny,
            rule: Some("r".into()),
            duration_us: Some(12),
            rows: Some(0),
        };
        let events = [at(1, Event::Query(q.clone()))];
        let got = lines(&to_json_lines(&header("postgres"), None, &events));
        let mut want = serde_json::to_value(&q).unwrap();
        want["t"] = json!(0.000001);
        want["type"] = json!("query");
        assert_eq!(got[1], want);
    }

    #[test]
    fn text_of_an_ssh_session_is_its_screen_lines() {
        let events = [
            out(1, b"\x1b[1m$ \x1b[0mls\r\n"),
            at(2, Event::Input(Bytes::from_static(b"ignored"))),
            out(3, b"a  b\r\n$ "),
        ];
        assert_eq!(to_text(&header("ssh"), &events), "$ ls\na  b\n$ \n");
    }

    #[test]
    fn text_of_a_postgres_session_is_its_query_log() {
        let events = [
            at(
                61_250_000,
                Event::Query(Query {
                    sql: "select name from t".into(),
                    params: Vec::new(),
                    decision: Decision::Allow,
                    rule: None,
                    duration_us: None,
                    rows: Some(1),
                }),
            ),
            at(
                61_260_000,
                Event::Rows(Rows {
                    columns: vec!["name".into()],
                    rows: vec![vec![Some("bob".into())]],
                    truncated: false,
                }),
            ),
            at(
                62_000_000,
                Event::Query(Query {
                    sql: "drop table t".into(),
                    params: Vec::new(),
                    decision: Decision::Deny,
                    rule: Some("no-ddl".into()),
                    duration_us: None,
                    rows: None,
                }),
            ),
        ];
        assert_eq!(
            to_text(&header("postgres"), &events),
            "[01:01.250] select name from t\n\
             \x20name\n------\n bob\n(1 row)\n\
             [01:02.000] drop table t\n\
             ERROR:  denied by policy (rule no-ddl)\n"
        );
    }
}
