//! Reading recordings back from the store: listing (no key needed: headers and trailers are in
//! the clear and signed), verification, and opening with an auditor's secret key.
//!
//! Invariant: nothing is returned from a recording whose structure does not verify; the one
//! exception is a recording without a trailer (still being written, or cut off), which loads
//! with `trailer: None` so the caller can say so.

use std::sync::Arc;

use futures::{stream, stream::FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

use super::{
    event::{Decoder, Timed},
    format::{self, FormatError, Header, HeaderInfo, OpenChunk, Status, Trailer, TrailerInfo},
    keys::{self, Aead, DataKey, KeyError, RecipientSecret},
};
use crate::store::{layout, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no recording with id {0}")]
    NotFound(String),
    #[error("id prefix {0} matches several recordings: {1}")]
    Ambiguous(String, String),
    #[error("this command reads recording content: pass --key FILE (an auditor secret key from `vigil keygen`)")]
    NoKey,
    #[error("{0} is not a valid session id")]
    BadId(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("header is signed by {0}, which is not a trusted signer")]
    UntrustedSigner(String),
    #[error("chunk {0} is missing (dropped or deleted)")]
    MissingChunk(u64),
    #[error(
        "chunk {index} is there but the trailer says the recording has {chunks} chunks (appended)"
    )]
    UnexpectedChunk { index: u64, chunks: u64 },
    #[error("chunk digests do not match the signed trailer (a chunk was replaced)")]
    ChainMismatch,
    #[error("chunk {index}: {why}")]
    LastFlag { index: u64, why: &'static str },
    #[error("chunk {index}: events start before the previous chunk ended (reordered)")]
    TimeOrder { index: u64 },
    #[error(
        "no trailer after chunk {last}: the recording is still being written, or was truncated"
    )]
    NoTrailer { last: i64 },
}

impl ReadError {
    /// The chunk a fault is in, when it is in one.
    pub fn chunk(&self) -> Option<u64> {
        match self {
            ReadError::MissingChunk(i) | ReadError::UnexpectedChunk { index: i, .. } => Some(*i),
            ReadError::LastFlag { index, .. } | ReadError::TimeOrder { index } => Some(*index),
            ReadError::Format(f) => match f {
                FormatError::OutOfPlace { expected, .. } => Some(*expected),
                FormatError::Seal(i) | FormatError::TooLarge { index: i, .. } => Some(*i),
                FormatError::Inflate { index, .. } | FormatError::Events { index, .. } => {
                    Some(*index)
                }
                FormatError::Length { index, .. } => Some(*index),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Which bastion signing keys the reader accepts. Empty: any key the header names, reported
/// as "not pinned" (the signature still proves the recording is whole and unaltered since).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub signers: Vec<String>,
}

impl Trust {
    pub fn check(&self, header: &Header) -> Result<bool, ReadError> {
        if self.signers.is_empty() {
            return Ok(false);
        }
        if self
            .signers
            .iter()
            .any(|s| keys::same_signer(s, &header.info.signer))
        {
            Ok(true)
        } else {
            Err(ReadError::UntrustedSigner(header.info.signer.clone()))
        }
    }
}

/// One line of `vigil sessions`.
#[derive(Debug, Clone)]
pub struct Listing {
    pub id: String,
    pub header: Option<HeaderInfo>,
    pub trailer: Option<TrailerInfo>,
    /// `closed`, `abnormal`, `open` (no trailer yet) or `invalid: why`.
    pub state: String,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub target: Option<String>,
    pub protocol: Option<String>,
    pub since_us: Option<u64>,
    pub until_us: Option<u64>,
}

impl Filter {
    pub fn matches(&self, h: &HeaderInfo) -> bool {
        self.user.as_ref().is_none_or(|u| *u == h.user)
            && self.target.as_ref().is_none_or(|t| *t == h.target)
            && self.protocol.as_ref().is_none_or(|p| *p == h.protocol)
            && self.since_us.is_none_or(|s| h.start_unix_us >= s)
            && self.until_us.is_none_or(|u| h.start_unix_us <= u)
    }
}

/// Lists recordings (newest last) whose signed header matches the filter.
pub async fn list(
    store: &Store,
    filter: &Filter,
    trust: &Trust,
) -> Result<Vec<Listing>, ReadError> {
    let ids = store.list_dirs(layout::SESSIONS).await?;
    let listings: Vec<Listing> = stream::iter(ids)
        .map(|id| async move { describe(store, id, trust).await })
        .buffered(16)
        .collect()
        .await;
    Ok(listings
        .into_iter()
        .filter(|l| l.header.as_ref().is_none_or(|h| filter.matches(h)))
        .collect())
}

async fn describe(store: &Store, id: String, trust: &Trust) -> Listing {
    let invalid = |id: String, why: String| Listing {
        id,
        header: None,
        trailer: None,
        state: format!("invalid: {why}"),
    };
    let header = match store.get(&layout::header(&id)).await {
        Ok(Some(b)) => match Header::decode(b) {
            Ok(h) => h,
            Err(e) => return invalid(id, e.to_string()),
        },
        Ok(None) => return invalid(id, "no header".into()),
        Err(e) => return invalid(id, e.to_string()),
    };
    if let Err(e) = trust.check(&header) {
        return invalid(id, e.to_string());
    }
    let (trailer, state) = match store.get(&layout::trailer(&id)).await {
        Ok(Some(b)) => match Trailer::decode(b, &header) {
            Ok(t) => {
                let s = match t.info.status {
                    Some(Status::Abnormal) => "abnormal",
                    _ => "closed",
                };
                (Some(t.info), s.to_string())
            }
            Err(e) => (None, format!("invalid: {e}")),
        },
        Ok(None) => (None, "open".into()),
        Err(e) => (None, format!("invalid: {e}")),
    };
    Listing {
        id,
        header: Some(header.info),
        trailer,
        state,
    }
}

/// Resolves a full id or a unique prefix of one.
pub async fn resolve_id(store: &Store, wanted: &str) -> Result<String, ReadError> {
    if !layout::valid_session_id(wanted) {
        return Err(ReadError::BadId(wanted.to_string()));
    }
    if store.get(&layout::header(wanted)).await?.is_some() {
        return Ok(wanted.to_string());
    }
    let ids = store.list_dirs(layout::SESSIONS).await?;
    let hits: Vec<&String> = ids
        .iter()
        .filter(|i| i.starts_with(wanted) || i.ends_with(wanted))
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ReadError::NotFound(wanted.to_string())),
        many => Err(ReadError::Ambiguous(
            wanted.to_string(),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// A recording read back and checked.
#[derive(Debug)]
pub struct Loaded {
    pub header: Header,
    pub trailer: Option<Trailer>,
    /// Opened chunks in order; empty when no key was given.
    pub chunks: Vec<OpenChunk>,
    pub chunk_count: u64,
    pub stored_bytes: u64,
    pub signer_pinned: bool,
}

impl Loaded {
    /// Every event in order.
    pub fn events(&self) -> Result<Vec<Timed>, ReadError> {
        let mut out = Vec::new();
        for c in &self.chunks {
            for e in Decoder::new(c.batch.clone()) {
                out.push(e.map_err(|source| FormatError::Events {
                    index: c.prefix.index,
                    source,
                })?);
            }
        }
        Ok(out)
    }
}

/// What walking a recording found, apart from its content.
#[derive(Debug)]
pub struct Walked {
    pub header: Header,
    pub trailer: Option<Trailer>,
    pub chunk_count: u64,
    pub stored_bytes: u64,
    pub signer_pinned: bool,
}

/// Receives a recording's opened chunks, in order, on a blocking thread.
pub trait ChunkVisitor: Send + 'static {
    fn visit(&mut self, chunk: OpenChunk) -> Result<(), ReadError>;
}

/// Discards chunks (verification only).
pub struct Discard;

impl ChunkVisitor for Discard {
    fn visit(&mut self, _: OpenChunk) -> Result<(), ReadError> {
        Ok(())
    }
}

/// Keeps every chunk.
#[derive(Default)]
pub struct Collect(pub Vec<OpenChunk>);

impl ChunkVisitor for Collect {
    fn visit(&mut self, chunk: OpenChunk) -> Result<(), ReadError> {
        self.0.push(chunk);
        Ok(())
    }
}

/// Fetches and checks a whole recording and loads it into memory: see [`walk`].
pub async fn load(
    store: &Store,
    id: &str,
    secret: Option<&RecipientSecret>,
    trust: &Trust,
    allow_open: bool,
) -> Result<Loaded, ReadError> {
    let (w, collected) = walk(store, id, secret, trust, allow_open, Collect::default()).await?;
    Ok(Loaded {
        header: w.header,
        trailer: w.trailer,
        chunks: collected.0,
        chunk_count: w.chunk_count,
        stored_bytes: w.stored_bytes,
        signer_pinned: w.signer_pinned,
    })
}

/// Chunks fetched ahead of the one being opened.
const PREFETCH: usize = 4;

/// Streams a recording through every check: header signature and trust, trailer signature,
/// the chunk set against the trailer, each chunk's frame and (with a key) seal and events,
/// time order, last-chunk flags and the digest chain. Opened chunks go to `visitor` in order
/// while later ones are fetched and opened on other cores; only a few chunks are in memory at
/// once. A missing trailer is allowed only with `allow_open`. On any fault the walk stops with
/// the error (what the visitor saw before it must be discarded).
pub async fn walk<V: ChunkVisitor>(
    store: &Store,
    id: &str,
    secret: Option<&RecipientSecret>,
    trust: &Trust,
    allow_open: bool,
    visitor: V,
) -> Result<(Walked, V), ReadError> {
    if !layout::valid_session_id(id) {
        return Err(ReadError::BadId(id.to_string()));
    }
    let header_bytes = store
        .get(&layout::header(id))
        .await?
        .ok_or_else(|| ReadError::NotFound(id.to_string()))?;
    let header = Header::decode(header_bytes)?;
    if header.info.session_id != id {
        return Err(ReadError::Format(FormatError::BadSignature(
            "header (session id does not match its key)",
        )));
    }
    let signer_pinned = trust.check(&header)?;
    let objects = store.list_objects(&layout::session_dir(id)).await?;
    let indexes: Vec<u64> = objects
        .iter()
        .filter_map(|(n, _)| layout::parse_chunk_name(n))
        .collect();
    let trailer = match store.get(&layout::trailer(id)).await? {
        Some(b) => Some(Trailer::decode(b, &header)?),
        None => None,
    };
    let count = match &trailer {
        Some(t) => t.info.chunks,
        None => indexes.iter().max().map(|m| m + 1).unwrap_or(0),
    };
    for (expected, found) in (0..).zip(indexes.iter()) {
        if *found != expected {
            return Err(ReadError::MissingChunk(expected));
        }
    }
    if let Some(extra) = indexes.iter().find(|i| **i >= count) {
        return Err(ReadError::UnexpectedChunk {
            index: *extra,
            chunks: count,
        });
    }
    if (indexes.len() as u64) < count {
        return Err(ReadError::MissingChunk(indexes.len() as u64));
    }

    let aead = match secret {
        Some(s) => Some(Arc::new(
            DataKey::unwrap(s, &header.info.recipients, id)?.aead()?,
        )),
        None => None,
    };
    let digest = header.digest;
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);

    // Three stages run at once: fetching (its own task, PREFETCH ahead), opening (up to
    // `parallel` chunks on blocking threads), and the visitor (its own blocking thread).
    let (fetched_tx, mut fetched) = mpsc::channel(PREFETCH);
    let (fetch_store, fetch_id) = (store.clone(), id.to_string());
    let fetcher = tokio::spawn(async move {
        let gets = stream::iter(0..count).map(|i| {
            let (store, id) = (&fetch_store, &fetch_id);
            async move {
                store
                    .get(&layout::chunk(id, i))
                    .await?
                    .ok_or(ReadError::MissingChunk(i))
            }
        });
        let mut gets = gets.buffered(PREFETCH);
        while let Some(r) = gets.next().await {
            let failed = r.is_err();
            if fetched_tx.send(r).await.is_err() || failed {
                break;
            }
        }
    });
    let (visit_tx, mut visit_rx) = mpsc::channel::<OpenChunk>(2);
    let mut visitor = visitor;
    let visiting = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = visit_rx.blocking_recv() {
            visitor.visit(chunk)?;
        }
        Ok::<V, ReadError>(visitor)
    });

    let mut opening = FuturesOrdered::new();
    let mut next = 0u64;
    let mut chain = Vec::with_capacity(count as usize * 32);
    let mut stored_bytes = header.bytes.len() as u64;
    let mut previous: Option<format::ChunkPrefix> = None;
    let walked: Result<(), ReadError> = async {
        loop {
            while opening.len() < parallel {
                let Some(bytes) = fetched.recv().await else {
                    break;
                };
                let bytes = bytes?;
                stored_bytes += bytes.len() as u64;
                let (i, aead) = (next, aead.clone());
                next += 1;
                opening.push_back(tokio::task::spawn_blocking(move || {
                    open_one(i, &bytes, &digest, aead.as_deref())
                }));
            }
            let Some(opened) = opening.next().await else {
                break;
            };
            let (prefix, sha, chunk) =
                opened.map_err(|_| ReadError::Format(FormatError::Truncated("chunk task")))??;
            if let Some(p) = previous {
                if prefix.first_at < p.last_at {
                    return Err(ReadError::TimeOrder {
                        index: prefix.index,
                    });
                }
                if p.last {
                    return Err(ReadError::LastFlag {
                        index: p.index,
                        why: "marked last but more chunks follow (chunks after the end)",
                    });
                }
            }
            previous = Some(prefix);
            chain.extend_from_slice(&sha);
            if let Some(chunk) = chunk {
                if visit_tx.send(chunk).await.is_err() {
                    break; // the visitor failed: its error is reported below
                }
            }
        }
        Ok(())
    }
    .await;
    drop(visit_tx);
    fetcher.abort();
    let visitor = visiting
        .await
        .map_err(|_| ReadError::Format(FormatError::Truncated("chunk visitor")))?;
    walked?;
    let visitor = visitor?;
    if next < count {
        return Err(ReadError::MissingChunk(next));
    }
    match &trailer {
        Some(t) => {
            if hex::encode(keys::sha256(&chain)) != t.info.chunks_sha256 {
                return Err(ReadError::ChainMismatch);
            }
            match (t.info.status, previous.map(|p| p.last)) {
                (Some(Status::Closed) | None, Some(false)) => return Err(ReadError::LastFlag {
                    index: count - 1,
                    why:
                        "the recording is closed but its final chunk is not marked last (truncated)",
                }),
                (Some(Status::Closed) | None, None) => return Err(ReadError::MissingChunk(0)),
                _ => {}
            }
        }
        None if !allow_open => {
            return Err(ReadError::NoTrailer {
                last: count as i64 - 1,
            })
        }
        None => {}
    }
    Ok((
        Walked {
            header,
            trailer,
            chunk_count: count,
            stored_bytes,
            signer_pinned,
        },
        visitor,
    ))
}

/// Frames, digests and (with a key) opens one chunk and checks that its events decode.
fn open_one(
    index: u64,
    bytes: &[u8],
    digest: &[u8; 32],
    aead: Option<&Aead>,
) -> Result<(format::ChunkPrefix, [u8; 32], Option<OpenChunk>), ReadError> {
    let prefix = format::check_chunk_frame(index, bytes)?;
    let sha = keys::sha256(bytes);
    let opened = match aead {
        Some(a) => {
            let c = format::open_chunk(a, digest, index, bytes)?;
            for e in Decoder::new(c.batch.clone()) {
                e.map_err(|source| FormatError::Events { index, source })?;
            }
            Some(c)
        }
        None => None,
    };
    Ok((prefix, sha, opened))
}
