//! The events of the golden v1 recordings (testdata/recordings/v1/store), shared by the program
//! that wrote them (examples/golden.rs) and the test that decodes them forever.

use bytes::Bytes;
use vigil::recording::event::{
    Approval, Command, Decision, ErrorEvent, Event, Exit, Offset, Query, Rows, Timed,
};

fn at(ms: u64, event: Event) -> Timed {
    Timed {
        at: Offset(ms * 1000),
        event,
    }
}

fn out(s: &str) -> Event {
    Event::Output(Bytes::from(s.as_bytes().to_vec()))
}

/// The SSH golden session: colours, UTF-8 split across events, a resize, typed input, an
/// allowed and a denied command, a marker, and the exit.
pub fn ssh_events() -> Vec<Timed> {
    let mut v = vec![
        at(0, Event::Resize { cols: 100, rows: 30 }),
        at(5, out("Welcome to web1\r\n\x1b[1;32mdeploy@web1\x1b[0m:~$ ")),
        at(900, Event::Input(Bytes::from_static(b"ls\r"))),
        at(
            905,
            Event::Command(Command { kind: "shell".into(), text: "ls".into(), decision: Decision::Allow, rule: None, message: None }),
        ),
        at(910, out("app.log  caf\u{e9}.txt  \u{1F600}.md\r\n")),
        at(911, Event::Output(Bytes::from_static(b"price: 5 \xe2\x82"))),
        at(912, Event::Output(Bytes::from_static(b"\xac\r\n\x1b[1;32mdeploy@web1\x1b[0m:~$ "))),
        at(2_000, Event::Resize { cols: 120, rows: 40 }),
        at(3_500, Event::Marker("before cleanup".into())),
        at(
            4_000,
            Event::Command(Command {
                kind: "shell".into(),
                text: "rm -rf /var/lib/app".into(),
                decision: Decision::Deny,
                rule: Some("shell-destructive".into()),
                message: Some("destructive commands are blocked".into()),
            }),
        ),
        at(4_001, out("\r\nvigil: destructive commands are blocked (rule shell-destructive)\r\n\x1b[1;32mdeploy@web1\x1b[0m:~$ ")),
        at(
            6_000,
            Event::Approval(Approval {
                id: 42,
                state: "approved".into(),
                by: Some("carol".into()),
                rule: Some("prod-restart".into()),
                reason: Some("change 1234".into()),
            }),
        ),
        at(6_100, out("progress 10%\rprogress 100%\r\n")),
    ];
    // Enough output to span several chunks.
    for i in 0..3000u64 {
        v.push(at(
            7_000 + i,
            out(&format!(
                "line {i:05} of the build log: compiling crate number {i}\r\n"
            )),
        ));
    }
    v.push(at(12_000, out("logout\r\n")));
    v.push(at(
        12_001,
        Event::Exit(Exit {
            status: Some(0),
            signal: None,
            reason: None,
        }),
    ));
    v
}

/// The Postgres golden session: allowed and denied statements, masked rows, an error.
pub fn pg_events() -> Vec<Timed> {
    vec![
        at(
            100,
            Event::Query(Query {
                sql: "SELECT id, email FROM users WHERE id = $1".into(),
                params: vec![Some("7".into())],
                decision: Decision::Allow,
                rule: None,
                duration_us: Some(812),
                rows: Some(1),
            }),
        ),
        at(
            101,
            Event::Rows(Rows {
                columns: vec!["id".into(), "email".into()],
                rows: vec![vec![Some("7".into()), Some("****".into())]],
                truncated: false,
            }),
        ),
        at(
            2_000,
            Event::Query(Query {
                sql: "DROP TABLE users".into(),
                params: vec![],
                decision: Decision::Deny,
                rule: Some("no-destructive-sql".into()),
                duration_us: None,
                rows: None,
            }),
        ),
        at(
            2_001,
            Event::Error(ErrorEvent {
                message: "destructive statements are blocked".into(),
                code: Some("42501".into()),
            }),
        ),
        at(
            3_000,
            Event::Query(Query {
                sql: "SELECT count(*) FROM orders".into(),
                params: vec![],
                decision: Decision::Allow,
                rule: None,
                duration_us: Some(2_400),
                rows: Some(1),
            }),
        ),
        at(
            3_001,
            Event::Rows(Rows {
                columns: vec!["count".into()],
                rows: vec![vec![Some("1024".into())]],
                truncated: false,
            }),
        ),
        at(
            4_000,
            Event::Exit(Exit {
                status: None,
                signal: None,
                reason: Some("client terminated".into()),
            }),
        ),
    ]
}
