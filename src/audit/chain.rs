//! The audit log's hash chain and signed checkpoints (formats/audit-v1.md). Pure: lines are
//! encoded to bytes and verified from bytes; files and the store are the caller's business.
//!
//! Invariant: a line's canonical bytes are exactly the bytes written, without the newline; the
//! next line's `prev` is the SHA-256 of those bytes, and a checkpoint's signature covers its own
//! bytes (and so, through `prev`, every line before it).

use std::collections::HashMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use serde::{Deserialize, Serialize};

use super::AuditEvent;
use crate::recording::{
    event::{put_json_str, put_u64},
    keys::{self, Signer},
};

/// The `prev` of the first line ever written (seq 0).
pub const GENESIS: [u8; 32] = [0; 32];
/// A signed checkpoint line.
pub const CHECKPOINT: &str = "audit.checkpoint";
/// The first line written after a damaged tail was found at start.
pub const BREAK: &str = "audit.break";
/// Domain separation for checkpoint signatures.
pub const SIG_CONTEXT: &[u8] = b"vigil/audit/v1/checkpoint\n";
/// How the signature member starts; it is always the last member of a checkpoint line.
const SIG_MEMBER: &[u8] = b",\"sig\":\"";

#[derive(Serialize)]
struct LineOut<'a, E: Serialize> {
    seq: u64,
    time: &'a str,
    #[serde(flatten)]
    event: &'a E,
    prev: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    segment_end: bool,
}

/// The canonical bytes of an event line (no newline).
pub fn encode<E: Serialize>(seq: u64, time: &str, event: &E, prev: &[u8; 32]) -> Vec<u8> {
    let mut hex_prev = [0u8; 64];
    let line = LineOut {
        seq,
        time,
        event,
        prev: hex_str(prev, &mut hex_prev),
        key: None,
        segment_end: false,
    };
    // Serializing plain strings and numbers to a Vec cannot fail.
    serde_json::to_vec(&line).unwrap_or_default()
}

/// The canonical bytes of an event line whose members are all strings: `members` in
/// `AuditEvent`'s order, with `None` for the absent ones. The same bytes as `encode` of the
/// `AuditEvent` with those members, written directly: this runs for every allowed statement,
/// where serde's flattened map costs more than the rest of the line.
pub fn encode_strings(
    seq: u64,
    time: &str,
    members: &[(&str, Option<&str>)],
    prev: &[u8; 32],
) -> Vec<u8> {
    let len: usize = members
        .iter()
        .map(|(k, v)| k.len() + v.map_or(0, str::len) + 6)
        .sum();
    let mut out = Vec::with_capacity(len + time.len() + 120);
    out.extend_from_slice(b"{\"seq\":");
    put_u64(&mut out, seq);
    out.extend_from_slice(b",\"time\":");
    put_json_str(&mut out, time);
    for (k, v) in members {
        if let Some(v) = v {
            out.push(b',');
            put_json_str(&mut out, k);
            out.push(b':');
            put_json_str(&mut out, v);
        }
    }
    out.extend_from_slice(b",\"prev\":\"");
    let mut hex_prev = [0u8; 64];
    out.extend_from_slice(hex_str(prev, &mut hex_prev).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// The canonical bytes of a checkpoint line: it covers seq `seq - 1` through `prev`, names the
/// signing key, and ends with the Ed25519 signature over `SIG_CONTEXT` and the line without
/// its `sig` member.
pub fn encode_checkpoint(
    seq: u64,
    time: &str,
    detail: &str,
    prev: &[u8; 32],
    segment_end: bool,
    signer: &Signer,
) -> Vec<u8> {
    let event = AuditEvent {
        detail: Some(detail.to_string()),
        ..AuditEvent::new(CHECKPOINT)
    };
    let mut hex_prev = [0u8; 64];
    let line = LineOut {
        seq,
        time,
        event: &event,
        prev: hex_str(prev, &mut hex_prev),
        key: Some(signer.public_openssh()),
        segment_end,
    };
    let mut unsigned = serde_json::to_vec(&line).unwrap_or_default();
    let sig = signer.sign(&[SIG_CONTEXT, &unsigned].concat());
    unsigned.pop(); // the closing brace
    unsigned.extend_from_slice(SIG_MEMBER);
    unsigned.extend_from_slice(B64.encode(sig).as_bytes());
    unsigned.extend_from_slice(b"\"}");
    unsigned
}

/// `hash` in lower-case hex, written into `buf`.
fn hex_str<'a>(hash: &[u8; 32], buf: &'a mut [u8; 64]) -> &'a str {
    // 32 bytes fill the 64 hex digits exactly; hex digits are UTF-8.
    let _ = hex::encode_to_slice(hash, buf);
    std::str::from_utf8(buf).unwrap_or_default()
}

pub fn hash(line: &[u8]) -> [u8; 32] {
    keys::sha256(line)
}

/// One line of the log as read back: the chain fields, the event, and checkpoint fields.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub segment_end: bool,
    #[serde(default)]
    pub sig: Option<String>,
}

impl Entry {
    pub fn parse(line: &[u8]) -> Result<Entry, String> {
        let e: Entry =
            serde_json::from_slice(line).map_err(|e| format!("not an audit line: {e}"))?;
        if e.event.action.is_empty() {
            return Err("not an audit line: no action".into());
        }
        if decode_hash(&e.prev).is_none() {
            return Err("not an audit line: prev is not 64 hex digits".into());
        }
        Ok(e)
    }

    pub fn is_checkpoint(&self) -> bool {
        self.event.action == CHECKPOINT
    }
}

fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let raw = hex::decode(s).ok()?;
    <[u8; 32]>::try_from(raw.as_slice()).ok()
}

/// Checks a checkpoint line's signature with the key it names. `Ok(key)` when it verifies.
pub fn check_signature(line: &[u8], entry: &Entry) -> Result<String, String> {
    let key = entry
        .key
        .clone()
        .ok_or_else(|| "checkpoint names no signing key".to_string())?;
    let at = line
        .windows(SIG_MEMBER.len())
        .rposition(|w| w == SIG_MEMBER)
        .ok_or_else(|| "checkpoint has no signature".to_string())?;
    let sig_text = line
        .get(at + SIG_MEMBER.len()..line.len().saturating_sub(2))
        .filter(|_| line.ends_with(b"\"}"))
        .ok_or_else(|| "checkpoint signature is not the last member".to_string())?;
    let sig = B64
        .decode(sig_text)
        .map_err(|_| "checkpoint signature is not base64url".to_string())?;
    let mut unsigned = line.get(..at).unwrap_or_default().to_vec();
    unsigned.push(b'}');
    match keys::verify_signature(&key, &[SIG_CONTEXT, &unsigned].concat(), &sig) {
        Ok(true) => Ok(key),
        Ok(false) => Err("checkpoint signature does not verify (altered or forged)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks one checkpoint line on its own: its signature, by a trusted key (by the key it
/// names when `trust` is empty). Returns that key.
pub fn check_checkpoint(line: &[u8], trust: &Trust) -> Result<String, String> {
    let entry = Entry::parse(line)?;
    let key = check_signature(line, &entry)?;
    if !trust.signers.is_empty() && !trust.signers.iter().any(|t| keys::same_signer(t, &key)) {
        return Err(format!(
            "checkpoint signed by `{key}`, which is not a trusted signer"
        ));
    }
    Ok(key)
}

/// A run of log lines: a local segment file or a stored segment object.
#[derive(Debug, Clone)]
pub struct Segment {
    /// File or object name, used to say where a fault is.
    pub name: String,
    pub bytes: Vec<u8>,
    /// Closed segments end with a closing checkpoint; the active one may end anywhere.
    pub closed: bool,
    /// The seq its first line must have (closed segments are named after it).
    pub first_seq: Option<u64>,
}

/// Which checkpoint signers to accept. Empty: the key each checkpoint names (a note says so).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub signers: Vec<String>,
}

/// What kind of tampering (or damage) a fault is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Not a complete, well-formed audit line.
    Malformed,
    /// A line's bytes changed after it was written.
    Edited,
    /// Lines are missing from the chain.
    Deleted,
    /// A line that vigil did not write sits in the chain.
    Inserted,
    /// Lines are in another order than written.
    Reordered,
    /// Lines after a checkpoint were cut off.
    Truncated,
    /// A checkpoint's signature does not verify, or its key is not trusted.
    BadSignature,
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultKind::Malformed => "malformed",
            FaultKind::Edited => "edited",
            FaultKind::Deleted => "deleted",
            FaultKind::Inserted => "inserted",
            FaultKind::Reordered => "reordered",
            FaultKind::Truncated => "truncated",
            FaultKind::BadSignature => "bad signature",
        })
    }
}

/// Where a line is: segment name, 1-based line number in it, and its seq when readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub segment: String,
    pub line: usize,
    pub seq: Option<u64>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "seq {s} ({} line {})", self.segment, self.line),
            None => write!(f, "{} line {}", self.segment, self.line),
        }
    }
}

/// The first bad line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub place: Place,
    pub why: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.place, self.kind, self.why)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seq of the last line a verified checkpoint covers (its own seq).
    pub last_checkpoint: Option<u64>,
    pub fault: Option<Fault>,
    /// Facts that are not faults (an unpinned key, events not yet under a checkpoint).
    pub notes: Vec<String>,
    /// seq → hash of each line, for comparing with another copy.
    pub hashes: HashMap<u64, [u8; 32]>,
}

struct Rec {
    seg: usize,
    line: usize,
    /// Byte range of the line in its segment.
    start: usize,
    end: usize,
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    checkpoint: bool,
    segment_end: bool,
    /// Carries checkpoint members (`sig`, `key`, `segment_end`).
    checkpoint_members: bool,
}

/// Walks the chain through `segments` (in order) and reports the first fault.
pub fn verify(segments: &[Segment], trust: &Trust) -> Report {
    let mut recs: Vec<Result<Rec, (usize, usize, String)>> = Vec::new();
    let mut seg_lines = vec![0usize; segments.len()];
    for (si, seg) in segments.iter().enumerate() {
        let mut start = 0;
        let mut line = 0;
        while start < seg.bytes.len() {
            line += 1;
            let rest = seg.bytes.get(start..).unwrap_or_default();
            let Some(len) = rest.iter().position(|b| *b == b'\n') else {
                recs.push(Err((
                    si,
                    line,
                    format!(
                        "{} bytes without a newline at the end of the segment (a torn write, or a cut)",
                        rest.len()
                    ),
                )));
                break;
            };
            let piece = rest.get(..len).unwrap_or_default();
            match Entry::parse(piece) {
                Ok(entry) => recs.push(Ok(Rec {
                    seg: si,
                    line,
                    start,
                    end: start + len,
                    seq: entry.seq,
                    prev: decode_hash(&entry.prev).unwrap_or(GENESIS),
                    hash: hash(piece),
                    checkpoint: entry.is_checkpoint(),
                    segment_end: entry.segment_end && entry.is_checkpoint(),
                    checkpoint_members: entry.sig.is_some()
                        || entry.key.is_some()
                        || entry.segment_end,
                })),
                Err(why) => recs.push(Err((si, line, why))),
            }
            start += len + 1;
        }
        seg_lines[si] = line;
    }
    let mut report = Report::default();
    let mut by_hash: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, r) in recs.iter().enumerate() {
        if let Ok(r) = r {
            by_hash.entry(r.hash).or_insert(i);
        }
    }
    let place = |r: &Rec| Place {
        segment: segments[r.seg].name.clone(),
        line: r.line,
        seq: Some(r.seq),
    };
    let mut keys_seen: Vec<String> = Vec::new();
    let mut since_checkpoint = 0u64;
    for i in 0..recs.len() {
        let fault = |kind, at: &Rec, why: String| Fault {
            kind,
            place: place(at),
            why,
        };
        let y = match &recs[i] {
            Ok(y) => y,
            Err((seg, line, why)) => {
                report.fault = Some(Fault {
                    kind: FaultKind::Malformed,
                    place: Place {
                        segment: segments[*seg].name.clone(),
                        line: *line,
                        seq: None,
                    },
                    why: why.clone(),
                });
                return report;
            }
        };
        report.lines += 1;
        report.first_seq.get_or_insert(y.seq);
        report.last_seq = Some(y.seq);
        report.hashes.insert(y.seq, y.hash);
        since_checkpoint += 1;
        let starts_segment = i == 0 || rec_seg(&recs[i - 1]) != y.seg;
        if let Some(want) = segments[y.seg].first_seq.filter(|_| starts_segment) {
            if y.seq != want {
                report.fault = Some(fault(
                    if y.seq > want {
                        FaultKind::Deleted
                    } else {
                        FaultKind::Inserted
                    },
                    y,
                    format!(
                        "the segment starts at seq {want}, but its first line is seq {}",
                        y.seq
                    ),
                ));
                return report;
            }
        }
        let link = if i == 0 {
            first_line(y, &mut report.notes, &place)
        } else {
            match &recs[i - 1] {
                Ok(x) => classify(&recs, &by_hash, i, x, y, &place),
                Err(_) => None,
            }
        };
        if let Some((kind, at, why)) = link {
            report.fault = Some(Fault {
                kind,
                place: at,
                why,
            });
            return report;
        }
        if y.checkpoint_members && !y.checkpoint {
            report.fault = Some(fault(
                FaultKind::Edited,
                y,
                "it carries checkpoint members but is not a checkpoint (its action was altered)"
                    .into(),
            ));
            return report;
        }
        if y.checkpoint {
            match check_checkpoint(line_bytes(segments, y), trust) {
                Ok(key) => {
                    if !keys_seen.iter().any(|k| keys::same_signer(k, &key)) {
                        keys_seen.push(key);
                    }
                    report.checkpoints += 1;
                    report.last_checkpoint = Some(y.seq);
                    since_checkpoint = 0;
                }
                Err(why) => {
                    report.fault = Some(fault(FaultKind::BadSignature, y, why));
                    return report;
                }
            }
        }
        let last_of_segment = y.line == seg_lines[y.seg];
        if y.segment_end && !last_of_segment {
            let next = Place {
                segment: segments[y.seg].name.clone(),
                line: y.line + 1,
                seq: recs.get(i + 1).and_then(|r| r.as_ref().ok()).map(|r| r.seq),
            };
            report.fault = Some(Fault {
                kind: FaultKind::Inserted,
                place: next,
                why: format!(
                    "the segment was closed by the checkpoint at seq {}; nothing may follow it",
                    y.seq
                ),
            });
            return report;
        }
        if last_of_segment && segments[y.seg].closed && !y.segment_end {
            report.fault = Some(fault(
                FaultKind::Truncated,
                y,
                format!(
                    "the segment ends here without its closing checkpoint: lines after seq {} were removed",
                    y.seq
                ),
            ));
            return report;
        }
    }
    if trust.signers.is_empty() && !keys_seen.is_empty() {
        report.notes.push(format!(
            "checkpoint signatures checked against the key they name ({}); pass --signer or --config to pin it",
            keys_seen.join(", ")
        ));
    }
    if since_checkpoint > 0 {
        report.notes.push(format!(
            "the last {since_checkpoint} line(s) are not yet covered by a checkpoint (vigil is running, or stopped without closing the log)"
        ));
    }
    report
}

fn rec_seg(r: &Result<Rec, (usize, usize, String)>) -> usize {
    match r {
        Ok(r) => r.seg,
        Err((s, _, _)) => *s,
    }
}

fn line_bytes<'a>(segments: &'a [Segment], r: &Rec) -> &'a [u8] {
    segments
        .get(r.seg)
        .and_then(|s| s.bytes.get(r.start..r.end))
        .unwrap_or_default()
}

/// The first line of the log: seq 0 links to the genesis value; a later seq means earlier
/// segments are not part of what was read (pruned locally, or not listed).
fn first_line(
    y: &Rec,
    notes: &mut Vec<String>,
    place: &dyn Fn(&Rec) -> Place,
) -> Option<(FaultKind, Place, String)> {
    if y.seq == 0 && y.prev != GENESIS {
        return Some((
            FaultKind::Edited,
            place(y),
            "the first line of the log must link to the genesis value (64 zeros)".into(),
        ));
    }
    if y.seq > 0 {
        notes.push(format!(
            "the log starts at seq {}: earlier segments were not read",
            y.seq
        ));
        return None;
    }
    None
}

/// Why the link from `x` (line i-1) to `y` (line i) is broken, if it is.
fn classify(
    recs: &[Result<Rec, (usize, usize, String)>],
    by_hash: &HashMap<[u8; 32], usize>,
    i: usize,
    x: &Rec,
    y: &Rec,
    place: &dyn Fn(&Rec) -> Place,
) -> Option<(FaultKind, Place, String)> {
    let links = |a: &Rec, b: &Rec| b.seq == a.seq.wrapping_add(1) && b.prev == a.hash;
    if links(x, y) {
        return None;
    }
    let ok = |k: usize| recs.get(k).and_then(|r| r.as_ref().ok());
    let follows = by_hash.get(&y.prev).copied();
    if let Some(q) = follows.filter(|q| *q > i) {
        let q_seq = ok(q).map(|r| r.seq).unwrap_or_default();
        return Some((
            FaultKind::Reordered,
            place(y),
            format!("out of order: it was written after seq {q_seq}, which comes later in the log"),
        ));
    }
    if ok(i + 1).is_some_and(|next| links(x, next)) {
        return Some((
            FaultKind::Inserted,
            place(y),
            format!(
                "vigil did not write this line: seq {} is followed directly by the line after it",
                x.seq
            ),
        ));
    }
    match follows {
        Some(q) if q + 1 == i => Some((
            FaultKind::Edited,
            place(y),
            format!(
                "its seq was changed: it follows seq {} but says {}",
                x.seq, y.seq
            ),
        )),
        Some(q) => {
            let (q_seq, first) = (
                ok(q).map(|r| r.seq).unwrap_or_default(),
                ok(q + 1).unwrap_or(x),
            );
            Some((
                FaultKind::Inserted,
                place(first),
                format!(
                    "vigil did not write this line: seq {} is followed by {}, which was written right after seq {q_seq}",
                    first.seq, y.seq
                ),
            ))
        }
        None if y.seq > x.seq.wrapping_add(1) => Some((
            FaultKind::Deleted,
            place(y),
            if y.seq == x.seq + 2 {
                format!("seq {} before it was deleted", x.seq + 1)
            } else {
                format!(
                    "seq {} to {} before it were deleted",
                    x.seq + 1,
                    y.seq - 1
                )
            },
        )),
        None if y.seq == x.seq.wrapping_add(1) => Some((
            FaultKind::Edited,
            place(x),
            format!(
                "altered after it was written: seq {} records another hash for it (or its own prev was altered)",
                y.seq
            ),
        )),
        None => Some((
            FaultKind::Reordered,
            place(y),
            format!("out of order: seq {} after seq {}", y.seq, x.seq),
        )),
    }
}

/// Compares a verified copy (`local`) with lines from another copy (the store): every line the
/// other copy has within or after the local range must be in the local log, byte for byte.
pub fn compare(local: &Report, other: &[(String, Vec<u8>)]) -> Option<Fault> {
    let first = local.first_seq.unwrap_or(0);
    let last = local.last_seq;
    let mut faults: Vec<Fault> = Vec::new();
    for (name, line) in other {
        let Ok(e) = Entry::parse(line) else {
            continue;
        };
        if e.seq < first && local.first_seq.is_some() {
            continue;
        }
        let place = Place {
            segment: name.clone(),
            line: 1,
            seq: Some(e.seq),
        };
        match local.hashes.get(&e.seq) {
            Some(h) if *h == hash(line) => {}
            Some(_) => faults.push(Fault {
                kind: FaultKind::Edited,
                place,
                why: "the local log's line differs from the copy in the store".into(),
            }),
            None if last.is_none_or(|l| e.seq > l) => faults.push(Fault {
                kind: FaultKind::Truncated,
                place,
                why: match last {
                    Some(l) => format!(
                        "the local log ends at seq {l}, but the store holds seq {}: its tail was cut",
                        e.seq
                    ),
                    None => "the local log is empty, but the store holds lines".into(),
                },
            }),
            None => faults.push(Fault {
                kind: FaultKind::Deleted,
                place,
                why: "the store holds this line; the local log does not".into(),
            }),
        }
    }
    faults.into_iter().min_by_key(|f| f.place.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_strings_is_the_line_serde_writes() {
        let awkward = "sel\"ect '\\x' /* é ü 中 */ \u{7f}\u{1}\u{8}\u{c}\n\r\t\u{1f} -- end";
        let prev = [0xab; 32];
        for (seq, rule, user) in [
            (0, None, Some("alice")),
            (7, Some(awkward), None),
            (u64::MAX, Some(""), Some(awkward)),
        ] {
            let event = AuditEvent {
                user: user.map(str::to_string),
                target: Some("db\\1".into()),
                session: Some("s-1".into()),
                command: Some(awkward.into()),
                rule: rule.map(str::to_string),
                ..AuditEvent::new("command.allow")
            };
            let members = [
                ("action", Some("command.allow")),
                ("user", user),
                ("source", None),
                ("target", Some("db\\1")),
                ("session", Some("s-1")),
                ("protocol", None),
                ("command", Some(awkward)),
                ("rule", rule),
            ];
            let time = "2026-11-23T18:00:00.000001Z";
            assert_eq!(
                String::from_utf8(encode_strings(seq, time, &members, &prev)).unwrap(),
                String::from_utf8(encode(seq, time, &event, &prev)).unwrap()
            );
        }
    }

    fn signer() -> Signer {
        Signer::from_seed(&[9; 32]).unwrap()
    }

    /// A closed segment of `n` events plus a closing checkpoint, and the lines.
    fn log(n: u64, signer: &Signer) -> Vec<Vec<u8>> {
        let mut prev = GENESIS;
        let mut lines = Vec::new();
        for seq in 0..n {
            let ev = AuditEvent {
                user: Some(format!("user{seq}")),
                ..AuditEvent::new("auth.success")
            };
            let l = if seq % 4 == 3 {
                encode_checkpoint(
                    seq,
                    "2026-11-23T10:00:00Z",
                    "interval",
                    &prev,
                    false,
                    signer,
                )
            } else {
                encode(seq, "2026-11-23T10:00:00Z", &ev, &prev)
            };
            prev = hash(&l);
            lines.push(l);
        }
        lines.push(encode_checkpoint(
            n,
            "2026-11-23T10:00:01Z",
            "shutdown",
            &prev,
            true,
            signer,
        ));
        lines
    }

    fn seg(lines: &[Vec<u8>]) -> Vec<Segment> {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        vec![Segment {
            name: "audit.log.000000000000".into(),
            bytes,
            closed: true,
            first_seq: Some(0),
        }]
    }

    fn trust(s: &Signer) -> Trust {
        Trust {
            signers: vec![s.public_openssh().to_string()],
        }
    }

    fn fault(lines: &[Vec<u8>], s: &Signer) -> Fault {
        verify(&seg(lines), &trust(s))
            .fault
            .expect("tampering goes unnoticed")
    }

    #[test]
    fn an_untouched_log_verifies() {
        let s = signer();
        let r = verify(&seg(&log(10, &s)), &trust(&s));
        assert_eq!(r.fault, None);
        assert_eq!(r.lines, 11);
        assert_eq!(r.checkpoints, 3);
        assert_eq!(r.last_checkpoint, Some(10));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let ev = AuditEvent {
            user: Some("alice".into()),
            ..AuditEvent::new("auth.success")
        };
        let l = encode(7, "2026-11-23T10:00:00.000001Z", &ev, &[0xab; 32]);
        assert_eq!(
            String::from_utf8(l).unwrap(),
            format!(
                "{{\"seq\":7,\"time\":\"2026-11-23T10:00:00.000001Z\",\"action\":\"auth.success\",\"user\":\"alice\",\"prev\":\"{}\"}}",
                "ab".repeat(32)
            )
        );
        let s = signer();
        let c = encode_checkpoint(8, "2026-11-23T10:00:00Z", "interval", &[1; 32], true, &s);
        let text = String::from_utf8(c.clone()).unwrap();
        assert!(
            text.starts_with("{\"seq\":8,\"time\":\"2026-11-23T10:00:00Z\",\"action\":\"audit.checkpoint\",\"detail\":\"interval\",\"prev\":\""),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                ",\"key\":\"{}\",\"segment_end\":true,\"sig\":\"",
                s.public_openssh()
            )),
            "{text}"
        );
        let e = Entry::parse(&c).unwrap();
        assert!(check_signature(&c, &e).is_ok());
    }

    #[test]
    fn an_edited_event_is_named() {
        let s = signer();
        let mut lines = log(10, &s);
        lines[5] = String::from_utf8(lines[5].clone())
            .unwrap()
            .replace("user5", "mallory")
            .into_bytes();
        let f = fault(&lines, &s);
        assert_eq!(
            (f.kind, f.place.seq, f.place.line),
            (FaultKind::Edited, Some(5), 6),
            "{f}"
        );
    }

    #[test]
    fn a_deleted_event_is_named() {
        let s = signer();
        let mut lines = log(10, &s);
        lines.remove(4);
        let f = fault(&lines, &s);
        assert_eq!((f.kind, f.place.seq), (FaultKind::Deleted, Some(5)), "{f}");
        assert!(f.why.contains("seq 4"), "{f}");
        let mut lines = log(10, &s);
        lines.drain(4..6);
        let f = fault(&lines, &s);
        assert!(f.why.contains("seq 4 to 5"), "{f}");
    }

    #[test]
    fn inserted_events_are_named_however_they_are_forged() {
        let s = signer();
        // A copy of an earlier line, replayed later.
        let mut lines = log(10, &s);
        lines.insert(6, lines[1].clone());
        let f = fault(&lines, &s);
        assert_eq!((f.kind, f.place.line), (FaultKind::Inserted, 7), "{f}");
        // A forged line that links to its predecessor and takes the next seq.
        let mut lines = log(10, &s);
        let ev = AuditEvent::new("auth.success");
        let forged = encode(5, "2026-11-23T10:00:00Z", &ev, &hash(&lines[4]));
        lines.insert(5, forged);
        let f = fault(&lines, &s);
        assert_eq!((f.kind, f.place.line), (FaultKind::Inserted, 6), "{f}");
        // A forged line with a made-up prev.
        let mut lines = log(10, &s);
        lines.insert(5, encode(5, "2026-11-23T10:00:00Z", &ev, &[7; 32]));
        let f = fault(&lines, &s);
        assert_eq!((f.kind, f.place.line), (FaultKind::Inserted, 6), "{f}");
    }

    #[test]
    fn reordered_events_are_named() {
        let s = signer();
        let mut lines = log(10, &s);
        lines.swap(4, 5);
        let f = fault(&lines, &s);
        assert_eq!(
            (f.kind, f.place.seq),
            (FaultKind::Reordered, Some(5)),
            "{f}"
        );
        let mut lines = log(10, &s);
        lines.swap(1, 8);
        assert_eq!(fault(&lines, &s).kind, FaultKind::Reordered);
    }

    #[test]
    fn truncation_after_a_checkpoint_is_named() {
        let s = signer();
        let mut lines = log(10, &s);
        lines.truncate(8); // ends at the checkpoint at seq 7
        let f = fault(&lines, &s);
        assert_eq!(
            (f.kind, f.place.seq),
            (FaultKind::Truncated, Some(7)),
            "{f}"
        );
        // The active segment may end anywhere: only a note.
        let mut segs = seg(&lines);
        segs[0].closed = false;
        let r = verify(&segs, &trust(&s));
        assert_eq!(r.fault, None);
    }

    #[test]
    fn checkpoint_signatures_and_keys_are_checked() {
        let s = signer();
        let mut lines = log(10, &s);
        let text = String::from_utf8(lines[3].clone()).unwrap();
        let at = text.rfind("\"sig\":\"").unwrap() + 7;
        let flipped = if &text[at..at + 1] == "A" { "B" } else { "A" };
        lines[3] = format!("{}{}{}", &text[..at], flipped, &text[at + 1..]).into_bytes();
        let f = fault(&lines, &s);
        assert_eq!(
            (f.kind, f.place.seq),
            (FaultKind::BadSignature, Some(3)),
            "{f}"
        );
        // A whole log re-signed by another key is refused when the key is pinned.
        let other = Signer::from_seed(&[1; 32]).unwrap();
        let f = fault(&log(10, &other), &s);
        assert_eq!(f.kind, FaultKind::BadSignature);
        assert!(f.why.contains("not a trusted signer"), "{f}");
    }

    #[test]
    fn damage_is_named_and_never_panics() {
        let s = signer();
        let mut segs = seg(&log(6, &s));
        let len = segs[0].bytes.len();
        segs[0].bytes.truncate(len - 20);
        let f = verify(&segs, &trust(&s)).fault.unwrap();
        assert_eq!(f.kind, FaultKind::Malformed, "{f}");
        for junk in [
            &b"\n"[..],
            b"{}\n",
            b"not json\n",
            b"{\"seq\":0}\n",
            b"\xff\xfe\n",
        ] {
            let segs = vec![Segment {
                name: "x".into(),
                bytes: junk.to_vec(),
                closed: false,
                first_seq: None,
            }];
            assert_eq!(
                verify(&segs, &Trust::default()).fault.unwrap().kind,
                FaultKind::Malformed
            );
        }
    }

    #[test]
    fn the_store_copy_exposes_a_cut_tail_and_edits() {
        let s = signer();
        let lines = log(10, &s);
        let store: Vec<(String, Vec<u8>)> = lines
            .iter()
            .map(|l| ("audit/x/segment".to_string(), l.clone()))
            .collect();
        let mut cut = seg(&lines[..8]);
        cut[0].closed = false;
        let r = verify(&cut, &trust(&s));
        assert_eq!(r.fault, None);
        let f = compare(&r, &store).unwrap();
        assert_eq!(
            (f.kind, f.place.seq),
            (FaultKind::Truncated, Some(8)),
            "{f}"
        );
        let full = verify(&seg(&lines), &trust(&s));
        assert_eq!(compare(&full, &store), None);
    }

    #[test]
    fn every_single_byte_change_to_a_closed_segment_is_a_fault() {
        let s = signer();
        let segs = seg(&log(5, &s));
        let t = trust(&s);
        for at in 0..segs[0].bytes.len() {
            for change in 0..4 {
                let mut bad = segs.clone();
                match change {
                    0 => bad[0].bytes[at] ^= 0x01,
                    1 => bad[0].bytes[at] ^= 0x20,
                    2 => bad[0].bytes[at] ^= 0x80,
                    _ => {
                        bad[0].bytes.remove(at);
                    }
                }
                assert!(
                    verify(&bad, &t).fault.is_some(),
                    "change {change} at byte {at} unnoticed: {}",
                    String::from_utf8_lossy(&segs[0].bytes[at.saturating_sub(60)..at + 1])
                );
            }
        }
    }
}
