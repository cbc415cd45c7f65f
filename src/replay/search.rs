//! `vigil search`: find a pattern in what a session showed and did. Terminal output is cleaned
//! into screen lines and searched as one contiguous buffer, not line by line; structured events
//! (commands, statements, rows, errors, approvals, markers) are searched as rendered text.
//!
//! Invariant: every hit is a whole line, reported once however many matches it holds, at the time
//! its line started: for output, the time of the output event that drew the line's first byte.

use memchr::{memchr, memrchr};
use regex::bytes::{Regex, RegexBuilder};

use super::render;
use super::strip::LineAssembler;
use crate::recording::{Event, Offset, Timed};

/// Hit lines longer than this many characters are cut to this many around the match.
pub const DISPLAY_MAX: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid search pattern: {0}")]
    Pattern(#[from] regex::Error),
}

/// How a pattern is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchOptions {
    /// The pattern is a literal string (the default), not a regular expression.
    pub literal: bool,
    pub ignore_case: bool,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            literal: true,
            ignore_case: false,
        }
    }
}

/// A compiled pattern. `^` and `$` match at line boundaries; a match that runs across a line
/// break (a pattern with `\n` or `\s`) is reported on the line where it starts.
#[derive(Debug, Clone)]
pub struct Matcher {
    re: Regex,
}

impl Matcher {
    pub fn new(pattern: &str, options: MatchOptions) -> Result<Matcher, SearchError> {
        let pattern = if options.literal {
            regex::escape(pattern)
        } else {
            pattern.to_string()
        };
        let re = RegexBuilder::new(&pattern)
            .case_insensitive(options.ignore_case)
            .multi_line(true)
            .build()?;
        Ok(Matcher { re })
    }

    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.re.is_match(haystack)
    }
}

/// One line that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub at: Offset,
    /// `output`, `input`, `command`, `query`, `rows`, `error`, `approval` or `marker`.
    pub kind: &'static str,
    /// The line for display: control characters escaped, cut around the match when long.
    pub line: String,
}

/// Searches a session's events pushed one at a time, in order; [`Searcher::finish`] returns the
/// hits sorted by time. Memory stays bounded: cleaned output is searched and dropped every few
/// megabytes.
#[derive(Debug)]
pub struct Searcher {
    matcher: Matcher,
    output: Lines,
    input: Lines,
    hits: Vec<Hit>,
}

impl Searcher {
    /// The matcher is cloned (cheap: its compiled program is shared).
    pub fn new(matcher: &Matcher) -> Self {
        Searcher {
            matcher: matcher.clone(),
            output: Lines::new("output", LineAssembler::new()),
            input: Lines::new("input", LineAssembler::for_input()),
            hits: Vec::new(),
        }
    }

    pub fn push(&mut self, timed: &Timed) {
        let at = timed.at;
        match &timed.event {
            Event::Output(bytes) => {
                self.output.feed(at, bytes);
                self.output.search_if_full(&self.matcher, &mut self.hits);
            }
            Event::Input(bytes) => {
                self.input.feed(at, bytes);
                self.input.search_if_full(&self.matcher, &mut self.hits);
            }
            Event::Command(c) => self.text(at, "command", &c.text),
            Event::Query(q) => self.text(at, "query", &render::query_line(q)),
            Event::Rows(r) => {
                self.text(at, "rows", &r.columns.join(" | "));
                for row in &r.rows {
                    self.text(at, "rows", &render::row_line(row));
                }
            }
            Event::Error(e) => self.text(at, "error", &e.message),
            Event::Approval(a) => self.text(at, "approval", &render::approval_label(a)),
            Event::Marker(m) => self.text(at, "marker", m),
            Event::Resize { .. } | Event::Exit(_) => {}
        }
    }

    pub fn finish(mut self) -> Vec<Hit> {
        self.output.finish(&self.matcher, &mut self.hits);
        self.input.finish(&self.matcher, &mut self.hits);
        // Stable: hits at the same time keep their order.
        self.hits.sort_by_key(|h| h.at);
        self.hits
    }

    fn text(&mut self, at: Offset, kind: &'static str, text: &str) {
        if let Some(m) = self.matcher.re.find(text.as_bytes()) {
            self.hits.push(Hit {
                at,
                kind,
                line: display(text.as_bytes(), m.start()),
            });
        }
    }
}

/// Every hit in a session, sorted by time.
pub fn search_events<'a>(
    matcher: &Matcher,
    events: impl IntoIterator<Item = &'a Timed>,
) -> Vec<Hit> {
    let mut searcher = Searcher::new(matcher);
    for timed in events {
        searcher.push(timed);
    }
    searcher.finish()
}

/// [`search_events`] over decoded events; the first decoding error ends the search.
pub fn try_search_events<E>(
    matcher: &Matcher,
    events: impl IntoIterator<Item = Result<Timed, E>>,
) -> Result<Vec<Hit>, E> {
    let mut searcher = Searcher::new(matcher);
    for timed in events {
        searcher.push(&timed?);
    }
    Ok(searcher.finish())
}

/// Cleaned output is searched once this much has gathered, then dropped.
const SEARCH_AT: usize = 8 << 20;

/// One cleaned stream (output or input) and when each of its lines started.
#[derive(Debug)]
struct Lines {
    kind: &'static str,
    asm: LineAssembler,
    /// Complete lines, each ended by `\n`.
    buf: Vec<u8>,
    /// Sorted by position: the line starting at a position `p` started at the time of the last
    /// entry at or before `p`.
    starts: Vec<(usize, Offset)>,
}

impl Lines {
    fn new(kind: &'static str, asm: LineAssembler) -> Self {
        Lines {
            kind,
            asm,
            buf: Vec::new(),
            starts: Vec::new(),
        }
    }

    fn feed(&mut self, at: Offset, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let before = self.buf.len();
        let continues = self.asm.in_line();
        if !continues {
            // The next line to reach the buffer starts in this event.
            self.starts.push((before, at));
        }
        self.asm.feed(bytes, &mut self.buf);
        if continues {
            // The first line this event ends began earlier; the ones after it begin here.
            let added = self.buf.get(before..).unwrap_or_default();
            if let Some(nl) = memchr(b'\n', added) {
                self.starts.push((before + nl + 1, at));
            }
        }
    }

    fn search_if_full(&mut self, matcher: &Matcher, hits: &mut Vec<Hit>) {
        if self.buf.len() >= SEARCH_AT {
            self.search(matcher, hits);
        }
    }

    fn finish(&mut self, matcher: &Matcher, hits: &mut Vec<Hit>) {
        self.asm.finish(&mut self.buf);
        self.search(matcher, hits);
    }

    /// Searches the whole buffer, then empties it. The line still open in the assembler starts
    /// at position 0 of the emptied buffer, at the time of the last start recorded.
    fn search(&mut self, matcher: &Matcher, hits: &mut Vec<Hit>) {
        let buf = &self.buf;
        let mut pos = 0;
        while pos <= buf.len() {
            let Some(m) = matcher.re.find_at(buf, pos) else {
                break;
            };
            let (before, after) = buf.split_at(m.start().min(buf.len()));
            let start = memrchr(b'\n', before).map_or(0, |i| i + 1);
            let end = m.start() + memchr(b'\n', after).unwrap_or(after.len());
            if start == buf.len() {
                // An empty match after the last line: there is no line here.
                break;
            }
            let line = buf.get(start..end).unwrap_or_default();
            hits.push(Hit {
                at: self.started(start),
                kind: self.kind,
                line: display(line, m.start() - start),
            });
            pos = end + 1;
        }
        let last = self.starts.last().map(|s| s.1);
        self.buf.clear();
        self.starts.clear();
        self.starts.extend(last.map(|at| (0, at)));
    }

    fn started(&self, line_start: usize) -> Offset {
        let i = self.starts.partition_point(|s| s.0 <= line_start);
        i.checked_sub(1)
            .and_then(|i| self.starts.get(i))
            .map_or(Offset(0), |s| s.1)
    }
}

/// A line for display: lossy UTF-8, controls escaped, and when longer than [`DISPLAY_MAX`]
/// characters, the window of that many that holds the match a quarter of the way in, with `…`
/// where text was cut.
fn display(line: &[u8], match_at: usize) -> String {
    let text = String::from_utf8_lossy(line);
    // A line of no more bytes than the limit has no more characters either.
    let total = if text.len() <= DISPLAY_MAX {
        0
    } else {
        text.chars().count()
    };
    if total <= DISPLAY_MAX {
        return render::visible(&text).into_owned();
    }
    // Characters before the match, counted on the bytes (exact for valid UTF-8).
    let before = line
        .get(..match_at)
        .map_or(0, |p| p.iter().filter(|b| (**b & 0xc0) != 0x80).count());
    let skip = before
        .saturating_sub(DISPLAY_MAX / 4)
        .min(total - DISPLAY_MAX);
    let window: String = text.chars().skip(skip).take(DISPLAY_MAX).collect();
    let mut out = String::with_capacity(window.len() + 8);
    if skip > 0 {
        out.push('…');
    }
    out.push_str(&render::visible(&window));
    if skip + DISPLAY_MAX < total {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::recording::event::{Approval, Command, Decision, ErrorEvent, Query, Rows};
    use crate::replay::testing::{at, out};

    fn literal(pattern: &str) -> Matcher {
        Matcher::new(pattern, MatchOptions::default()).unwrap()
    }

    fn found(matcher: &Matcher, events: &[Timed]) -> Vec<(u64, &'static str, String)> {
        search_events(matcher, events)
            .into_iter()
            .map(|h| (h.at.0, h.kind, h.line))
            .collect()
    }

    #[test]
    fn patterns_are_literal_unless_asked() {
        let events = [out(1, b"a.b\r\naxb\r\nA.B\r\n")];
        let lines = |m: &Matcher| -> Vec<String> {
            search_events(m, &events)
                .into_iter()
                .map(|h| h.line)
                .collect()
        };
        assert_eq!(lines(&literal("a.b")), ["a.b"]);
        let ci = MatchOptions {
            literal: true,
            ignore_case: true,
        };
        assert_eq!(lines(&Matcher::new("a.b", ci).unwrap()), ["a.b", "A.B"]);
        let re = MatchOptions {
            literal: false,
            ignore_case: false,
        };
        assert_eq!(lines(&Matcher::new("^a.b$", re).unwrap()), ["a.b", "axb"]);
        assert!(matches!(
            Matcher::new("(", re),
            Err(SearchError::Pattern(_))
        ));
    }

    #[test]
    fn output_hits_are_clean_lines_at_the_time_they_started() {
        let events = [
            out(1_000, b"\x1b[32mfoo\x1b[0m\r\nba"),
            out(2_000, b"r baz\r\nqux bar bar\r\n"),
            out(3_000, b"50% bar\r100% done\r\n"),
            out(4_000, b"last bar"),
        ];
        assert_eq!(
            found(&literal("bar"), &events),
            [
                (1_000, "output", "bar baz".to_string()),
                (2_000, "output", "qux bar bar".to_string()),
                (4_000, "output", "last bar".to_string()),
            ]
        );
        assert_eq!(
            found(&literal("foo"), &events),
            [(1_000, "output", "foo".to_string())]
        );
    }

    #[test]
    fn a_match_split_across_events_and_escapes_is_found() {
        let events = [
            out(10, b"$ sudo r"),
            out(20, b"\x1b[1mm -r"),
            out(30, b"f /tmp/x\x1b[0m\r\n"),
        ];
        assert_eq!(
            found(&literal("rm -rf"), &events),
            [(10, "output", "$ sudo rm -rf /tmp/x".to_string())]
        );
    }

    #[test]
    fn a_line_opened_by_an_escape_sequence_starts_with_it() {
        // The prompt's colour arrives first; the line started then.
        let events = [out(5, b"\x1b[0m"), out(9, b"$ secret\r\n")];
        assert_eq!(found(&literal("secret"), &events)[0].0, 5);
    }

    #[test]
    fn structured_events_match_on_their_text() {
        let events = [
            at(
                1,
                Event::Command(Command {
                    kind: "shell".into(),
                    text: "cat /etc/shadow".into(),
                    decision: Decision::Deny,
                    rule: None,
                    message: None,
                }),
            ),
            at(
                2,
                Event::Query(Query {
                    sql: "select * from users where name = $1".into(),
                    params: vec![Some("shadow".into())],
                    decision: Decision::Allow,
                    rule: None,
                    duration_us: None,
                    rows: None,
                }),
            ),
            at(
                3,
                Event::Rows(Rows {
                    columns: vec!["name".into(), "shadow_hash".into()],
                    rows: vec![
                        vec![Some("root".into()), Some("x".into())],
                        vec![Some("shadow".into()), None],
                    ],
                    truncated: false,
                }),
            ),
            at(
                4,
                Event::Error(ErrorEvent {
                    message: "permission denied for shadow".into(),
                    code: None,
                }),
            ),
            at(
                5,
                Event::Approval(Approval {
                    id: 7,
                    state: "approved".into(),
                    by: Some("shadow-admin".into()),
                    rule: None,
                    reason: None,
                }),
            ),
            at(6, Event::Marker("shadow check".into())),
            at(7, Event::Resize { cols: 1, rows: 1 }),
        ];
        assert_eq!(
            found(&literal("shadow"), &events),
            [
                (1, "command", "cat /etc/shadow".to_string()),
                (
                    2,
                    "query",
                    "select * from users where name = $1 -- $1 = 'shadow'".to_string()
                ),
                (3, "rows", "name | shadow_hash".to_string()),
                (3, "rows", "shadow | NULL".to_string()),
                (4, "error", "permission denied for shadow".to_string()),
                (
                    5,
                    "approval",
                    "approval #7 approved by shadow-admin".to_string()
                ),
                (6, "marker", "shadow check".to_string()),
            ]
        );
    }

    #[test]
    fn typed_input_is_searched_as_lines() {
        let keys: [&'static [u8]; 6] = [b"r", b"m", b"x", b"\x7f", b" -rf /", b"\r"];
        let events: Vec<Timed> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| at(i as u64 * 100, Event::Input(Bytes::from_static(k))))
            .collect();
        assert_eq!(
            found(&literal("rm -rf"), &events),
            [(0, "input", "rm -rf /".to_string())]
        );
    }

    #[test]
    fn hits_come_back_in_time_order() {
        let events = [
            out(10, b"needle one"),
            at(20, Event::Marker("needle two".into())),
            out(30, b"\r\nneedle three\r\n"),
        ];
        let times: Vec<u64> = found(&literal("needle"), &events)
            .iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(times, [10, 20, 30]);
    }

    #[test]
    fn long_lines_are_cut_around_the_match() {
        let mut line = "a".repeat(1000);
        line.push_str("NEEDLE");
        line.push_str(&"b".repeat(1000));
        line.push_str("\r\n");
        let events = [at(0, Event::Output(Bytes::from(line)))];
        let hits = search_events(&literal("NEEDLE"), &events);
        let shown = &hits[0].line;
        assert_eq!(shown.chars().count(), DISPLAY_MAX + 2);
        assert!(shown.starts_with("…a") && shown.ends_with("b…"));
        let needle = shown.find("NEEDLE").unwrap();
        assert_eq!(shown[..needle].chars().count(), 1 + DISPLAY_MAX / 4);
        // Near the end, the window is the last DISPLAY_MAX characters.
        assert_eq!(display(&[b'x'; 1000], 999).chars().count(), DISPLAY_MAX + 1);
    }

    #[test]
    fn structured_text_cannot_inject_control_characters() {
        let events = [at(1, Event::Marker("bad\x1b[2Jmarker\nline".into()))];
        assert_eq!(
            found(&literal("marker"), &events)[0].2,
            r"bad\x1b[2Jmarker\nline"
        );
    }

    #[test]
    fn output_bigger_than_the_search_window_keeps_lines_and_times() {
        // Each event one line; the needle in the first, near the window edge, and in the last.
        let filler = Bytes::from(format!("{}\r\n", "x".repeat(1023)));
        let mut events = vec![out(0, b"needle first\r\nhalf a ")];
        let n = SEARCH_AT / 1024 + 10;
        for i in 1..=n as u64 {
            events.push(at(i, Event::Output(filler.clone())));
            if i == (n as u64) / 2 {
                events.push(out(i, b"needle middle\r\n"));
            }
        }
        events.push(out(n as u64 + 1, b"needle last"));
        let hits = found(&literal("needle"), &events);
        assert_eq!(
            hits,
            [
                (0, "output", "needle first".to_string()),
                ((n as u64) / 2, "output", "needle middle".to_string()),
                (n as u64 + 1, "output", "needle last".to_string()),
            ]
        );
        let halves = found(&literal("half a x"), &events);
        assert_eq!(halves.len(), 1);
        assert_eq!(halves[0].0, 0);
    }

    #[test]
    fn decoding_errors_end_the_search() {
        let events: Vec<Result<Timed, &str>> = vec![Ok(out(1, b"needle\r\n")), Err("bad chunk")];
        assert_eq!(
            try_search_events(&literal("needle"), events),
            Err("bad chunk")
        );
        let ok: Vec<Result<Timed, &str>> = vec![Ok(out(1, b"needle\r\n"))];
        assert_eq!(try_search_events(&literal("needle"), ok).unwrap().len(), 1);
    }

    #[test]
    fn empty_matches_report_each_line_once() {
        let re = MatchOptions {
            literal: false,
            ignore_case: false,
        };
        let events = [out(1, b"one\r\n\r\ntwo\r\n")];
        let lines: Vec<String> = search_events(&Matcher::new("x*", re).unwrap(), &events)
            .into_iter()
            .map(|h| h.line)
            .collect();
        assert_eq!(lines, ["one", "", "two"]);
    }
}
