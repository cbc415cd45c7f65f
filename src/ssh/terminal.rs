//! Sans-IO reconstruction of the command line a user submits in an interactive SSH shell, so that
//! policy can decide about it before the shell sees the key that runs it.
//!
//! Invariant: no byte typed after a submit key (Enter, `Ctrl-J`, `Ctrl-O`, `Ctrl-X Ctrl-E`)
//! reaches the target before [`LineTracker::resolve`] says so; and a line is reported as a
//! [`Submitted::Command`] only when the tracker knows where it starts on the screen and the screen
//! does not contradict the keys typed. Otherwise it is [`Submitted::Unknown`] with a reason, never
//! a guess. Where the start is uncertain the report errs towards more text (a prompt left in),
//! never less. Nothing here reads a clock, blocks, or does I/O.
//!
//! # Use
//!
//! One tracker per interactive shell channel, owned by the session task:
//!
//! ```text
//! client bytes  → for step in tracker.input(bytes)     { run(step) }
//! target bytes  → write them to the client; for step in tracker.output(bytes) { run(step) }
//! window-change → tracker.resize(cols, rows) (send tracker.size() upstream)
//! timer         → armed for ECHO_WAIT while tracker.awaiting_echo();
//!                 on expiry: for step in tracker.echo_timeout() { run(step) }
//! run(Forward(b))   → write b to the target
//! run(Submit(s))    → policy (and approval) on s, then for step in tracker.resolve(verdict) { run(step) }
//! run(Discarded(n)) → tell the user that n typed bytes were dropped
//! vigil's own messages to the client → tracker.local_output(bytes)
//! ```
//!
//! [`Submitted::Unknown`] should be refused by default (fail closed); [`Submitted::NotACommand`]
//! allowed. [`Verdict::Cancel`] sends [`LineTracker::cancel_bytes`] in place of the held key.
//!
//! # How a line is read
//!
//! Everything the user's terminal displays goes into a headless terminal emulator (`vt100`) of the
//! PTY's size; the user's keystrokes go through a small key parser. When Enter arrives, the line
//! is the screen text from where the line starts to the end of the logical line (rows joined by
//! soft wraps, trailing blanks trimmed): what the user saw, including history recall, tab
//! completion, `Ctrl-R` results, and edits with arrows, `Ctrl-W`, `Ctrl-U`.
//!
//! - **Line start.** The cursor position when the first key of a line is typed (an *anchor*), with
//!   the text before it on its logical line (the *prompt*). At Enter the anchor must still show
//!   the same prompt and the cursor must be on that logical line. If not (bash reprinted the
//!   prompt under a completion listing, `Ctrl-L` cleared the screen, a resize redrew), the line is
//!   looked for where the cursor is: the cursor's logical line must begin with that same prompt.
//! - **Typed ahead.** A line begun before the screen showed the previous one end (the rest of a
//!   multi-line paste, keys typed while a command ran, keys after an Enter the shell ignored, like
//!   `Esc Enter`) has no trustworthy anchor. It is found by the last prompt seen, but only if the
//!   screen shows exactly what a model of emacs-mode readline predicts from the typed keys (so a
//!   stale or crafted prompt cannot cut a command short). When a line editor starts while such
//!   keys are pending (the shell turns bracketed paste back on before its prompt, or a
//!   full-screen program exits), the line is re-anchored right there, before the prompt, so what
//!   the shell echoes of them lands inside the reported line.
//! - **Echo.** The shell echoes asynchronously. A submit is reported only when every printable key
//!   typed on the line has been seen in the output in order, every other key (arrow, Tab, `Ctrl-W`)
//!   has been followed by output, and the last run of typed characters shows before the cursor.
//!   Until then the submit is held; [`LineTracker::awaiting_echo`] says so, and the caller calls
//!   [`LineTracker::echo_timeout`] after [`ECHO_WAIT`]. Then the screen decides: typed keys that
//!   never echoed are a password (when a secret prompt precedes the cursor and nothing was echoed)
//!   or [`Unknown::NotEchoed`] (`stty -echo`: the line cannot be read).
//! - **Paste.** Without bracketed paste every `\r` in a paste submits: the first is held and the
//!   rest of the paste stays queued until [`LineTracker::resolve`], so each line is decided in
//!   turn (a cancelled line discards the rest). When the target has enabled bracketed paste
//!   (`CSI ? 2004 h`, which bash and zsh do at each prompt), newlines between `CSI 200 ~` and
//!   `CSI 201 ~` are text; the next Enter submits the whole multi-line buffer, reported with `\n`
//!   between its lines.
//! - **Continuation.** A line ending in an unescaped backslash is joined to the next one, as the
//!   shell does: `r\` then `m -rf /` is reported as `rm -rf /`.
//! - **Other keys.** `Ctrl-C` discards the line and `Ctrl-D` on an empty line ends the input;
//!   neither is a submit. Escape sequences (arrows, `Home`, function keys, mouse reports) are
//!   forwarded at once; a sequence that breaks off never swallows the key that broke it.
//!
//! Not commands: lines submitted while the alternate screen is active (vim, less, top), lines
//! typed at a password prompt without echo, empty lines.
//!
//! # What this cannot see
//!
//! It reads a terminal, not a shell, so it is a guard against mistakes and casual misuse, not a
//! sandbox: anyone who may run an allowed interpreter or editor can run anything.
//! - Scripts, and what aliases, functions, history expansion (`!!`, `!rm`), variables and key
//!   bindings (`bind -x`, inputrc macros) defined in the session expand to: the line is checked as
//!   typed. `fc` and editors that run what they save (vi-mode `v`) execute without an Enter; only
//!   emacs-mode `Ctrl-X Ctrl-E` is caught (as [`Unknown::EditAndExecute`]).
//! - Lines typed into other programs (a Python REPL, `mysql`, `cat`) are checked as if they were
//!   shell lines; a full-screen program's lines are not checked at all, and a user can switch the
//!   terminal to the alternate screen (`printf '\e[?1049h'`) and keep typing into the shell.
//! - A prompt that looks like a password prompt with echo turned off (`PS1='Password: '` after
//!   `stty -echo`) makes every line a "password". Without such a prompt, echo off makes every
//!   line [`Unknown::NotEchoed`]: a caller that refuses those leaves a user who ran `stty -echo`
//!   only `Ctrl-D` (a typed `stty echo` is refused too).
//! - Output written into the line while it is typed (a background job) shows on the screen but not
//!   in the shell's buffer: a line that moved is [`Unknown::LineLost`], text inside the last run of
//!   typed characters is [`Unknown::ScreenDisagrees`], but text written before that, in place, is
//!   reported as displayed.
//! - Right-hand prompts (zsh `RPROMPT`) and autosuggestions (fish, zsh-autosuggestions) are part
//!   of the displayed line and are reported with it; lines longer than the screen are
//!   [`Unknown::TooLong`].
//! - vi-mode readline: keys typed in command mode are not echoed, so such lines end
//!   [`Unknown::NotEchoed`]. [`CANCEL_LINE`] assumes emacs-mode readline (bash, zsh's emacs
//!   keymap, and programs in the terminal's line mode); in vi mode, or in programs with their own
//!   key handling, it may do something else.
//! - The terminal emulator does not reflow lines on resize, as some terminals do; the shell
//!   redraws its line on `SIGWINCH`, which is what the tracker reads afterwards.

#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU16;
use std::time::Duration;

use memchr::memchr;

/// How long the caller should wait, after [`LineTracker::awaiting_echo`] became true, before it
/// calls [`LineTracker::echo_timeout`]. Long enough for an echo from a target across a WAN; a
/// caller on a slower link may wait longer, or restart the wait while output keeps arriving.
pub const ECHO_WAIT: Duration = Duration::from_millis(200);

/// Bytes that cancel the line being edited, sent by [`Verdict::Cancel`]: `Ctrl-G` aborts a
/// pending readline prefix (`Ctrl-X`, `Esc`) so that the next key cannot complete it (`Ctrl-X`
/// then `Ctrl-E` would run the line in an editor), `Ctrl-E` `Ctrl-U` move to the end of the line
/// and erase it, and `\r` submits the now empty line so the shell prints a fresh prompt. Assumes
/// emacs-mode readline or the terminal's line mode (where `Ctrl-U` is the kill character); vi-mode
/// readline and other programs may read these keys differently.
pub const CANCEL_LINE: &[u8] = b"\x07\x05\x15\r";

/// Like [`CANCEL_LINE`], for a line that continues an earlier one ending in a backslash: `\r`
/// would run the earlier part, so `Ctrl-C` discards the whole command instead.
pub const CANCEL_CONTINUED: &[u8] = b"\x07\x05\x15\x03";

/// Lines longer than this many characters are [`Unknown::TooLong`].
pub const MAX_LINE_CHARS: usize = 16 << 10;

/// Input held behind an undecided submit beyond this many bytes is discarded
/// ([`Step::Discarded`]): a pending review may take minutes, and memory per session is bounded.
pub const MAX_HELD_INPUT: usize = 64 << 10;

/// The emulated terminal is at most this many columns wide (a window-change asking for more is
/// clamped), which bounds its memory. The caller should clamp the size it sends upstream the same
/// way (see [`LineTracker::size`]) so that the target and the emulator agree.
pub const MAX_COLS: u16 = 512;

/// The emulated terminal is at most this many rows high; see [`MAX_COLS`].
pub const MAX_ROWS: u16 = 256;

/// One thing for the caller to do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes to the target now.
    Forward(Vec<u8>),
    /// The user pressed a key that submits a line. That key and every byte typed after it are held
    /// until [`LineTracker::resolve`]. At most one per call, always the last step.
    Submit(Submitted),
    /// This many bytes the user typed were thrown away: input beyond [`MAX_HELD_INPUT`] while a
    /// submit was held, or the input typed after a submit that was cancelled or withheld.
    Discarded(usize),
}

/// What the user submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A command line, as the terminal showed it (with earlier lines it continues; lines of a
    /// multi-line paste separated by `\n`).
    Command(String),
    /// A line that is not a command for the shell.
    NotACommand(NotCommand),
    /// The line could not be determined: the caller should refuse it (fail closed).
    Unknown(Unknown),
}

/// Why a submitted line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCommand {
    /// A full-screen program (on the alternate screen) had the keyboard.
    FullScreen,
    /// The keys went to a password prompt: they were not echoed, and the text before the cursor
    /// asks for a secret.
    PasswordPrompt,
    /// The line is empty.
    Empty,
}

/// Why a submitted line could not be determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Typed keys were never echoed, and no password prompt precedes the cursor (`stty -echo`).
    NotEchoed,
    /// The screen does not show the keys typed last, or not what the typed keys predict.
    ScreenDisagrees,
    /// The start of the line is no longer where it was, and the line was not found elsewhere:
    /// output moved or overwrote it.
    LineLost,
    /// The line was typed before the shell showed where it starts, and the screen does not
    /// confirm it.
    TypedAhead,
    /// The line is longer than [`MAX_LINE_CHARS`], or its start scrolled off the screen.
    TooLong,
    /// The line shows control keys (`^[`): keys typed ahead into a terminal in line mode, which the
    /// shell will read as editing commands later.
    ControlKeys,
    /// `Ctrl-X Ctrl-E`: readline opens an editor and runs what it saves without another Enter.
    EditAndExecute,
}

/// The caller's decision about a held submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the submit key, then continue with the input typed after it.
    Allow,
    /// Send [`LineTracker::cancel_bytes`] instead of the key, which erases the line on the target
    /// and gets a fresh prompt, and discard the input typed after it.
    Cancel,
    /// Drop the submit key and the input typed after it, and leave the line on the target as it
    /// is, for the user to edit (for programs where the cancel keys would do harm). A message the
    /// caller prints moves the cursor away from the line: `Ctrl-L` redraws it.
    Withhold,
}

/// Reconstructs submitted command lines from the two byte streams of an interactive session.
/// See the module documentation.
pub struct LineTracker {
    term: vt100::Parser<Scrolls>,
    /// A second parse of the output stream, for the characters it prints (the echo).
    echo: vte::Parser,
    keys: Keys,
    line: Line,
    /// The prompt the shell showed when a line was last typed where it was reading.
    last_prompt: Option<Prompt>,
    /// Earlier lines that ended in a backslash, the backslash removed: the shell joins the next
    /// line to them.
    continued: String,
    confirm: Confirm,
    hold: Option<Hold>,
    /// Input typed after the held submit key.
    held: Vec<u8>,
}

impl LineTracker {
    /// A tracker for a PTY of this size (clamped to 1..=[`MAX_COLS`] by 1..=[`MAX_ROWS`]).
    pub fn new(cols: u16, rows: u16) -> Self {
        let (cols, rows) = clamp_size(cols, rows);
        Self {
            term: vt100::Parser::new_with_callbacks(rows, cols, 0, Scrolls::default()),
            echo: vte::Parser::new(),
            keys: Keys::default(),
            line: Line::new(true),
            last_prompt: None,
            continued: String::new(),
            confirm: Confirm::Seen,
            hold: None,
            held: Vec::new(),
        }
    }

    /// The emulated size, `(cols, rows)`: what the caller asked for, clamped.
    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.term.screen().size();
        (cols.get(), rows.get())
    }

    /// The PTY changed size (a window-change request), clamped like [`LineTracker::new`].
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let (cols, rows) = clamp_size(cols, rows);
        let alt = self.alt();
        let before = self.term.screen().cursor_position().0;
        self.term.callbacks_mut().resizing = Some(0);
        self.term.set_size(rows, cols);
        let after = self.term.screen().cursor_position().0;
        let scrolls = self.term.callbacks_mut();
        let pushed = scrolls.resizing.take().unwrap_or(0);
        // Rows leave or enter at the top: content moves with the cursor on the normal screen. On
        // the alternate screen only rows pushed off the normal screen's top are seen.
        let shift = if alt {
            pushed
        } else {
            i64::from(before) - i64::from(after)
        };
        scrolls.rows = scrolls.rows.saturating_add(shift);
    }

    /// Bytes the target sent to the user's terminal. Returns the held submit's [`Step::Submit`]
    /// when this output completes its echo.
    pub fn output(&mut self, bytes: &[u8]) -> Vec<Step> {
        let alt_before = self.alt();
        let bracketed_before = self.term.screen().bracketed_paste();
        let lone_key = self.line.lone_unanswered();
        let watch = self.line.started
            && self.line.outside
            && self.hold.as_ref().is_none_or(|h| h.decided.is_none());
        let restarted = if watch {
            self.process_watching_restarts(bytes)
        } else {
            self.process(bytes);
            false
        };
        let alt_after = self.alt();
        if let Confirm::Waiting { below } = self.confirm {
            // The cursor left the line, or a program or a new line editor started.
            let editor = !bracketed_before && self.term.screen().bracketed_paste();
            if memchr(b'\n', bytes).is_some()
                || alt_after
                || editor
                || self.cursor_abs_row() > below
            {
                self.confirm = Confirm::Seen;
            }
        }
        // Output that switches screens is a program starting or ending, not a key's response; and
        // a line re-anchored in this output waits for the next.
        if lone_key && !bytes.is_empty() && alt_before == alt_after && !restarted {
            self.line.unanswered.clear();
            self.line.quiet = false;
        }
        self.try_decide(false)
    }

    /// Bytes vigil itself writes to the user's terminal (its messages): they change the screen
    /// but are no response from the target.
    pub fn local_output(&mut self, bytes: &[u8]) {
        self.term.process(bytes);
        self.echo.advance(&mut Ignore, bytes);
    }

    /// Bytes the user typed. Returns what to do with them now: forward, and at a submit key,
    /// hold it and everything after it.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.hold.is_some() {
            self.hold_more(bytes, &mut steps);
        } else {
            self.feed(bytes, &mut steps);
        }
        steps
    }

    /// A submit is held until its echo arrives: the caller should call
    /// [`LineTracker::echo_timeout`] if this stays true for [`ECHO_WAIT`].
    pub fn awaiting_echo(&self) -> bool {
        matches!(self.hold, Some(Hold { decided: None, .. }))
    }

    /// The submit waiting for [`LineTracker::resolve`], if any.
    pub fn awaiting_verdict(&self) -> Option<&Submitted> {
        self.hold.as_ref().and_then(|h| h.decided.as_ref())
    }

    /// The user typed `Ctrl-C` while a submit is held: a caller waiting for an approval may take
    /// it as a request to give up ([`Verdict::Cancel`]).
    pub fn interrupt_pending(&self) -> bool {
        self.hold.is_some() && self.held.contains(&0x03)
    }

    /// The wait for the echo of a held submit is over: decide with what the screen shows.
    pub fn echo_timeout(&mut self) -> Vec<Step> {
        self.try_decide(true)
    }

    /// The bytes [`Verdict::Cancel`] sends: [`CANCEL_CONTINUED`] when the line continues an
    /// earlier one, else [`CANCEL_LINE`].
    pub fn cancel_bytes(&self) -> &'static [u8] {
        if self.continued.is_empty() {
            CANCEL_LINE
        } else {
            CANCEL_CONTINUED
        }
    }

    /// The caller's decision about the submit returned as [`Step::Submit`]. Does nothing when no
    /// submit awaits a verdict.
    pub fn resolve(&mut self, verdict: Verdict) -> Vec<Step> {
        let mut steps = Vec::new();
        let Some(hold) = self.hold.take() else {
            return steps;
        };
        let Some(submitted) = hold.decided else {
            self.hold = Some(hold);
            return steps;
        };
        let held = std::mem::take(&mut self.held);
        match verdict {
            Verdict::Allow => {
                steps.push(Step::Forward(hold.key));
                self.continued = match submitted {
                    Submitted::Command(mut text) if ends_in_backslash(&text) => {
                        text.pop();
                        text
                    }
                    _ => String::new(),
                };
                self.end_line(hold.kind == SubmitKind::OperateAndGetNext);
                self.feed(&held, &mut steps);
            }
            Verdict::Cancel => {
                steps.push(Step::Forward(self.cancel_bytes().to_vec()));
                self.continued.clear();
                self.end_line(false);
                if !held.is_empty() {
                    steps.push(Step::Discarded(held.len()));
                }
            }
            Verdict::Withhold => {
                if !held.is_empty() {
                    steps.push(Step::Discarded(held.len()));
                }
            }
        }
        steps
    }
}

// ---------------------------------------------------------------------------------------------
// Input and output.

impl LineTracker {
    fn alt(&self) -> bool {
        self.term.screen().alternate_screen()
    }

    fn scrolls(&self) -> i64 {
        self.term.callbacks().rows
    }

    fn view(&self) -> View<'_> {
        View::of(self.term.screen())
    }

    fn cursor_abs_row(&self) -> i64 {
        i64::from(self.view().cursor().0).saturating_add(self.scrolls())
    }

    /// Output to the emulator, and to the echo matcher.
    fn process(&mut self, bytes: &[u8]) {
        self.term.process(bytes);
        self.echo.advance(
            &mut Echo {
                line: &mut self.line,
            },
            bytes,
        );
    }

    fn hold_more(&mut self, bytes: &[u8], steps: &mut Vec<Step>) {
        let room = MAX_HELD_INPUT.saturating_sub(self.held.len());
        let kept = bytes.len().min(room);
        self.held
            .extend_from_slice(bytes.get(..kept).unwrap_or_default());
        if kept < bytes.len() {
            steps.push(Step::Discarded(bytes.len() - kept));
        }
    }

    /// Parses typed bytes, forwarding them, until a submit key: that key is held with the rest.
    fn feed(&mut self, bytes: &[u8], steps: &mut Vec<Step>) {
        let mut keys = Vec::with_capacity(2);
        for (i, &b) in bytes.iter().enumerate() {
            let bracketed = self.term.screen().bracketed_paste();
            self.keys.push(b, bracketed, &mut keys);
            for key in keys.drain(..) {
                if let Key::Submit(kind) = key {
                    let before = bytes.get(..i).unwrap_or_default();
                    if !before.is_empty() {
                        steps.push(Step::Forward(before.to_vec()));
                    }
                    if !self.line.started {
                        self.start_line();
                    }
                    self.hold = Some(Hold {
                        key: vec![b],
                        kind,
                        decided: None,
                    });
                    self.hold_more(bytes.get(i + 1..).unwrap_or_default(), steps);
                    steps.extend(self.try_decide(false));
                    return;
                }
                self.key(key);
            }
        }
        if !bytes.is_empty() {
            steps.push(Step::Forward(bytes.to_vec()));
        }
    }

    fn start_line(&mut self) {
        let alt = self.alt();
        let fresh = matches!(self.confirm, Confirm::Seen);
        let line = &mut self.line;
        line.started = true;
        // Keys typed while the shell is not reading a line (bash and zsh turn bracketed paste on
        // only then), on the alternate screen, or before the last submit was seen to end, may go
        // to another program or be read by the shell later: see `process_watching_restarts`.
        line.outside = alt || !self.term.screen().bracketed_paste() || !fresh;
        if !alt && fresh {
            let anchor =
                Anchor::at_cursor(&View::of(self.term.screen()), self.term.callbacks().rows);
            // What precedes the cursor when the shell is reading a line is its prompt.
            if !line.outside && !anchor.prompt.is_blank() {
                self.last_prompt = Some(anchor.prompt.clone());
            }
            line.anchor = Some(anchor);
        }
    }

    fn key(&mut self, key: Key) {
        let alt = self.alt();
        if let Key::Interrupt = key {
            self.continued.clear();
            self.end_line(false);
            return;
        }
        if let Key::CtrlD = key {
            if !alt && self.line.model.is_empty() {
                // End of input: the shell (or `cat`) ends; nothing to check.
                self.continued.clear();
                self.end_line(false);
                return;
            }
        }
        if !self.line.started {
            self.start_line();
        }
        let line = &mut self.line;
        line.seq += 1;
        let seq = line.seq;
        match key {
            Key::Char(c) | Key::PasteChar(c) => line.typed(c, seq, alt),
            Key::Edit(edit) => {
                line.other_key(seq, alt);
                line.model.edit(edit);
                line.searching &= edit == Edit::Backspace;
            }
            Key::CtrlD => {
                line.other_key(seq, alt);
                line.model.edit(Edit::Delete);
                line.searching = false;
            }
            Key::Search => {
                line.other_key(seq, alt);
                line.model.forget();
                line.searching = !alt;
            }
            Key::Other | Key::Submit(_) | Key::Interrupt => {
                line.other_key(seq, alt);
                line.model.forget();
                line.searching = false;
            }
            Key::PasteStart | Key::PasteEnd => {}
            Key::PasteNewline => {
                line.tail.clear();
                line.model.insert('\n');
                line.multiline |= !alt;
            }
            Key::PasteOther => {
                line.tail.clear();
                line.model.forget();
            }
        }
    }

    /// The line ended (submitted, cancelled, interrupted): the next key starts a new one, which
    /// may anchor only once the screen shows the old one ended. After `Ctrl-O` the shell fills
    /// the next line itself (with the next history entry): that line starts now, unanchored, so
    /// that it is anchored where the shell starts reading and the filled-in text is inside it.
    fn end_line(&mut self, prefilled: bool) {
        self.confirm = if self.alt() {
            Confirm::Seen
        } else {
            let view = self.view();
            let last = view.last_of(view.cursor().0);
            Confirm::Waiting {
                below: i64::from(last).saturating_add(self.scrolls()),
            }
        };
        self.line = Line::new(!prefilled);
        if prefilled {
            self.line.started = true;
            self.line.outside = true;
        }
    }

    /// Feeds output to the emulator one escape sequence at a time, so that a line begun outside
    /// the shell is re-anchored exactly where a line editor starts: after the `CSI ? 2004 h`
    /// that precedes the prompt, or after the sequence that leaves the alternate screen. Keys
    /// typed ahead are echoed after that point, so they stay inside the line that is reported.
    fn process_watching_restarts(&mut self, bytes: &[u8]) -> bool {
        let mut restarted = false;
        let mut rest = bytes;
        while !rest.is_empty() {
            let cut = next_sequence_end(rest);
            let (now, later) = rest.split_at(cut.min(rest.len()));
            let alt = self.alt();
            let bracketed = self.term.screen().bracketed_paste();
            self.process(now);
            let left_alt = alt && !self.alt();
            let editor = !bracketed && self.term.screen().bracketed_paste() && !self.alt();
            if (left_alt || editor) && self.line.outside {
                self.restart_line();
                restarted = true;
            }
            rest = later;
        }
        restarted
    }

    /// Starts the line over where a line editor starts. Keys typed before may have gone to the
    /// program that just ended or be read by the shell now, which echoes them after this point,
    /// inside the new line. They are still awaited but need not echo (a pager's `q` never does).
    /// Whether the shell has read them shows in the last run of typed text appearing before the
    /// cursor; without one (keys typed in a full-screen program, arrows, Tab), only output after
    /// this chunk, the echo of a key typed after it, or the timeout ends the wait.
    fn restart_line(&mut self) {
        let alt = self.alt();
        let old = std::mem::replace(&mut self.line, Line::new(true));
        let line = &mut self.line;
        line.started = true;
        line.restarted = true;
        let typed_before = old.seq > 0 && (!old.unanswered.is_empty() || old.tail.is_empty());
        // Two restarts in one burst (leaving the alternate screen, then the prompt): the first
        // one's wait carries over.
        line.quiet = typed_before || (old.restarted && old.seq == 0 && old.quiet);
        line.tail = old.tail;
        line.tail_carried = true;
        line.queue = old
            .queue
            .into_iter()
            .map(|t| Typed {
                seq: 0,
                optional: true,
                ..t
            })
            .collect();
        line.outside = alt || !self.term.screen().bracketed_paste();
        line.pre = match (old.pre, old.model.text()) {
            (Some(pre), Some(model)) => Some(pre + &model),
            (None, model) => model,
            (Some(_), None) => None,
        };
        line.overflow = old.overflow;
        if !alt {
            let mut anchor =
                Anchor::at_cursor(&View::of(self.term.screen()), self.term.callbacks().rows);
            anchor.restarted = true;
            line.anchor = Some(anchor);
        }
        self.confirm = Confirm::Seen;
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions.

impl LineTracker {
    fn try_decide(&mut self, timed_out: bool) -> Vec<Step> {
        let Some(hold) = &self.hold else {
            return Vec::new();
        };
        if hold.decided.is_some() || (!timed_out && !self.ready()) {
            return Vec::new();
        }
        let kind = hold.kind;
        let submitted = self.decide(kind, timed_out);
        if let Some(hold) = &mut self.hold {
            hold.decided = Some(submitted.clone());
        }
        vec![Step::Submit(submitted)]
    }

    /// Every key typed on the line has had its effect on the screen, as far as can be told.
    fn ready(&self) -> bool {
        let alt = self.alt();
        // Unknown whatever the screen shows, unless a full-screen program still has the keys.
        if !alt
            && self
                .hold
                .as_ref()
                .is_some_and(|h| h.kind == SubmitKind::EditAndExecute)
        {
            return true;
        }
        if self.line.outstanding() > 0 {
            return false;
        }
        if alt || self.line.tail.is_empty() {
            return true;
        }
        self.find_line()
            .is_ok_and(|found| found.before_cursor.contains(self.line.tail.as_str()))
    }

    fn decide(&mut self, kind: SubmitKind, timed_out: bool) -> Submitted {
        if self.alt() {
            return Submitted::NotACommand(NotCommand::FullScreen);
        }
        if kind == SubmitKind::EditAndExecute {
            return Submitted::Unknown(Unknown::EditAndExecute);
        }
        if self.line.overflow {
            return Submitted::Unknown(Unknown::TooLong);
        }
        if timed_out && self.line.queue.iter().any(|t| !t.optional) {
            return if self.line.echoed == 0 && password_prompt(&self.view()) {
                Submitted::NotACommand(NotCommand::PasswordPrompt)
            } else {
                Submitted::Unknown(Unknown::NotEchoed)
            };
        }
        let found = match self.find_line() {
            Ok(found) => found,
            Err(why) => return Submitted::Unknown(why),
        };
        if !found.before_cursor.contains(self.line.tail.as_str()) {
            return Submitted::Unknown(Unknown::ScreenDisagrees);
        }
        if found.text.contains("^[") {
            return Submitted::Unknown(Unknown::ControlKeys);
        }
        let mut text = self.continued.clone();
        text.push_str(&found.text);
        if text.chars().count() > MAX_LINE_CHARS {
            return Submitted::Unknown(Unknown::TooLong);
        }
        if let Some(prompt) = found.learn {
            self.last_prompt = Some(prompt);
        }
        if text.trim().is_empty() {
            Submitted::NotACommand(NotCommand::Empty)
        } else {
            Submitted::Command(text)
        }
    }

    /// Finds the line on the screen: see the module documentation.
    fn find_line(&self) -> Result<Found, Unknown> {
        let view = self.view();
        let line = &self.line;
        if line.searching {
            if let Some(found) = search_line(&view) {
                return Ok(found);
            }
        }
        let mut lost = false;
        let mut scrolled_off = false;
        if let Some(anchor) = &line.anchor {
            scrolled_off = anchor.first_abs < self.scrolls();
            let first = u16::try_from(anchor.first_abs.saturating_sub(self.scrolls()))
                .ok()
                .filter(|&row| row < view.rows);
            if let Some(first) = first.filter(|&row| prompt_at(&view, row, &anchor.prompt)) {
                if let Some(mut found) = region(&view, first, &anchor.prompt, line.multiline) {
                    if anchor.restarted || anchor.prompt.is_blank() {
                        self.strip_last_prompt(&mut found);
                    } else {
                        found.learn = Some(anchor.prompt.clone());
                    }
                    return Ok(found);
                }
            }
            if !anchor.restarted {
                if let Some(mut found) = relocate(&view, &anchor.prompt, line.multiline) {
                    found.learn = Some(anchor.prompt.clone());
                    return Ok(found);
                }
            }
            lost = true;
        }
        if let Some(prompt) = &self.last_prompt {
            if let Some(found) = relocate(&view, prompt, line.multiline) {
                // A remembered prompt may be stale: trust it only as far as the keys confirm it.
                return if line.predicts(&found.text) {
                    Ok(found)
                } else {
                    Err(Unknown::ScreenDisagrees)
                };
            }
        }
        if scrolled_off && view.first_of(view.cursor().0) == 0 {
            return Err(Unknown::TooLong);
        }
        Err(if lost {
            Unknown::LineLost
        } else {
            Unknown::TypedAhead
        })
    }

    /// A line anchored before its prompt (at the start of a row, or where a line editor started)
    /// shows the prompt inside the line: remove it when it is the last prompt seen and the typed
    /// keys confirm the rest. Otherwise the prompt stays in the reported text, which only makes it
    /// longer.
    fn strip_last_prompt(&self, found: &mut Found) {
        let Some(prompt) = self.last_prompt.as_ref().filter(|p| !p.is_blank()) else {
            return;
        };
        // The found text is trimmed: a prompt ending in a space may be all there is.
        let rest = found
            .text
            .strip_prefix(prompt.text.as_str())
            .or_else(|| (found.text == prompt.text.trim_end()).then_some(""));
        if let Some(rest) = rest.filter(|rest| self.line.predicts(rest)) {
            found.text = rest.to_string();
        }
    }
}

/// The line as found on the screen.
struct Found {
    /// From the line's start to its end, trailing blanks trimmed.
    text: String,
    /// From the line's start (or the start of a search prompt) to the cursor, untrimmed.
    before_cursor: String,
    /// The prompt to remember for lines typed ahead.
    learn: Option<Prompt>,
}

/// Where a line starts: the first row of its logical line, counted from the start of the
/// session (rows scrolled off the top included), and the prompt text before the anchor.
#[derive(Debug, Clone)]
struct Anchor {
    first_abs: i64,
    prompt: Prompt,
    /// Set where a line editor started, before its prompt: the prompt follows the anchor.
    restarted: bool,
}

impl Anchor {
    fn at_cursor(view: &View<'_>, scrolls: i64) -> Self {
        let (row, col) = view.cursor();
        let first = view.first_of(row);
        let cells = usize::from(row - first) * usize::from(view.cols) + usize::from(col);
        Self {
            first_abs: i64::from(first).saturating_add(scrolls),
            prompt: Prompt {
                text: view.text((first, 0), (row, col), false),
                cells,
            },
            restarted: false,
        }
    }
}

/// The text of a logical line before an anchor, and how many cells it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prompt {
    text: String,
    cells: usize,
}

impl Prompt {
    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// The line starting after `prompt` on the logical line whose first row is `first`, if the cursor
/// is on it (or after its start, for a multi-line buffer).
fn region(view: &View<'_>, first: u16, prompt: &Prompt, multiline: bool) -> Option<Found> {
    let start = view.position(first, prompt.cells)?;
    let cursor = view.cursor();
    if cursor < start {
        return None;
    }
    let line_last = view.last_of(first);
    let last = if multiline {
        let mut last = line_last.max(view.last_of(cursor.0));
        if let Some(row) = view.last_nonblank_row() {
            last = last.max(view.last_of(row));
        }
        last
    } else if cursor.0 > line_last {
        return None;
    } else {
        line_last
    };
    Some(Found {
        text: view.text(start, (last, view.cols), true),
        before_cursor: view.text(start, cursor, false),
        learn: None,
    })
}

/// The line after `prompt` on the cursor's logical line (or, for a multi-line buffer, the nearest
/// logical line above that begins with it).
fn relocate(view: &View<'_>, prompt: &Prompt, multiline: bool) -> Option<Found> {
    if prompt.is_blank() {
        return None;
    }
    let mut row = view.first_of(view.cursor().0);
    loop {
        if prompt_at(view, row, prompt) {
            if let Some(found) = region(view, row, prompt, multiline) {
                return Some(found);
            }
        }
        if !multiline || row == 0 {
            return None;
        }
        row = view.first_of(row - 1);
    }
}

/// The logical line starting at `first` begins with `prompt`.
fn prompt_at(view: &View<'_>, first: u16, prompt: &Prompt) -> bool {
    let Some(end) = view.position(first, prompt.cells) else {
        return false;
    };
    (first..end.0).all(|row| view.wrapped(row)) && view.text((first, 0), end, false) == prompt.text
}

/// Readline's incremental search replaces the prompt with one of these, then the query, `': `
/// and the line that Enter accepts.
const SEARCH_PROMPTS: [&str; 4] = [
    "(reverse-i-search)`",
    "(i-search)`",
    "(failed reverse-i-search)`",
    "(failed i-search)`",
];

fn search_line(view: &View<'_>) -> Option<Found> {
    let (row, col) = view.cursor();
    let first = view.first_of(row);
    let whole = view.text((first, 0), (view.last_of(row), view.cols), true);
    let rest = SEARCH_PROMPTS.iter().find_map(|p| whole.strip_prefix(p))?;
    let at = rest.find("': ")?;
    Some(Found {
        text: rest.get(at + 3..)?.to_string(),
        before_cursor: view.text((first, 0), (row, col), false),
        learn: None,
    })
}

/// Words that make a prompt ask for a secret, matched anywhere in it (lowercase).
const SECRET_WORDS: [&str; 8] = [
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "verification code",
    "one-time",
    "secret",
    "token",
];

/// Short words that must stand alone.
const SECRET_TOKENS: [&str; 3] = ["pin", "otp", "2fa"];

/// The text before the cursor asks for a secret, and nothing shows after it but `*` feedback.
fn password_prompt(view: &View<'_>) -> bool {
    let (row, col) = view.cursor();
    let first = view.first_of(row);
    let after = view.text((row, col), (view.last_of(row), view.cols), true);
    if !after.trim().is_empty() {
        return false;
    }
    let before = view.text((first, 0), (row, col), false);
    let prompt = before.trim_end_matches([' ', '*', '•']);
    looks_like_secret_prompt(prompt)
}

fn looks_like_secret_prompt(prompt: &str) -> bool {
    let prompt = prompt.trim_end();
    if !(prompt.ends_with(':') || prompt.ends_with('?')) {
        return false;
    }
    let from = prompt.char_indices().rev().nth(199).map_or(0, |(i, _)| i);
    let lower = prompt.get(from..).unwrap_or(prompt).to_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
        || lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| SECRET_TOKENS.contains(&word))
}

fn ends_in_backslash(text: &str) -> bool {
    text.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

fn clamp_size(cols: u16, rows: u16) -> (NonZeroU16, NonZeroU16) {
    let clamp = |n: u16, max: u16| NonZeroU16::new(n.clamp(1, max)).unwrap_or(NonZeroU16::MIN);
    (clamp(cols, MAX_COLS), clamp(rows, MAX_ROWS))
}

/// Where the escape sequence starting at the first `ESC` of `bytes` ends (exclusive), or
/// `bytes.len()` when there is none or it does not end in `bytes`.
fn next_sequence_end(bytes: &[u8]) -> usize {
    let Some(esc) = memchr(0x1b, bytes) else {
        return bytes.len();
    };
    let after = bytes.get(esc + 1..).unwrap_or_default();
    match after.first() {
        Some(b'[') => after
            .iter()
            .skip(1)
            .position(|b| (0x40..=0x7e).contains(b))
            .map_or(bytes.len(), |i| esc + i + 3),
        Some(_) => esc + 2,
        None => bytes.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// The line being typed.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// The last line was seen to end (or there was none): a new line may anchor.
    Seen,
    /// A submit went out; the screen has not yet shown the cursor leaving the submitted line (its
    /// last row, counted from the session start, is `below`). A submit key the shell ignored
    /// (`Esc Enter`) leaves the old text in its buffer, so the next line must not anchor after it.
    Waiting { below: i64 },
}

struct Hold {
    /// The submit key, forwarded on [`Verdict::Allow`].
    key: Vec<u8>,
    kind: SubmitKind,
    /// `None` while the echo is awaited.
    decided: Option<Submitted>,
}

/// A printable key typed on the line whose echo has not been seen.
#[derive(Debug, Clone, Copy)]
struct Typed {
    ch: char,
    /// The key's place among the line's keys; 0 for keys carried over from before a restart.
    seq: u64,
    /// Typed where the echo may never come (a full-screen program, before a line editor
    /// started): its absence does not make the line unknown.
    optional: bool,
}

struct Line {
    started: bool,
    /// The line began where the shell may not have been reading it: see `start_line`.
    outside: bool,
    anchor: Option<Anchor>,
    /// Printable keys not yet seen in the output, in typing order.
    queue: VecDeque<Typed>,
    /// Other keys not yet followed by output.
    unanswered: Vec<u64>,
    /// The response to what ended the previous line (or started this one over) is awaited.
    quiet: bool,
    seq: u64,
    /// Printable keys typed since the last other key: the screen must show them before the cursor.
    tail: String,
    /// `tail` is from before a restart: the next typed key starts a new one (its echo shows that
    /// the shell read everything before it).
    tail_carried: bool,
    /// What readline's buffer holds, while only keys with a known effect were typed.
    model: Model,
    /// The model of keys typed before the line was started over, which the shell may have read.
    pre: Option<String>,
    /// Queued keys seen echoed.
    echoed: usize,
    /// Readline's incremental search (`Ctrl-R`) is showing.
    searching: bool,
    /// A bracketed paste put newlines into the buffer.
    multiline: bool,
    /// The line was started over by `restart_line`.
    restarted: bool,
    overflow: bool,
}

impl Line {
    fn new(model_known: bool) -> Self {
        Self {
            started: false,
            outside: false,
            anchor: None,
            queue: VecDeque::new(),
            unanswered: Vec::new(),
            quiet: true,
            seq: 0,
            tail: String::new(),
            tail_carried: false,
            model: Model {
                known: model_known,
                ..Model::default()
            },
            pre: None,
            echoed: 0,
            searching: false,
            multiline: false,
            restarted: false,
            overflow: false,
        }
    }

    fn outstanding(&self) -> usize {
        self.queue.len() + self.unanswered.len() + usize::from(self.quiet)
    }

    /// The only thing awaited is the response to one key: the next output is that response.
    fn lone_unanswered(&self) -> bool {
        self.queue.is_empty() && self.unanswered.len() + usize::from(self.quiet) == 1
    }

    fn typed(&mut self, ch: char, seq: u64, alt: bool) {
        if self.queue.len() >= MAX_LINE_CHARS || self.tail.len() >= MAX_LINE_CHARS {
            self.overflow = true;
        } else {
            self.queue.push_back(Typed {
                ch,
                seq,
                optional: alt,
            });
        }
        if alt {
            self.tail.clear();
            self.model.forget();
        } else {
            if std::mem::take(&mut self.tail_carried) {
                self.tail.clear();
            }
            self.tail.push(ch);
            self.model.insert(ch);
        }
    }

    fn other_key(&mut self, seq: u64, alt: bool) {
        self.tail.clear();
        self.unanswered.push(seq);
        if alt {
            self.model.forget();
        }
    }

    /// A character the output printed: the echo of the oldest queued key, if it matches (keys
    /// that may never echo are skipped over).
    fn echo(&mut self, c: char) {
        let mut found = None;
        for (i, typed) in self.queue.iter().enumerate().take(64) {
            if typed.ch == c {
                found = Some(i);
                break;
            }
            if !typed.optional {
                return;
            }
        }
        let Some(i) = found else {
            return;
        };
        let Some(typed) = self.queue.drain(..=i).next_back() else {
            return;
        };
        if !typed.optional {
            self.echoed += 1;
        }
        // Keys are processed in order: everything typed before this one has had its effect.
        self.unanswered.retain(|&seq| seq > typed.seq);
        if typed.seq > 0 {
            self.quiet = false;
        }
    }

    /// The screen text of the line is what the typed keys put into readline's buffer.
    fn predicts(&self, text: &str) -> bool {
        let Some(model) = self.model.text() else {
            return false;
        };
        let text = normalize(text);
        if normalize(&model) == text {
            return true;
        }
        self.pre
            .as_ref()
            .is_some_and(|pre| normalize(&format!("{pre}{model}")) == text)
    }
}

/// Trailing blanks removed from every line and from the end.
fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

/// Emacs-mode readline's line buffer, for keys whose effect is certain; any other key makes it
/// unknown.
#[derive(Debug, Clone, Default)]
struct Model {
    buf: Vec<char>,
    cursor: usize,
    known: bool,
}

impl Model {
    fn forget(&mut self) {
        self.known = false;
        self.buf.clear();
    }

    fn text(&self) -> Option<String> {
        self.known.then(|| self.buf.iter().collect())
    }

    fn is_empty(&self) -> bool {
        self.known && self.buf.is_empty()
    }

    fn insert(&mut self, c: char) {
        if !self.known {
            return;
        }
        if self.buf.len() >= MAX_LINE_CHARS {
            self.forget();
            return;
        }
        let at = self.cursor.min(self.buf.len());
        self.buf.insert(at, c);
        self.cursor = at + 1;
    }

    fn edit(&mut self, edit: Edit) {
        if !self.known {
            return;
        }
        let len = self.buf.len();
        let cur = self.cursor.min(len);
        match edit {
            Edit::Backspace if cur > 0 => {
                self.buf.remove(cur - 1);
                self.cursor = cur - 1;
            }
            Edit::Delete if cur < len => {
                self.buf.remove(cur);
            }
            Edit::Backspace | Edit::Delete | Edit::Redraw => {}
            Edit::Left => self.cursor = cur.saturating_sub(1),
            Edit::Right => self.cursor = (cur + 1).min(len),
            Edit::Home => self.cursor = 0,
            Edit::End => self.cursor = len,
            Edit::KillBack => {
                self.buf.drain(..cur);
                self.cursor = 0;
            }
            Edit::KillForward => self.buf.truncate(cur),
            Edit::RuboutWord => {
                let space = |i: usize| self.buf.get(i).is_some_and(|c| c.is_whitespace());
                let mut i = cur;
                while i > 0 && space(i - 1) {
                    i -= 1;
                }
                while i > 0 && !space(i - 1) {
                    i -= 1;
                }
                self.buf.drain(i..cur);
                self.cursor = i;
            }
        }
    }
}

/// Matches printed characters against the queue of typed keys.
struct Echo<'a> {
    line: &'a mut Line,
}

impl vte::Perform for Echo<'_> {
    fn print(&mut self, c: char) {
        if !self.line.queue.is_empty() {
            self.line.echo(c);
        }
    }
}

struct Ignore;

impl vte::Perform for Ignore {}

/// Counts rows scrolled off the top of the normal screen, so that an anchor keeps its place.
#[derive(Debug, Default)]
struct Scrolls {
    rows: i64,
    /// During a resize: rows the resize pushed off the normal screen.
    resizing: Option<i64>,
}

impl vt100::Callbacks for Scrolls {
    fn on_scroll(&mut self, _: vt100::capture::RowContents<'_>, alternate: bool) {
        if alternate {
            return;
        }
        match &mut self.resizing {
            Some(pushed) => *pushed = pushed.saturating_add(1),
            None => self.rows = self.rows.saturating_add(1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the screen.

/// Bounds-checked reading of the normal screen. Positions are `(row, col)`; `col` may equal the
/// width (the cursor after the last column, before it wraps).
struct View<'a> {
    screen: &'a vt100::Screen,
    rows: u16,
    cols: u16,
}

impl<'a> View<'a> {
    fn of(screen: &'a vt100::Screen) -> Self {
        let (rows, cols) = screen.size();
        Self {
            screen,
            rows: rows.get(),
            cols: cols.get(),
        }
    }

    fn last_row(&self) -> u16 {
        self.rows - 1
    }

    fn cursor(&self) -> (u16, u16) {
        let (row, col) = self.screen.cursor_position();
        (row.min(self.last_row()), col.min(self.cols))
    }

    fn wrapped(&self, row: u16) -> bool {
        self.screen.row_wrapped(row)
    }

    /// The first row of the logical line that `row` belongs to.
    fn first_of(&self, row: u16) -> u16 {
        let mut row = row;
        while row > 0 && self.wrapped(row - 1) {
            row -= 1;
        }
        row
    }

    /// The last row of the logical line that `row` belongs to.
    fn last_of(&self, row: u16) -> u16 {
        let mut row = row;
        while row < self.last_row() && self.wrapped(row) {
            row += 1;
        }
        row
    }

    /// The position `cells` cells into the logical line whose first row is `first` (the end of a
    /// row rather than the start of the next).
    fn position(&self, first: u16, cells: usize) -> Option<(u16, u16)> {
        if cells == 0 {
            return Some((first, 0));
        }
        let cols = usize::from(self.cols);
        let row = usize::from(first) + (cells - 1) / cols;
        let col = (cells - 1) % cols + 1;
        let row = u16::try_from(row).ok().filter(|&row| row < self.rows)?;
        Some((row, u16::try_from(col).ok()?))
    }

    fn last_nonblank_row(&self) -> Option<u16> {
        (0..self.rows).rev().find(|&row| {
            (0..self.cols).any(|col| {
                self.screen
                    .cell(row, col)
                    .is_some_and(|cell| !cell.contents().trim().is_empty())
            })
        })
    }

    /// The text from `from` to `to` (exclusive): blank cells as spaces, rows that do not wrap
    /// ended by `\n`. With `trim`, trailing blanks of each row and of the whole are removed.
    fn text(&self, from: (u16, u16), to: (u16, u16), trim: bool) -> String {
        let mut out = String::new();
        if to <= from {
            return out;
        }
        for row in from.0..=to.0.min(self.last_row()) {
            let start = if row == from.0 { from.1 } else { 0 };
            let end = if row == to.0 { to.1 } else { self.cols };
            let mark = out.len();
            for col in start..end.min(self.cols) {
                match self.screen.cell(row, col) {
                    Some(cell) if cell.is_wide_continuation() => {}
                    Some(cell) if cell.has_contents() => out.push_str(cell.contents()),
                    _ => out.push(' '),
                }
            }
            if row < to.0 && !self.wrapped(row) {
                if trim {
                    let kept = out.get(mark..).map_or(0, |s| s.trim_end().len());
                    out.truncate(mark + kept);
                }
                out.push('\n');
            }
        }
        if trim {
            out.truncate(out.trim_end().len());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Keys.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubmitKind {
    /// `\r` or `\n`.
    Enter,
    /// `Ctrl-O`: readline runs the line and recalls the next history entry.
    OperateAndGetNext,
    /// `Ctrl-X Ctrl-E`: readline edits the line in `$EDITOR` and runs the result.
    EditAndExecute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    KillBack,
    KillForward,
    RuboutWord,
    Redraw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A printable character.
    Char(char),
    Edit(Edit),
    /// `Ctrl-R`, `Ctrl-S`.
    Search,
    /// `Ctrl-C`.
    Interrupt,
    /// `Ctrl-D`: end of input on an empty line, else delete.
    CtrlD,
    Submit(SubmitKind),
    /// Any other key: its effect on the line is unknown.
    Other,
    PasteStart,
    PasteEnd,
    PasteChar(char),
    PasteNewline,
    /// A control character or escape inside a paste.
    PasteOther,
}

const PASTE_END: &[u8] = b"\x1b[201~";

/// Splits typed bytes into keys. Every byte belongs to exactly one key; a byte that cannot
/// continue a sequence ends it and starts over, so a submit key is never swallowed by one.
#[derive(Debug, Default)]
struct Keys {
    state: KeyState,
    utf8: Utf8,
    /// Inside a bracketed paste: how many bytes of its end marker have been seen.
    paste: Option<usize>,
    /// The last key was `Ctrl-X`, readline's prefix.
    after_ctrl_x: bool,
}

#[derive(Debug, Default, Clone, Copy)]
enum KeyState {
    #[default]
    Ground,
    Esc,
    Csi {
        params: [u8; 8],
        len: usize,
    },
    Ss3,
    /// An X10 mouse report: this many raw bytes follow.
    Mouse(u8),
}

impl Keys {
    fn push(&mut self, b: u8, bracketed: bool, out: &mut Vec<Key>) {
        let start = out.len();
        if let Some(matched) = self.paste {
            self.paste_byte(b, matched, out);
        } else {
            self.key_byte(b, bracketed, out);
        }
        if let Some(last) = out.get(start..).and_then(<[Key]>::last) {
            self.after_ctrl_x = b == 0x18 && *last == Key::Other;
        }
    }

    fn key_byte(&mut self, b: u8, bracketed: bool, out: &mut Vec<Key>) {
        match self.state {
            KeyState::Ground => self.ground(b, out),
            KeyState::Esc => match b {
                b'[' => {
                    self.state = KeyState::Csi {
                        params: [0; 8],
                        len: 0,
                    }
                }
                b'O' => self.state = KeyState::Ss3,
                0x1b => out.push(Key::Other),
                0x20..=0x7e => {
                    // Alt+key: a readline command, not text.
                    self.state = KeyState::Ground;
                    out.push(Key::Other);
                }
                _ => {
                    self.state = KeyState::Ground;
                    out.push(Key::Other);
                    self.ground(b, out);
                }
            },
            KeyState::Csi { mut params, len } => match b {
                0x20..=0x3f => {
                    if let Some(slot) = params.get_mut(len) {
                        *slot = b;
                    }
                    self.state = KeyState::Csi {
                        params,
                        len: len.saturating_add(1),
                    };
                }
                0x40..=0x7e => {
                    self.state = KeyState::Ground;
                    let params = params.get(..len).unwrap_or(b"?");
                    match (params, b) {
                        (b"200", b'~') if bracketed => {
                            self.paste = Some(0);
                            out.push(Key::PasteStart);
                        }
                        (b"", b'M') => self.state = KeyState::Mouse(3),
                        (b"" | b"1", b'C') => out.push(Key::Edit(Edit::Right)),
                        (b"" | b"1", b'D') => out.push(Key::Edit(Edit::Left)),
                        (b"" | b"1", b'H') | (b"1" | b"7", b'~') => out.push(Key::Edit(Edit::Home)),
                        (b"" | b"1", b'F') | (b"4" | b"8", b'~') => out.push(Key::Edit(Edit::End)),
                        (b"3", b'~') => out.push(Key::Edit(Edit::Delete)),
                        _ => out.push(Key::Other),
                    }
                }
                _ => {
                    self.state = KeyState::Ground;
                    out.push(Key::Other);
                    self.ground(b, out);
                }
            },
            KeyState::Ss3 => {
                self.state = KeyState::Ground;
                match b {
                    b'C' => out.push(Key::Edit(Edit::Right)),
                    b'D' => out.push(Key::Edit(Edit::Left)),
                    b'H' => out.push(Key::Edit(Edit::Home)),
                    b'F' => out.push(Key::Edit(Edit::End)),
                    0x20..=0x7e => out.push(Key::Other),
                    _ => {
                        out.push(Key::Other);
                        self.ground(b, out);
                    }
                }
            }
            KeyState::Mouse(left) => {
                if b < 0x20 {
                    // Not a mouse report after all: never let one hide a control key.
                    self.state = KeyState::Ground;
                    out.push(Key::Other);
                    self.ground(b, out);
                } else if left <= 1 {
                    self.state = KeyState::Ground;
                    out.push(Key::Other);
                } else {
                    self.state = KeyState::Mouse(left - 1);
                }
            }
        }
    }

    fn ground(&mut self, b: u8, out: &mut Vec<Key>) {
        if self.utf8.pending() {
            match self.utf8.push(b) {
                Utf8Step::Partial => return,
                Utf8Step::Char(c) => {
                    out.push(if c.is_control() {
                        Key::Other
                    } else {
                        Key::Char(c)
                    });
                    return;
                }
                Utf8Step::Broken => out.push(Key::Other),
            }
        }
        let key = match b {
            0x1b => {
                self.state = KeyState::Esc;
                return;
            }
            b'\r' | b'\n' => Key::Submit(SubmitKind::Enter),
            0x0f => Key::Submit(SubmitKind::OperateAndGetNext),
            0x05 if self.after_ctrl_x => Key::Submit(SubmitKind::EditAndExecute),
            0x03 => Key::Interrupt,
            0x04 => Key::CtrlD,
            0x12 | 0x13 => Key::Search,
            0x7f | 0x08 => Key::Edit(Edit::Backspace),
            0x01 => Key::Edit(Edit::Home),
            0x02 => Key::Edit(Edit::Left),
            0x05 => Key::Edit(Edit::End),
            0x06 => Key::Edit(Edit::Right),
            0x0b => Key::Edit(Edit::KillForward),
            0x0c => Key::Edit(Edit::Redraw),
            0x15 => Key::Edit(Edit::KillBack),
            0x17 => Key::Edit(Edit::RuboutWord),
            0x20..=0x7e => Key::Char(char::from(b)),
            0x80..=0xff => match self.utf8.push(b) {
                Utf8Step::Partial => return,
                Utf8Step::Char(c) if !c.is_control() => Key::Char(c),
                Utf8Step::Char(_) | Utf8Step::Broken => Key::Other,
            },
            _ => Key::Other,
        };
        out.push(key);
    }

    fn paste_byte(&mut self, b: u8, matched: usize, out: &mut Vec<Key>) {
        if PASTE_END.get(matched) == Some(&b) {
            if matched + 1 == PASTE_END.len() {
                self.paste = None;
                out.push(Key::PasteEnd);
            } else {
                self.paste = Some(matched + 1);
            }
            return;
        }
        if matched > 0 {
            // A partial end marker was pasted text after all.
            out.push(Key::PasteOther);
            if b == 0x1b {
                self.paste = Some(1);
                return;
            }
            self.paste = Some(0);
        }
        if self.utf8.pending() {
            match self.utf8.push(b) {
                Utf8Step::Partial => return,
                Utf8Step::Char(c) => {
                    out.push(if c.is_control() {
                        Key::PasteOther
                    } else {
                        Key::PasteChar(c)
                    });
                    return;
                }
                Utf8Step::Broken => out.push(Key::PasteOther),
            }
        }
        let key = match b {
            b'\r' | b'\n' => Key::PasteNewline,
            0x20..=0x7e => Key::PasteChar(char::from(b)),
            0x80..=0xff => match self.utf8.push(b) {
                Utf8Step::Partial => return,
                Utf8Step::Char(c) if !c.is_control() => Key::PasteChar(c),
                Utf8Step::Char(_) | Utf8Step::Broken => Key::PasteOther,
            },
            _ => Key::PasteOther,
        };
        out.push(key);
    }
}

/// An incremental UTF-8 decoder for typed characters.
#[derive(Debug, Default)]
struct Utf8 {
    buf: [u8; 4],
    len: usize,
    need: usize,
}

enum Utf8Step {
    Partial,
    Char(char),
    /// The sequence so far is not UTF-8. A continuation that broke it is not consumed: the caller
    /// reads that byte afresh (an invalid lead byte is itself the broken sequence).
    Broken,
}

impl Utf8 {
    fn pending(&self) -> bool {
        self.need > 0
    }

    fn push(&mut self, b: u8) -> Utf8Step {
        if self.need == 0 {
            let need = match b {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Utf8Step::Broken,
            };
            self.buf = [b, 0, 0, 0];
            self.len = 1;
            self.need = need;
            return Utf8Step::Partial;
        }
        if b & 0xc0 != 0x80 {
            self.need = 0;
            return Utf8Step::Broken;
        }
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
        }
        self.len += 1;
        if self.len < self.need {
            return Utf8Step::Partial;
        }
        self.need = 0;
        match self
            .buf
            .get(..self.len)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|s| s.chars().next())
        {
            Some(c) => Utf8Step::Char(c),
            None => Utf8Step::Broken,
        }
    }
}

impl fmt::Display for NotCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotCommand::FullScreen => "typed into a full-screen program",
            NotCommand::PasswordPrompt => "typed at a password prompt",
            NotCommand::Empty => "empty line",
        })
    }
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unknown::NotEchoed => "the typed keys were not echoed (is echo off?)",
            Unknown::ScreenDisagrees => "the screen does not show what was typed",
            Unknown::LineLost => "output moved or overwrote the line being typed",
            Unknown::TypedAhead => "the line was typed before the shell showed its prompt",
            Unknown::TooLong => "the line is too long",
            Unknown::ControlKeys => "the line shows control keys typed ahead",
            Unknown::EditAndExecute => "Ctrl-X Ctrl-E runs what the editor saves without checking",
        })
    }
}

impl fmt::Display for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Submitted::Command(line) => f.write_str(line),
            Submitted::NotACommand(why) => write!(f, "not a command: {why}"),
            Submitted::Unknown(why) => write!(f, "unknown line: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bash 5.2 prints before each prompt: bracketed paste on, then `PS1`.
    const PROMPT: &[u8] = b"\x1b[?2004huser@host:~$ ";
    /// What bash prints after Enter, before the command runs.
    const ACCEPT: &[u8] = b"\r\n\x1b[?2004l\r";

    fn command(s: &str) -> Submitted {
        Submitted::Command(s.to_string())
    }

    /// A tracker after the shell cleared the screen and showed its first prompt.
    fn shell() -> LineTracker {
        shell_sized(80, 24)
    }

    fn shell_sized(cols: u16, rows: u16) -> LineTracker {
        let mut t = LineTracker::new(cols, rows);
        assert!(t.output(b"\x1b[H\x1b[2J").is_empty());
        assert!(t.output(PROMPT).is_empty());
        t
    }

    /// Types `keys` one character at a time, each echoed as bash echoes a key at the end of the
    /// line.
    fn type_echoed(t: &mut LineTracker, keys: &str) {
        for c in keys.chars() {
            let mut buf = [0; 4];
            let key = c.encode_utf8(&mut buf).as_bytes();
            assert_eq!(
                t.input(key),
                vec![Step::Forward(key.to_vec())],
                "typing {c:?}"
            );
            assert!(t.output(key).is_empty());
        }
    }

    fn forward(t: &mut LineTracker, key: &[u8]) {
        assert_eq!(t.input(key), vec![Step::Forward(key.to_vec())]);
    }

    /// Presses Enter, which is decided at once.
    fn enter(t: &mut LineTracker) -> Submitted {
        match t.input(b"\r").as_slice() {
            [Step::Submit(s)] => s.clone(),
            steps => panic!("expected a submit, got {steps:?}"),
        }
    }

    /// Presses Enter; when it waits for an echo, the wait times out.
    fn enter_eventually(t: &mut LineTracker) -> Submitted {
        let steps = t.input(b"\r");
        if let Some(s) = submit_of(&steps) {
            return s.clone();
        }
        assert!(t.awaiting_echo(), "{steps:?}");
        match t.echo_timeout().as_slice() {
            [Step::Submit(s)] => s.clone(),
            steps => panic!("expected a submit, got {steps:?}"),
        }
    }

    /// Allows the held submit and plays bash running a command that printed nothing.
    fn allow_and_run(t: &mut LineTracker) {
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        assert!(t.output(ACCEPT).is_empty());
        assert!(t.output(PROMPT).is_empty());
    }

    fn submit_of(steps: &[Step]) -> Option<&Submitted> {
        match steps.last() {
            Some(Step::Submit(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn plain_typed_command() {
        let mut t = shell();
        type_echoed(&mut t, "ls -l");
        assert_eq!(enter(&mut t), command("ls -l"));
        assert_eq!(t.awaiting_verdict(), Some(&command("ls -l")));
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        assert_eq!(t.awaiting_verdict(), None);
        t.output(b"\r\n\x1b[?2004l\rtotal 4\r\n-rw-r--r-- 1 root root 0 foo.txt\r\n");
        t.output(PROMPT);
        type_echoed(&mut t, "pwd");
        assert_eq!(enter(&mut t), command("pwd"));
    }

    #[test]
    fn editing_with_arrows_backspace_and_ctrl_w() {
        // Captured from bash: `echo helo`, Left Left, `l`, Backspace, `l`, Right Right, ` wrld`,
        // Ctrl-W, `world`.
        let mut t = shell();
        type_echoed(&mut t, "echo helo");
        for (key, echo) in [
            (&b"\x1b[D"[..], &b"\x08"[..]),
            (b"\x1b[D", b"\x08"),
            (b"l", b"\x1b[Clo\x08\x08"),
            (b"\x7f", b"\x1b[1Po\x08\x08"),
            (b"l", b"\x1b[Clo\x08\x08"),
            (b"\x1b[C\x1b[C", b"\x1b[C\x1b[C"),
        ] {
            forward(&mut t, key);
            assert!(t.output(echo).is_empty());
        }
        type_echoed(&mut t, " wrld");
        forward(&mut t, b"\x17");
        t.output(b"\x08\x08\x08\x08\x1b[K");
        type_echoed(&mut t, "world");
        assert_eq!(enter(&mut t), command("echo hello world"));
    }

    #[test]
    fn ctrl_u_then_retype() {
        let mut t = shell();
        type_echoed(&mut t, "rm -rf /");
        forward(&mut t, b"\x15");
        t.output(b"\x08\x08\x08\x08\x08\x08\x08\x08\x1b[K");
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn history_recall_is_read_from_the_redraw() {
        let mut t = shell();
        type_echoed(&mut t, "echo three333");
        enter(&mut t);
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        t.output(b"\r\n\x1b[?2004l\rthree333\r\n");
        t.output(PROMPT);
        // Up recalls it; Up again recalls `echo one` by rewriting the differing tail.
        forward(&mut t, b"\x1b[A");
        t.output(b"echo three333");
        forward(&mut t, b"\x1b[A");
        t.output(b"\x08\x08\x08\x08\x08\x08\x08\x08\x1b[5Pone");
        assert_eq!(enter(&mut t), command("echo one"));
    }

    #[test]
    fn up_and_enter_before_the_redraw_wait_for_it() {
        let mut t = shell();
        // Up and Enter in one packet: nothing is decided on the stale, empty line.
        assert_eq!(
            t.input(b"\x1b[A\r"),
            vec![Step::Forward(b"\x1b[A".to_vec())]
        );
        assert!(t.awaiting_echo());
        let steps = t.output(b"rm -rf /tmp/build");
        assert_eq!(submit_of(&steps), Some(&command("rm -rf /tmp/build")));
    }

    #[test]
    fn tab_completion() {
        // Captured: `rm -r f` Tab completes to `foo` (ambiguous, bell), Tab rings, `.` Tab
        // completes `txt `.
        let mut t = shell();
        type_echoed(&mut t, "rm -r f");
        forward(&mut t, b"\t");
        t.output(b"\x07oo");
        forward(&mut t, b"\t");
        t.output(b"\x07");
        type_echoed(&mut t, ".");
        forward(&mut t, b"\t");
        t.output(b"txt ");
        assert_eq!(enter(&mut t), command("rm -r foo.txt"));
    }

    #[test]
    fn completion_listing_reprints_the_prompt_below() {
        // Captured with show-all-if-ambiguous: the list, then the prompt and line again.
        let mut t = shell();
        type_echoed(&mut t, "ls fo");
        forward(&mut t, b"\t");
        t.output(b"\r\nfoo.txt     foobar.log  \r\nuser@host:~$ ls foo");
        type_echoed(&mut t, "bar.log");
        assert_eq!(enter(&mut t), command("ls foobar.log"));
    }

    #[test]
    fn line_longer_than_the_terminal_wraps() {
        // Captured at 30 columns: 13 prompt columns, then the line wraps onto the next row;
        // twelve Backspaces on the second row.
        let mut t = shell_sized(30, 24);
        type_echoed(&mut t, "echo aaaaaaaaaa");
        type_echoed(&mut t, "bbbbbbbbbb");
        type_echoed(&mut t, "cccccccccc");
        for _ in 0..12 {
            forward(&mut t, b"\x7f");
            t.output(b"\x08\x1b[K");
        }
        type_echoed(&mut t, "dd");
        assert_eq!(enter(&mut t), command("echo aaaaaaaaaabbbbbbbbdd"));
    }

    #[test]
    fn line_wrapping_over_the_bottom_row_scrolls() {
        let mut t = shell_sized(20, 3);
        t.output(b"\r\n\r\n");
        t.output(PROMPT);
        type_echoed(&mut t, "echo 0123456789abcdefghijklmnopqrstuvwxyz");
        assert_eq!(
            enter(&mut t),
            command("echo 0123456789abcdefghijklmnopqrstuvwxyz")
        );
    }

    #[test]
    fn line_longer_than_the_screen_is_too_long() {
        let mut t = shell_sized(20, 3);
        type_echoed(&mut t, &"x".repeat(70));
        assert_eq!(
            enter_eventually(&mut t),
            Submitted::Unknown(Unknown::TooLong)
        );
    }

    #[test]
    fn paste_of_two_lines_is_decided_line_by_line() {
        // Captured from bash: each line is echoed, run, and the next prompt printed.
        let mut t = shell();
        let steps = t.input(b"echo a\recho b\r");
        assert_eq!(steps, vec![Step::Forward(b"echo a".to_vec())]);
        assert!(t.awaiting_echo());
        let steps = t.output(b"echo a");
        assert_eq!(submit_of(&steps), Some(&command("echo a")));
        // Nothing of the second line goes out before the verdict.
        assert!(t.input(b"").is_empty());
        let steps = t.resolve(Verdict::Allow);
        assert_eq!(
            steps,
            vec![
                Step::Forward(b"\r".to_vec()),
                Step::Forward(b"echo b".to_vec())
            ]
        );
        assert!(t.awaiting_echo());
        assert!(t.output(b"\r\n\x1b[?2004l\ra\r\n").is_empty());
        let steps = t.output(b"\x1b[?2004huser@host:~$ echo b");
        assert_eq!(submit_of(&steps), Some(&command("echo b")));
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
    }

    #[test]
    fn denied_paste_line_discards_the_rest() {
        let mut t = shell();
        t.input(b"rm -rf /\rls\r");
        let steps = t.output(b"rm -rf /");
        assert_eq!(submit_of(&steps), Some(&command("rm -rf /")));
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![Step::Forward(CANCEL_LINE.to_vec()), Step::Discarded(3)]
        );
        // The shell erases the line and prints a new prompt; the next line reads normally.
        t.output(b"\x07\x08\x08\x08\x08\x08\x08\x08\x08\x1b[K\r\n\x1b[?2004l\r");
        t.output(PROMPT);
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn bracketed_paste_is_one_multi_line_buffer() {
        // Captured: readline shows the pasted lines highlighted, on two rows.
        let mut t = shell();
        let paste = b"\x1b[200~echo a\recho b\x1b[201~";
        assert_eq!(t.input(paste), vec![Step::Forward(paste.to_vec())]);
        t.output(b"\x1b[7mecho a\x1b[27m\r\n\r\x1b[7mecho b\x1b[27m");
        assert_eq!(enter(&mut t), command("echo a\necho b"));
    }

    #[test]
    fn bracketed_paste_with_the_cursor_moved_back_still_reports_every_line() {
        let mut t = shell();
        t.input(b"\x1b[200~echo a\rrm -rf /\x1b[201~");
        t.output(b"\x1b[7mecho a\x1b[27m\r\n\r\x1b[7mrm -rf /\x1b[27m");
        forward(&mut t, b"\x01");
        t.output(b"\x1b[A\r\x1b[13C");
        assert_eq!(enter(&mut t), command("echo a\nrm -rf /"));
    }

    #[test]
    fn brackets_without_bracketed_paste_mode_do_not_hide_enter() {
        let mut t = LineTracker::new(80, 24);
        t.output(b"$ ");
        let steps = t.input(b"\x1b[200~rm -rf /\rls\x1b[201~");
        assert_eq!(steps, vec![Step::Forward(b"\x1b[200~rm -rf /".to_vec())]);
        assert!(t.awaiting_echo() || t.awaiting_verdict().is_some());
    }

    #[test]
    fn ctrl_c_discards_the_line() {
        let mut t = shell();
        type_echoed(&mut t, "rm -rf /");
        forward(&mut t, b"\x03");
        // Captured: `^C`, then a fresh prompt on the next row.
        t.output(b"^C\x1b[?2004l\r\x1b[?2004h\x1b[?2004l\r\r\n\x1b[?2004huser@host:~$ ");
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn ctrl_c_typed_ahead_with_the_next_line() {
        let mut t = shell();
        type_echoed(&mut t, "rm -rf /");
        // Ctrl-C and the next line in one packet, before the shell answered.
        assert_eq!(
            t.input(b"\x03ls\r"),
            vec![Step::Forward(b"\x03ls".to_vec())]
        );
        assert!(t.awaiting_echo());
        t.output(b"^C\x1b[?2004l\r\x1b[?2004h\x1b[?2004l\r\r\n");
        let steps = t.output(b"\x1b[?2004huser@host:~$ ls");
        assert_eq!(submit_of(&steps), Some(&command("ls")));
    }

    #[test]
    fn ctrl_d_on_an_empty_line_is_not_a_command() {
        let mut t = shell();
        assert_eq!(t.input(b"\x04"), vec![Step::Forward(b"\x04".to_vec())]);
        assert_eq!(t.awaiting_verdict(), None);
        assert!(!t.awaiting_echo());
    }

    #[test]
    fn full_screen_lines_are_not_commands() {
        let mut t = shell();
        type_echoed(&mut t, "vim notes");
        assert_eq!(enter(&mut t), command("vim notes"));
        t.resolve(Verdict::Allow);
        t.output(b"\r\n\x1b[?2004l\r\x1b[?1049h\x1b[22;1H\x1b[?2004h\x1b[H\x1b[2J~\r\n~");
        // Insert mode, text, Escape, `:wq`.
        forward(&mut t, b"i");
        t.output(b"\x1b[24;1H-- INSERT --\x1b[1;1H");
        type_echoed(&mut t, "rm -rf /");
        let steps = t.input(b"\r");
        assert_eq!(
            steps,
            vec![Step::Submit(Submitted::NotACommand(NotCommand::FullScreen))]
        );
        t.resolve(Verdict::Allow);
        t.output(b"\r\n");
        forward(&mut t, b"\x1b");
        t.output(b"\x1b[24;1H\x1b[K");
        forward(&mut t, b":wq");
        t.output(b"\x1b[24;1H:wq");
        let steps = t.input(b"\r");
        assert_eq!(
            steps,
            vec![Step::Submit(Submitted::NotACommand(NotCommand::FullScreen))]
        );
        t.resolve(Verdict::Allow);
        t.output(b"\x1b[?2004l\x1b[?1049l");
        t.output(PROMPT);
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn quitting_a_pager_then_typing_reads_the_new_line() {
        // Captured (`less` on the alternate screen): `q` is not echoed; the prompt follows.
        let mut t = shell();
        type_echoed(&mut t, "less notes");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(b"\r\n\x1b[?2004l\r\x1b[?1049h\x1b[H\x1b[2Jnotes\r\n:");
        forward(&mut t, b"q");
        t.output(b"\r\x1b[K\x1b[?1049l\x1b[?2004huser@host:~$ ");
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn quitting_git_log_pager_without_alternate_screen() {
        // Captured: `LESS=FRX less` draws on the normal screen; `q` clears its prompt row.
        let mut t = shell_sized(80, 5);
        type_echoed(&mut t, "git log");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(b"\r\n\x1b[?2004l\r\x1b[?1h\x1b=\rcommit 1\x1b[m\r\ncommit 2\x1b[m\r\ncommit 3\x1b[m\r\n:\x1b[K");
        forward(&mut t, b" ");
        t.output(b"\r\x1b[Kcommit 4\x1b[m\r\n:\x1b[K");
        forward(&mut t, b"q");
        t.output(b"\r\x1b[K\x1b[?1l\x1b>\x1b[?2004huser@host:~$ ");
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn keys_typed_ahead_into_a_quitting_pager_stay_in_the_line() {
        let mut t = shell();
        type_echoed(&mut t, "less notes");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(b"\r\n\x1b[?2004l\r\x1b[?1049h\x1b[H\x1b[2Jnotes\r\n:");
        // `q` and the next command typed before less has exited; the shell echoes the typeahead.
        forward(&mut t, b"qrm -rf /");
        t.output(b"\r\x1b[K\x1b[?1049l\x1b[?2004huser@host:~$ rm -rf /");
        assert_eq!(enter_eventually(&mut t), command("user@host:~$ rm -rf /"));
    }

    #[test]
    fn enter_typed_ahead_into_a_quitting_pager_is_not_full_screen() {
        let mut t = shell();
        type_echoed(&mut t, "less notes");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(b"\r\n\x1b[?2004l\r\x1b[?1049h\x1b[H\x1b[2Jnotes\r\n:");
        // All in one packet while less still has the screen: the Enter is not decided yet.
        assert_eq!(
            t.input(b"qrm -rf /\r"),
            vec![Step::Forward(b"qrm -rf /".to_vec())]
        );
        assert!(t.awaiting_echo());
        // The shell read `rm -rf /` as typeahead; `q` may have gone to less or not. The line is
        // anchored where the shell started reading, so the prompt stays in the report (the keys
        // do not say which of them the shell got).
        assert!(t
            .output(b"\r\x1b[K\x1b[?1049l\x1b[?2004huser@host:~$ rm -rf /")
            .is_empty());
        assert_eq!(
            t.echo_timeout(),
            vec![Step::Submit(command("user@host:~$ rm -rf /"))]
        );
    }

    #[test]
    fn sudo_password_prompt_without_echo() {
        // Captured (`read -s -p "[sudo] password for user: "`): typed keys print nothing.
        let mut t = shell();
        type_echoed(&mut t, "sudo id");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(ACCEPT);
        t.output(b"[sudo] password for user: ");
        forward(&mut t, b"hunter2");
        assert!(t.input(b"\r").is_empty());
        assert!(t.awaiting_echo());
        assert_eq!(
            t.echo_timeout(),
            vec![Step::Submit(Submitted::NotACommand(
                NotCommand::PasswordPrompt
            ))]
        );
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        t.output(b"\r\nuid=0(root) gid=0(root)\r\n");
        t.output(PROMPT);
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn password_prompt_with_asterisk_feedback() {
        let mut t = shell();
        type_echoed(&mut t, "sudo id");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(ACCEPT);
        t.output(b"Password: ");
        for _ in 0..4 {
            forward(&mut t, b"x");
            t.output(b"*");
        }
        assert!(t.input(b"\r").is_empty());
        assert_eq!(
            submit_of(&t.echo_timeout()),
            Some(&Submitted::NotACommand(NotCommand::PasswordPrompt))
        );
    }

    #[test]
    fn prompt_on_the_row_of_a_password_prompt() {
        // `read -s` prints no newline: the next prompt follows the password prompt on its row.
        let mut t = shell();
        type_echoed(&mut t, "read -s -p 'Password: ' pw");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(ACCEPT);
        t.output(b"Password: ");
        t.input(b"hunter2\r");
        assert_eq!(
            t.echo_timeout(),
            vec![Step::Submit(Submitted::NotACommand(
                NotCommand::PasswordPrompt
            ))]
        );
        t.resolve(Verdict::Allow);
        t.output(PROMPT);
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn echo_off_without_a_password_prompt_is_unknown() {
        // Captured: after `stty -echo`, typed keys print nothing at the shell prompt.
        let mut t = shell();
        type_echoed(&mut t, "stty -echo");
        enter(&mut t);
        allow_and_run(&mut t);
        forward(&mut t, b"rm -rf /");
        assert!(t.input(b"\r").is_empty());
        assert_eq!(
            t.echo_timeout(),
            vec![Step::Submit(Submitted::Unknown(Unknown::NotEchoed))]
        );
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![Step::Forward(CANCEL_LINE.to_vec())]
        );
    }

    #[test]
    fn echo_lag_is_waited_for() {
        let mut t = shell();
        // The user types faster than the echo comes back.
        let typed = b"dd if=/dev/zero of=/dev/sda";
        assert_eq!(t.input(typed), vec![Step::Forward(typed.to_vec())]);
        assert!(t.output(b"dd if=/dev/zero of=/de").is_empty());
        assert!(t.input(b"\r").is_empty());
        assert!(t.awaiting_echo());
        // A partial echo does not decide; the rest does.
        assert!(t.output(b"v/s").is_empty());
        let steps = t.output(b"da");
        assert_eq!(
            submit_of(&steps),
            Some(&command("dd if=/dev/zero of=/dev/sda"))
        );
        assert!(!t.awaiting_echo());
    }

    #[test]
    fn echo_that_never_completes_is_unknown_after_the_timeout() {
        let mut t = shell();
        t.input(b"rm -rf /tmp/x");
        t.output(b"rm -rf /tm");
        assert!(t.input(b"\r").is_empty());
        assert_eq!(
            t.echo_timeout(),
            vec![Step::Submit(Submitted::Unknown(Unknown::NotEchoed))]
        );
        // A second timeout, or more output, does nothing once decided.
        assert!(t.echo_timeout().is_empty());
        assert!(t.output(b"p/x").is_empty());
    }

    #[test]
    fn resize_in_the_middle_of_a_line() {
        // Captured: at SIGWINCH bash returns to the row start, clears it, and redraws.
        let mut t = shell();
        type_echoed(
            &mut t,
            "echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789",
        );
        t.resize(40, 24);
        assert_eq!(t.size(), (40, 24));
        t.output(b"\r\x1b[K\ruser@host:~$ echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789");
        type_echoed(&mut t, " tail");
        assert_eq!(
            enter(&mut t),
            command("echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789 tail")
        );
    }

    #[test]
    fn resize_that_pushes_rows_off_the_top() {
        let mut t = shell();
        for i in 0..40 {
            t.output(format!("line {i}\r\n").as_bytes());
        }
        t.output(PROMPT);
        type_echoed(&mut t, "ls -la");
        // Fewer rows: the prompt row stays at the bottom; nothing is redrawn.
        t.resize(80, 10);
        type_echoed(&mut t, " /tmp");
        assert_eq!(enter(&mut t), command("ls -la /tmp"));
        allow_and_run(&mut t);
        type_echoed(&mut t, "pwd");
        // More rows: blank rows come in at the top and the content moves down.
        t.resize(80, 30);
        type_echoed(&mut t, " -P");
        assert_eq!(enter(&mut t), command("pwd -P"));
    }

    #[test]
    fn resize_is_clamped() {
        let mut t = LineTracker::new(0, 0);
        assert_eq!(t.size(), (1, 1));
        t.resize(u16::MAX, u16::MAX);
        assert_eq!(t.size(), (MAX_COLS, MAX_ROWS));
    }

    #[test]
    fn background_output_moving_the_line_is_unknown() {
        let mut t = shell();
        type_echoed(&mut t, "rm -r");
        // A background job prints a line; readline's cursor is now on the next row.
        t.output(b"job done\r\n");
        type_echoed(&mut t, "f /");
        assert_eq!(
            enter_eventually(&mut t),
            Submitted::Unknown(Unknown::LineLost)
        );
    }

    #[test]
    fn output_written_into_the_line() {
        // Inside the last run of typed characters, it contradicts the keys.
        let mut t = shell();
        type_echoed(&mut t, "ls");
        t.output(b"X");
        type_echoed(&mut t, " -l");
        assert_eq!(
            enter_eventually(&mut t),
            Submitted::Unknown(Unknown::ScreenDisagrees)
        );
        // Before it, it is part of what the terminal shows, though not of the shell's buffer: a
        // limitation, pinned.
        let mut t = shell();
        type_echoed(&mut t, "ls");
        t.output(b"X");
        forward(&mut t, b"\x1b[D");
        t.output(b"\x08");
        forward(&mut t, b"\x1b[C");
        t.output(b"\x1b[C");
        type_echoed(&mut t, " -l");
        assert_eq!(enter(&mut t), command("lsX -l"));
    }

    #[test]
    fn background_output_before_the_first_key_is_harmless() {
        let mut t = shell();
        t.output(b"\r\n[1]+  Done    sleep 1\r\n");
        type_echoed(&mut t, "ls");
        assert_eq!(enter(&mut t), command("ls"));
    }

    #[test]
    fn ctrl_l_redraws_the_prompt_at_the_top() {
        let mut t = shell();
        t.output(b"\r\nlots of output\r\n");
        t.output(PROMPT);
        type_echoed(&mut t, "ls");
        forward(&mut t, b"\x0c");
        t.output(b"\x1b[H\x1b[2Juser@host:~$ ls");
        type_echoed(&mut t, " -a");
        assert_eq!(enter(&mut t), command("ls -a"));
    }

    #[test]
    fn ctrl_r_search_result() {
        // Captured: the search prompt replaces PS1; the match follows `': `.
        let mut t = shell();
        forward(&mut t, b"\x12");
        t.output(b"\r(reverse-i-search)`': ");
        forward(&mut t, b"s");
        t.output(b"\x08\x08\x08s': echo \x1b[7ms\x1b[27mecret-one\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08");
        forward(&mut t, b"e");
        t.output(b"\x08\x08\x08\x08\x08\x08\x08\x08e': echo \x1b[7mse\x1b[27mcret-one\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08");
        assert_eq!(enter(&mut t), command("echo secret-one"));
    }

    #[test]
    fn fake_search_prompt_is_only_read_in_search_mode() {
        let mut t = LineTracker::new(80, 24);
        t.output(b"\x1b[?2004h(reverse-i-search)`': echo ");
        type_echoed(&mut t, "rm -rf /");
        assert_eq!(enter(&mut t), command("rm -rf /"));
    }

    #[test]
    fn esc_enter_that_the_shell_ignores_does_not_split_the_line() {
        // Captured: bash rings the bell at `Esc Enter` and keeps the line.
        let mut t = shell();
        type_echoed(&mut t, "rm");
        forward(&mut t, b"\x1b");
        assert_eq!(enter_eventually(&mut t), command("rm"));
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        t.output(b"\x07");
        // The line after it is found by the prompt, but the keys since the ignored Enter do not
        // account for the `rm` before them.
        type_echoed(&mut t, " -rf /");
        assert_eq!(
            enter_eventually(&mut t),
            Submitted::Unknown(Unknown::ScreenDisagrees)
        );
    }

    #[test]
    fn backslash_continuation_is_joined() {
        let mut t = shell();
        type_echoed(&mut t, "r\\");
        assert_eq!(enter(&mut t), command("r\\"));
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        t.output(b"\r\n> ");
        type_echoed(&mut t, "m -rf /");
        assert_eq!(enter(&mut t), command("rm -rf /"));
        assert_eq!(t.cancel_bytes(), CANCEL_CONTINUED);
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![Step::Forward(CANCEL_CONTINUED.to_vec())]
        );
        assert_eq!(t.cancel_bytes(), CANCEL_LINE);
    }

    #[test]
    fn ctrl_x_ctrl_e_is_unknown() {
        let mut t = shell();
        type_echoed(&mut t, "ls");
        forward(&mut t, b"\x18");
        let steps = t.input(b"\x05");
        assert_eq!(
            steps,
            vec![Step::Submit(Submitted::Unknown(Unknown::EditAndExecute))]
        );
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![Step::Forward(CANCEL_LINE.to_vec())]
        );
    }

    #[test]
    fn ctrl_o_submits_and_the_recalled_next_line_is_read() {
        // Captured: Ctrl-O runs `echo one` and fills the next line with `echo two`.
        let mut t = shell();
        forward(&mut t, b"\x1b[A");
        t.output(b"echo two");
        forward(&mut t, b"\x1b[A");
        t.output(b"\x08\x08\x08one");
        assert_eq!(t.input(b"\x0f"), vec![Step::Submit(command("echo one"))]);
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\x0f".to_vec())]
        );
        t.output(b"\r\n\x1b[?2004l\rone\r\n\x1b[?2004huser@host:~$ echo two");
        // The filled-in text is not the user's typing: the prompt stays in the report.
        assert_eq!(enter(&mut t), command("user@host:~$ echo two"));
    }

    #[test]
    fn withhold_keeps_the_line() {
        let mut t = shell();
        type_echoed(&mut t, "rm -rf /");
        t.input(b"\rmore");
        assert_eq!(t.resolve(Verdict::Withhold), vec![Step::Discarded(4)]);
        forward(&mut t, b"\x0c");
        t.output(b"\x1b[H\x1b[2Juser@host:~$ rm -rf /");
        type_echoed(&mut t, "tmp");
        assert_eq!(enter(&mut t), command("rm -rf /tmp"));
    }

    #[test]
    fn submit_is_the_last_step_even_when_input_is_discarded() {
        let mut t = shell();
        type_echoed(&mut t, "ls");
        let mut bytes = b"\r".to_vec();
        bytes.resize(MAX_HELD_INPUT + 11, b'x');
        assert_eq!(
            t.input(&bytes),
            vec![Step::Discarded(10), Step::Submit(command("ls"))]
        );
    }

    #[test]
    fn held_input_is_bounded_and_interrupt_is_visible() {
        let mut t = shell();
        type_echoed(&mut t, "ls");
        enter(&mut t);
        assert!(!t.interrupt_pending());
        assert!(t.input(&vec![b'x'; MAX_HELD_INPUT - 1]).is_empty());
        assert_eq!(t.input(b"\x03yz"), vec![Step::Discarded(2)]);
        assert!(t.interrupt_pending());
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![
                Step::Forward(CANCEL_LINE.to_vec()),
                Step::Discarded(MAX_HELD_INPUT)
            ]
        );
    }

    #[test]
    fn resolve_without_a_decision_does_nothing() {
        let mut t = shell();
        assert!(t.resolve(Verdict::Allow).is_empty());
        t.input(b"ls\r");
        assert!(t.awaiting_echo());
        assert!(t.resolve(Verdict::Allow).is_empty());
        assert!(t.awaiting_echo());
    }

    #[test]
    fn empty_line() {
        let mut t = shell();
        assert_eq!(enter(&mut t), Submitted::NotACommand(NotCommand::Empty));
    }

    #[test]
    fn two_quick_enters() {
        let mut t = shell();
        assert_eq!(
            t.input(b"\r\r"),
            vec![Step::Submit(Submitted::NotACommand(NotCommand::Empty))]
        );
        // The second waits for the shell's answer to the first.
        assert_eq!(
            t.resolve(Verdict::Allow),
            vec![Step::Forward(b"\r".to_vec())]
        );
        assert!(t.awaiting_echo());
        let steps = t.output(b"\r\n\x1b[?2004l\r\x1b[?2004huser@host:~$ ");
        assert_eq!(
            submit_of(&steps),
            Some(&Submitted::NotACommand(NotCommand::Empty))
        );
    }

    #[test]
    fn typed_ahead_during_a_command_in_line_mode() {
        let mut t = shell();
        type_echoed(&mut t, "sleep 2");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(ACCEPT);
        // The terminal's line discipline echoes keys typed while sleep runs.
        type_echoed(&mut t, "ls");
        t.output(b"\x1b[?2004huser@host:~$ ls");
        assert_eq!(enter_eventually(&mut t), command("ls"));
    }

    #[test]
    fn arrow_typed_ahead_in_line_mode_is_unknown() {
        let mut t = shell();
        type_echoed(&mut t, "sleep 2");
        enter(&mut t);
        t.resolve(Verdict::Allow);
        t.output(ACCEPT);
        // Up typed while sleep runs: the line discipline echoes it as text.
        forward(&mut t, b"\x1b[A");
        t.output(b"^[[A");
        assert_eq!(enter(&mut t), Submitted::Unknown(Unknown::ControlKeys));
    }

    #[test]
    fn stale_prompt_cannot_cut_a_typed_ahead_line() {
        let mut t = LineTracker::new(80, 24);
        // The prompt ends in `rm`, and a line is read there: that prompt is remembered.
        t.output(b"\x1b[?2004huser@host:~$ rm");
        type_echoed(&mut t, "PS1='user@host:~$ '");
        enter(&mut t);
        // The next line is typed before the new prompt shows.
        let steps = t.resolve(Verdict::Allow);
        assert_eq!(steps, vec![Step::Forward(b"\r".to_vec())]);
        assert_eq!(
            t.input(b"rm -rf /\r"),
            vec![Step::Forward(b"rm -rf /".to_vec())]
        );
        t.output(ACCEPT);
        // The remembered prompt `user@host:~$ rm` would cut `rm` off; the typed keys do not
        // confirm that, so the prompt stays in the report.
        let steps = t.output(b"\x1b[?2004huser@host:~$ rm -rf /");
        assert_eq!(submit_of(&steps), Some(&command("user@host:~$ rm -rf /")));
    }

    #[test]
    fn vigil_messages_do_not_count_as_echo() {
        let mut t = shell();
        type_echoed(&mut t, "rm -rf /");
        assert_eq!(enter(&mut t), command("rm -rf /"));
        assert_eq!(
            t.resolve(Verdict::Cancel),
            vec![Step::Forward(CANCEL_LINE.to_vec())]
        );
        t.local_output(b"\r\nvigil: rm -rf / is denied by rule shell-destructive\r\n");
        // The next line is typed before the shell's answer to the cancel keys arrives.
        assert_eq!(t.input(b"ls\r"), vec![Step::Forward(b"ls".to_vec())]);
        assert!(t.awaiting_echo());
        t.output(b"\x07\x08\x08\x08\x08\x08\x08\x08\x08\x1b[K\r\n\x1b[?2004l\r");
        let steps = t.output(b"\x1b[?2004huser@host:~$ ls");
        assert_eq!(submit_of(&steps), Some(&command("ls")));
    }

    #[test]
    fn wide_characters() {
        let mut t = shell();
        type_echoed(&mut t, "echo 日本語 ok");
        assert_eq!(enter(&mut t), command("echo 日本語 ok"));
    }

    #[test]
    fn utf8_split_across_reads() {
        let mut t = shell();
        type_echoed(&mut t, "echo ");
        forward(&mut t, b"\xc3");
        forward(&mut t, b"\xa9");
        t.output(b"\xc3");
        t.output(b"\xa9");
        assert_eq!(enter(&mut t), command("echo é"));
    }

    #[test]
    fn split_escape_and_utf8_sequences_never_hide_enter() {
        let mut t = shell();
        type_echoed(&mut t, "ls");
        // A lone lead byte, an unfinished CSI and a fake mouse report, each followed by Enter.
        for junk in [&b"\xc3"[..], b"\x1b[1;", b"\x1b[M"] {
            let mut bytes = junk.to_vec();
            bytes.push(b'\r');
            let steps = t.input(&bytes);
            assert!(
                t.awaiting_echo() || t.awaiting_verdict().is_some(),
                "{junk:?} then Enter must hold the Enter: {steps:?}"
            );
            assert!(!steps
                .iter()
                .any(|s| matches!(s, Step::Forward(f) if f.contains(&b'\r'))));
            t.echo_timeout();
            t.resolve(Verdict::Cancel);
            t.output(b"\r\n");
            t.output(PROMPT);
        }
    }

    #[test]
    fn secret_prompts() {
        for prompt in [
            "[sudo] password for alice:",
            "Password:",
            "Password for 'https://alice@example.com':",
            "Enter passphrase for key '/home/a/.ssh/id_ed25519':",
            "Enter PIN for 'PIV Card':",
            "Verification code:",
            "(alice@host) Password: ",
            "Enter your OTP?",
        ] {
            assert!(looks_like_secret_prompt(prompt), "{prompt}");
        }
        for prompt in ["user@host:~$", "Shipping to:", "Password", "ping:", "> "] {
            assert!(!looks_like_secret_prompt(prompt), "{prompt}");
        }
    }

    #[test]
    fn model_edits_like_readline() {
        let mut m = Model {
            known: true,
            ..Model::default()
        };
        for c in "echo  foo bar".chars() {
            m.insert(c);
        }
        m.edit(Edit::RuboutWord);
        assert_eq!(m.text().as_deref(), Some("echo  foo "));
        m.edit(Edit::Left);
        m.edit(Edit::Left);
        m.edit(Edit::KillForward);
        assert_eq!(m.text().as_deref(), Some("echo  fo"));
        m.edit(Edit::Home);
        m.edit(Edit::Delete);
        m.edit(Edit::End);
        m.edit(Edit::Backspace);
        assert_eq!(m.text().as_deref(), Some("cho  f"));
        m.edit(Edit::Left);
        m.edit(Edit::KillBack);
        assert_eq!(m.text().as_deref(), Some("f"));
    }

    /// A deterministic xorshift generator, so the property tests need no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, alphabet: &[u8], max: usize) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len)
                .map(|_| {
                    if self.below(4) == 0 {
                        self.next() as u8
                    } else {
                        alphabet[self.below(alphabet.len())]
                    }
                })
                .collect()
        }
    }

    #[test]
    fn never_panics_on_random_streams() {
        // Bytes that matter to the emulator and the key parser, plus anything.
        let alphabet: &[u8] = b"\x1b[?2004hl1049;\r\n\x08\x7f\x03\x04\x05\x0f\x12\x15\x17\x18~ABCDHMPK@ ab\\'\"\xc3\xa9\xe6\x97\xa5*:";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mut t = LineTracker::new(1 + rng.below(100) as u16, 1 + rng.below(40) as u16);
            for _ in 0..200 {
                let held = t.awaiting_echo() || t.awaiting_verdict().is_some();
                let (steps, was_input) = match rng.below(10) {
                    0..=3 => (t.output(&rng.bytes(alphabet, 40)), false),
                    4..=6 => (t.input(&rng.bytes(alphabet, 12)), true),
                    7 => (t.echo_timeout(), false),
                    8 => {
                        let verdict =
                            [Verdict::Allow, Verdict::Cancel, Verdict::Withhold][rng.below(3)];
                        (t.resolve(verdict), false)
                    }
                    _ => {
                        t.resize(rng.below(600) as u16, rng.below(300) as u16);
                        (Vec::new(), false)
                    }
                };
                let submits = steps
                    .iter()
                    .filter(|s| matches!(s, Step::Submit(_)))
                    .count();
                assert!(submits <= 1, "round {round}: {steps:?}");
                if submits == 1 {
                    assert!(
                        matches!(steps.last(), Some(Step::Submit(_))),
                        "round {round}"
                    );
                }
                if held && was_input {
                    assert!(
                        !steps.iter().any(|s| matches!(s, Step::Forward(_))),
                        "round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_typed_byte_is_forwarded_or_held_exactly_once() {
        let alphabet: &[u8] = b"\x1b[200~1\r\nab \x03\x0f\x18\x05\xc3\xa9";
        let mut rng = Rng(42);
        for _ in 0..200 {
            let mut t = shell();
            let mut typed = Vec::new();
            let mut sent = Vec::new();
            let mut dropped = 0;
            for _ in 0..50 {
                let steps = if rng.below(3) == 0 {
                    t.output(&rng.bytes(alphabet, 10))
                } else if rng.below(2) == 0 {
                    let bytes = rng.bytes(alphabet, 10);
                    typed.extend_from_slice(&bytes);
                    t.input(&bytes)
                } else {
                    let mut steps = t.echo_timeout();
                    steps.extend(t.resolve(Verdict::Allow));
                    steps
                };
                for step in steps {
                    match step {
                        Step::Forward(bytes) => sent.extend(bytes),
                        Step::Discarded(n) => dropped += n,
                        Step::Submit(_) => {}
                    }
                }
            }
            // Only Allow was used: what went out is a prefix of what was typed, in order.
            assert_eq!(dropped, 0);
            assert!(typed.starts_with(&sent), "{typed:?} / {sent:?}");
        }
    }
}
