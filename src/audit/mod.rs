//! The audit log: one JSON object per line for every authentication, session, decision and
//! refusal, with identity, source address, target, session id and time; hash-chained, with
//! checkpoints signed by the bastion's Ed25519 key, rotated into segments that are shipped to
//! the recording store (formats/audit-v1.md).
//!
//! Invariant: the local file is the source of truth. A line is appended (one `write`) before
//! `record` returns, with one exception: `command.allow` lines (one per allowed statement or
//! command, the hot path) are chained at once but written in groups, at the latest about two
//! `GROUP_WINDOW`s later (50 ms: the daemon looks every `GROUP_WINDOW` while lines wait, and
//! sleeps otherwise), and before any other line (so a deny, an authentication or a session
//! event is never written ahead of an allow that happened before it). What this gives up: a crash of the vigil process (not a clean
//! stop, which writes them) loses the allow lines of its last 50 ms; the session recordings
//! hold those statements too. The store only ever receives closed segments and checkpoints,
//! later, from a task that may fail and retry without holding up or losing an event.

pub mod chain;
pub mod files;
pub mod read;
pub mod ship;

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::recording::keys::Signer;

/// One audit event. Fields that do not apply are omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// e.g. `auth.success`, `auth.failure`, `session.start`, `session.end`, `command.deny`,
    /// `access.refused`, `config.load`. `audit.*` is reserved for the log itself.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The approval request an event concerns (`approval.*`, `grant.use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
    /// Who asked, when `user` is someone else acting on the request (an approver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// The justification or reason given with a request or decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(action: &str) -> Self {
        AuditEvent {
            action: action.to_string(),
            ..Default::default()
        }
    }
}

/// The action of an allowed statement or command: its lines are written in groups.
pub const ALLOW: &str = "command.allow";

/// How long an allow line may wait in memory before it is written (see the module docs).
pub const GROUP_WINDOW: Duration = Duration::from_millis(25);
/// Waiting lines are written once they reach this many bytes.
const GROUP_BYTES: usize = 64 << 10;

/// The validated `[audit]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The active segment (`server.audit_log`); closed segments sit beside it.
    pub path: PathBuf,
    /// How often a checkpoint is signed (and closed segments are shipped) while events arrive.
    pub checkpoint_interval: Duration,
    /// A segment is closed when it reaches this size...
    pub rotate_size: u64,
    /// ...or this age.
    pub rotate_interval: Duration,
}

impl AuditSettings {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditSettings {
            path: path.into(),
            checkpoint_interval: Duration::from_secs(60),
            rotate_size: 16 << 20,
            rotate_interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// (`error`, not `source`: the message already says it, once.)
    #[error("audit log {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("audit log {path}: {why}")]
    Damaged { path: String, why: String },
}

/// A checkpoint line waiting to be copied to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCheckpoint {
    pub seq: u64,
    pub line: Vec<u8>,
}

/// Appends hash-chained audit events to the active segment (and to the tracing log).
pub struct Audit {
    writer: Option<Mutex<Writer>>,
    /// Told when an allow line starts a new group (`Audit::lines_waiting`): the flusher sleeps
    /// while nothing waits.
    waiting: tokio::sync::Notify,
}

struct Writer {
    /// `flock` on `<audit_log>.lock`: one vigil process per log.
    _lock: File,
    settings: AuditSettings,
    signer: Arc<Signer>,
    file: File,
    /// The seq the next line gets, and the hash of the last line written.
    next_seq: u64,
    prev: [u8; 32],
    /// First seq of the active segment; `None` while it is empty.
    segment_first: Option<u64>,
    segment_bytes: u64,
    segment_opened: Instant,
    /// Lines written since the last checkpoint.
    unsealed: u64,
    pending: Vec<PendingCheckpoint>,
    /// A write failed: the active file may end in part of a line, and what it held is lost
    /// (said as "a `session.start` event is lost", or "3 events ... are lost").
    torn: Option<String>,
    /// Lines chained but not written yet (allow lines, `GROUP_WINDOW`), how many, the action
    /// of the last, and since when they wait with the chain state before the first of them
    /// (what the chain goes back to when their write fails).
    group: Vec<u8>,
    group_lines: u64,
    group_last: String,
    group_since: Option<(Instant, u64, [u8; 32])>,
    /// `GROUP_WINDOW`; tests set it so as not to depend on the machine's speed.
    group_window: Duration,
}

impl Drop for Writer {
    /// Lines still waiting are written when the log is closed or dropped.
    fn drop(&mut self) {
        if let Err(e) = self.write_group() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// At most this many checkpoints wait for the store; older ones are still in their segments.
const MAX_PENDING: usize = 10_000;

impl Audit {
    /// Opens the log at `settings.path`, continuing the chain from the last line written (in the
    /// active segment, or the newest closed one). A damaged tail is not built on: that file is
    /// closed as it is and a new segment starts with an `audit.break` line that names it.
    pub fn open(settings: AuditSettings, signer: Arc<Signer>) -> Result<Audit, AuditError> {
        let path = settings.path.clone();
        let io = |error| AuditError::Io {
            path: path.display().to_string(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock = crate::store::spool::exclusive_lock(
            Path::new(&lock_name),
            "another vigil process writes this audit log",
        )
        .map_err(io)?;
        let tail = files::recover_tail(&path)?;
        let mut broken = None;
        if let Some(damage) = &tail.damage {
            // Close the damaged active file under its segment name; the chain goes on from
            // its last good line in a new file.
            if tail.in_active {
                let first = tail.active_first.ok_or_else(|| AuditError::Damaged {
                    path: path.display().to_string(),
                    why: format!(
                        "{damage}, and its first line is unreadable too; move it aside to start a new log"
                    ),
                })?;
                let to = files::segment_path(&path, first);
                files::rename_new(&path, &to).map_err(|e| AuditError::Damaged {
                    path: path.display().to_string(),
                    why: format!("{damage}, and it cannot be closed as {}: {e}", to.display()),
                })?;
                broken = Some(format!(
                    "{} is damaged after seq {}: {damage}; the chain continues from that line",
                    files::file_name(&to),
                    tail.last_seq.map_or("(none)".into(), |s| s.to_string())
                ));
            } else {
                broken = Some(format!(
                    "{}: {damage}; the chain continues from its last good line",
                    tail.file
                ));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let segment_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let writer = Writer {
            _lock: lock,
            settings,
            signer,
            file,
            next_seq: tail.last_seq.map_or(0, |s| s + 1),
            prev: tail.last_hash.unwrap_or(chain::GENESIS),
            segment_first: if broken.is_none() && tail.in_active {
                tail.active_first
            } else {
                None
            },
            segment_bytes: if broken.is_none() { segment_bytes } else { 0 },
            segment_opened: Instant::now(),
            unsealed: 0,
            pending: Vec::new(),
            torn: None,
            group: Vec::new(),
            group_lines: 0,
            group_last: String::new(),
            group_since: None,
            group_window: GROUP_WINDOW,
        };
        let audit = Audit {
            writer: Some(Mutex::new(writer)),
            waiting: tokio::sync::Notify::new(),
        };
        if let Some(why) = broken {
            tracing::error!(%why, "the audit log's tail is damaged");
            audit.record(AuditEvent {
                detail: Some(why),
                ..AuditEvent::new(chain::BREAK)
            });
        }
        Ok(audit)
    }

    /// An audit log that only goes to the tracing log.
    pub fn tracing_only() -> Audit {
        Audit {
            writer: None,
            waiting: tokio::sync::Notify::new(),
        }
    }

    /// Appends one event. Short and synchronous: format, hash, one `write`; a segment that
    /// reaches its size is closed (checkpoint, rename) on the way.
    pub fn record(&self, mut event: AuditEvent) {
        // (The user and target names too: a client that fails to log in chooses them.)
        for text in [
            &mut event.command,
            &mut event.detail,
            &mut event.reason,
            &mut event.user,
            &mut event.target,
        ]
        .into_iter()
        .flatten()
        {
            cap(text);
        }
        tracing::info!(target: "vigil::audit", action = %event.action, user = ?event.user, target_name = ?event.target, detail = ?event.detail, "audit");
        let Some(w) = &self.writer else {
            return;
        };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.ready() {
            tracing::error!(error = %e, "cannot write the audit log");
            return;
        }
        let line = chain::encode(w.next_seq, &now(), &event, &w.prev);
        w.append_and_rotate(line, &event.action);
    }

    /// Appends the `command.allow` line of an allowed statement or command: `base` (the
    /// session's identity) with `command` and `rule`. The same line `record` would write,
    /// made without copying `base`; it waits up to two `GROUP_WINDOW`s to be written with
    /// others.
    pub fn record_allowed(&self, base: &AuditEvent, command: &str, rule: Option<&str>) {
        tracing::info!(target: "vigil::audit", action = ALLOW, user = ?base.user, target_name = ?base.target, "audit");
        let Some(w) = &self.writer else {
            return;
        };
        let capped = (command.len() > MAX_TEXT).then(|| {
            let mut c = command.to_string();
            cap(&mut c);
            c
        });
        // `AuditEvent`'s members, in its order, for `chain::encode_strings`.
        let members = [
            ("action", Some(ALLOW)),
            ("user", base.user.as_deref()),
            ("source", base.source.as_deref()),
            ("target", base.target.as_deref()),
            ("session", base.session.as_deref()),
            ("protocol", base.protocol.as_deref()),
            ("command", Some(capped.as_deref().unwrap_or(command))),
            ("rule", rule),
        ];
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.ready() {
            tracing::error!(error = %e, "cannot write the audit log");
            return;
        }
        let mut time = [0u8; TIME_LEN];
        let line = chain::encode_strings(w.next_seq, now_into(&mut time), &members, &w.prev);
        let started = w.group_since.is_none();
        w.append_and_rotate(line, ALLOW);
        if started && w.group_since.is_some() {
            self.waiting.notify_one();
        }
    }

    /// Returns once an allow line may have started a group since the last call (the daemon's
    /// flusher then calls `flush_due` until `lines_wait` is false).
    pub async fn lines_waiting(&self) {
        self.waiting.notified().await
    }

    /// Lines are waiting to be written.
    pub fn lines_wait(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| {
            w.lock()
                .unwrap_or_else(|p| p.into_inner())
                .group_since
                .is_some()
        })
    }

    /// Writes the waiting allow lines once the oldest has waited `GROUP_WINDOW` (the daemon
    /// calls this every `GROUP_WINDOW` while lines wait).
    pub fn flush_due(&self) {
        let Some(w) = &self.writer else {
            return;
        };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if w.group_due() {
            w.flush_group();
        }
    }

    /// The periodic work: a checkpoint when events arrived since the last one, and closing the
    /// segment when it is old enough.
    pub fn tick(&self) {
        let Some(w) = &self.writer else {
            return;
        };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        let result = if (w.segment_first.is_some() || w.group_lines > 0)
            && w.segment_opened.elapsed() >= w.settings.rotate_interval
        {
            w.close_segment("rotate")
        } else if w.unsealed > 0 || w.group_lines > 0 {
            w.checkpoint("interval", false)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write an audit checkpoint");
        }
    }

    /// Closes the active segment with a checkpoint (at shutdown), so that everything written
    /// is sealed and can be shipped.
    pub fn close(&self) {
        let Some(w) = &self.writer else {
            return;
        };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.close_segment("shutdown") {
            tracing::error!(error = %e, "cannot close the audit log");
        }
    }

    /// Checkpoints not yet copied to the store, oldest first.
    pub fn pending(&self) -> Vec<PendingCheckpoint> {
        match &self.writer {
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).pending.clone(),
            None => Vec::new(),
        }
    }

    /// Forgets the pending checkpoint `seq`: the store has it.
    pub fn shipped(&self, seq: u64) {
        if let Some(w) = &self.writer {
            w.lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending
                .retain(|c| c.seq != seq);
        }
    }

    /// Where the log is, when it is written to a file.
    pub fn path(&self) -> Option<PathBuf> {
        self.writer.as_ref().map(|w| {
            w.lock()
                .unwrap_or_else(|p| p.into_inner())
                .settings
                .path
                .clone()
        })
    }
}

impl Writer {
    /// Call before encoding a line: after a failed write it writes an `audit.break` line first.
    fn ready(&mut self) -> std::io::Result<()> {
        if let Some(lost) = self.torn.clone() {
            self.recover_from_failed_write(&lost)?;
        }
        Ok(())
    }

    /// `append`, with the errors logged, then closing the segment once it is full.
    fn append_and_rotate(&mut self, line: Vec<u8>, action: &str) {
        if let Err(e) = self.append(line, action) {
            tracing::error!(error = %e, %action, "cannot write the audit log");
            return;
        }
        if self.segment_bytes >= self.settings.rotate_size {
            if let Err(e) = self.close_segment("rotate") {
                tracing::error!(error = %e, "cannot close the audit log segment");
            }
        }
    }

    /// Chains `line` and writes it, with the lines waiting before it, in one `write`; an allow
    /// line waits instead (up to `GROUP_WINDOW` or `GROUP_BYTES`).
    fn append(&mut self, mut line: Vec<u8>, action: &str) -> std::io::Result<()> {
        let h = chain::hash(&line);
        line.push(b'\n');
        if self.group_since.is_none() {
            self.group_since = Some((Instant::now(), self.next_seq, self.prev));
        }
        self.group.extend_from_slice(&line);
        self.group_lines += 1;
        self.group_last.clear();
        self.group_last.push_str(action);
        self.prev = h;
        self.next_seq += 1;
        if action == ALLOW && self.group.len() < GROUP_BYTES && !self.group_due() {
            return Ok(());
        }
        self.write_group()
    }

    fn group_due(&self) -> bool {
        self.group_since
            .is_some_and(|(since, ..)| since.elapsed() >= self.group_window)
    }

    /// `write_group`, with a failure logged (it is recorded in the log with the next line).
    fn flush_group(&mut self) {
        if let Err(e) = self.write_group() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Writes the waiting lines. When that fails they are lost: the chain goes back to the
    /// line before them, and the next line is an `audit.break` that says what was lost.
    fn write_group(&mut self) -> std::io::Result<()> {
        let Some((_, first_seq, first_prev)) = self.group_since.take() else {
            return Ok(());
        };
        let lines = std::mem::take(&mut self.group_lines);
        let written = self.file.write_all(&self.group);
        let len = self.group.len() as u64;
        self.group.clear();
        if let Err(e) = written {
            self.next_seq = first_seq;
            self.prev = first_prev;
            self.torn = Some(match lines {
                1 => format!("a `{}` event is lost", self.group_last),
                n => format!(
                    "{n} events, seq {first_seq} to {} (the last a `{}`), are lost",
                    first_seq + n - 1,
                    self.group_last
                ),
            });
            return Err(e);
        }
        self.segment_first.get_or_insert(first_seq);
        self.segment_bytes += len;
        self.unsealed += lines;
        Ok(())
    }

    fn checkpoint(&mut self, detail: &str, segment_end: bool) -> std::io::Result<()> {
        self.ready()?;
        let seq = self.next_seq;
        let line =
            chain::encode_checkpoint(seq, &now(), detail, &self.prev, segment_end, &self.signer);
        self.append(line.clone(), chain::CHECKPOINT)?;
        self.file.sync_data()?;
        self.unsealed = 0;
        self.pending.push(PendingCheckpoint { seq, line });
        let excess = self.pending.len().saturating_sub(MAX_PENDING);
        self.pending.drain(..excess);
        Ok(())
    }

    /// After a failed write (a full disk) the active file may end in part of a line. vigil
    /// knows how long the file was before that write, so it cuts its own fragment (never more)
    /// and records the loss with `audit.break` before the next line: no line is built on a
    /// fragment, and the chain says that an event is missing and which.
    fn recover_from_failed_write(&mut self, lost: &str) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len > self.segment_bytes {
            self.file.set_len(self.segment_bytes)?;
        }
        self.torn = None;
        let event = AuditEvent {
            detail: Some(format!(
                "a write to the audit log failed after seq {}: {lost} ({} bytes of it were cut)",
                self.next_seq.saturating_sub(1),
                len.saturating_sub(self.segment_bytes)
            )),
            ..AuditEvent::new(chain::BREAK)
        };
        let line = chain::encode(self.next_seq, &now(), &event, &self.prev);
        if let Err(e) = self.append(line, chain::BREAK) {
            self.torn = Some(lost.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Seals the active segment with a closing checkpoint and renames it to its segment name;
    /// the next line goes to a new active file. Nothing to do while it is empty.
    fn close_segment(&mut self, why: &str) -> std::io::Result<()> {
        self.ready()?;
        self.write_group()?;
        let Some(first) = self.segment_first else {
            return Ok(());
        };
        self.checkpoint(why, true)?;
        let path = &self.settings.path;
        files::rename_new(path, &files::segment_path(path, first))?;
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.segment_first = None;
        self.segment_bytes = 0;
        self.segment_opened = Instant::now();
        Ok(())
    }
}

/// The longest free text (`command`, `detail`, `reason`) kept in a line, in bytes.
pub const MAX_TEXT: usize = 8 << 10;

/// Cuts a longer text at `MAX_TEXT` (on a character boundary) and says what was cut, with the
/// SHA-256 of the whole, which matches it to the session recording that holds it all.
fn cap(text: &mut String) {
    if text.len() <= MAX_TEXT {
        return;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let digest = hex::encode(crate::recording::keys::sha256(text.as_bytes()));
    let more = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… [{more} more bytes; sha256 of all: {digest}]"));
}

fn now() -> String {
    let mut time = [0u8; TIME_LEN];
    now_into(&mut time).to_string()
}

/// The length of a line's `time`: RFC 3339 in UTC with microseconds.
const TIME_LEN: usize = "2026-01-01T00:00:00.000000Z".len();

/// The time now as `humantime::format_rfc3339_micros` writes it, into `buf`. The date and
/// time of day are formatted once a second (per thread); the microseconds each time.
fn now_into(buf: &mut [u8; TIME_LEN]) -> &str {
    time_into(SystemTime::now(), buf)
}

fn time_into(t: SystemTime, buf: &mut [u8; TIME_LEN]) -> &str {
    use std::cell::Cell;
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let Ok(since) = t.duration_since(std::time::UNIX_EPOCH) else {
        return fallback_time(t, buf);
    };
    let secs = since.as_secs();
    let (cached, prefix) = SECOND.get();
    let prefix = if cached == secs {
        prefix
    } else {
        let whole = humantime::format_rfc3339_seconds(t).to_string();
        let mut p = [0u8; 19];
        match whole.as_bytes().get(..19) {
            Some(b) if whole.len() == 20 => p.copy_from_slice(b),
            // Past year 9999 (or before 1970): as humantime writes it, not cached.
            _ => return fallback_time(t, buf),
        }
        SECOND.set((secs, p));
        p
    };
    buf[..19].copy_from_slice(&prefix);
    buf[19] = b'.';
    let mut micros = since.subsec_micros();
    for d in buf[20..26].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    buf[26] = b'Z';
    std::str::from_utf8(buf).unwrap_or_default()
}

/// A clock set before 1970 (which humantime cannot format) reads as 1970.
fn fallback_time(t: SystemTime, buf: &mut [u8; TIME_LEN]) -> &str {
    let s = humantime::format_rfc3339_micros(t.max(SystemTime::UNIX_EPOCH)).to_string();
    let n = s.len().min(TIME_LEN);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// Reads the whole log at `path` (closed segments, then the active one) for `vigil audit`.
pub fn read_local(path: &Path) -> Result<Vec<chain::Segment>, AuditError> {
    files::read_segments(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_of_a_line_is_humantimes_rfc3339_with_microseconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for t in [
            base,
            base + Duration::from_micros(1),
            base + Duration::from_micros(999_999),
            base + Duration::from_micros(1_000_000),
            base + Duration::from_micros(1_000_007),
            base - Duration::from_secs(86_400 * 400) + Duration::from_nanos(123_456_789),
            SystemTime::UNIX_EPOCH,
        ] {
            let mut buf = [0u8; TIME_LEN];
            let ours = time_into(t, &mut buf).to_string();
            assert_eq!(ours, humantime::format_rfc3339_micros(t).to_string());
            // The second time comes from the cached second.
            assert_eq!(time_into(t, &mut buf), ours);
        }
        let mut buf = [0u8; TIME_LEN];
        let before = SystemTime::UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(time_into(before, &mut buf), "1970-01-01T00:00:00.000000Z");
    }

    fn open(dir: &Path, rotate_size: u64) -> Audit {
        let mut s = AuditSettings::new(dir.join("audit.log"));
        s.rotate_size = rotate_size;
        Audit::open(s, Arc::new(Signer::from_seed(&[3; 32]).unwrap())).unwrap()
    }

    fn verify(dir: &Path) -> chain::Report {
        let segs = read_local(&dir.join("audit.log")).unwrap();
        let trust = chain::Trust {
            signers: vec![Signer::from_seed(&[3; 32])
                .unwrap()
                .public_openssh()
                .to_string()],
        };
        chain::verify(&segs, &trust)
    }

    #[test]
    fn the_chain_continues_across_restarts_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), 1 << 20);
        for i in 0..5 {
            a.record(AuditEvent {
                user: Some(format!("u{i}")),
                ..AuditEvent::new("auth.success")
            });
        }
        a.tick();
        drop(a); // a crash: no closing checkpoint
        let a = open(dir.path(), 600);
        for _ in 0..10 {
            a.record(AuditEvent::new("session.start"));
        }
        a.close();
        drop(a);
        let a = open(dir.path(), 1 << 20);
        a.record(AuditEvent::new("config.load"));
        a.tick();
        assert_eq!(a.pending().len(), 1);
        let r = verify(dir.path());
        assert_eq!(r.fault, None, "{:?}", r.fault);
        // 5 + checkpoint + 10 + closing checkpoints of the size rotations + 1 + checkpoint.
        assert!(r.lines >= 18, "{}", r.lines);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        assert_eq!(r.first_seq, Some(0));
        let closed = files::closed_segments(&dir.path().join("audit.log")).unwrap();
        assert!(closed.len() >= 2, "{closed:?}");
    }

    #[test]
    fn long_texts_are_capped_with_the_digest_of_the_whole() {
        let mut short = "select 1".to_string();
        cap(&mut short);
        assert_eq!(short, "select 1");
        // Two-byte characters after one ASCII byte: MAX_TEXT falls inside a character.
        let whole = format!("a{}", "é".repeat(MAX_TEXT));
        let mut long = whole.clone();
        cap(&mut long);
        let digest = hex::encode(crate::recording::keys::sha256(whole.as_bytes()));
        let kept = MAX_TEXT - 1;
        assert_eq!(long.get(..kept), whole.get(..kept));
        assert!(
            long.ends_with(&format!(
                "… [{} more bytes; sha256 of all: {digest}]",
                whole.len() - kept
            )),
            "{}",
            &long[kept..]
        );
    }

    #[test]
    fn one_process_writes_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let _a = open(dir.path(), 1 << 20);
        let mut s = AuditSettings::new(dir.path().join("audit.log"));
        s.rotate_size = 1 << 20;
        let second = Audit::open(s, Arc::new(Signer::from_seed(&[3; 32]).unwrap()));
        let e = second.err().unwrap().to_string();
        assert!(
            e.contains("another vigil process writes this audit log"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_tail_is_not_built_on() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), 1 << 20);
        for _ in 0..3 {
            a.record(AuditEvent::new("auth.failure"));
        }
        drop(a);
        let path = dir.path().join("audit.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        drop(f);
        let a = open(dir.path(), 1 << 20);
        a.record(AuditEvent::new("auth.success"));
        let segs = read_local(&path).unwrap();
        assert_eq!(segs.len(), 2);
        let active = String::from_utf8(segs[1].bytes.clone()).unwrap();
        assert!(
            active.starts_with("{\"seq\":3,") && active.contains("audit.break"),
            "{active}"
        );
        // The damage stays visible.
        let r = verify(dir.path());
        assert_eq!(r.fault.unwrap().kind, chain::FaultKind::Malformed);
    }

    #[test]
    fn a_failed_write_is_cut_and_recorded_not_built_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let a = open(dir.path(), 1 << 20);
        a.record(AuditEvent::new("auth.success"));
        // What a write cut short by a full disk leaves behind.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":1,\"time")
            .unwrap();
        if let Some(w) = &a.writer {
            w.lock().unwrap().torn = Some("a `session.start` event is lost".into());
        }
        a.record(AuditEvent::new("auth.failure"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("{\"seq\":1,") && lines[1].contains("audit.break"));
        assert!(lines[1].contains("a `session.start` event is lost (14 bytes of it were cut)"));
        assert!(lines[2].starts_with("{\"seq\":2,") && lines[2].contains("auth.failure"));
        assert_eq!(verify(dir.path()).fault, None);
    }

    fn actions(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| chain::Entry::parse(l.as_bytes()).unwrap().event.action)
            .collect()
    }

    #[test]
    fn allow_lines_wait_for_their_group_and_never_trail_a_later_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let a = open(dir.path(), 1 << 20);
        let base = AuditEvent {
            user: Some("alice".into()),
            session: Some("s1".into()),
            ..AuditEvent::default()
        };
        // A window no pause of a busy machine reaches, then (below) one that has always passed.
        let window = |a: &Audit, d: Duration| {
            a.writer.as_ref().unwrap().lock().unwrap().group_window = d;
        };
        window(&a, Duration::from_secs(3600));
        a.record(AuditEvent::new("session.start"));
        a.record_allowed(&base, "select 1", None);
        a.record_allowed(&base, "select 2", Some("r"));
        // Within the window the two allow lines are chained but not written.
        a.flush_due();
        assert_eq!(actions(&path), ["session.start"]);
        // Any other event writes them first, in order, in the same write.
        a.record(AuditEvent::new("command.deny"));
        assert_eq!(
            actions(&path),
            ["session.start", ALLOW, ALLOW, "command.deny"]
        );
        // The borrowed line is the line an AuditEvent makes.
        let text = std::fs::read_to_string(&path).unwrap();
        let second = chain::Entry::parse(text.lines().nth(2).unwrap().as_bytes()).unwrap();
        assert_eq!(
            second.event,
            AuditEvent {
                action: ALLOW.into(),
                command: Some("select 2".into()),
                rule: Some("r".into()),
                ..base.clone()
            }
        );
        // Alone, they are written once the window has passed.
        a.record_allowed(&base, "select 3", None);
        a.flush_due();
        assert_eq!(actions(&path).len(), 4);
        window(&a, Duration::ZERO);
        a.flush_due();
        assert_eq!(actions(&path).len(), 5);
        // A checkpoint covers waiting lines; dropping the log writes them too.
        window(&a, Duration::from_secs(3600));
        a.record_allowed(&base, "select 4", None);
        assert_eq!(actions(&path).len(), 5);
        a.tick();
        assert_eq!(actions(&path)[5..], [ALLOW, chain::CHECKPOINT]);
        a.record_allowed(&base, "select 5", None);
        drop(a);
        assert_eq!(actions(&path).last().map(String::as_str), Some(ALLOW));
        let r = verify(dir.path());
        assert_eq!(r.fault, None, "{:?}", r.fault);
        assert_eq!(r.lines, 8);
    }

    #[test]
    fn a_group_whose_write_fails_is_recorded_as_lost_and_not_built_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let a = open(dir.path(), 1 << 20);
        let base = AuditEvent::default();
        a.record(AuditEvent::new("session.start"));
        for i in 0..3 {
            a.record_allowed(&base, &format!("select {i}"), None);
        }
        // The group's write fails (a file the log cannot write to), then the file is back.
        let w = a.writer.as_ref().unwrap();
        let good = std::mem::replace(&mut w.lock().unwrap().file, File::open(&path).unwrap());
        a.record(AuditEvent::new("command.deny"));
        w.lock().unwrap().file = good;
        a.record(AuditEvent::new("session.end"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            actions(&path),
            ["session.start", chain::BREAK, "session.end"],
            "{text}"
        );
        assert!(
            text.contains("4 events, seq 1 to 4 (the last a `command.deny`), are lost"),
            "{text}"
        );
        assert!(text.lines().nth(1).unwrap().starts_with("{\"seq\":1,"));
        assert_eq!(verify(dir.path()).fault, None);
    }
}
