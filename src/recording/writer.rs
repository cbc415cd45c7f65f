//! The recorder: encodes a session's events into a batch as they happen (in the session's own
//! task: no hand-off per event), seals chunks and ships them to the store while the session runs; spools what the store cannot take yet and
//! closes, at the next start, recordings whose writer died.
//!
//! Invariants: no plaintext byte reaches disk or the store (only sealed objects are spooled);
//! at most `flush_interval` of activity is only in memory; a trailer reaches the store only
//! after every chunk it commits to.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::{stream::FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    event::{self, Decision, Event, Offset, Timed},
    format::{self, Header, HeaderInfo, Status, Trailer, TrailerInfo},
    keys::{self, Aead, DataKey, Signer},
    OnStoreFailure, RecordingSettings,
};
use crate::store::{
    layout,
    spool::{JournalEntry, Spool, SpoolError},
    Store, StoreError,
};

/// Sealed chunks queued for upload per session; beyond that they wait in the spool.
const UPLOAD_QUEUE: usize = 8;
/// A spooled chunk of a live session this old is uploaded by the sweep, not its uploader.
const STALE_SPOOL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "recording store unavailable ({0}); on_store_failure = \"refuse\" refuses new sessions"
    )]
    StoreUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("no recipients: set recording.recipients to at least one key from `vigil keygen`")]
    NoRecipients,
    #[error("the recording writer for session {0} has stopped")]
    WriterGone(String),
}

/// Who and what a session is, for its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    pub protocol: String,
    pub user: String,
    pub target: String,
    pub client: Option<String>,
}

/// What a closed recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub session_id: String,
    pub chunks: u64,
    pub events: u64,
    pub stored_bytes: u64,
    pub plaintext_bytes: u64,
    /// False when the store was unreachable: the recording waits in the spool.
    pub uploaded: bool,
}

/// The recording service of one bastion process.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RecordingSettings,
    store: Store,
    spool: Spool,
    signer: Signer,
    healthy: AtomicBool,
    last_failure: Mutex<String>,
    live: Mutex<HashSet<String>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Recordings {
    /// Opens the store and the spool, finishes what a previous process left in the spool
    /// (uploads, and closes recordings whose writer died), and starts the background sweep.
    pub async fn start(
        settings: RecordingSettings,
        signer: Signer,
    ) -> Result<Recordings, RecordError> {
        if settings.recipients.is_empty() {
            return Err(RecordError::NoRecipients);
        }
        let store = Store::open(&settings.store, &settings.s3)?;
        let spool = Spool::open(&settings.spool)?;
        let inner = Arc::new(Inner {
            settings,
            store,
            spool,
            signer,
            healthy: AtomicBool::new(true),
            last_failure: Mutex::new(String::new()),
            live: Mutex::new(HashSet::new()),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        inner.probe().await;
        inner.sweep().await;
        let bg = inner.clone();
        inner.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = bg.cancel.cancelled() => break,
                    _ = tick.tick() => bg.sweep().await,
                }
            }
        });
        Ok(Recordings { inner })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn store_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Whether a new session may start, per `on_store_failure`.
    pub fn admit(&self) -> Result<(), RecordError> {
        if self.inner.settings.on_store_failure == OnStoreFailure::Refuse && !self.store_healthy() {
            let why = self
                .inner
                .last_failure
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            return Err(RecordError::StoreUnavailable(why));
        }
        Ok(())
    }

    /// Starts recording a session: seals its header to the recipients and ships it.
    pub async fn begin(&self, meta: SessionMeta) -> Result<Recorder, RecordError> {
        self.admit()?;
        let inner = &self.inner;
        let now = SystemTime::now();
        let id = super::new_session_id(now);
        let key = DataKey::generate()?;
        let info = HeaderInfo {
            version: format::VERSION,
            session_id: id.clone(),
            protocol: meta.protocol,
            user: meta.user,
            target: meta.target,
            start: humantime::format_rfc3339_micros(now).to_string(),
            start_unix_us: unix_us(now),
            signer: inner.signer.public_openssh().to_string(),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            recipients: key.wrap(&inner.settings.recipients, &id)?,
            client: meta.client,
        };
        let header = Header::decode(Header::encode(&info, &inner.signer)?)?;
        // Live before its spool directory exists, so the sweep never takes it for an orphan.
        inner.live.lock().map(|mut l| l.insert(id.clone())).ok();
        let spooled = inner
            .spool
            .create_session(&id)
            .and_then(|_| inner.spool.write(&id, "header", &header.bytes, true));
        if let Err(e) = spooled {
            inner.live.lock().map(|mut l| l.remove(&id)).ok();
            return Err(e.into());
        }

        let (up_tx, up_rx) = mpsc::channel(UPLOAD_QUEUE);
        let _ = up_tx.try_send(Upload::Header);
        let uploader = inner
            .tracker
            .spawn(run_uploader(inner.clone(), id.clone(), up_rx));
        let (seal_tx, seal_rx) = mpsc::channel(SEAL_QUEUE);
        let sealer = Sealer {
            inner: inner.clone(),
            id: id.clone(),
            start: now,
            header,
            aead: Arc::new(key.aead()?),
            digests: Vec::new(),
            chunks: 0,
            stored: 0,
            totals: JournalEntry::default(),
            up: up_tx,
        };
        let done = inner.tracker.spawn(sealer.run(seal_rx, uploader));
        let writer = Writer {
            chunk_bytes: inner.settings.chunk_bytes,
            flush_every: inner.settings.flush_interval,
            batch: Vec::new(),
            batch_events: 0,
            span: None,
            last_at: 0,
            index: 0,
            totals: JournalEntry::default(),
            sealer: seal_tx,
            closed: false,
        };
        let shared = Arc::new(Batching {
            writer: tokio::sync::Mutex::new(writer),
            wake: tokio::sync::Notify::new(),
            dropped: AtomicBool::new(false),
        });
        inner.tracker.spawn(shared.clone().run_timer());
        Ok(Recorder {
            id,
            shared,
            started: Instant::now(),
            done: Some(done),
        })
    }

    /// Stops the sweep and waits (at most `grace`) for every recorder to seal and upload.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
    }

    /// Runs one sweep now (uploads spooled objects, closes orphaned recordings).
    pub async fn sweep(&self) {
        self.inner.sweep().await;
    }
}

/// A session's handle on its recording.
pub struct Recorder {
    id: String,
    shared: Arc<Batching>,
    started: Instant,
    done: Option<tokio::task::JoinHandle<Summary>>,
}

/// A session's batch, shared by its recorder (which appends to it) and a timer task (which
/// seals it `flush_interval` after its first event). The lock is held while a full batch is
/// handed to the sealer, so chunks keep their order and a session whose sealer is behind waits
/// (backpressure, not unbounded memory).
struct Batching {
    writer: tokio::sync::Mutex<Writer>,
    /// A batch started, the recording closed, or its recorder was dropped.
    wake: tokio::sync::Notify,
    /// The recorder was dropped without `close`.
    dropped: AtomicBool,
}

impl Batching {
    /// Seals each batch when it is `flush_interval` old; ends the recording if its recorder
    /// is dropped without closing it.
    async fn run_timer(self: Arc<Self>) {
        loop {
            let deadline = {
                let mut w = self.writer.lock().await;
                if w.closed {
                    return;
                }
                if self.dropped.load(Ordering::Acquire) {
                    w.closed = true;
                    w.flush(Some(
                        "session ended without closing its recording".to_string(),
                    ))
                    .await;
                    return;
                }
                match w.span {
                    Some((_, t)) if t + w.flush_every <= Instant::now() => {
                        w.flush(None).await;
                        continue;
                    }
                    Some((_, t)) => Some(t + w.flush_every),
                    None => None,
                }
            };
            match deadline {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep_until(d.into()) => {}
                    _ = self.wake.notified() => {}
                },
                None => self.wake.notified().await,
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.shared.dropped.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
    }
}

impl Recorder {
    pub fn session_id(&self) -> &str {
        &self.id
    }

    /// Time since the session started.
    pub fn offset(&self) -> Offset {
        Offset::from_duration(self.started.elapsed())
    }

    /// Records an event now. Waits when the sealer is behind (backpressure).
    pub async fn record(&self, event: Event) -> Result<(), RecordError> {
        self.record_at(Timed {
            at: self.offset(),
            event,
        })
        .await
    }

    /// Records events already stamped, in order, under one lock (`record_at` for each).
    pub async fn record_all(
        &self,
        events: impl IntoIterator<Item = Timed>,
    ) -> Result<(), RecordError> {
        let mut w = self.shared.writer.lock().await;
        if w.closed {
            return Err(RecordError::WriterGone(self.id.clone()));
        }
        for timed in events {
            let started = w.span.is_none();
            w.push(timed);
            if w.batch.len() >= w.chunk_bytes {
                w.flush(None).await;
            } else if started {
                self.shared.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Records an event at a given offset (offsets that go backwards are clamped forward).
    pub async fn record_at(&self, timed: Timed) -> Result<(), RecordError> {
        self.record_all([timed]).await
    }

    /// Seals the last chunk, writes the signed trailer and waits for the upload (or the spool).
    pub async fn close(mut self, reason: &str) -> Result<Summary, RecordError> {
        let gone = || RecordError::WriterGone(self.id.clone());
        {
            let mut w = self.shared.writer.lock().await;
            if w.closed {
                return Err(gone());
            }
            w.closed = true;
            w.flush(Some(reason.to_string())).await;
        }
        self.shared.wake.notify_one();
        let done = self.done.take().ok_or_else(gone)?;
        done.await.map_err(|_| gone())
    }
}

/// Batches and encodes a session's events; sealing runs in the next stage, so a session's
/// events are encoded on one core while the previous chunk is compressed and encrypted on the
/// other.
struct Writer {
    chunk_bytes: usize,
    flush_every: Duration,
    batch: Vec<u8>,
    batch_events: u32,
    span: Option<(u64, Instant)>,
    last_at: u64,
    index: u64,
    totals: JournalEntry,
    sealer: mpsc::Sender<SealJob>,
    /// The last chunk is sealed: nothing more is recorded.
    closed: bool,
}

/// One batch to seal as chunk `index`, with the session's counts up to and including it.
struct SealJob {
    index: u64,
    last: bool,
    batch: Vec<u8>,
    events: u32,
    span: (u64, u64),
    totals: JournalEntry,
    /// Why the session ended, on the last job.
    reason: Option<String>,
}

/// Batches the sealer may hold before the writer waits (each up to `chunk_bytes`).
const SEAL_QUEUE: usize = 2;

/// What the sealer needs of a job once its chunk is sealed.
struct JobInfo {
    index: u64,
    last: bool,
    span: (u64, u64),
    totals: JournalEntry,
}

type Sealed = Result<(Result<(Vec<u8>, [u8; 32]), String>, JobInfo), String>;

enum Upload {
    Header,
    Chunk(u64, Bytes),
    Trailer,
}

impl Writer {
    fn push(&mut self, mut t: Timed) {
        t.at = Offset(t.at.0.max(self.last_at));
        self.last_at = t.at.0;
        let tot = &mut self.totals;
        tot.events += 1;
        match &t.event {
            Event::Command(c) => {
                tot.commands += 1;
                tot.blocked += u64::from(c.decision == Decision::Deny);
            }
            Event::Query(q) => {
                tot.queries += 1;
                tot.blocked += u64::from(q.decision == Decision::Deny);
            }
            Event::Approval(a) => tot.approved += u64::from(a.state == "approved"),
            _ => {}
        }
        if self.span.is_none() {
            self.span = Some((t.at.0, Instant::now()));
        }
        self.batch_events += 1;
        event::encode_into(&mut self.batch, &t);
    }

    /// Hands the batch to the sealer as the next chunk; with a reason, as the last chunk (even
    /// if empty). Waits when the sealer is `SEAL_QUEUE` batches behind.
    async fn flush(&mut self, reason: Option<String>) {
        let last = reason.is_some();
        if self.batch.is_empty() && !last {
            self.span = None;
            return;
        }
        let first_at = self.span.map(|(a, _)| a).unwrap_or(self.last_at);
        // The next batch starts as large as this one was: a busy session does not regrow its
        // buffer, an idle one keeps a small one.
        let next = Vec::with_capacity(self.batch.len().min(self.chunk_bytes + (64 << 10)));
        let batch = std::mem::replace(&mut self.batch, next);
        self.totals.plain += batch.len() as u64;
        let job = SealJob {
            index: self.index,
            last,
            batch,
            events: self.batch_events,
            span: (first_at, self.last_at),
            totals: self.totals.clone(),
            reason,
        };
        self.index += 1;
        self.batch_events = 0;
        self.span = None;
        // The sealer only stops after the last job, so this cannot fail before it.
        let _ = self.sealer.send(job).await;
    }
}

/// Stage two: seals each batch, spools it, hands it to the uploader, and closes the
/// recording with its signed trailer after the last batch.
struct Sealer {
    inner: Arc<Inner>,
    id: String,
    start: SystemTime,
    header: Header,
    aead: Arc<Aead>,
    digests: Vec<u8>,
    chunks: u64,
    stored: u64,
    totals: JournalEntry,
    up: mpsc::Sender<Upload>,
}

impl Sealer {
    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<SealJob>,
        uploader: tokio::task::JoinHandle<()>,
    ) -> Summary {
        // Up to `parallel` chunks are compressed and encrypted at once, on blocking threads;
        // they are spooled, journaled and uploaded strictly in index order.
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let mut inflight = FuturesOrdered::new();
        let mut reason: Option<String> = None;
        loop {
            if reason.is_some() && inflight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => self.store(done),
                job = jobs.recv(), if reason.is_none() && inflight.len() < parallel => match job {
                    Some(job) => {
                        reason = job.reason.clone();
                        inflight.push_back(self.seal(job));
                    }
                    None => reason = Some("session ended without closing its recording".into()),
                },
            }
        }
        let uploaded = self
            .finish(reason.as_deref().unwrap_or_default(), uploader)
            .await;
        Summary {
            session_id: self.id.clone(),
            chunks: self.chunks,
            events: self.totals.events,
            stored_bytes: self.stored,
            plaintext_bytes: self.totals.plain,
            uploaded,
        }
    }

    /// Compresses and seals one batch on a blocking thread.
    fn seal(&self, job: SealJob) -> impl std::future::Future<Output = Sealed> {
        let (aead, digest, level) = (
            self.aead.clone(),
            self.header.digest,
            self.inner.settings.zstd_level,
        );
        let handle = tokio::task::spawn_blocking(move || {
            let r = format::seal_chunk(
                &aead, &digest, job.index, job.last, &job.batch, job.events, job.span, level,
            )
            .map(|s| {
                let sha = keys::sha256(&s);
                (s, sha)
            });
            (
                r.map_err(|e| e.to_string()),
                JobInfo {
                    index: job.index,
                    last: job.last,
                    span: job.span,
                    totals: job.totals,
                },
            )
        });
        async move { handle.await.map_err(|e| e.to_string()) }
    }

    /// Spools a sealed chunk and queues it for upload. The spool copy is fsynced only while
    /// the store is failing: when the store is healthy the upload follows at once, and a
    /// process crash keeps the page cache anyway.
    fn store(&mut self, done: Sealed) {
        let (sealed, sha, job) = match done {
            Ok((Ok((s, sha)), job)) => (s, sha, job),
            Ok((Err(e), job)) => {
                tracing::error!(session = %self.id, chunk = job.index, error = %e, "sealing a chunk failed");
                return;
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "sealing task failed");
                return;
            }
        };
        let index = job.index;
        self.digests.extend_from_slice(&sha);
        self.stored += sealed.len() as u64;
        self.chunks = index + 1;
        self.totals = JournalEntry {
            index,
            sha256: hex::encode(sha),
            size: sealed.len() as u64,
            last: job.last,
            last_at: job.span.1,
            ..job.totals
        };
        let sync = !self.inner.healthy.load(Ordering::Relaxed);
        let sp = &self.inner.spool;
        let spooled = sp
            .write(&self.id, &layout::chunk_name(index), &sealed, sync)
            .and_then(|_| sp.append_journal(&self.id, &self.totals));
        if let Err(e) = spooled {
            tracing::error!(session = %self.id, chunk = index, error = %e, "spooling a chunk failed; uploading from memory");
        }
        // A full queue leaves the chunk to the sweep, which uploads it from the spool.
        let _ = self.up.try_send(Upload::Chunk(index, Bytes::from(sealed)));
    }

    /// Writes the signed trailer, lets the uploader drain, and reports whether all is stored.
    async fn finish(&mut self, reason: &str, uploader: tokio::task::JoinHandle<()>) -> bool {
        let end = SystemTime::now();
        let info = TrailerInfo {
            session_id: self.id.clone(),
            status: Some(Status::Closed),
            reason: reason.to_string(),
            end: humantime::format_rfc3339_micros(end).to_string(),
            end_unix_us: unix_us(end),
            duration_us: unix_us(end)
                .saturating_sub(unix_us(self.start))
                .max(self.totals.last_at),
            chunks: self.chunks,
            chunks_sha256: hex::encode(keys::sha256(&self.digests)),
            stored_bytes: self.stored + self.header.bytes.len() as u64,
            plaintext_bytes: self.totals.plain,
            events: self.totals.events,
            commands: self.totals.commands,
            queries: self.totals.queries,
            blocked: self.totals.blocked,
            approved: self.totals.approved,
        };
        match Trailer::encode(&info, &self.header, &self.inner.signer) {
            Ok(t) => {
                if let Err(e) = self.inner.spool.write(&self.id, "trailer", &t, true) {
                    tracing::error!(session = %self.id, error = %e, "spooling the trailer failed");
                }
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "encoding the trailer failed")
            }
        }
        let _ = self.up.send(Upload::Trailer).await;
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.up, tx));
        let _ = uploader.await;
        if let Ok(mut l) = self.inner.live.lock() {
            l.remove(&self.id);
        }
        !self.inner.spool.session_dir(&self.id).exists()
    }
}

async fn run_uploader(inner: Arc<Inner>, id: String, mut rx: mpsc::Receiver<Upload>) {
    while let Some(up) = rx.recv().await {
        match up {
            Upload::Header => {
                inner.upload_header(&id).await;
            }
            Upload::Chunk(index, bytes) => {
                if inner.put(&layout::chunk(&id, index), bytes).await {
                    let _ = std::fs::remove_file(
                        inner.spool.session_dir(&id).join(layout::chunk_name(index)),
                    );
                }
            }
            Upload::Trailer => {
                inner.complete(&id).await;
            }
        }
    }
}

impl Inner {
    /// Puts one object, keeping the health flag and logging transitions.
    async fn put(&self, key: &str, bytes: Bytes) -> bool {
        match self.store.put(key, bytes).await {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(store = %self.store.url(), "recording store reachable again");
                }
                true
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(store = %self.store.url(), error = %e, "recording store unreachable; spooling");
                }
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = e.to_string();
                }
                false
            }
        }
    }

    async fn upload_file(&self, key: &str, path: &std::path::Path) -> bool {
        match std::fs::read(path) {
            Ok(b) => self.put(key, Bytes::from(b)).await,
            Err(_) => false,
        }
    }

    async fn upload_header(&self, id: &str) -> bool {
        let dir = self.spool.session_dir(id);
        if dir.join(".header.stored").exists() {
            return true;
        }
        let ok = self
            .upload_file(&layout::header(id), &dir.join("header"))
            .await;
        if ok {
            let _ = std::fs::write(dir.join(".header.stored"), b"");
        }
        ok
    }

    /// Uploads the header and chunks still spooled, `older_than` apart from fresh ones.
    async fn upload_spooled(&self, id: &str, older_than: Option<Duration>) -> bool {
        if !self.upload_header(id).await {
            return false;
        }
        for (name, path) in self.spool.files(id) {
            let Some(index) = layout::parse_chunk_name(&name) else {
                continue;
            };
            if let Some(age) = older_than {
                let fresh = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() < age)
                    .unwrap_or(true);
                if fresh {
                    continue;
                }
            }
            if !self.upload_file(&layout::chunk(id, index), &path).await {
                return false;
            }
            let _ = std::fs::remove_file(&path);
        }
        true
    }

    /// Uploads everything of a finished session, the trailer last, then forgets it.
    async fn complete(&self, id: &str) -> bool {
        if !self.upload_spooled(id, None).await {
            return false;
        }
        let trailer = self.spool.session_dir(id).join("trailer");
        if !self.upload_file(&layout::trailer(id), &trailer).await {
            return false;
        }
        self.spool.remove_session(id);
        true
    }

    async fn sweep(&self) {
        let sessions = self.spool.sessions();
        for id in &sessions {
            let live = self.live.lock().map(|l| l.contains(id)).unwrap_or(true);
            if live {
                self.upload_spooled(id, Some(STALE_SPOOL)).await;
                continue;
            }
            if !self.spool.session_dir(id).join("trailer").exists() {
                if let Err(e) = self.close_orphan(id) {
                    tracing::error!(session = %id, error = %e, "cannot close a recording left by a stopped bastion");
                    continue;
                }
            }
            self.complete(id).await;
        }
        if sessions.is_empty() && !self.healthy.load(Ordering::Relaxed) {
            // Nothing to upload that could prove the store is back: ask it something.
            self.probe().await;
        }
    }

    /// Asks the store for a listing and sets the health flag from the answer.
    async fn probe(&self) {
        match self.store.list_dirs(layout::SESSIONS).await {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(store = %self.store.url(), "recording store reachable again");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(store = %self.store.url(), error = %e, "recording store unreachable; spooling");
                }
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = e.to_string();
                }
            }
        }
    }

    /// Writes a signed trailer for a recording whose writer died: the chunks it had spooled
    /// are all the recording has ("ended abnormally at chunk N").
    fn close_orphan(&self, id: &str) -> Result<(), RecordError> {
        let dir = self.spool.session_dir(id);
        let header_bytes = match std::fs::read(dir.join("header")) {
            Ok(b) => b,
            Err(_) => {
                tracing::warn!(session = %id, "spooled session has no header; nothing was recorded, removing it");
                self.spool.remove_session(id);
                return Ok(());
            }
        };
        let header = Header::decode(Bytes::from(header_bytes))?;
        let mut digests = Vec::new();
        let mut last = JournalEntry::default();
        let mut chunks = 0u64;
        for e in self.spool.read_journal(id) {
            if e.index != chunks {
                break;
            }
            let Ok(sha) = hex::decode(&e.sha256) else {
                break;
            };
            digests.extend_from_slice(&sha);
            chunks += 1;
            last = e;
        }
        // A chunk spooled just before the crash, whose journal line did not make it.
        if let Ok(bytes) = std::fs::read(dir.join(layout::chunk_name(chunks))) {
            if format::check_chunk_frame(chunks, &bytes).is_ok() {
                digests.extend_from_slice(&keys::sha256(&bytes));
                last.size = bytes.len() as u64;
                last.last = false;
                chunks += 1;
            }
        }
        let stored = self
            .spool
            .read_journal(id)
            .iter()
            .take(chunks as usize)
            .map(|e| e.size)
            .sum::<u64>();
        let end_us = header.info.start_unix_us + last.last_at;
        let (status, reason) = if chunks > 0 && last.last {
            (
                Status::Closed,
                "bastion stopped after the last chunk; trailer written at restart".to_string(),
            )
        } else if chunks == 0 {
            (
                Status::Abnormal,
                "ended abnormally before the first chunk (bastion stopped)".to_string(),
            )
        } else {
            (
                Status::Abnormal,
                format!("ended abnormally at chunk {} (bastion stopped)", chunks - 1),
            )
        };
        let info = TrailerInfo {
            session_id: id.to_string(),
            status: Some(status),
            reason,
            end: humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(end_us))
                .to_string(),
            end_unix_us: end_us,
            duration_us: last.last_at,
            chunks,
            chunks_sha256: hex::encode(keys::sha256(&digests)),
            stored_bytes: stored + header.bytes.len() as u64,
            plaintext_bytes: last.plain,
            events: last.events,
            commands: last.commands,
            queries: last.queries,
            blocked: last.blocked,
            approved: last.approved,
        };
        let t = Trailer::encode(&info, &header, &self.signer)?;
        self.spool.write(id, "trailer", &t, true)?;
        tracing::warn!(session = %id, chunks, "closed a recording left open by a stopped bastion");
        Ok(())
    }
}

pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
