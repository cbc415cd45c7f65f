//! Copies the audit log to the recording store while vigil runs: every checkpoint as soon as
//! it is signed, every closed segment once. A store that does not answer only delays the copy:
//! what failed is tried again on the next round, and the local file stays the source of truth.

use std::{collections::HashSet, path::PathBuf};

use bytes::Bytes;

use super::{
    chain::Segment,
    files::{self, layout},
    Audit,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One bastion's shipping state: which objects the store already has.
pub struct Shipper {
    store: Store,
    key_id: String,
    active: PathBuf,
    stored: HashSet<String>,
    listed: bool,
    failing: bool,
}

impl Shipper {
    /// Ships the log at `active`, under the id of the key that signs its checkpoints.
    pub fn new(store: Store, active: PathBuf, key_id: String) -> Shipper {
        Shipper {
            store,
            key_id,
            active,
            stored: HashSet::new(),
            listed: false,
            failing: false,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// One round: pending checkpoints, then closed segments the store does not have yet.
    /// Returns how many objects were stored.
    pub async fn ship(&mut self, audit: &Audit) -> Result<usize, ShipError> {
        let r = self.round(audit).await;
        match &r {
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "cannot copy the audit log to the store; retrying");
            }
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("the audit log reaches the store again");
            }
            _ => {}
        }
        r
    }

    async fn round(&mut self, audit: &Audit) -> Result<usize, ShipError> {
        if !self.listed {
            let prefix = layout::prefix(&self.key_id);
            for (name, _) in self.store.list_objects(&prefix).await? {
                self.stored.insert(format!("{prefix}/{name}"));
            }
            self.listed = true;
        }
        let mut n = 0;
        for c in audit.pending() {
            let key = layout::checkpoint(&self.key_id, c.seq);
            let mut body = c.line;
            body.push(b'\n');
            self.store.put(&key, Bytes::from(body)).await?;
            audit.shipped(c.seq);
            self.stored.insert(key);
            n += 1;
        }
        let closed = files::closed_segments(&self.active).map_err(|source| ShipError::Io {
            path: self.active.display().to_string(),
            source,
        })?;
        for (first, path) in closed {
            let key = layout::segment(&self.key_id, first);
            if self.stored.contains(&key) {
                continue;
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| ShipError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            self.store.put(&key, Bytes::from(bytes)).await?;
            self.stored.insert(key);
            n += 1;
        }
        Ok(n)
    }
}

/// One bastion's log as the store holds it.
#[derive(Debug, Default)]
pub struct Stored {
    /// The segments, in order (all closed).
    pub segments: Vec<Segment>,
    /// Every line of every segment and checkpoint object, with the object it came from.
    pub lines: Vec<(String, Vec<u8>)>,
}

/// The key ids of the bastions whose logs are in the store.
pub async fn logs_in(store: &Store) -> Result<Vec<String>, StoreError> {
    store.list_dirs(files::STORE_DIR).await
}

/// Reads one bastion's segments and checkpoints from the store.
pub async fn read_store(store: &Store, key_id: &str) -> Result<Stored, StoreError> {
    let prefix = layout::prefix(key_id);
    let mut out = Stored::default();
    let mut names: Vec<(bool, u64, String)> = store
        .list_objects(&prefix)
        .await?
        .into_iter()
        .filter_map(|(name, _)| layout::parse(&name).map(|(seg, n)| (seg, n, name)))
        .collect();
    // Segments first (in seq order), then checkpoints.
    names.sort_by_key(|(seg, n, _)| (!*seg, *n));
    for (segment, first, name) in names {
        let key = format!("{prefix}/{name}");
        let Some(bytes) = store.get(&key).await? else {
            continue;
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.lines.push((key.clone(), line.to_vec()));
        }
        if segment {
            out.segments.push(Segment {
                name: key,
                bytes: bytes.to_vec(),
                closed: true,
                first_seq: Some(first),
            });
        }
    }
    Ok(out)
}
