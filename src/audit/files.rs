//! Where the audit log lives: the active segment, closed segments beside it, and the object
//! names in the store (formats/audit-v1.md).
//!
//! Local: `<audit_log>` is the active segment; `<audit_log>.<first seq:012>` are closed ones.
//! Store: `audit/<key id>/segment-<first seq:012>` and `audit/<key id>/checkpoint-<seq:012>`,
//! where the key id names the bastion (its signing key), so bastions can share a store.

use std::path::{Path, PathBuf};

use super::{
    chain::{self, Entry, Segment},
    AuditError,
};

/// The directory below the store root that holds every bastion's audit log.
pub const STORE_DIR: &str = "audit";

/// `<audit_log>.<first seq:012>`
pub fn segment_path(active: &Path, first: u64) -> PathBuf {
    let mut name = active.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{first:012}"));
    active.with_file_name(name)
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Renames `from` to `to` unless `to` exists (a segment is never overwritten).
pub fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::remove_file(from),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: check, then rename.
        Err(_) if !to.exists() => std::fs::rename(from, to),
        Err(e) => Err(e),
    }
}

/// The closed segments beside `active`, by first seq.
pub fn closed_segments(active: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = match active.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = format!("{}.", file_name(active));
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix(&base) else {
            continue;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(first) = digits.parse() {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The whole local log: closed segments in order, then the active one.
pub fn read_segments(active: &Path) -> Result<Vec<Segment>, AuditError> {
    let io = |p: &Path, error| AuditError::Io {
        path: p.display().to_string(),
        error,
    };
    let mut out = Vec::new();
    for (first, p) in closed_segments(active).map_err(|e| io(active, e))? {
        out.push(Segment {
            name: file_name(&p),
            bytes: std::fs::read(&p).map_err(|e| io(&p, e))?,
            closed: true,
            first_seq: Some(first),
        });
    }
    match std::fs::read(active) {
        Ok(bytes) => out.push(Segment {
            name: file_name(active),
            bytes,
            closed: false,
            first_seq: None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(active, e)),
    }
    if out.is_empty() {
        return Err(AuditError::Io {
            path: active.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no audit log here"),
        });
    }
    Ok(out)
}

/// Where the chain goes on after a restart.
#[derive(Debug, Default)]
pub struct Tail {
    pub last_seq: Option<u64>,
    pub last_hash: Option<[u8; 32]>,
    /// What is wrong after the last good line, if anything.
    pub damage: Option<String>,
    /// The tail is in the active segment (not in the newest closed one).
    pub in_active: bool,
    /// The active segment's first seq.
    pub active_first: Option<u64>,
    /// The file the tail was read from.
    pub file: String,
}

/// Finds the last line written: in the active segment when it has any, else in the newest
/// closed segment. Reads that one file (a segment is at most `rotate_size` plus a line).
pub fn recover_tail(active: &Path) -> Result<Tail, AuditError> {
    let io = |p: &Path, error| AuditError::Io {
        path: p.display().to_string(),
        error,
    };
    let (path, bytes, in_active) = match std::fs::read(active) {
        Ok(b) if !b.is_empty() => (active.to_path_buf(), b, true),
        Ok(_) => match newest_closed(active)? {
            Some(x) => x,
            None => return Ok(Tail::default()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match newest_closed(active)? {
            Some(x) => x,
            None => return Ok(Tail::default()),
        },
        Err(e) => return Err(io(active, e)),
    };
    let mut tail = Tail {
        in_active,
        file: file_name(&path),
        ..Tail::default()
    };
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => {
            let cut = bytes.len() - bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            tail.damage = Some(format!("{cut} bytes without a newline at its end"));
            bytes
                .get(..bytes.len() - cut)
                .map(|b| b.strip_suffix(b"\n").unwrap_or(b))
                .unwrap_or_default()
        }
    };
    let lines: Vec<&[u8]> = if body.is_empty() {
        Vec::new()
    } else {
        body.split(|b| *b == b'\n').collect()
    };
    if in_active {
        tail.active_first = lines
            .first()
            .and_then(|l| Entry::parse(l).ok())
            .map(|e| e.seq);
    }
    for (from_end, line) in lines.iter().rev().enumerate() {
        if let Ok(e) = Entry::parse(line) {
            tail.last_seq = Some(e.seq);
            tail.last_hash = Some(chain::hash(line));
            if from_end > 0 && tail.damage.is_none() {
                tail.damage = Some(format!("its last {from_end} line(s) are not audit lines"));
            }
            return Ok(tail);
        }
    }
    Err(AuditError::Damaged {
        path: path.display().to_string(),
        why: "no line in it is readable, so the chain cannot continue from it; move it aside to start a new log".into(),
    })
}

fn newest_closed(active: &Path) -> Result<Option<(PathBuf, Vec<u8>, bool)>, AuditError> {
    let closed = closed_segments(active).map_err(|error| AuditError::Io {
        path: active.display().to_string(),
        error,
    })?;
    match closed.last() {
        Some((_, p)) => {
            let bytes = std::fs::read(p).map_err(|error| AuditError::Io {
                path: p.display().to_string(),
                error,
            })?;
            Ok(Some((p.clone(), bytes, false)))
        }
        None => Ok(None),
    }
}

/// Object names in the store.
pub mod layout {
    use super::STORE_DIR;

    /// `audit/<key id>`: one bastion's log.
    pub fn prefix(key_id: &str) -> String {
        format!("{STORE_DIR}/{key_id}")
    }
    pub fn segment(key_id: &str, first: u64) -> String {
        format!("{STORE_DIR}/{key_id}/segment-{first:012}")
    }
    pub fn checkpoint(key_id: &str, seq: u64) -> String {
        format!("{STORE_DIR}/{key_id}/checkpoint-{seq:012}")
    }
    /// `segment-N` → (true, N); `checkpoint-N` → (false, N).
    pub fn parse(name: &str) -> Option<(bool, u64)> {
        let (segment, digits) = if let Some(d) = name.strip_prefix("segment-") {
            (true, d)
        } else {
            (false, name.strip_prefix("checkpoint-")?)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((segment, digits.parse().ok()?))
    }
}

/// A bastion's id in the store: the first 8 bytes of its signing key's SHA-256 fingerprint, in
/// hex (`ssh-keygen -lf` shows the same digest in base64).
pub fn key_id(public_openssh: &str) -> Option<String> {
    let key = ssh_key::PublicKey::from_openssh(public_openssh.trim()).ok()?;
    let fp = key.fingerprint(ssh_key::HashAlg::Sha256);
    Some(hex::encode(fp.as_bytes().get(..8)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = Path::new("/var/lib/vigil/audit.log");
        assert_eq!(
            segment_path(p, 42),
            Path::new("/var/lib/vigil/audit.log.000000000042")
        );
        assert_eq!(layout::segment("ab", 7), "audit/ab/segment-000000000007");
        assert_eq!(layout::parse("segment-000000000007"), Some((true, 7)));
        assert_eq!(layout::parse("checkpoint-12"), Some((false, 12)));
        assert_eq!(layout::parse("checkpoint-"), None);
        assert_eq!(layout::parse("other"), None);
        let s = crate::recording::keys::Signer::from_seed(&[1; 32]).unwrap();
        let id = key_id(s.public_openssh()).unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(key_id("garbage"), None);
    }
}
