//! `vigil play`: a recording played back on the viewer's terminal at its recorded pace, with
//! pause, single-step and quit keys; or, when not on a terminal, written out at once.
//!
//! Invariant: timing is decided by [`schedule`], a pure function; the loop here only waits, reads
//! keys and writes. Raw mode is restored however playback ends (quit, error, panic).

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossterm::event::{self, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal;

use super::render::{self, QueryLog};
use crate::recording::format::HeaderInfo;
use crate::recording::{Event, Offset, Timed};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayOptions {
    /// 2.0 plays twice as fast. Not finite or not positive: 1.0.
    pub speed: f64,
    /// Longest pause between two frames, in recorded seconds (before `speed` applies).
    pub idle_limit: Option<f64>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            speed: 1.0,
            idle_limit: None,
        }
    }
}

/// Plays a session to `out`. With `interactive` (stdin and stdout are a terminal) it waits between
/// frames and reads keys: space pauses and resumes, `.` steps one frame while paused, `q` or
/// Ctrl-C quits. Without, it writes every frame at once, so `vigil play ID | cat` prints the
/// session's bytes. A postgres session plays as its query log.
pub fn play(
    header: &HeaderInfo,
    events: &[Timed],
    opts: &PlayOptions,
    out: &mut dyn Write,
    interactive: bool,
) -> io::Result<()> {
    let frames = frames(header, events);
    if !interactive {
        for frame in &frames {
            if let Show::Bytes(bytes) = &frame.show {
                out.write_all(bytes)?;
            }
        }
        return out.flush();
    }
    let delays = schedule(frames.iter().map(|f| f.at), opts.speed, opts.idle_limit);
    let raw = RawMode::enable()?;
    let played = run(&frames, &delays, out);
    // Leave the viewer's terminal usable whatever the session did to it: attributes reset,
    // cursor shown, on a fresh line.
    let reset = out
        .write_all(b"\x1b[0m\x1b[?25h\r\n")
        .and_then(|()| out.flush());
    drop(raw);
    played.and(reset)
}

/// How long to wait before each frame: the gap since the previous one (the first: since the
/// session started), capped at `idle_limit` seconds, divided by `speed`. Times that go backwards
/// count as no gap.
pub fn schedule(
    times: impl IntoIterator<Item = Offset>,
    speed: f64,
    idle_limit: Option<f64>,
) -> Vec<Duration> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let cap = idle_limit
        .filter(|l| !l.is_nan())
        .map(|l| Duration::try_from_secs_f64(l.max(0.0)).unwrap_or(Duration::MAX));
    let mut last = 0;
    times
        .into_iter()
        .map(|at| {
            let gap = Duration::from_micros(at.0.saturating_sub(last));
            last = last.max(at.0);
            let gap = cap.map_or(gap, |cap| gap.min(cap));
            Duration::try_from_secs_f64(gap.as_secs_f64() / speed).unwrap_or(Duration::MAX)
        })
        .collect()
}

/// What a key does during playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Pause,
    Step,
    Quit,
}

/// The playback key for a terminal event, if it is one.
pub fn key(ev: &event::Event) -> Option<Key> {
    let event::Event::Key(KeyEvent {
        code,
        modifiers,
        kind: KeyEventKind::Press,
        ..
    }) = ev
    else {
        return None;
    };
    match code {
        KeyCode::Char(' ') => Some(Key::Pause),
        KeyCode::Char('.') => Some(Key::Step),
        KeyCode::Char('q') => Some(Key::Quit),
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
        _ => None,
    }
}

/// One thing playback shows, at its recorded time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame<'e> {
    at: Offset,
    show: Show<'e>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Show<'e> {
    Bytes(Cow<'e, [u8]>),
    Resize { cols: u16, rows: u16 },
}

/// The frames of a session: its output and resizes, or for postgres its rendered query log.
fn frames<'e>(header: &HeaderInfo, events: &'e [Timed]) -> Vec<Frame<'e>> {
    if render::is_postgres(header) {
        return render::query_log(QueryLog::terminal(header), events)
            .into_iter()
            .map(|f| Frame {
                at: f.at,
                show: Show::Bytes(Cow::Owned(f.text.into_bytes())),
            })
            .collect();
    }
    events
        .iter()
        .filter_map(|t| {
            let show = match &t.event {
                Event::Output(bytes) => Show::Bytes(Cow::Borrowed(bytes.as_ref())),
                Event::Resize { cols, rows } => Show::Resize {
                    cols: *cols,
                    rows: *rows,
                },
                // Typed input shows through the output it echoed; the rest has no screen.
                _ => return None,
            };
            Some(Frame { at: t.at, show })
        })
        .collect()
}

/// Puts the terminal in raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enable() -> io::Result<RawMode> {
        terminal::enable_raw_mode()?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do with a failure here than leave the terminal as it is.
        let _ = terminal::disable_raw_mode();
    }
}

/// How long a paused player sleeps between looks at the keyboard.
const PAUSED_POLL: Duration = Duration::from_millis(500);

fn run(frames: &[Frame<'_>], delays: &[Duration], out: &mut dyn Write) -> io::Result<()> {
    let mut paused = false;
    for (frame, delay) in frames.iter().zip(delays) {
        let mut left = *delay;
        loop {
            if !paused && left.is_zero() {
                break;
            }
            let waited = Instant::now();
            let pressed = if event::poll(if paused { PAUSED_POLL } else { left })? {
                key(&event::read()?)
            } else {
                None
            };
            if !paused {
                left = left.saturating_sub(waited.elapsed());
            }
            match pressed {
                Some(Key::Quit) => return Ok(()),
                Some(Key::Pause) => paused = !paused,
                Some(Key::Step) if paused => break,
                _ => {}
            }
        }
        match &frame.show {
            Show::Bytes(bytes) => out.write_all(bytes)?,
            Show::Resize { cols, rows } => write!(out, "\x1b[8;{rows};{cols}t")?,
        }
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use crossterm::event::{Event as TermEvent, KeyEventState};

    use super::*;
    use crate::recording::event::{Decision, Query};
    use crate::replay::testing::{at, header, out};

    fn offsets(us: &[u64]) -> Vec<Offset> {
        us.iter().map(|u| Offset(*u)).collect()
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn schedule_follows_the_recorded_gaps() {
        let times = offsets(&[500_000, 1_000_000, 4_000_000, 4_000_000]);
        assert_eq!(schedule(times.clone(), 1.0, None), ms(&[500, 500, 3000, 0]));
        assert_eq!(schedule(times.clone(), 2.0, None), ms(&[250, 250, 1500, 0]));
        assert_eq!(
            schedule(times.clone(), 0.5, None),
            ms(&[1000, 1000, 6000, 0])
        );
    }

    #[test]
    fn idle_gaps_are_capped_before_speed_applies() {
        let times = offsets(&[0, 10_000_000, 10_500_000, 70_000_000]);
        assert_eq!(
            schedule(times.clone(), 1.0, Some(2.0)),
            ms(&[0, 2000, 500, 2000])
        );
        assert_eq!(
            schedule(times.clone(), 2.0, Some(2.0)),
            ms(&[0, 1000, 250, 1000])
        );
        assert_eq!(schedule(times, 1.0, Some(0.0)), ms(&[0, 0, 0, 0]));
    }

    #[test]
    fn schedule_is_total() {
        let times = offsets(&[3_000_000, 1_000_000, 4_000_000, u64::MAX]);
        // Backwards time is no gap, and the gap after it counts from the latest time.
        assert_eq!(
            schedule(times.clone(), 1.0, Some(10.0))[..3],
            ms(&[3000, 0, 1000])
        );
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                schedule(times.clone(), speed, Some(10.0))[..3],
                ms(&[3000, 0, 1000])
            );
        }
        for limit in [f64::NAN, -5.0, f64::INFINITY, 1e300] {
            assert_eq!(schedule(times.clone(), 1e-300, Some(limit)).len(), 4);
        }
        assert!(schedule(Vec::new(), 1.0, None).is_empty());
    }

    #[test]
    fn keys_map_to_actions() {
        let press = |code, modifiers| {
            TermEvent::Key(KeyEvent {
                code,
                modifiers,
                kind: KeyEventKind::Press,
                state: KeyEventState::NONE,
            })
        };
        let none = KeyModifiers::NONE;
        assert_eq!(key(&press(KeyCode::Char(' '), none)), Some(Key::Pause));
        assert_eq!(key(&press(KeyCode::Char('.'), none)), Some(Key::Step));
        assert_eq!(key(&press(KeyCode::Char('q'), none)), Some(Key::Quit));
        assert_eq!(
            key(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        );
        assert_eq!(key(&press(KeyCode::Char('c'), none)), None);
        let release = TermEvent::Key(KeyEvent {
            code: KeyCode::Char('q'),
            modifiers: none,
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
        });
        assert_eq!(key(&release), None);
        assert_eq!(key(&TermEvent::Resize(1, 1)), None);
    }

    #[test]
    fn without_a_terminal_output_is_written_at_once() {
        let events = [
            at(0, Event::Resize { cols: 80, rows: 24 }),
            out(1_000_000, b"\x1b[1mhello\x1b[0m\r\n"),
            at(2_000_000, Event::Input(Bytes::from_static(b"exit\r"))),
            at(3_000_000, Event::Marker("m".into())),
            // An hour later: nothing waits.
            out(3_600_000_000, b"bye\r\n"),
        ];
        let mut written = Vec::new();
        let started = Instant::now();
        play(
            &header("ssh"),
            &events,
            &PlayOptions::default(),
            &mut written,
            false,
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(written, b"\x1b[1mhello\x1b[0m\r\nbye\r\n");
    }

    #[test]
    fn a_postgres_session_plays_as_its_query_log() {
        let events = [at(
            1_000,
            Event::Query(Query {
                sql: "select 1".into(),
                params: Vec::new(),
                decision: Decision::Deny,
                rule: None,
                duration_us: None,
                rows: None,
            }),
        )];
        let mut written = Vec::new();
        play(
            &header("postgres"),
            &events,
            &PlayOptions::default(),
            &mut written,
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            "alice@app=> select 1\r\nERROR:  denied by policy\r\n"
        );
    }

    #[test]
    fn frames_keep_output_and_resizes_in_order() {
        let events = [
            out(1, b"a"),
            at(
                2,
                Event::Resize {
                    cols: 100,
                    rows: 30,
                },
            ),
            at(3, Event::Marker("x".into())),
            out(4, b"b"),
        ];
        let got = frames(&header("ssh"), &events);
        assert_eq!(
            got,
            [
                Frame {
                    at: Offset(1),
                    show: Show::Bytes(Cow::Borrowed(b"a"))
                },
                Frame {
                    at: Offset(2),
                    show: Show::Resize {
                        cols: 100,
                        rows: 30
                    }
                },
                Frame {
                    at: Offset(4),
                    show: Show::Bytes(Cow::Borrowed(b"b"))
                },
            ]
        );
    }
}
