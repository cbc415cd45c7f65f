//! Terminal output → the lines a screen showed: escape sequences removed, `\r`, backspace and a
//! few cursor sequences applied to the current line, complete lines appended to a caller's buffer.
//!
//! Invariant: the assembler never panics and never loses its place, whatever the bytes and however
//! they are split into chunks (inside an escape sequence, inside a UTF-8 character). Text between
//! control bytes is copied with one `extend_from_slice`; only control bytes and escape sequences
//! take the byte-at-a-time path. This runs over every byte `vigil search` reads.
//!
//! What it models: one line, with a cursor counted in characters (not display cells: a wide CJK
//! character counts as one). `\r` returns to column 0 and later text overwrites; backspace moves
//! left; `CSI K`, `J`, `C`, `D`, `G`, `` ` ``, `P`, `@` and `X` act on the line. What it cannot
//! see: cursor moves between rows, so full-screen programs (vim, top) come out as the sequence of
//! texts they drew, not as their final screen.

use memchr::{memchr, memchr2};

/// A line that grows past this many bytes without a line break is emitted as a line of its own, so
/// a stream with no line breaks (a `cat` of a binary file) cannot grow the line buffer unbounded.
pub const MAX_LINE: usize = 64 << 10;

/// OSC, DCS, SOS, PM and APC strings longer than this are abandoned and what follows shows as
/// text: a stray unterminated `ESC ]` must not hide the rest of a session from search.
pub const MAX_STRING: usize = 64 << 10;

/// Cursor moves and insertions act on at most this many characters, whatever a parameter says, so
/// `CSI 4000000000 @` cannot allocate gigabytes. No terminal is this wide.
const MAX_MOVE: usize = 1024;

/// Strips a whole output stream at once: every line, each ended by `\n` (a final unterminated line
/// too), invalid UTF-8 replaced by U+FFFD.
pub fn strip_to_string(bytes: &[u8]) -> String {
    let mut asm = LineAssembler::new();
    let mut out = Vec::with_capacity(bytes.len());
    asm.feed(bytes, &mut out);
    asm.finish(&mut out);
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Turns a stream of terminal bytes, fed in chunks of any size, into complete lines.
#[derive(Debug, Clone)]
pub struct LineAssembler {
    mode: Mode,
    state: State,
    /// The line under construction; it reaches the caller's buffer only when it ends.
    line: Vec<u8>,
    /// The cursor: a byte index into `line`, at most `line.len()`, on a character boundary.
    col: usize,
    /// Bytes have arrived since the last line break.
    in_line: bool,
    /// Input mode: the last byte was `\r`, so a following `\n` ends nothing.
    after_cr: bool,
    csi: Csi,
    /// Bytes consumed by the OSC or DCS-like string in progress.
    string_len: usize,
}

impl Default for LineAssembler {
    fn default() -> Self {
        LineAssembler::new()
    }
}

impl LineAssembler {
    /// An assembler for what a terminal displayed (`Event::Output`).
    pub fn new() -> Self {
        LineAssembler::with_mode(Mode::Output)
    }

    /// An assembler for what a user typed (`Event::Input`): `\r` and `\n` end a line, backspace
    /// and DEL erase the character before them, Ctrl-U erases the line, and escape sequences
    /// (arrow keys, function keys) are dropped without moving anything. An approximation: the
    /// shell's own line editing is not visible here.
    pub fn for_input() -> Self {
        LineAssembler::with_mode(Mode::Input)
    }

    /// Appends every line that `bytes` completes to `out`, each followed by `\n`. An unfinished
    /// line stays inside the assembler until a later chunk or [`LineAssembler::finish`] ends it.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Ground => self.ground(bytes, out),
                State::Osc => self.skip_string(bytes, true),
                State::Str => self.skip_string(bytes, false),
                _ => {
                    let Some((&b, rest)) = bytes.split_first() else {
                        break;
                    };
                    if self.escape_byte(b, out) {
                        rest
                    } else {
                        bytes
                    }
                }
            };
        }
    }

    /// Ends the stream: a non-empty unfinished line is appended to `out` with its `\n`, and the
    /// assembler is ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        *self = LineAssembler::with_mode(self.mode);
    }

    /// True when bytes have arrived since the last line break: the next line appended to the
    /// buffer began in an earlier chunk.
    pub fn in_line(&self) -> bool {
        self.in_line
    }

    /// The unfinished line as it stands.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Output,
    Input,
}

/// Where the escape-sequence parser is. The states follow the DEC/ECMA-48 parser that terminals
/// implement (vt100.net/emu/dec_ansi_parser), reduced to what decides which bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Esc,
    /// After ESC and intermediate bytes (`ESC (`, `ESC #`), waiting for the final byte.
    EscIntermediate,
    /// Inside `ESC [`, waiting for a final byte in 0x40..=0x7e.
    Csi,
    /// Inside `ESC ]`, ended by BEL or ST (`ESC \`).
    Osc,
    /// ESC inside an OSC string: `\` ends it, anything else starts a new sequence.
    OscEsc,
    /// Inside DCS, SOS, PM or APC (`ESC P`, `X`, `^`, `_`), ended by ST only.
    Str,
    /// ESC inside such a string: `\` ends it; anything else is part of the string (tmux doubles
    /// the ESCs of sequences it passes through).
    StrEsc,
}

/// The parts of a control sequence that decide what it does to the line.
#[derive(Debug, Clone, Copy, Default)]
struct Csi {
    /// The first parameter, if it had digits.
    first: Option<u32>,
    /// A `;` or `:` ended the first parameter.
    past_first: bool,
    /// An intermediate byte (0x20..=0x2f) appeared: not a sequence acted on here.
    intermediate: bool,
}

impl Csi {
    /// A parameter byte (0x30..=0x3f): digits of the first parameter count, a separator ends it,
    /// private markers (`?`, `>`) and later parameters do not matter here.
    fn param(&mut self, b: u8) {
        match b {
            b'0'..=b'9' if !self.past_first => {
                let v = self.first.unwrap_or(0);
                let digit = u32::from(b - b'0');
                self.first = Some(v.saturating_mul(10).saturating_add(digit));
            }
            b';' | b':' => self.past_first = true,
            _ => {}
        }
    }
}

impl LineAssembler {
    fn with_mode(mode: Mode) -> Self {
        LineAssembler {
            mode,
            state: State::Ground,
            line: Vec::new(),
            col: 0,
            in_line: false,
            after_cr: false,
            csi: Csi::default(),
            string_len: 0,
        }
    }

    /// Copies text and acts on control bytes until the chunk ends or an escape sequence needs the
    /// state machine (one split across chunks, or one with controls inside it).
    fn ground<'b>(&mut self, mut bytes: &'b [u8], out: &mut Vec<u8>) -> &'b [u8] {
        loop {
            let (text, rest) = bytes.split_at(find_control(bytes));
            let Some((&b, mut rest)) = rest.split_first() else {
                self.text(text, out);
                return rest;
            };
            // On a screen, CR LF ends a line exactly as LF does: the return to column 0 is moot.
            let crlf = b == b'\r' && self.mode == Mode::Output && rest.first() == Some(&b'\n');
            if crlf {
                rest = rest.get(1..).unwrap_or_default();
            }
            if (crlf || b == b'\n')
                && self.line.is_empty()
                && !text.is_empty()
                && text.len() <= MAX_LINE
            {
                // The common case, a whole line inside one chunk: one copy, straight to `out`.
                out.extend_from_slice(text);
                out.push(b'\n');
                self.in_line = false;
                self.after_cr = false;
            } else {
                self.text(text, out);
                if crlf {
                    self.end_line(out);
                } else if b == 0x1b {
                    self.in_line = true;
                    match self.whole_csi(rest) {
                        Some(len) => rest = rest.get(len..).unwrap_or_default(),
                        None => {
                            self.state = State::Esc;
                            return rest;
                        }
                    }
                } else {
                    self.control(b, out);
                }
            }
            bytes = rest;
        }
    }

    /// Acts on a control sequence (`[`, parameters, final byte) at the start of `rest` when the
    /// chunk holds all of it and no control byte sits inside it; returns its length. Otherwise
    /// `None`, and the byte-at-a-time state machine takes the sequence.
    fn whole_csi(&mut self, rest: &[u8]) -> Option<usize> {
        let body = rest.strip_prefix(b"[")?;
        let mut csi = Csi::default();
        for (i, &b) in body.iter().enumerate() {
            match b {
                0x30..=0x3f => csi.param(b),
                0x20..=0x2f => csi.intermediate = true,
                0x40..=0x7e => {
                    self.csi = csi;
                    self.csi_done(b);
                    return Some(i + 2);
                }
                _ => return None,
            }
        }
        None
    }

    /// Skips the body of an OSC string (`bel_ends`) or a DCS-like one, up to the byte that may
    /// end it.
    fn skip_string<'b>(&mut self, bytes: &'b [u8], bel_ends: bool) -> &'b [u8] {
        self.in_line = true;
        let found = if bel_ends {
            memchr2(0x07, 0x1b, bytes)
        } else {
            memchr(0x1b, bytes)
        };
        let body = found.unwrap_or(bytes.len());
        let budget = MAX_STRING.saturating_sub(self.string_len);
        if body > budget {
            // Too long to be a real string: give up on it and show what follows.
            self.state = State::Ground;
            return bytes.get(budget..).unwrap_or_default();
        }
        self.string_len += body;
        let rest = bytes.get(body..).unwrap_or_default();
        match rest.split_first() {
            Some((&0x1b, rest)) => {
                self.state = if bel_ends {
                    State::OscEsc
                } else {
                    State::StrEsc
                };
                rest
            }
            Some((_bel, rest)) => {
                self.state = State::Ground;
                rest
            }
            None => rest,
        }
    }

    /// Acts on one byte inside an escape sequence. Returns false when the byte was not consumed
    /// and must be read again in the new state.
    fn escape_byte(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.in_line = true;
        match self.state {
            State::Esc => match b {
                b'[' => {
                    self.csi = Csi::default();
                    self.state = State::Csi;
                }
                b']' => self.start_string(State::Osc),
                b'P' | b'X' | b'^' | b'_' => self.start_string(State::Str),
                0x1b => {}
                0x20..=0x2f => self.state = State::EscIntermediate,
                0x30..=0x7e => self.state = State::Ground,
                _ => {
                    // A control byte or non-ASCII after ESC: the sequence is abandoned.
                    self.state = State::Ground;
                    return false;
                }
            },
            State::EscIntermediate => match b {
                0x1b => self.state = State::Esc,
                0x00..=0x1f => self.control(b, out),
                0x20..=0x2f => {}
                0x30..=0x7e => self.state = State::Ground,
                _ => {
                    self.state = State::Ground;
                    return false;
                }
            },
            State::Csi => match b {
                0x30..=0x3f => self.csi.param(b),
                0x1b => self.state = State::Esc,
                // Controls inside a sequence act as if outside it, as on a terminal.
                0x00..=0x1f => self.control(b, out),
                0x20..=0x2f => self.csi.intermediate = true,
                0x40..=0x7e => {
                    self.state = State::Ground;
                    self.csi_done(b);
                }
                // Junk inside a sequence: ignored.
                _ => {}
            },
            State::OscEsc => {
                if b == b'\\' {
                    self.state = State::Ground;
                } else {
                    self.state = State::Esc;
                    return false;
                }
            }
            State::StrEsc => {
                self.state = if b == b'\\' {
                    State::Ground
                } else {
                    State::Str
                };
            }
            // Ground, Osc and Str are handled a span at a time by `feed`.
            State::Ground | State::Osc | State::Str => return false,
        }
        true
    }

    fn start_string(&mut self, state: State) {
        self.state = state;
        self.string_len = 0;
    }

    /// Acts on a C0 control byte or DEL met in ground state (or inside a control sequence).
    fn control(&mut self, b: u8, out: &mut Vec<u8>) {
        let after_cr = std::mem::take(&mut self.after_cr);
        match (b, self.mode) {
            (b'\n', Mode::Input) if after_cr => {}
            (b'\n', _) => self.end_line(out),
            (b'\t', _) => self.text(b"\t", out),
            (0x1b, _) => {
                self.in_line = true;
                self.state = State::Esc;
            }
            (b'\r', Mode::Output) => {
                self.in_line = true;
                self.col = 0;
            }
            (b'\r', Mode::Input) => {
                self.end_line(out);
                self.after_cr = true;
            }
            (0x08, Mode::Output) => {
                self.in_line = true;
                self.col = char_before(&self.line, self.col);
            }
            (0x08 | 0x7f, Mode::Input) => {
                self.in_line = true;
                self.col = char_before(&self.line, self.col);
                self.line.truncate(self.col);
            }
            (0x15, Mode::Input) => {
                self.in_line = true;
                self.line.clear();
                self.col = 0;
            }
            _ => self.in_line = true,
        }
    }

    /// Writes text at the cursor: appended at the end of the line, overwriting inside it.
    fn text(&mut self, text: &[u8], out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        self.in_line = true;
        self.after_cr = false;
        if self.col >= self.line.len() {
            return self.append(text, out);
        }
        let chars = text.iter().filter(|b| !is_continuation(**b)).count();
        let end = chars_after(&self.line, self.col, chars);
        self.line.splice(self.col..end, text.iter().copied());
        self.col = (self.col + text.len()).min(self.line.len());
        if self.line.len() >= MAX_LINE {
            self.end_line(out);
        }
    }

    /// Appends at the end of the line, cutting it into lines of at most [`MAX_LINE`] bytes (at a
    /// character boundary when there is one near the cut). A full line is emitted when more text
    /// arrives, so a line of exactly [`MAX_LINE`] bytes and its line break stay one line.
    fn append(&mut self, mut text: &[u8], out: &mut Vec<u8>) {
        loop {
            let room = MAX_LINE.saturating_sub(self.line.len());
            if text.len() <= room {
                self.line.extend_from_slice(text);
                self.col = self.line.len();
                return;
            }
            let cut = (room.saturating_sub(3)..=room)
                .rev()
                .find(|&i| i > 0 && text.get(i).is_some_and(|b| !is_continuation(*b)))
                .unwrap_or(room);
            let (head, tail) = text.split_at(cut.min(text.len()));
            self.line.extend_from_slice(head);
            self.end_line(out);
            text = tail;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line);
        out.push(b'\n');
        self.line.clear();
        self.col = 0;
        self.in_line = false;
    }

    /// A control sequence ended with final byte `b`.
    fn csi_done(&mut self, b: u8) {
        if !self.csi.intermediate && self.mode == Mode::Output {
            self.csi_final(b);
        }
    }

    /// Applies the control sequences that change what the current line shows.
    fn csi_final(&mut self, b: u8) {
        let n = (self.csi.first.unwrap_or(1).max(1) as usize).min(MAX_MOVE);
        match b {
            // Erase in line; erase in display treated as its effect on this line.
            b'K' | b'J' => match self.csi.first.unwrap_or(0) {
                0 => self.line.truncate(self.col),
                1 => self.blank_before_cursor(),
                _ => {
                    self.blank_before_cursor();
                    self.line.truncate(self.col);
                }
            },
            // Cursor forward, back, to an absolute column.
            b'C' => self.move_right(n),
            b'D' => {
                for _ in 0..n {
                    self.col = char_before(&self.line, self.col);
                }
            }
            b'G' | b'`' => {
                self.col = 0;
                self.move_right(n - 1);
            }
            // Delete characters: the rest of the line shifts left.
            b'P' => {
                let end = chars_after(&self.line, self.col, n);
                self.line.drain(self.col..end);
            }
            // Insert blanks: the rest of the line shifts right.
            b'@' => {
                self.line
                    .splice(self.col..self.col, std::iter::repeat_n(b' ', n));
            }
            // Erase characters: blanks in place, the cursor stays.
            b'X' => {
                let end = chars_after(&self.line, self.col, n);
                let blanks = self.line.get(self.col..end).map_or(0, char_count);
                self.line
                    .splice(self.col..end, std::iter::repeat_n(b' ', blanks));
            }
            _ => {}
        }
    }

    fn move_right(&mut self, n: usize) {
        let end = chars_after(&self.line, self.col, n);
        let moved = self.line.get(self.col..end).map_or(0, char_count);
        self.col = end;
        if moved < n {
            // Past the end of the text: the screen shows blanks there.
            self.line.resize(self.line.len() + (n - moved), b' ');
            self.col = self.line.len();
        }
    }

    /// Blanks the line from its start through the cursor's character (EL 1 is inclusive).
    fn blank_before_cursor(&mut self) {
        let end = chars_after(&self.line, self.col, 1);
        let before = self.line.get(..self.col).map_or(0, char_count);
        let blanks = self.line.get(..end).map_or(0, char_count);
        self.line.splice(..end, std::iter::repeat_n(b' ', blanks));
        self.col = before;
    }
}

/// The index of the first byte that is not plain text: a C0 control other than tab, or DEL.
/// `bytes.len()` when there is none.
///
/// memchr cannot search for a class of 31 bytes, so this tests eight bytes at a time with word
/// arithmetic and looks at single bytes only where a word's flags point.
fn find_control(bytes: &[u8]) -> usize {
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut flags = control_flags(word.try_into().unwrap_or([0; 8]));
        // Flags are exact for the lowest flagged byte; above it a borrow can set a false one,
        // and tabs are flagged too, so each flag is checked against its byte.
        while flags != 0 {
            let i = (flags.trailing_zeros() / 8) as usize;
            if word.get(i).is_some_and(|&b| is_control(b)) {
                return base + i;
            }
            flags &= !(0xff << (i * 8));
        }
        base += 8;
    }
    let tail = words.remainder();
    base + tail
        .iter()
        .position(|&b| is_control(b))
        .unwrap_or(tail.len())
}

/// Flags (the high bit of a byte) for the bytes of a little-endian word that are below 0x20 (tab
/// included) or are 0x7f: the classic "has a byte less than n" and "has a zero byte" tests. Every
/// such byte is flagged; a byte above one may be flagged falsely by the borrow.
#[inline(always)]
fn control_flags(word: [u8; 8]) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let x = u64::from_le_bytes(word);
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let del = x ^ (ONES * 0x7f);
    let del = del.wrapping_sub(ONES) & !del & HIGH;
    below_space | del
}

fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

fn char_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| !is_continuation(**b)).count()
}

/// The byte index `n` characters after `from` in `line`, or `line.len()` if the line ends first.
fn chars_after(line: &[u8], from: usize, n: usize) -> usize {
    let mut i = from;
    for _ in 0..n {
        if i >= line.len() {
            break;
        }
        i += 1;
        while line.get(i).is_some_and(|b| is_continuation(*b)) {
            i += 1;
        }
    }
    i.min(line.len())
}

/// The start of the character before byte index `col` (0 at the start of the line).
fn char_before(line: &[u8], col: usize) -> usize {
    let mut i = col.min(line.len());
    while i > 0 {
        i -= 1;
        if !line.get(i).is_some_and(|b| is_continuation(*b)) {
            break;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_chunks(chunks: &[&[u8]]) -> String {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        for c in chunks {
            asm.feed(c, &mut out);
        }
        asm.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn input(bytes: &[u8]) -> String {
        let mut asm = LineAssembler::for_input();
        let mut out = Vec::new();
        asm.feed(bytes, &mut out);
        asm.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strips_as_a_screen_shows() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"plain", "plain\n"),
            (b"a\r\nb\r\n", "a\nb\n"),
            (b"a\nb", "a\nb\n"),
            (b"a\r\n\r\nb\r\n", "a\n\nb\n"),
            (b"\x1b[1;31mred\x1b[0m text", "red text\n"),
            (b"\x1b[?2004hprompt$ ", "prompt$ \n"),
            (b"\x1b]0;user@host: ~\x07$ ls", "$ ls\n"),
            (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link\n"),
            (b"\x1bPq#0;2;0;0;0#1\x1b\\after", "after\n"),
            (b"\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\ok", "ok\n"),
            (b"\x1b(B\x1b)0\x1b=\x1b>\x1b7\x1b8x", "x\n"),
            (b"tab\there", "tab\there\n"),
            (b"bell\x07 nul\x00 del\x7f so\x0e", "bell nul del so\n"),
            // A lone CR returns to column 0; later text overwrites.
            (b"10%\r20%\r30%\r\n", "30%\n"),
            (b"abcdef\rXY\r\n", "XYcdef\n"),
            // Backspace moves left; "\b \b" is how a shell erases.
            (b"lsx\x08 \x08\r\n", "ls \n"),
            (b"ab\x08\x08\x08\x08c", "cb\n"),
            // Erase in line, after a redraw.
            (b"$ old command\r\x1b[K$ new\r\n", "$ new\n"),
            (b"$ long\r$ x\x1b[0K\r\n", "$ x\n"),
            (b"abcdef\x1b[3D\x1b[1K!", "   !ef\n"),
            (b"abcdef\x1b[2D\x1b[2K", "    \n"),
            // Cursor moves, delete and insert.
            (b"ab\x1b[3Cc", "ab   c\n"),
            (b"abcd\x1b[2Dx", "abxd\n"),
            (b"abcd\x1b[2GX", "aXcd\n"),
            (b"abcdef\x1b[3D\x1b[2P", "abcf\n"),
            (b"abcd\x1b[2D\x1b[2@xy", "abxycd\n"),
            (b"abcd\x1b[3D\x1b[2X", "a  d\n"),
            // Overwriting multi-byte characters counts characters, not bytes.
            ("€uro\rE".as_bytes(), "Euro\n"),
            ("abc\rü".as_bytes(), "übc\n"),
            ("日本語\x1b[2D\x1b[K".as_bytes(), "日\n"),
        ];
        for (input, want) in cases {
            assert_eq!(
                strip_to_string(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_lines() {
        let stream: &[u8] = "\x1b[1;32muser@host\x1b[0m:~$ ls\r\n\x1b]0;title\x07€ 日本\r\n\
            50%\r100%\r\n\x1bP+q\x1b\\ok\x1b(Bend\x08\x08ND\r\n"
            .as_bytes();
        let whole = strip_to_string(stream);
        assert_eq!(whole, "user@host:~$ ls\n€ 日本\n100%\nokeND\n");
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(strip_chunks(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(strip_chunks(&bytes), whole);
    }

    #[test]
    fn a_character_split_across_an_overwrite_stays_whole() {
        assert_eq!(strip_chunks(&[b"abc\r\xe2", b"\x82\xac\r\n"]), "€bc\n");
    }

    #[test]
    fn an_unterminated_string_gives_up_and_shows_what_follows() {
        let mut stream = b"before\r\n\x1b]0;".to_vec();
        stream.extend(std::iter::repeat_n(b'x', MAX_STRING));
        stream.extend_from_slice(b"visible\r\n");
        let text = strip_to_string(&stream);
        assert!(text.starts_with("before\n"));
        assert!(text.ends_with("xvisible\n"), "{}", &text[text.len() - 20..]);
    }

    #[test]
    fn a_line_without_breaks_is_cut_at_the_cap() {
        let stream = vec![b'a'; MAX_LINE * 2 + 10];
        let text = strip_to_string(&stream);
        let lens: Vec<usize> = text.lines().map(str::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn huge_parameters_are_clamped() {
        let text = strip_to_string(b"ab\x1b[4000000000@\x1b[99999999999Cz");
        assert!(text.len() < 3 * MAX_MOVE, "{}", text.len());
        assert!(text.starts_with("ab") && text.ends_with("z\n"));
    }

    #[test]
    fn in_line_says_whether_a_line_is_open() {
        let mut asm = LineAssembler::new();
        let mut out = Vec::new();
        assert!(!asm.in_line());
        asm.feed(b"one\r\ntw", &mut out);
        assert!(asm.in_line());
        assert_eq!(out, b"one\n");
        assert_eq!(asm.pending(), b"tw");
        asm.feed(b"o\r\n", &mut out);
        assert!(!asm.in_line());
        asm.feed(b"\x1b[0m", &mut out);
        assert!(asm.in_line());
        asm.finish(&mut out);
        assert_eq!(out, b"one\ntwo\n");
        assert!(!asm.in_line());
    }

    #[test]
    fn input_mode_reconstructs_typed_lines() {
        assert_eq!(input(b"ls -la\r"), "ls -la\n");
        assert_eq!(input(b"echo hi\r\nwhoami\n"), "echo hi\nwhoami\n");
        assert_eq!(input(b"lx\x7fs\r"), "ls\n");
        assert_eq!(input(b"rm -rf\x15pwd\r"), "pwd\n");
        assert_eq!(input(b"ca\x1b[Dt\r"), "cat\n");
        assert_eq!(input("é\x7fe\r".as_bytes()), "e\n");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic generator: every byte value, in every state, many times.
        let mut x: u32 = 0x1234_5678;
        let mut stream = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Bias towards the bytes that drive the parser.
            let b = match x % 8 {
                0 => 0x1b,
                1 => b"[]P\\;?0123456789KJCDGP@X`\r\n\x08\x07"[(x >> 8) as usize % 28],
                _ => (x >> 16) as u8,
            };
            stream.push(b);
        }
        for chunk in [1, 7, 4096, stream.len()] {
            let mut asm = LineAssembler::new();
            let mut input = LineAssembler::for_input();
            let mut out = Vec::new();
            for c in stream.chunks(chunk) {
                asm.feed(c, &mut out);
                input.feed(c, &mut out);
                assert!(asm.col <= asm.line.len());
            }
            asm.finish(&mut out);
            input.finish(&mut out);
        }
    }

    #[test]
    fn find_control_finds_the_first_control_in_every_position() {
        for len in 0..80 {
            let clean = vec![b'a'; len];
            assert_eq!(find_control(&clean), len);
            for pos in 0..len {
                for b in [0x00, 0x1b, b'\r', b'\n', 0x08, 0x7f] {
                    let mut s = clean.clone();
                    s[pos] = b;
                    assert_eq!(find_control(&s), pos);
                }
                let mut s = clean.clone();
                s[pos] = b'\t';
                assert_eq!(find_control(&s), len);
            }
        }
        for b in 0..=255u8 {
            let want = if is_control(b) { 40 } else { 64 };
            let mut s = vec![b'\t'; 64];
            s[40] = b;
            assert_eq!(find_control(&s), want, "byte {b:#x}");
            // The word test flags a word exactly when it holds a byte below 0x20 or 0x7f,
            // whatever sits beside it.
            for other in 0..=255u8 {
                let flagged = |c: u8| c < 0x20 || c == 0x7f;
                let want = flagged(b) || flagged(other);
                let words = [
                    [b, other, b, other, b, other, b, other],
                    [other, other, other, other, other, other, other, b],
                    [b, other, other, other, other, other, other, other],
                ];
                for w in words {
                    assert_eq!(control_flags(w) != 0, want, "{w:x?}");
                }
            }
        }
    }
}
