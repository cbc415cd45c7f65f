//! The reading commands (`sessions`, `verify`, `search`, and the loading behind `play` and
//! `export`): they need the store and, for content, an auditor's key; never a running bastion.

use std::io::Write;

use futures::{stream, StreamExt};
use serde_json::json;

use crate::{
    recording::{
        format::OpenChunk,
        format::{FormatError, HeaderInfo, Status},
        keys::RecipientSecret,
        reader::{self, ChunkVisitor, Filter, Listing, Loaded, ReadError, Trust, Walked},
    },
    replay::search::{Hit, Matcher, Searcher},
    store::Store,
};

/// Where recordings are read from, whom to trust, and the key that opens them.
pub struct Reading {
    pub store: Store,
    pub trust: Trust,
    pub key: Option<RecipientSecret>,
}

impl Reading {
    pub fn key(&self) -> Result<&RecipientSecret, ReadError> {
        self.key.as_ref().ok_or(ReadError::NoKey)
    }

    /// Loads one recording by id or unique prefix, checking it on the way.
    pub async fn load(&self, id: &str) -> Result<Loaded, ReadError> {
        let id = reader::resolve_id(&self.store, id).await?;
        reader::load(&self.store, &id, Some(self.key()?), &self.trust, true).await
    }
}

/// `vigil sessions`: one line (or JSON object) per recording.
pub async fn sessions(
    r: &Reading,
    filter: &Filter,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), ReadError> {
    let listings = reader::list(&r.store, filter, &r.trust).await?;
    if !as_json {
        let _ = writeln!(
            out,
            "{:<30} {:<8} {:<10} {:<12} {:<20} {:>10} {:>9} {:>7} {:>8}  STATE",
            "ID", "PROTOCOL", "USER", "TARGET", "START", "DURATION", "SIZE", "BLOCKED", "APPROVED"
        );
    }
    for l in &listings {
        let _ = if as_json {
            writeln!(out, "{}", listing_json(l))
        } else {
            writeln!(out, "{}", listing_line(l))
        };
    }
    Ok(())
}

fn listing_json(l: &Listing) -> serde_json::Value {
    let h = l.header.as_ref();
    let t = l.trailer.as_ref();
    json!({
        "id": l.id,
        "protocol": h.map(|h| h.protocol.as_str()),
        "user": h.map(|h| h.user.as_str()),
        "target": h.map(|h| h.target.as_str()),
        "start": h.map(|h| h.start.as_str()),
        "client": h.and_then(|h| h.client.as_deref()),
        "end": t.map(|t| t.end.as_str()),
        "duration_s": t.map(|t| t.duration_us as f64 / 1e6),
        "size": t.map(|t| t.stored_bytes),
        "chunks": t.map(|t| t.chunks),
        "events": t.map(|t| t.events),
        "commands": t.map(|t| t.commands),
        "queries": t.map(|t| t.queries),
        "blocked": t.map(|t| t.blocked),
        "approved": t.map(|t| t.approved),
        "state": l.state,
        "reason": t.map(|t| t.reason.as_str()),
    })
}

fn listing_line(l: &Listing) -> String {
    let dash = || "-".to_string();
    let h = l.header.as_ref();
    let t = l.trailer.as_ref();
    format!(
        "{:<30} {:<8} {:<10} {:<12} {:<20} {:>10} {:>9} {:>7} {:>8}  {}",
        l.id,
        h.map(|h| h.protocol.clone()).unwrap_or_else(dash),
        h.map(|h| h.user.clone()).unwrap_or_else(dash),
        h.map(|h| h.target.clone()).unwrap_or_else(dash),
        h.map(|h| h.start.get(..19).unwrap_or(&h.start).replace('T', " "))
            .unwrap_or_else(dash),
        t.map(|t| format_duration(t.duration_us))
            .unwrap_or_else(dash),
        t.map(|t| format_size(t.stored_bytes)).unwrap_or_else(dash),
        t.map(|t| t.blocked.to_string()).unwrap_or_else(dash),
        t.map(|t| t.approved.to_string()).unwrap_or_else(dash),
        l.state
    )
}

pub fn format_duration(us: u64) -> String {
    let s = us / 1_000_000;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

pub fn format_size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1}GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}KiB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// The outcome of verifying one recording.
pub struct Verdict {
    pub id: String,
    pub result: Result<String, ReadError>,
}

/// `vigil verify`: checks each recording completely; every fault names itself and its chunk.
pub async fn verify(r: &Reading, ids: &[String]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for wanted in ids {
        let id = match reader::resolve_id(&r.store, wanted).await {
            Ok(id) => id,
            Err(e) => {
                out.push(Verdict {
                    id: wanted.clone(),
                    result: Err(e),
                });
                continue;
            }
        };
        let result = reader::walk(
            &r.store,
            &id,
            r.key.as_ref(),
            &r.trust,
            false,
            reader::Discard,
        )
        .await
        .map(|(w, _)| describe_ok(&w, r.key.is_some()));
        out.push(Verdict { id, result });
    }
    out
}

fn describe_ok(l: &Walked, opened: bool) -> String {
    let status = match l.trailer.as_ref().and_then(|t| t.info.status) {
        Some(Status::Abnormal) => {
            format!(
                "abnormal end: {}",
                l.trailer
                    .as_ref()
                    .map(|t| t.info.reason.as_str())
                    .unwrap_or("")
            )
        }
        _ => "closed".to_string(),
    };
    let signer = if l.signer_pinned {
        "trusted signer"
    } else {
        "signer not pinned (pass --signer or recording.signers)"
    };
    let seals = if opened {
        "every seal opened"
    } else {
        "seals not opened (no --key): structure and signatures only"
    };
    format!("ok: {} chunks, {status}, {seals}, {signer}", l.chunk_count)
}

/// Feeds each opened chunk's events to a search, as the walk streams them.
struct SearchVisitor(Searcher);

impl ChunkVisitor for SearchVisitor {
    fn visit(&mut self, chunk: OpenChunk) -> Result<(), ReadError> {
        for e in chunk.events() {
            let e = e.map_err(|source| FormatError::Events {
                index: chunk.prefix.index,
                source,
            })?;
            self.0.push(&e);
        }
        Ok(())
    }
}

/// One match of `vigil search`, with the session it is in.
pub struct Found {
    pub header: HeaderInfo,
    pub hit: Hit,
}

impl Found {
    pub fn line(&self) -> String {
        format!(
            "{}  +{}  {}@{}  {:<8} {}",
            self.header.session_id,
            self.hit.at,
            self.header.user,
            self.header.target,
            self.hit.kind,
            self.hit.line
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "id": self.header.session_id,
            "protocol": self.header.protocol,
            "user": self.header.user,
            "target": self.header.target,
            "start": self.header.start,
            "offset": self.hit.at.to_string(),
            "offset_s": self.hit.at.as_secs_f64(),
            "kind": self.hit.kind,
            "line": self.hit.line,
        })
    }
}

/// `vigil search`: scans every matching session in parallel; results in session order.
/// `progress` is told the number of sessions first, then once per session scanned.
pub async fn search(
    r: &Reading,
    matcher: &Matcher,
    filter: &Filter,
    progress: &(dyn Fn(Option<u64>) + Sync),
) -> Result<(Vec<Found>, Vec<(String, ReadError)>), ReadError> {
    let key = r.key()?;
    let listings = reader::list(&r.store, filter, &r.trust).await?;
    let ids: Vec<String> = listings
        .iter()
        .filter(|l| l.header.is_some())
        .map(|l| l.id.clone())
        .collect();
    progress(Some(ids.len() as u64));
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let results: Vec<(String, Result<Vec<Found>, ReadError>)> = stream::iter(ids)
        .map(|id| async move {
            let visitor = SearchVisitor(Searcher::new(matcher));
            let res = reader::walk(&r.store, &id, Some(key), &r.trust, true, visitor)
                .await
                .map(|(w, v)| {
                    let header = w.header.info;
                    v.0.finish()
                        .into_iter()
                        .map(|hit| Found {
                            header: header.clone(),
                            hit,
                        })
                        .collect()
                });
            progress(None);
            (id, res)
        })
        .buffered(parallel)
        .collect()
        .await;
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (id, r) in results {
        match r {
            Ok(f) => found.extend(f),
            Err(e) => failed.push((id, e)),
        }
    }
    Ok((found, failed))
}
