//! Session recordings: the event model, the sealed container format, the writer that streams
//! chunks to the object store while a session runs, and the reader behind the forensics CLI.

pub mod event;
pub mod format;
pub mod keys;
pub mod reader;
pub mod writer;

use std::{path::PathBuf, time::Duration};

pub use event::{Event, Offset, Timed};
pub use writer::{Recorder, Recordings, SessionMeta};

use crate::store::S3Settings;

/// What to do with new sessions while no chunk can reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreFailure {
    /// Refuse new sessions (existing ones keep spooling).
    Refuse,
    /// Accept them and spool until the store is back.
    Continue,
}

/// The validated `[recording]` settings.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub store: String,
    pub s3: S3Settings,
    pub recipients: Vec<keys::RecipientPublic>,
    pub spool: PathBuf,
    pub flush_interval: Duration,
    pub on_store_failure: OnStoreFailure,
    pub zstd_level: i32,
    /// A chunk is sealed when its event batch reaches this size, or at `flush_interval`.
    pub chunk_bytes: usize,
}

impl RecordingSettings {
    pub fn new(
        store: impl Into<String>,
        recipients: Vec<keys::RecipientPublic>,
        spool: impl Into<PathBuf>,
    ) -> Self {
        RecordingSettings {
            store: store.into(),
            s3: S3Settings::default(),
            recipients,
            spool: spool.into(),
            flush_interval: Duration::from_secs(2),
            on_store_failure: OnStoreFailure::Refuse,
            zstd_level: 3,
            chunk_bytes: 1 << 20,
        }
    }
}

/// A new session id: the UTC start second, then 48 random bits (`20261123T022948Z-1a2b3c4d5e6f`).
/// Ids sort by start time, so the store lists sessions in time order.
pub fn new_session_id(now: std::time::SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{}", hex::encode(keys::random_bytes::<6>()))
}
