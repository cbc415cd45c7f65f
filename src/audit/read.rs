//! Reading the audit log back: `vigil audit verify` (the chain, the checkpoints, and the copy
//! in the store) and `vigil audit` (events, filtered).

use std::{path::PathBuf, time::SystemTime};

use super::{
    chain::{self, Entry, Fault, Report, Segment, Trust},
    files, ship, AuditError,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Local(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store holds no audit log (nothing under {}/)", files::STORE_DIR)]
    NothingStored,
    #[error("say which audit log: --log PATH, --store URL or --config FILE")]
    NoSource,
}

/// What to read: the local log, the store's copy, or both (then they are compared).
#[derive(Debug, Default)]
pub struct Source {
    pub log: Option<PathBuf>,
    pub store: Option<Store>,
    /// Checkpoint signers to accept (empty: the key each checkpoint names).
    pub trust: Trust,
}

/// The verdict on one log.
#[derive(Debug)]
pub struct Verdict {
    /// The local path, or `store:audit/<key id>`.
    pub name: String,
    pub report: Report,
    /// The first fault: in the chain, or where the local log and the store disagree.
    pub fault: Option<Fault>,
}

/// Verifies the local log (compared with the store's copy when there is a store), or every
/// log in the store when there is no local one.
pub async fn verify(src: &Source) -> Result<Vec<Verdict>, ReadError> {
    match (&src.log, &src.store) {
        (Some(log), store) => {
            let segments = files::read_segments(log)?;
            let report = chain::verify(&segments, &src.trust);
            let mut fault = report.fault.clone();
            if let (None, Some(store)) = (&fault, store) {
                if let Some(id) = log_key_id(&segments, &src.trust) {
                    let stored = ship::read_store(store, &id).await?;
                    fault = chain::compare(&report, &stored.lines);
                }
            }
            Ok(vec![Verdict {
                name: log.display().to_string(),
                report,
                fault,
            }])
        }
        (None, Some(store)) => {
            let ids = ship::logs_in(store).await?;
            if ids.is_empty() {
                return Err(ReadError::NothingStored);
            }
            let mut out = Vec::new();
            for id in ids {
                let stored = ship::read_store(store, &id).await?;
                let report = chain::verify(&stored.segments, &src.trust);
                let mut fault = report.fault.clone();
                if fault.is_none() {
                    // Checkpoints newer than the last segment cover the bastion's active
                    // segment, which the store does not have yet: each must verify alone.
                    let last = report.last_seq;
                    let (within, newer): (Vec<_>, Vec<_>) =
                        stored.lines.into_iter().partition(|(_, l)| {
                            Entry::parse(l).is_ok_and(|e| last.is_some_and(|last| e.seq <= last))
                        });
                    if last.is_some() {
                        fault = chain::compare(&report, &within);
                    }
                    fault = fault.or_else(|| newer_checkpoint_fault(&newer, &src.trust));
                }
                out.push(Verdict {
                    name: format!("store:{}", files::layout::prefix(&id)),
                    report,
                    fault,
                });
            }
            Ok(out)
        }
        (None, None) => Err(ReadError::NoSource),
    }
}

/// The first stored checkpoint past the stored segments that does not verify on its own.
fn newer_checkpoint_fault(lines: &[(String, Vec<u8>)], trust: &Trust) -> Option<Fault> {
    lines.iter().find_map(|(name, line)| {
        let why = chain::check_checkpoint(line, trust).err()?;
        Some(Fault {
            kind: chain::FaultKind::BadSignature,
            place: chain::Place {
                segment: name.clone(),
                line: 1,
                seq: Entry::parse(line).ok().map(|e| e.seq),
            },
            why,
        })
    })
}

/// The store id of a local log: from the key its last checkpoint names (verified by then),
/// else from the first trusted signer.
fn log_key_id(segments: &[Segment], trust: &Trust) -> Option<String> {
    segments
        .iter()
        .rev()
        .flat_map(|s| s.bytes.split(|b| *b == b'\n').rev())
        .filter_map(|l| Entry::parse(l).ok())
        .find_map(|e| e.key)
        .or_else(|| trust.signers.first().cloned())
        .and_then(|k| files::key_id(&k))
}

/// Which events `vigil audit` prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The user acting, or the requester an approver acted for.
    pub user: Option<String>,
    pub since: Option<SystemTime>,
    /// An action (`auth.failure`), or a family (`auth.` or `auth.*`).
    pub action: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let ev = &e.event;
        if let Some(u) = &self.user {
            if ev.user.as_ref() != Some(u) && ev.requester.as_ref() != Some(u) {
                return false;
            }
        }
        if let Some(since) = self.since {
            match humantime::parse_rfc3339_weak(&e.time) {
                Ok(t) if t >= since => {}
                _ => return false,
            }
        }
        match &self.action {
            Some(a) => {
                let family = a.strip_suffix('*').unwrap_or(a);
                if family.ends_with('.') {
                    ev.action.starts_with(family)
                } else {
                    ev.action == *a
                }
            }
            // Checkpoints are the log's own bookkeeping: shown when asked for.
            None => !ev.action.starts_with("audit.checkpoint"),
        }
    }
}

/// The events of the local log, or of every log in the store, in order, with their exact
/// bytes; lines that are not audit lines are skipped (`vigil audit verify` names them).
pub async fn events(src: &Source, filter: &Filter) -> Result<Vec<(Entry, Vec<u8>)>, ReadError> {
    let segments = match (&src.log, &src.store) {
        (Some(log), _) => files::read_segments(log)?,
        (None, Some(store)) => {
            let mut all = Vec::new();
            for id in ship::logs_in(store).await? {
                all.extend(ship::read_store(store, &id).await?.segments);
            }
            all
        }
        (None, None) => return Err(ReadError::NoSource),
    };
    let mut out = Vec::new();
    for seg in &segments {
        for line in seg.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(e) = Entry::parse(line) {
                if filter.matches(&e) {
                    out.push((e, line.to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// A table row: time, action, user, source, target, session, and what happened.
pub fn table_row(e: &Entry) -> String {
    let ev = &e.event;
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut what: Vec<String> = Vec::new();
    if let Some(c) = &ev.command {
        what.push(format!("`{c}`"));
    }
    if let Some(r) = &ev.rule {
        what.push(format!("rule {r}"));
    }
    if let Some(a) = ev.approval {
        what.push(format!("approval {a}"));
    }
    if let Some(r) = &ev.requester {
        what.push(format!("for {r}"));
    }
    for d in [&ev.detail, &ev.reason].into_iter().flatten() {
        what.push(d.clone());
    }
    let time = e.time.get(..19).unwrap_or(&e.time).replace('T', " ");
    format!(
        "{time}  {:<16} {:<10} {:<21} {:<12} {:<30} {}",
        ev.action,
        dash(&ev.user),
        dash(&ev.source),
        dash(&ev.target),
        dash(&ev.session),
        what.join("; ").replace(['\n', '\r'], " ")
    )
}

pub const TABLE_HEADER: &str = "TIME                 ACTION           USER       SOURCE                TARGET       SESSION                        WHAT";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn entry(action: &str, user: &str, time: &str) -> Entry {
        Entry {
            seq: 1,
            time: time.into(),
            prev: "00".repeat(32),
            event: AuditEvent {
                user: Some(user.into()),
                ..AuditEvent::new(action)
            },
            key: None,
            segment_end: false,
            sig: None,
        }
    }

    #[test]
    fn filters_by_user_action_family_and_time() {
        let e = entry("auth.failure", "alice", "2026-11-23T10:00:00.000001Z");
        let since = |s: &str| Some(humantime::parse_rfc3339_weak(s).unwrap());
        assert!(Filter::default().matches(&e));
        assert!(Filter {
            user: Some("alice".into()),
            action: Some("auth.*".into()),
            since: since("2026-11-23T09:00:00Z"),
        }
        .matches(&e));
        assert!(!Filter {
            action: Some("auth.success".into()),
            ..Filter::default()
        }
        .matches(&e));
        assert!(!Filter {
            since: since("2026-11-23T11:00:00Z"),
            ..Filter::default()
        }
        .matches(&e));
        assert!(!Filter::default().matches(&entry(
            "audit.checkpoint",
            "x",
            "2026-11-23T10:00:00Z"
        )));
        assert!(table_row(&e).contains("auth.failure"));
    }

    #[tokio::test]
    async fn the_store_copy_verifies_alone_newer_checkpoints_included() {
        use crate::{
            audit::{chain::encode_checkpoint, files::layout},
            recording::keys::Signer,
        };
        let signer = Signer::from_seed(&[4; 32]).unwrap();
        let id = files::key_id(signer.public_openssh()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().display().to_string(), &Default::default()).unwrap();
        let first = chain::encode(
            0,
            "2026-11-23T10:00:00Z",
            &AuditEvent::new("config.load"),
            &chain::GENESIS,
        );
        let close = encode_checkpoint(
            1,
            "2026-11-23T10:00:00Z",
            "rotate",
            &chain::hash(&first),
            true,
            &signer,
        );
        let segment = [first, b"\n".to_vec(), close.clone(), b"\n".to_vec()].concat();
        store
            .put(&layout::segment(&id, 0), segment.into())
            .await
            .unwrap();
        let next = chain::encode(
            2,
            "2026-11-23T10:00:01Z",
            &AuditEvent::new("auth.success"),
            &chain::hash(&close),
        );
        let mut newer = encode_checkpoint(
            3,
            "2026-11-23T10:00:02Z",
            "interval",
            &chain::hash(&next),
            false,
            &signer,
        );
        newer.push(b'\n');
        let key = layout::checkpoint(&id, 3);
        store.put(&key, newer.clone().into()).await.unwrap();
        let src = Source {
            log: None,
            store: Some(store.clone()),
            trust: Trust {
                signers: vec![signer.public_openssh().to_string()],
            },
        };
        let v = verify(&src).await.unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].fault, None, "{:?}", v[0].fault);
        assert_eq!(v[0].report.lines, 2);
        // A forged checkpoint for the part the store does not have yet.
        let text = String::from_utf8(newer)
            .unwrap()
            .replace("interval", "intervaL");
        store.put(&key, text.into_bytes().into()).await.unwrap();
        let f = verify(&src).await.unwrap().remove(0).fault.unwrap();
        assert_eq!(
            (f.kind, f.place.seq),
            (chain::FaultKind::BadSignature, Some(3)),
            "{f}"
        );
    }
}
