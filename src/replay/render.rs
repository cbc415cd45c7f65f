//! Text renderings shared by search, export, asciicast and play: psql-style tables, labels for
//! commands and approvals, and [`QueryLog`], the text a postgres session replays as.
//!
//! Invariant: text taken from a recording (SQL, cell values, messages) never reaches the output
//! with its control characters intact; they are shown escaped (`\x1b`), so replaying a recording
//! cannot drive the viewer's terminal.

use std::borrow::Cow;

use crate::recording::event::{Approval, Command, Decision, Event, Query, Rows};
use crate::recording::format::HeaderInfo;
use crate::recording::{Offset, Timed};

/// One piece of rendered text and the time it appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub at: Offset,
    pub text: String,
}

/// Renders the structured events of a postgres session as text, one [`Frame`] per event that
/// shows something, in event order (so frame times never decrease when event times do not).
#[derive(Debug, Clone)]
pub struct QueryLog {
    prompt: Option<String>,
    eol: &'static str,
    /// A denied statement whose error line waits for the error event the client was sent, so its
    /// message shows once: `ERROR:  <message> (rule r)`.
    denied: Option<Denied>,
    /// The row count the last statement reported, for the table footer.
    last_rows: Option<u64>,
}

impl QueryLog {
    /// As a terminal would have shown it: `user@target=> sql`, psql tables, `\r\n` line ends.
    pub fn terminal(header: &HeaderInfo) -> Self {
        QueryLog {
            prompt: Some(format!(
                "{}@{}=> ",
                visible(&header.user),
                visible(&header.target)
            )),
            eol: "\r\n",
            denied: None,
            last_rows: None,
        }
    }

    /// As a log for reading: `[mm:ss.mmm] sql`, the same tables, `\n` line ends.
    pub fn stamped() -> Self {
        QueryLog {
            prompt: None,
            eol: "\n",
            denied: None,
            last_rows: None,
        }
    }

    /// Renders one event, appending what it shows to `frames`.
    pub fn push(&mut self, timed: &Timed, frames: &mut Vec<Frame>) {
        if let Event::Error(e) = &timed.event {
            if let Some(denied) = self.denied.take() {
                let text = format!(
                    "ERROR:  {}{}{}",
                    visible(&e.message),
                    rule_suffix(denied.rule.as_deref()),
                    self.eol
                );
                frames.push(Frame { at: timed.at, text });
                return;
            }
        }
        self.flush(frames);
        if let Some(text) = self.render(timed.at, &timed.event) {
            frames.push(Frame { at: timed.at, text });
        }
    }

    /// Ends the log: a denied statement with no error event after it gets its error line.
    pub fn finish(&mut self, frames: &mut Vec<Frame>) {
        self.flush(frames);
    }
}

/// True for a recording of a postgres session, which replays as a [`QueryLog`] rather than as
/// terminal output.
pub fn is_postgres(header: &HeaderInfo) -> bool {
    header.protocol == "postgres"
}

/// Renders a whole postgres session with `log`.
pub fn query_log<'a>(mut log: QueryLog, events: impl IntoIterator<Item = &'a Timed>) -> Vec<Frame> {
    let mut frames = Vec::new();
    for timed in events {
        log.push(timed, &mut frames);
    }
    log.finish(&mut frames);
    frames
}

/// A result set as psql prints it: centred headers, a `-+-` rule, one line per row (numbers
/// right-aligned, NULL as `NULL`), then `(N rows)`. `total` is the count the statement reported,
/// which says how many rows a truncated recording left out.
pub fn table(rows: &Rows, total: Option<u64>, eol: &str) -> String {
    let cells: Vec<Vec<Cow<'_, str>>> = rows
        .rows
        .iter()
        .map(|row| row.iter().map(|c| cell(c.as_deref())).collect())
        .collect();
    let headers: Vec<Cow<'_, str>> = rows.columns.iter().map(|c| visible(c)).collect();
    let ncols = headers
        .len()
        .max(cells.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0; ncols];
    let mut numeric = vec![true; ncols];
    for (i, h) in headers.iter().enumerate() {
        if let Some(w) = widths.get_mut(i) {
            *w = width(h);
        }
    }
    for row in &rows.rows {
        for (i, c) in row.iter().enumerate() {
            if let (Some(n), Some(c)) = (numeric.get_mut(i), c) {
                *n &= c.trim().parse::<f64>().is_ok();
            }
        }
    }
    for row in &cells {
        for (c, w) in row.iter().zip(widths.iter_mut()) {
            *w = (*w).max(width(c));
        }
    }

    let mut out = String::new();
    if ncols > 0 {
        let header: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let h = headers.get(i).map_or("", |h| h.as_ref());
                let room = w.saturating_sub(width(h));
                let left = room / 2;
                format!(" {}{h}{} ", " ".repeat(left), " ".repeat(room - left))
            })
            .collect();
        push_line(&mut out, &header.join("|"), eol);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        push_line(&mut out, &rule.join("+"), eol);
        for row in &cells {
            let line: Vec<String> = widths
                .iter()
                .zip(&numeric)
                .enumerate()
                .map(|(i, (&w, &num))| {
                    let c = row.get(i).map_or("", |c| c.as_ref());
                    let pad = " ".repeat(w.saturating_sub(width(c)));
                    if num {
                        format!(" {pad}{c} ")
                    } else {
                        format!(" {c}{pad} ")
                    }
                })
                .collect();
            push_line(&mut out, &line.join("|"), eol);
        }
    }
    let shown = rows.rows.len() as u64;
    let plural = |n: u64| if n == 1 { "row" } else { "rows" };
    let footer = match total {
        Some(total) if rows.truncated && total > shown => {
            format!("({total} {}, {shown} recorded)", plural(total))
        }
        _ if rows.truncated => format!("({shown} {} recorded, more were sent)", plural(shown)),
        _ => format!("({shown} {})", plural(shown)),
    };
    out.push_str(&footer);
    out.push_str(eol);
    out
}

/// A row as one line: cells joined by ` | `, NULL as `NULL`. What search matches rows against.
pub fn row_line(cells: &[Option<String>]) -> String {
    let cells: Vec<Cow<'_, str>> = cells.iter().map(|c| cell(c.as_deref())).collect();
    cells.join(" | ")
}

/// `approval #42 approved by bob (prod): reason`, the parts that are known.
pub fn approval_label(a: &Approval) -> String {
    let mut s = format!("approval #{} {}", a.id, a.state);
    if let Some(by) = &a.by {
        s.push_str(" by ");
        s.push_str(by);
    }
    if let Some(rule) = &a.rule {
        s.push_str(&format!(" ({rule})"));
    }
    if let Some(reason) = &a.reason {
        s.push_str(": ");
        s.push_str(reason);
    }
    s
}

/// `command: rm -rf / [deny] (rule): message`, the parts that are known.
pub fn command_label(c: &Command) -> String {
    let mut s = format!("command: {} [{}]", c.text, decision_name(c.decision));
    if let Some(rule) = &c.rule {
        s.push_str(&format!(" ({rule})"));
    }
    if let Some(message) = &c.message {
        s.push_str(": ");
        s.push_str(message);
    }
    s
}

/// A statement with its parameters, on one logical line: `sql -- $1 = 'a', $2 = NULL`.
pub fn query_line(q: &Query) -> String {
    match params_text(&q.params) {
        Some(params) => format!("{} -- {params}", q.sql),
        None => q.sql.clone(),
    }
}

/// How the recording names a decision: `allow`, `deny`, `review`.
pub fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Review => "review",
    }
}

/// `s` with every control character but tab shown as an escape (`\n`, `\x1b`), so it prints
/// on one line and cannot drive a terminal.
pub fn visible(s: &str) -> Cow<'_, str> {
    // Control characters are C0 and DEL (single bytes) and C1 (U+0080..=U+009F, encoded 0xc2
    // 0x80..=0x9f): text without those bytes has none, and that is checked without decoding.
    let maybe_control = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f || *b == 0xc2;
    if !s.as_bytes().iter().any(maybe_control) || !s.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push('\t'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[derive(Debug, Clone)]
struct Denied {
    at: Offset,
    rule: Option<String>,
}

/// ` (rule r)`, or nothing without a rule.
fn rule_suffix(rule: Option<&str>) -> String {
    rule.map_or(String::new(), |r| format!(" (rule {})", visible(r)))
}

impl QueryLog {
    fn flush(&mut self, frames: &mut Vec<Frame>) {
        if let Some(d) = self.denied.take() {
            let rule = rule_suffix(d.rule.as_deref());
            let text = format!("ERROR:  denied by policy{rule}{}", self.eol);
            frames.push(Frame { at: d.at, text });
        }
    }

    fn render(&mut self, at: Offset, event: &Event) -> Option<String> {
        let eol = self.eol;
        match event {
            Event::Query(q) => {
                let mut s = match &self.prompt {
                    Some(prompt) => prompt.clone(),
                    None => format!("[{at}] "),
                };
                s.push_str(&lines(&q.sql, eol));
                s.push_str(eol);
                if let Some(params) = params_text(&q.params) {
                    s.push_str(&format!("-- {}{eol}", visible(&params)));
                }
                match q.decision {
                    Decision::Allow => {}
                    Decision::Deny => {
                        self.denied = Some(Denied {
                            at,
                            rule: q.rule.clone(),
                        })
                    }
                    Decision::Review => {
                        let rule = rule_suffix(q.rule.as_deref());
                        s.push_str(&format!("-- held for approval{rule}{eol}"));
                    }
                }
                self.last_rows = q.rows;
                Some(s)
            }
            Event::Rows(r) => Some(table(r, self.last_rows.take(), eol)),
            Event::Approval(a) => Some(format!("-- {}{eol}", visible(&approval_label(a)))),
            Event::Command(c) => Some(format!("-- {}{eol}", visible(&command_label(c)))),
            Event::Marker(m) => Some(format!("-- marker: {}{eol}", visible(m))),
            Event::Error(e) => Some(format!("ERROR:  {}{eol}", visible(&e.message))),
            // A postgres recording has no terminal; if output was recorded anyway, show it as
            // text, never as raw bytes a terminal would act on.
            Event::Output(b) => {
                let text = String::from_utf8_lossy(b);
                let text = text.trim_end_matches(['\r', '\n']);
                (!text.is_empty()).then(|| lines(text, eol) + eol)
            }
            Event::Input(_) | Event::Resize { .. } | Event::Exit(_) => None,
        }
    }
}

/// `$1 = 'a', $2 = NULL`, or nothing for a statement without parameters.
fn params_text(params: &[Option<String>]) -> Option<String> {
    if params.is_empty() {
        return None;
    }
    let parts: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Some(v) => format!("${} = '{}'", i + 1, v.replace('\'', "''")),
            None => format!("${} = NULL", i + 1),
        })
        .collect();
    Some(parts.join(", "))
}

/// Multi-line text with its line breaks as `eol` and every other control character escaped.
fn lines(s: &str, eol: &str) -> String {
    let parts: Vec<Cow<'_, str>> = s
        .split('\n')
        .map(|l| visible(l.strip_suffix('\r').unwrap_or(l)))
        .collect();
    parts.join(eol)
}

fn cell(c: Option<&str>) -> Cow<'_, str> {
    c.map_or(Cow::Borrowed("NULL"), visible)
}

/// Width in characters: close to psql's display width for all but wide (CJK) characters.
fn width(s: &str) -> usize {
    s.chars().count()
}

fn push_line(out: &mut String, line: &str, eol: &str) {
    out.push_str(line.trim_end_matches(' '));
    out.push_str(eol);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::event::ErrorEvent;
    use crate::replay::testing::{at, header};

    fn rows(columns: &[&str], rows: &[&[Option<&str>]], truncated: bool) -> Rows {
        Rows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|c| c.map(str::to_string)).collect())
                .collect(),
            truncated,
        }
    }

    fn query(sql: &str, decision: Decision, rule: Option<&str>) -> Query {
        Query {
            sql: sql.into(),
            params: Vec::new(),
            decision,
            rule: rule.map(str::to_string),
            duration_us: None,
            rows: None,
        }
    }

    #[test]
    fn tables_look_like_psql() {
        let r = rows(
            &["id", "email"],
            &[&[Some("1"), Some("a@example.com")], &[Some("42"), None]],
            false,
        );
        assert_eq!(
            table(&r, None, "\n"),
            " id |     email\n\
             ----+---------------\n  \
             1 | a@example.com\n \
             42 | NULL\n\
             (2 rows)\n"
        );
        let one = rows(&["n"], &[&[Some("x")]], false);
        assert_eq!(table(&one, None, "\r\n"), " n\r\n---\r\n x\r\n(1 row)\r\n");
        let none = rows(&["n"], &[], false);
        assert_eq!(table(&none, None, "\n"), " n\n---\n(0 rows)\n");
    }

    #[test]
    fn truncated_tables_say_what_was_left_out() {
        let r = rows(&["n"], &[&[Some("1")], &[Some("2")]], true);
        assert!(table(&r, Some(1000), "\n").ends_with("(1000 rows, 2 recorded)\n"));
        assert!(table(&r, None, "\n").ends_with("(2 rows recorded, more were sent)\n"));
    }

    #[test]
    fn cell_values_cannot_drive_a_terminal() {
        let r = rows(&["v"], &[&[Some("a\x1b]0;pwned\x07\nb")]], false);
        let t = table(&r, None, "\r\n");
        assert!(!t.contains('\x1b') && !t.contains('\x07'));
        assert!(t.contains(r"a\x1b]0;pwned\x07\nb"));
        assert_eq!(visible("tab\tok"), "tab\tok");
        assert!(matches!(visible("£ ok"), Cow::Borrowed("£ ok")));
        assert_eq!(visible("c1 \u{9b}31m"), r"c1 \x9b31m");
        assert_eq!(visible("del\x7f"), r"del\x7f");
    }

    #[test]
    fn labels() {
        let a = Approval {
            id: 42,
            state: "approved".into(),
            by: Some("bob".into()),
            rule: Some("prod".into()),
            reason: None,
        };
        assert_eq!(approval_label(&a), "approval #42 approved by bob (prod)");
        let c = Command {
            kind: "shell".into(),
            text: "rm -rf /".into(),
            decision: Decision::Deny,
            rule: Some("destructive".into()),
            message: None,
        };
        assert_eq!(command_label(&c), "command: rm -rf / [deny] (destructive)");
        assert_eq!(row_line(&[Some("a".into()), None]), "a | NULL");
        let mut q = query("select $1, $2", Decision::Allow, None);
        q.params = vec![Some("o'k".into()), None];
        assert_eq!(query_line(&q), "select $1, $2 -- $1 = 'o''k', $2 = NULL");
    }

    #[test]
    fn a_session_renders_as_a_terminal_would_show_it() {
        let mut q = query("select id\nfrom t", Decision::Allow, None);
        q.rows = Some(1);
        let events = [
            at(1_000, Event::Query(q)),
            at(2_000, Event::Rows(rows(&["id"], &[&[Some("7")]], false))),
            at(
                3_000,
                Event::Query(query("drop table t", Decision::Deny, Some("no-ddl"))),
            ),
            at(
                3_000,
                Event::Error(ErrorEvent {
                    message: "statement blocked".into(),
                    code: Some("42501".into()),
                }),
            ),
            at(
                4_000,
                Event::Query(query("truncate t", Decision::Deny, None)),
            ),
            at(
                5_000,
                Event::Query(query("select 1/0", Decision::Allow, None)),
            ),
            at(
                6_000,
                Event::Error(ErrorEvent {
                    message: "division by zero".into(),
                    code: None,
                }),
            ),
            at(
                7_000,
                Event::Query(query("delete from t", Decision::Review, Some("prod"))),
            ),
            at(
                8_000,
                Event::Query(query("vacuum", Decision::Deny, Some("r"))),
            ),
        ];
        let frames = query_log(QueryLog::terminal(&header("postgres")), &events);
        let text: String = frames.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            text,
            "alice@app=> select id\r\nfrom t\r\n\
             \x20id\r\n----\r\n  7\r\n(1 row)\r\n\
             alice@app=> drop table t\r\n\
             ERROR:  statement blocked (rule no-ddl)\r\n\
             alice@app=> truncate t\r\n\
             ERROR:  denied by policy\r\n\
             alice@app=> select 1/0\r\n\
             ERROR:  division by zero\r\n\
             alice@app=> delete from t\r\n-- held for approval (rule prod)\r\n\
             alice@app=> vacuum\r\n\
             ERROR:  denied by policy (rule r)\r\n"
        );
        let times: Vec<u64> = frames.iter().map(|f| f.at.0).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(times.last(), Some(&8_000));
    }

    #[test]
    fn the_stamped_log_puts_times_before_statements() {
        let events = [at(
            61_250_000,
            Event::Query(query("select 1", Decision::Allow, None)),
        )];
        let frames = query_log(QueryLog::stamped(), &events);
        assert_eq!(frames[0].text, "[01:01.250] select 1\n");
    }
}
