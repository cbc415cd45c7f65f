//! One Postgres session after authentication: connects to the target with vigil's credentials,
//! resolves the masked columns on it, then relays. Every statement is checked before it reaches
//! the target (simple Query and Parse); a refused one is replaced by a statement that fails on
//! the target, whose error is swapped for vigil's (SQLSTATE 42501). The target therefore
//! discards the rest of the batch until Sync and rolls back as it would for any error, and the
//! responses stay in order. Result rows pass through the masker: each portal is described by
//! vigil itself (an extra Describe after each Bind, whose answer the client never sees), so the
//! masker knows the columns' origins and formats even when the client never asked.

use std::{
    collections::{HashSet, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{Framed, FramedRead};

use super::{
    front::ClientStream,
    masker::{ColumnMask, Masker},
    pool::Idle,
    upstream::{UpstreamSettings, UpstreamStream},
    wire::{
        backend::{self, Backend, FieldDescription, Severity, TransactionStatus},
        codec::{BackendCodec, FrontendCodec},
        frontend::{Frontend, Target as Kind},
        BackendKey,
    },
};
use crate::{
    audit::AuditEvent,
    config::directory::Target,
    daemon::Gateway,
    policy::{
        mask::{self, FunctionSource, MaskCatalog, Method, OutputTaint},
        sql, Action, Decision, Policy,
    },
    recording::{
        event::{Decision as Recorded, ErrorEvent, Event, Exit, Query, Rows, Timed},
        Recorder, SessionMeta,
    },
};

/// What vigil decided about a statement string: the policy decision, the output taint of each
/// statement (for masking), and each statement's text (for the recording).
#[derive(Clone)]
struct Decided {
    decision: Decision,
    taints: Arc<Vec<OutputTaint>>,
    texts: Arc<Vec<String>>,
    /// The string creates, replaces or drops named statements, portals or cursors (PREPARE,
    /// DEALLOCATE, DECLARE, CLOSE, DISCARD), or cannot be classified: what vigil remembers
    /// about names may be stale afterwards.
    renames: bool,
    /// The string can free a prepared statement's name (DEALLOCATE, DISCARD), so that a SQL
    /// PREPARE may put other SQL behind a name vigil saw parsed; or it cannot be classified.
    frees: bool,
    /// It names a relation outside the system schemas that the catalog does not list (made
    /// since the catalog was read, perhaps a view over masked columns).
    unknown: bool,
    /// It deletes or updates under a condition that may read parameters: a Bind decides it
    /// again with the values (`Relay::bound_refusal`).
    param_where: bool,
}

/// A decision cached by a statement string's shape, with each statement's place in the shape's
/// key (the texts are cut from each new string).
struct ShapeDecided {
    decided: Decided,
    spans: Vec<std::ops::Range<usize>>,
}

impl ShapeDecided {
    fn instantiate(&self, sql_text: &str, shape: &sql::Shape) -> Decided {
        Decided {
            texts: Arc::new(statement_texts(sql_text, &self.spans, |o| {
                shape.text_offset(o)
            })),
            ..self.decided.clone()
        }
    }
}

/// Each statement's text, trimmed, from spans mapped into `sql_text` by `map`; none for a
/// single statement (its Run records the whole string).
fn statement_texts(
    sql_text: &str,
    spans: &[std::ops::Range<usize>],
    map: impl Fn(usize) -> usize,
) -> Vec<String> {
    // One statement is recorded as the whole string (`Run::current_sql`).
    if spans.len() < 2 {
        return Vec::new();
    }
    spans
        .iter()
        .map(|r| {
            sql_text
                .get(map(r.start)..map(r.end))
                .unwrap_or(sql_text)
                .trim()
                .to_string()
        })
        .collect()
}

/// The authenticated client connection, as `front.rs` hands it over.
pub struct Client {
    pub stream: Box<dyn ClientStream>,
    pub buf: BytesMut,
    pub peer: SocketAddr,
    pub user: String,
    pub tls: bool,
    pub max_len: usize,
    /// `Gateway::reloads` when the login was checked (its grant and target settings come
    /// from that config).
    pub reloads: u64,
}

/// SQL sent in place of a refused statement: it fails to parse on every PostgreSQL.
const REFUSED_SQL: &str = "vigil refused this statement";
/// The statement name of the Parse sent in place of a refused Bind or Execute (any name would
/// do: the text fails before the name is looked at).
const REFUSED_NAME: &str = "vigil: refused";
/// Rows recorded per statement unless `recording.max_rows` says otherwise.
const DEFAULT_MAX_ROWS: u64 = 1000;
/// What the client gets instead of the error text of a statement that reads masked columns (an
/// error can quote a value: `invalid input syntax for type integer: "123-45-6789"`).
const WITHHELD_ERROR: &str =
    "vigil: the error message was withheld: the statement reads masked columns";
/// How long reading the target's catalog may take.
const CATALOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The catalog is read again before a statement of an idle session once it is this old:
/// views and functions made on the target by others since (a DBA, a migration) are then
/// rated like those it saw at the start.
const CATALOG_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);
/// ... and at once (but not more often than this) when a statement names a relation the
/// catalog does not list.
const CATALOG_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(1);
/// PostgreSQL's first OID for user objects; below it are the system catalogs.
const FIRST_NORMAL_OID: u32 = 16384;
/// Decisions remembered per session, by statement text.
const DECISION_CACHE: usize = 4096;

type Up = Framed<UpstreamStream, BackendCodec>;

/// A session's maps by name or statement text: foldhash, seeded per process, rather than
/// SipHash (they are looked up for every message; the text ones are capped at
/// `DECISION_CACHE` entries).
type Names<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

pub async fn run(gw: Arc<Gateway>, client: Client, target: Target, settings: UpstreamSettings) {
    let Client {
        stream,
        buf,
        peer,
        user,
        tls,
        max_len,
        reloads: login_reloads,
    } = client;
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read, FrontendCodec { max_len });
    // What the client sent right after authenticating.
    reader.read_buffer_mut().extend_from_slice(&buf);
    let fatal = |code: &str, msg: &str| backend::error_response(Severity::Fatal, code, msg, None);
    let audit_base = AuditEvent {
        user: Some(user.clone()),
        target: Some(target.name.clone()),
        source: Some(peer.to_string()),
        protocol: Some("postgres".into()),
        ..AuditEvent::new("")
    };
    if let Err(e) = gw.recordings.admit() {
        gw.audit.record(AuditEvent {
            action: "access.refused".into(),
            detail: Some(e.to_string()),
            ..audit_base.clone()
        });
        let _ = write
            .write_all(&fatal(
                "53000",
                "vigil: sessions are refused while recordings cannot be stored",
            ))
            .await;
        return;
    }
    let meta = SessionMeta {
        protocol: "postgres".into(),
        user: user.clone(),
        target: target.name.clone(),
        client: Some(peer.to_string()),
    };
    // The recording starts (a synced header in the spool) while the target is logged in to.
    // A connection a finished session left in the pool, or a new one.
    // The config generation the login was checked under: the connection is made or taken
    // under it, and goes back to the pool only if no reload came in between (a replaced CA
    // file or credential must not be carried past its reload).
    let generation = login_reloads;
    if gw.reloads() != generation {
        let _ = write
            .write_all(&fatal(
                "08004",
                "vigil: the configuration changed while you logged in; connect again",
            ))
            .await;
        return;
    }
    let pooled = if target.pool {
        gw.pg.pool.take(&settings, &pool_scope(&user, generation))
    } else {
        None
    };
    // The policy goes with the config the catalog is read from; the reload count is read
    // first, so a reload in between is followed again, never missed.
    let seen_reloads = gw.reloads();
    let policy = gw.policy();
    let config = gw.config();
    let roles = config.directory.roles_of(&user).to_vec();
    let mask_settings = mask_settings(&config, &target.name, &roles);
    let connect = || async {
        super::upstream::connect(&settings).await.map(|u| Idle {
            params: u.params.clone(),
            backend_key: u.backend_key,
            up: u.into_framed(max_len),
        })
    };
    let (recorder, upstream) = tokio::join!(gw.recordings.begin(meta), async {
        let Some((mut idle, waited)) = pooled else {
            return connect().await.map(|u| (u, None));
        };
        // A kept connection must answer its first round trip in time (`pool.rs`): else it is
        // dropped and the session logs in afresh, its client none the wiser.
        idle.up.codec_mut().max_len = max_len;
        let answered = if !mask_settings.is_empty() {
            // (A connection from the pool listens on nothing: DISCARD ALL.)
            let mut none = Vec::new();
            let key = system_key(&target.name, &idle.params);
            let system = (&gw.pg.system_relations, key.as_str());
            let read = load_catalog(
                &mut idle.up,
                &config,
                &target.name,
                &roles,
                system,
                &mut none,
            );
            tokio::time::timeout(super::pool::CHECK_TIMEOUT, read)
                .await
                .ok()
                .and_then(Result::ok)
        } else if waited >= super::pool::CHECK_AFTER {
            super::pool::check(&mut idle).await.then(MaskCatalog::new)
        } else {
            Some(MaskCatalog::new())
        };
        match answered {
            Some(catalog) => Ok((idle, Some(catalog))),
            None => {
                tracing::info!(target = %target.name, "a kept target connection did not answer; logging in afresh");
                connect().await.map(|u| (u, None))
            }
        }
    });
    let recorder = match recorder {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a recording");
            gw.audit.record(AuditEvent {
                action: "access.refused".into(),
                detail: Some(format!("cannot start the session recording: {e}")),
                ..audit_base.clone()
            });
            let _ = write
                .write_all(&fatal("53000", "vigil: cannot start the session recording"))
                .await;
            return;
        }
    };
    let session_audit = AuditEvent {
        session: Some(recorder.session_id().to_string()),
        ..audit_base
    };
    gw.audit.record(AuditEvent {
        action: "session.start".into(),
        detail: Some(if tls { "tls" } else { "plain" }.into()),
        ..session_audit.clone()
    });
    let upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            let msg = format!("vigil: target {} is unavailable: {e}", target.name);
            let _ = recorder
                .record(Event::Error(ErrorEvent {
                    message: msg.clone(),
                    code: Some("08006".into()),
                }))
                .await;
            let _ = write.write_all(&fatal("08006", &msg)).await;
            gw.audit.record(AuditEvent {
                action: "upstream.failure".into(),
                detail: Some(e.to_string()),
                ..session_audit.clone()
            });
            gw.audit.record(AuditEvent {
                action: "session.end".into(),
                detail: Some("target unavailable".into()),
                ..session_audit.clone()
            });
            let _ = recorder.close("target unavailable").await;
            return;
        }
    };
    let (
        Idle {
            params,
            backend_key: upstream_key,
            mut up,
        },
        catalog,
    ) = upstream;
    let catalog = match catalog {
        Some(c) => Ok(c),
        None => tokio::time::timeout(
            CATALOG_TIMEOUT,
            load_catalog(
                &mut up,
                &config,
                &target.name,
                &roles,
                (&gw.pg.system_relations, &system_key(&target.name, &params)),
                &mut Vec::new(),
            ),
        )
        .await
        .unwrap_or_else(|_| Err("the catalog did not answer in time".into())),
    };
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "vigil: cannot resolve the masked columns on {}: {e}",
                target.name
            );
            let _ = write.write_all(&fatal("XX000", &msg)).await;
            gw.audit.record(AuditEvent {
                action: "session.end".into(),
                detail: Some(msg.clone()),
                ..session_audit.clone()
            });
            let _ = recorder.close(&msg).await;
            return;
        }
    };
    let ours = random_key();
    if let Some(k) = upstream_key {
        gw.pg.register(ours, (settings.clone(), k));
    }
    let mut hello = BytesMut::new();
    hello.extend_from_slice(&backend::auth_ok());
    for (k, v) in &params {
        hello.extend_from_slice(&backend::parameter_status(k, v));
    }
    hello.extend_from_slice(&backend::backend_key_data(ours));
    hello.extend_from_slice(&backend::ready_for_query(TransactionStatus::Idle));
    let mut relay = Relay {
        gw: gw.clone(),
        target: target.name.clone(),
        user: user.clone(),
        roles,
        policy,
        seen_reloads,
        reloads: 0,
        mask_settings,
        masks_pending: false,
        catalog: Arc::new(catalog),
        masker: Masker::new(gw.pg.secret()),
        recorder,
        expects: VecDeque::new(),
        statements: Names::default(),
        portals: Names::default(),
        sql_prepared: Names::default(),
        cache: Names::default(),
        shapes: Names::default(),
        described: None,
        max_rows: config
            .file
            .recording
            .as_ref()
            .and_then(|r| r.max_rows)
            .unwrap_or(DEFAULT_MAX_ROWS),
        status: TransactionStatus::Idle,
        audit: session_audit.clone(),
        catalog_stale: false,
        catalog_read: Instant::now(),
        notifications: Vec::new(),
        unresolved: HashSet::new(),
        may_shadow: false,
        executes: 0,
        skipping: false,
        copy_in: false,
        client_syncs: 0,
        answered_syncs: 0,
        last_idle: 0,
        open_batch: false,
        reviewed: None,
        approved_once: Names::default(),
        key: ours,
        later: Later::default(),
        upstream_params: params.clone(),
        ended_cleanly: false,
    };
    let id = relay.recorder.session_id().to_string();
    let index =
        gw.approvals
            .session_started(&id, "postgres", &user, &target.name, Some(peer.to_string()));
    index.await;
    let reason = if write.write_all(&hello).await.is_err() {
        "client went away".to_string()
    } else {
        relay.pump(reader, write, &mut up).await
    };
    relay.catch_up().await;
    gw.pg.unregister(ours);
    if relay.ended_cleanly {
        // Nothing in flight and nothing unread: the connection can serve the next session.
        if target.pool
            && gw.reloads() == generation
            && relay.idle()
            && up.read_buffer().is_empty()
            && up.write_buffer().is_empty()
        {
            let idle = Idle {
                up,
                params: std::mem::take(&mut relay.upstream_params),
                backend_key: upstream_key,
            };
            let scope = pool_scope(&user, generation);
            super::pool::keep(gw.clone(), &settings, &scope, idle);
        } else {
            let _ = up.send(super::wire::frontend::terminate()).await;
        }
    }
    let _ = relay
        .recorder
        .record(Event::Exit(Exit {
            status: None,
            signal: None,
            reason: Some(reason.clone()),
        }))
        .await;
    gw.audit.record(AuditEvent {
        action: "session.end".into(),
        detail: Some(reason.clone()),
        ..session_audit
    });
    let _ = relay.recorder.close(&reason).await;
    gw.approvals.session_ended(&id, &reason).await;
}

/// Whose target connections a session may reuse (`pool.rs`): its vigil user's, under the same
/// config generation.
fn pool_scope(user: &str, reloads: u64) -> String {
    format!("{user}\0{reloads}")
}

fn random_key() -> BackendKey {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let [p0, p1, p2, p3, s0, s1, s2, s3] = b;
    BackendKey {
        // A positive pid, as a server's would be.
        pid: i32::from_be_bytes([p0 & 0x3f, p1, p2, p3]).max(1),
        secret: i32::from_be_bytes([s0, s1, s2, s3]),
    }
}

/// What vigil waits for from the target, in order.
enum Expect {
    /// A simple Query: everything up to ReadyForQuery. `refused`: the error that replaces the
    /// target's.
    Query(Box<Run>, Option<Bytes>),
    /// A Parse of this statement name (forwarded, not refused).
    Parse(String),
    /// A Bind creating this portal.
    Bind(String),
    Close,
    /// The client's Describe: forwarded.
    Describe,
    /// A Describe of a portal right before an Execute, whose answer plans that Execute: vigil's
    /// own (consumed), or the client's when it sent one there itself (forwarded: libpq sends
    /// Bind, Describe, Execute, Sync). (portal, the Execute's number, the taint of the statement
    /// bound to it, the sync point after which it was bound: the taint holds only if no
    /// transaction ended since; whether the answer goes to the client.)
    OurDescribe(String, u64, Option<OutputTaint>, u64, bool),
    Execute(Box<Run>),
    Sync,
    /// A refused Parse: the target's error is replaced with this one.
    Refused(Bytes),
}

/// One statement (or Query string) on its way: what it was, how to mask its rows, what the
/// client saw.
struct Run {
    /// Shared with the prepared statement and portal it runs (not copied per Execute).
    sql: Arc<str>,
    params: Arc<Vec<Option<String>>>,
    started: Instant,
    taints: Arc<Vec<OutputTaint>>,
    index: usize,
    plan: Arc<Vec<Option<ColumnMask>>>,
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    count: u64,
    truncated: bool,
    decision: Decision,
    /// The statements of a simple-Query string, one per result, for the recording.
    texts: Arc<Vec<String>>,
    /// The current statement's Query event is recorded.
    recorded: bool,
    /// For an Execute: the portal binding it runs, and whether vigil's Describe of that
    /// binding has planned its masks yet.
    binding: Option<(String, u64)>,
    planned: bool,
}

impl Run {
    fn new(sql: Arc<str>, taints: Arc<Vec<OutputTaint>>, decision: Decision) -> Run {
        Run {
            sql,
            params: Arc::new(Vec::new()),
            started: Instant::now(),
            taints,
            index: 0,
            plan: Arc::new(Vec::new()),
            columns: Vec::new(),
            rows: Vec::new(),
            count: 0,
            truncated: false,
            decision,
            texts: Arc::new(Vec::new()),
            recorded: false,
            binding: None,
            planned: false,
        }
    }

    /// A simple Query: its statements (`texts`, from the analysis) are recorded one by one.
    fn query(sql_text: &str, d: Decided) -> Run {
        let mut run = Run::new(sql_text.into(), d.taints, d.decision);
        run.texts = d.texts;
        run
    }

    /// The text of the statement whose results are arriving.
    fn current_sql(&self) -> &str {
        match self.texts.len() {
            0 | 1 => &self.sql,
            _ => self.texts.get(self.index).map_or(&self.sql, |s| s.as_str()),
        }
    }

    fn taint(&self) -> Option<&OutputTaint> {
        self.taints.get(self.index)
    }

    fn references_masked(&self) -> bool {
        self.taints.iter().any(|t| t.references_masked)
    }
}

struct Prepared {
    sql: Arc<str>,
    taints: Arc<Vec<OutputTaint>>,
    decision: Decision,
    /// The `Relay::reloads` it was decided under: after a reload a Bind decides it again.
    reloads: u64,
    /// The Parse went to the target as it was (not refused): only such a statement can be
    /// allowed by a later decision.
    prepared: bool,
    /// `Decided::param_where`.
    param_where: bool,
}

/// What a Bind made: the statement behind the portal. Its columns come from vigil's Describe
/// before each Execute.
struct Portal {
    /// Sync points (Sync or Query) the client had sent when it was bound.
    sync_no: u64,
    sql: Arc<str>,
    taints: Arc<Vec<OutputTaint>>,
    params: Arc<Vec<Option<String>>>,
    decision: Decision,
    /// The `Relay::reloads` it was bound under: after a reload its Execute is decided again.
    reloads: u64,
}

struct Relay {
    gw: Arc<Gateway>,
    target: String,
    user: String,
    roles: Vec<String>,
    /// The policy the cached decisions, the roles and the catalog's masks were made with; a
    /// reload (SIGHUP) replaces it, and with it all of them (`Relay::follow_reload`).
    policy: Arc<Policy>,
    /// `Gateway::reloads` when `policy` was taken.
    seen_reloads: u64,
    /// How many times this session re-read its config or catalog (`Prepared::reloads`).
    reloads: u64,
    /// The `[[mask]]` settings the catalog was read with (`mask_settings`).
    mask_settings: Vec<(String, Method)>,
    /// A reload changed them while the session was busy: until the catalog is read again (at
    /// the next idle point), every value, notice and error that comes back is withheld.
    masks_pending: bool,
    catalog: Arc<MaskCatalog>,
    masker: Masker,
    recorder: Recorder,
    expects: VecDeque<Expect>,
    statements: Names<Prepared>,
    portals: Names<Portal>,
    /// SQL-level PREPARE name → the taint of the prepared query.
    sql_prepared: Names<OutputTaint>,
    cache: Names<Decided>,
    shapes: Names<ShapeDecided>,
    /// The portal named by the client's last message when that was a Describe of a portal.
    described: Option<String>,
    max_rows: u64,
    status: TransactionStatus,
    audit: AuditEvent,
    catalog_stale: bool,
    /// When the catalog was read.
    catalog_read: Instant,
    /// Notifications that arrived while vigil read the catalog: the client gets them next.
    notifications: Vec<Bytes>,
    /// The relations statements named that the last read of the catalog did not list: they
    /// do not make vigil read it again until it is old (they are masked all the same).
    unresolved: HashSet<String>,
    /// A statement of this session may have made a relation (a temporary one is searched
    /// before `pg_catalog`) or changed the search path: an unqualified name is no longer taken
    /// for a system catalog (`Relay::system_relation`).
    may_shadow: bool,
    /// Executes so far: pairs each Execute with vigil's Describe before it.
    executes: u64,
    /// The target failed an extended-protocol message and discards everything up to the next
    /// Sync, including what the client sends after the error arrived: nothing is expected back
    /// for those messages.
    skipping: bool,
    /// The target reads COPY data: it ignores Sync and Flush until CopyDone or CopyFail, so they
    /// expect nothing back.
    copy_in: bool,
    /// Sync points (Sync, Query) sent to the target, and answered by it; the last answered one
    /// that left no transaction open (portals die there).
    client_syncs: u64,
    answered_syncs: u64,
    last_idle: u64,
    /// Extended-protocol messages went to the target since the last sync point: the target may
    /// be inside an unfinished batch, so vigil sends it nothing of its own.
    open_batch: bool,
    /// The outcome of the approval the next Query or Parse of this text waited for (`hold.rs`).
    reviewed: Option<(String, Decision)>,
    /// Prepared statements an approval covers for one Bind: name → that Bind happened.
    approved_once: Names<bool>,
    /// The BackendKeyData key the client got: its CancelRequest cancels a held statement.
    key: BackendKey,
    /// Bookkeeping kept for after the I/O it describes (`Relay::catch_up`).
    later: Later,
    /// The target's ParameterStatus values, kept up to date for the pool (`pool.rs`).
    upstream_params: Vec<(String, String)>,
    /// The client ended the session (Terminate, or closing its end), not vigil or the target:
    /// the target connection may go back to the pool.
    ended_cleanly: bool,
}

/// What a statement leaves to record: the recording's events (stamped when they happened) and
/// the allow lines of the audit log (statement text, rule). It is written once the bytes the
/// statement's messages made are on their way (`Relay::pump`), so that encoding, hashing and
/// compressing are not between the client and the target; before any other audit line or
/// recording event of the session (a deny, an approval, the session's end), so that each log
/// keeps the order things happened in.
#[derive(Default)]
struct Later {
    events: Vec<Timed>,
    allowed: Vec<(String, Option<String>)>,
}

impl Relay {
    /// Relays until either side ends; returns why.
    async fn pump(
        &mut self,
        mut client: FramedRead<ReadHalf<Box<dyn ClientStream>>, FrontendCodec>,
        mut out: WriteHalf<Box<dyn ClientStream>>,
        up: &mut Up,
    ) -> String {
        let mut to_client = BytesMut::new();
        loop {
            tokio::select! {
                // No random start: both branches are drained in turn anyway.
                biased;
                m = client.next() => match m {
                    None => {
                        self.ended_cleanly = true;
                        return "client closed the connection".into();
                    }
                    Some(Err(e)) => {
                        let _ = out.write_all(&backend::error_response(Severity::Fatal, "08P01", &format!("vigil: {e}"), None)).await;
                        return format!("protocol error from the client: {e}");
                    }
                    Some(Ok(Frontend::Terminate { .. })) => {
                        self.ended_cleanly = true;
                        return "client terminated the session".into();
                    }
                    Some(Ok(m)) => {
                        if let Err(why) = self.take(m, &mut out, &mut client, up, &mut to_client).await {
                            let _ = out.write_all(&to_client).await;
                            return why;
                        }
                        // What the client already sent (a pipelined Bind/Execute/Sync arrives in
                        // one read) goes upstream in one write, not one per message.
                        loop {
                            match futures::FutureExt::now_or_never(client.next()) {
                                Some(Some(Ok(Frontend::Terminate { .. }))) => {
                                    let _ = up.flush().await;
                                    self.ended_cleanly = true;
                                    return "client terminated the session".into();
                                }
                                Some(None) => {
                                    let _ = up.flush().await;
                                    self.ended_cleanly = true;
                                    return "client closed the connection".into();
                                }
                                Some(Some(Ok(m))) => {
                                    // A statement later in the same read waits for its
                                    // approval as the first one would.
                                    if let Err(why) = self.take(m, &mut out, &mut client, up, &mut to_client).await {
                                        let _ = out.write_all(&to_client).await;
                                        return why;
                                    }
                                }
                                Some(Some(Err(e))) => {
                                    let _ = up.flush().await;
                                    let _ = out.write_all(&to_client).await;
                                    let _ = out.write_all(&backend::error_response(Severity::Fatal, "08P01", &format!("vigil: {e}"), None)).await;
                                    return format!("protocol error from the client: {e}");
                                }
                                None => break,
                            }
                        }
                        if up.flush().await.is_err() {
                            let _ = out.write_all(&backend::error_response(Severity::Fatal, "08006", "vigil: the target closed the connection", None)).await;
                            return "target went away".into();
                        }
                    }
                },
                m = up.next() => {
                    let m = match m {
                        None => {
                            let _ = out.write_all(&backend::error_response(Severity::Fatal, "08006", "vigil: the target closed the connection", None)).await;
                            return "target closed the connection".into();
                        }
                        Some(Err(e)) => {
                            let _ = out.write_all(&backend::error_response(Severity::Fatal, "08006", &format!("vigil: protocol error from the target: {e}"), None)).await;
                            return format!("protocol error from the target: {e}");
                        }
                        Some(Ok(m)) => m,
                    };
                    self.note_reload();
                    if let Err(why) = self.on_target(m, &mut to_client).await {
                        let _ = out.write_all(&to_client).await;
                        return why;
                    }
                    // Drain what is already buffered before writing, up to 256 KiB.
                    while to_client.len() < 256 << 10 {
                        match futures::FutureExt::now_or_never(up.next()) {
                            Some(Some(Ok(m))) => {
                                if let Err(why) = self.on_target(m, &mut to_client).await {
                                    let _ = out.write_all(&to_client).await;
                                    return why;
                                }
                            }
                            _ => break,
                        }
                    }
                    // The catalog is re-read only between statements, outside any transaction
                    // (its queries set a statement-local search_path), with nothing pending.
                    if self.catalog_stale && self.idle() {
                        if let Err(why) = self.reload_catalog(up).await {
                            let _ = out.write_all(&to_client).await;
                            let _ = out.write_all(&backend::error_response(Severity::Fatal, "XX000", "vigil: cannot re-read the masked columns; the session is closed", None)).await;
                            return why;
                        }
                        for n in self.notifications.drain(..) {
                            to_client.extend_from_slice(&n);
                        }
                    }
                }
            }
            if !to_client.is_empty() {
                if out.write_all(&to_client).await.is_err() {
                    return "client went away".into();
                }
                to_client.clear();
            }
            self.catch_up().await;
        }
    }

    /// Records an event of this session (written by `catch_up`).
    fn record(&mut self, event: Event) {
        self.later.events.push(Timed {
            at: self.recorder.offset(),
            event,
        });
    }

    /// Writes what `Later` holds: the allow lines first, then the recording's events.
    async fn catch_up(&mut self) {
        self.write_allowed();
        if !self.later.events.is_empty() {
            let _ = self.recorder.record_all(self.later.events.drain(..)).await;
        }
    }

    fn write_allowed(&mut self) {
        for (sql_text, rule) in self.later.allowed.drain(..) {
            self.gw
                .audit
                .record_allowed(&self.audit, &sql_text, rule.as_deref());
        }
    }

    /// One message from the client: a reload is followed before it is judged, held or sent,
    /// and again after a hold (one can come during the wait; the decision is then made anew).
    async fn take(
        &mut self,
        m: Frontend,
        out: &mut WriteHalf<Box<dyn ClientStream>>,
        client: &mut FramedRead<ReadHalf<Box<dyn ClientStream>>, FrontendCodec>,
        up: &mut Up,
        to_client: &mut BytesMut,
    ) -> Result<(), String> {
        self.follow_reload_or_end(up, to_client).await?;
        let mut pre = self.hold(&m, out, client, up).await.inspect_err(|_| {
            to_client.extend_from_slice(&backend::error_response(
                Severity::Fatal,
                "XX000",
                "vigil: cannot re-read the masked columns; the session is closed",
                None,
            ))
        })?;
        let waited = pre
            .as_ref()
            .is_some_and(|d| d.decision.action == Action::Review);
        if waited && self.follow_reload_or_end(up, to_client).await? {
            pre = None;
        }
        for n in self.notifications.drain(..) {
            to_client.extend_from_slice(&n);
        }
        self.on_client(m, pre, up, to_client).await
    }

    /// `follow_reload`; when it fails, the client is told why (FATAL) and the session ends.
    async fn follow_reload_or_end(
        &mut self,
        up: &mut Up,
        to_client: &mut BytesMut,
    ) -> Result<bool, String> {
        self.follow_reload(up).await.inspect_err(|why| {
            to_client.extend_from_slice(&backend::error_response(
                Severity::Fatal,
                "57P01",
                &format!("vigil: {why}"),
                None,
            ))
        })
    }

    /// A Query or Parse that a review rule holds waits here for its approval (`hold.rs`); the
    /// outcome replaces the decision when `on_client` handles the message.
    /// Returns the decision it made (`on_client` uses it rather than deciding again). What the
    /// client sent before this message in the same read already went to `up`: it is flushed
    /// first, so that it runs while this one waits.
    async fn hold(
        &mut self,
        m: &Frontend,
        out: &mut WriteHalf<Box<dyn ClientStream>>,
        client: &mut FramedRead<ReadHalf<Box<dyn ClientStream>>, FrontendCodec>,
        up: &mut Up,
    ) -> Result<Option<Decided>, String> {
        let text = match m {
            Frontend::Query { sql, .. } | Frontend::Parse { sql, .. } if !self.skipping => sql,
            _ => return Ok(None),
        };
        let mut decided = self.decide(text);
        // A catalog that may be behind the target is read again first, when the session
        // is idle (inside a transaction vigil cannot run its own queries).
        if self.catalog.has_masks() && self.idle() {
            let age = self.catalog_read.elapsed();
            let new = decided.unknown && self.unlisted(&decided, true).next().is_some();
            if age >= CATALOG_MAX_AGE || (new && age >= CATALOG_MIN_AGE) {
                self.reload_catalog(up).await?;
                decided = self.decide(text);
                // What a fresh catalog does not list either (a relation that does not exist
                // yet...) does not make it read again until it is old.
                let still: Vec<String> = self.unlisted(&decided, true).cloned().collect();
                self.unresolved.extend(still);
            }
        }
        let decided = self.unlisted_masked(decided);
        if decided.decision.action != Action::Review {
            return Ok(Some(decided));
        }
        // (A target that went away shows when the message itself is sent.)
        let _ = up.flush().await;
        self.catch_up().await;
        let d = &decided.decision;
        let holder = super::hold::Holder {
            gw: &self.gw,
            recorder: &self.recorder,
            user: self.audit.user.as_deref().unwrap_or_default(),
            target: &self.target,
            key: self.key,
        };
        // While it waits, what the client sends is kept for later (up to 1 MiB); its going
        // away cancels the request, so that nothing runs for a requester who left.
        let gone = async {
            let mut chunk = [0u8; 8192];
            loop {
                if client.read_buffer().len() > 1 << 20 {
                    std::future::pending::<()>().await;
                }
                match client.get_mut().read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => client.read_buffer_mut().extend_from_slice(&chunk[..n]),
                }
            }
        };
        let outcome = holder.hold(text, d, out, gone).await;
        self.reviewed = Some((text.clone(), outcome));
        Ok(Some(decided))
    }

    /// The decision for `sql_text` with a held statement's approval outcome applied; a review
    /// that did not wait (it cannot reach here) stays refused.
    /// The held outcome is taken whatever the decision is now: a policy reload during the wait
    /// can change it, and a stale approval must not wait for a later message of the same text.
    fn reviewed(&mut self, sql_text: &str, mut d: Decided) -> Decided {
        let outcome = self.reviewed.take();
        if d.decision.action == Action::Review {
            d.decision = match outcome {
                Some((text, outcome)) if text == sql_text => outcome,
                _ => Decision {
                    action: Action::Deny,
                    message: "the statement was not approved".into(),
                    ..d.decision
                },
            };
        }
        d
    }

    /// Decides about a statement string. Cached by its exact text, and by its shape (the text
    /// without its numeric constants, see `sql::Shape`) when the decision provably does not
    /// depend on them: PostgreSQL's scanner agrees on where the numbers are and no analysis read
    /// a number's value (`WHERE 1=1` must not ride on `WHERE 1=0`'s allow).
    fn decide(&mut self, sql_text: &str) -> Decided {
        if let Some(hit) = self.cache.get(sql_text) {
            return hit.clone();
        }
        let shape = sql::shape(sql_text);
        if let Some(s) = &shape {
            if let Some(hit) = self.shapes.get(&s.key) {
                return hit.instantiate(sql_text, s);
            }
        }
        sql::constants::watch();
        let parsed = sql::parse(sql_text);
        let analysis = match &parsed {
            Ok(p) => sql::analyze_parsed(sql_text, p),
            Err(e) => Err(e.clone()),
        };
        let mut decision = self
            .policy
            .check_sql(&self.roles, &self.target, analysis.as_ref());
        let taints: Vec<OutputTaint> = if self.catalog.has_masks() {
            mask::analyze_parsed(&self.catalog, parsed.as_ref())
        } else {
            Vec::new()
        };
        let numbers_read = sql::constants::was_read();
        // While the masks that changed with a reload are not read yet, vigil cannot tell what
        // a statement reads or copies: only ending the transaction (or savepoints) runs.
        let control_only = |a: &sql::Analysis| {
            a.statements.iter().all(|st| {
                st.kinds.iter().all(|k| {
                    [
                        "COMMIT",
                        "ROLLBACK",
                        "SAVEPOINT",
                        "RELEASE SAVEPOINT",
                        "ROLLBACK TO SAVEPOINT",
                    ]
                    .contains(&k.as_str())
                })
            })
        };
        if self.masks_pending
            && decision.action == Action::Allow
            && !analysis.as_ref().is_ok_and(control_only)
        {
            decision = Decision {
                action: Action::Deny,
                rule: Some("masking".into()),
                message: "the masked columns changed with a config reload; end the transaction (COMMIT or ROLLBACK) to go on".into(),
                approvers: Vec::new(),
                incomplete: false,
            };
        }
        if decision.action == Action::Allow {
            if let Some(why) = analysis.as_ref().ok().and_then(encoding_change) {
                decision = Decision {
                    action: Action::Deny,
                    rule: None,
                    message: why.into(),
                    approvers: Vec::new(),
                    incomplete: false,
                };
            }
        }
        if decision.action == Action::Allow {
            if let Some(r) = taints.iter().find_map(|t| t.refuse.as_ref()) {
                decision = Decision {
                    action: Action::Deny,
                    rule: Some("masking".into()),
                    message: r.to_string(),
                    approvers: Vec::new(),
                    incomplete: false,
                };
            }
        }
        let spans: Vec<std::ops::Range<usize>> = match &analysis {
            Ok(a) => a.statements.iter().map(|st| st.span.clone()).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(a) = &analysis {
            let ddl = |k: &String| {
                [
                    "CREATE",
                    "ALTER",
                    "DROP",
                    "GRANT",
                    "REVOKE",
                    "COMMENT",
                    "SECURITY LABEL",
                ]
                .iter()
                .any(|p| k.starts_with(p))
            };
            if a.statements.iter().any(|s| s.kinds.iter().any(ddl)) {
                self.catalog_stale = true;
            }
            // Decided, not yet run (perhaps never): taken as run, for good.
            let shadows = |k: &String| {
                ["CREATE", "ALTER", "IMPORT", "RESET", "DISCARD"]
                    .iter()
                    .any(|p| k.starts_with(p))
                    || k == "SET SEARCH_PATH"
            };
            if !self.may_shadow && a.statements.iter().any(|s| s.kinds.iter().any(shadows)) {
                self.may_shadow = true;
                // What was analysed before trusted unqualified system names (the target
                // resolves a prepared statement's names again when its search path changes).
                self.forget_analyses();
            }
        }
        let renames = match &analysis {
            Ok(a) => a.statements.iter().any(|st| {
                st.kinds.iter().any(|k| {
                    ["PREPARE", "DEALLOCATE", "DECLARE", "CLOSE", "DISCARD"]
                        .iter()
                        .any(|p| k.starts_with(p))
                })
            }),
            Err(_) => true,
        };
        let frees = match &analysis {
            Ok(a) => a.statements.iter().any(|st| {
                st.kinds
                    .iter()
                    .any(|k| k.starts_with("DEALLOCATE") || k.starts_with("DISCARD"))
            }),
            Err(_) => true,
        };
        let unknown = taints
            .iter()
            .any(|t| t.unknown_relations.iter().any(|r| !self.system_relation(r)));
        let param_where = analysis
            .as_ref()
            .is_ok_and(|a| a.statements.iter().any(|st| st.params_decide));
        let entry = Decided {
            decision,
            taints: Arc::new(taints),
            texts: Arc::new(statement_texts(sql_text, &spans, |o| o)),
            renames,
            frees,
            unknown,
            param_where,
        };
        if self.cache.len() + self.shapes.len() >= DECISION_CACHE || self.catalog_stale {
            self.cache.clear();
            self.shapes.clear();
        }
        if self.catalog_stale {
            return entry;
        }
        let reusable = match (&shape, &parsed) {
            (Some(s), Ok(p)) => !numbers_read && s.agrees_with(&p.numbers),
            _ => false,
        };
        match shape {
            Some(s) if reusable => {
                let spans = spans
                    .iter()
                    .map(|r| s.key_offset(r.start)..s.key_offset(r.end))
                    .collect();
                self.shapes.insert(
                    s.key,
                    ShapeDecided {
                        decided: entry.clone(),
                        spans,
                    },
                );
            }
            _ => {
                self.cache.insert(sql_text.to_string(), entry.clone());
            }
        }
        entry
    }

    /// After a config reload (SIGHUP) the session decides with the new policy and the user's
    /// new roles: nothing decided before is reused. When the masks that apply to this user
    /// changed, the masked columns are read again before the next statement goes upstream;
    /// that needs the session to be idle (nothing pending, no transaction open). Until it is,
    /// everything that comes back is withheld and only transaction control runs
    /// (`masks_pending`): nothing passes with the old masks. `Ok(true)` when there was a
    /// reload to follow.
    async fn follow_reload(&mut self, up: &mut Up) -> Result<bool, String> {
        if !self.note_reload() {
            return Ok(false);
        }
        if !self.masks_pending {
            return Ok(true);
        }
        if self.idle() {
            self.reload_catalog(up).await?;
        }
        Ok(true)
    }

    /// Nothing is pending and no transaction is open: vigil may run its own queries (the
    /// catalog's, with a statement-local search_path) on the connection.
    fn idle(&self) -> bool {
        self.expects.is_empty()
            && self.answered_syncs == self.client_syncs
            && !self.open_batch
            && !self.skipping
            && !self.copy_in
            && self.status == TransactionStatus::Idle
    }

    /// The part of `follow_reload` that needs no I/O (also run for what the target sends, so
    /// that rows of a statement already running are withheld too); true when there was one.
    fn note_reload(&mut self) -> bool {
        let seen = self.gw.reloads();
        if seen == self.seen_reloads {
            return false;
        }
        self.seen_reloads = seen;
        let now = self.gw.policy();
        let config = self.gw.config();
        let roles = config.directory.roles_of(&self.user).to_vec();
        if mask_settings(&config, &self.target, &roles) != self.mask_settings {
            self.masks_pending = true;
            self.catalog_stale = true;
        }
        self.policy = now;
        self.reloads += 1;
        self.roles = roles;
        self.cache.clear();
        self.shapes.clear();
        true
    }

    /// Whether anything coming back may need masking.
    fn masks_apply(&self) -> bool {
        self.masks_pending || self.catalog.has_masks()
    }

    /// A statement parsed under an earlier policy is decided again before a Bind runs it. One
    /// that a review allowed stays as it is only if the new policy still allows it outright.
    fn redecide_after_reload(&mut self, name: &str) {
        let Some(text) = self
            .statements
            .get(name)
            .filter(|p| p.reloads != self.reloads)
            .map(|p| p.sql.clone())
        else {
            return;
        };
        let d = self.decide(&text);
        // As at Parse: a relation the catalog does not list has every column masked.
        let d = self.unlisted_masked(d);
        if let Some(p) = self.statements.get_mut(name) {
            // A statement refused at Parse stays refused (the target never prepared it); one
            // that was prepared takes the new decision, whatever the one before was (a refusal
            // while changed masks were pending is not final).
            if p.prepared {
                p.decision = d.decision;
                p.taints = d.taints;
            }
            p.reloads = self.reloads;
        }
        self.approved_once.remove(name);
    }

    /// A portal bound before a reload is decided again before it executes (a client that
    /// keeps a portal open in a transaction, fetching with a row limit, gets no more rows once
    /// the policy stops allowing its statement). As at Bind, a statement that a review allowed
    /// runs on only if the new policy allows it outright. `Some`: the portal's statement text
    /// and why it may not run. One lookup when nothing was reloaded (every Execute asks).
    fn portal_refusal(&mut self, portal: &str) -> Option<(Arc<str>, Decision)> {
        let p = self.portals.get(portal)?;
        if p.reloads == self.reloads {
            return (p.decision.action != Action::Allow)
                .then(|| (p.sql.clone(), p.decision.clone()));
        }
        let text = p.sql.clone();
        let d = self.decide(&text).decision;
        let p = self.portals.get_mut(portal)?;
        p.reloads = self.reloads;
        p.decision = match d.action {
            Action::Allow | Action::Deny => d,
            Action::Review => Decision {
                action: Action::Deny,
                message: "the policy now asks for an approval of this statement; bind it again to ask for one".into(),
                ..d
            },
        };
        (p.decision.action != Action::Allow).then(|| (text, p.decision.clone()))
    }

    /// Refuses a Bind, Execute or other extended-protocol message: recorded and audited, the
    /// target gets `refused_in_place()` instead, and the client vigil's error in the place of
    /// the target's.
    async fn refuse_in_place(
        &mut self,
        up: &mut Up,
        sql_text: &str,
        d: &Decision,
    ) -> Result<(), String> {
        self.record_refused(sql_text, d);
        up.feed(refused_in_place())
            .await
            .map_err(|e| e.to_string())?;
        self.expects.push_back(Expect::Refused(self.refusal(d)));
        Ok(())
    }

    fn refusal(&self, d: &Decision) -> Bytes {
        backend::error_response(
            Severity::Error,
            "42501",
            &format!("vigil: {}", d.user_message()),
            None,
        )
    }

    fn record_refused(&mut self, sql_text: &str, d: &Decision) {
        self.record(Event::Query(Query {
            sql: sql_text.to_string(),
            params: Vec::new(),
            decision: recorded(d),
            rule: d.rule.clone(),
            duration_us: None,
            rows: None,
        }));
        self.write_allowed();
        self.gw.audit.record(AuditEvent {
            action: "command.deny".into(),
            command: Some(sql_text.to_string()),
            rule: d.rule.clone(),
            detail: Some(d.message.clone()),
            ..self.audit.clone()
        });
    }

    /// Allowed statements are decisions too: one audit line each, made once the statement is
    /// on its way (`Later`), chained at once and written in groups (`audit::GROUP_WINDOW`;
    /// `cargo bench --bench audit`).
    fn audit_allowed(&mut self, sql_text: String, rule: Option<String>) {
        self.later.allowed.push((sql_text, rule));
    }

    /// `pre` is the decision `hold` made for this Query or Parse (`take`).
    async fn on_client(
        &mut self,
        m: Frontend,
        pre: Option<Decided>,
        up: &mut Up,
        to_client: &mut BytesMut,
    ) -> Result<(), String> {
        // The portal the client's previous message described (a Flush in between keeps it).
        let described = match m {
            Frontend::Flush { .. } => self.described.clone(),
            _ => self.described.take(),
        };
        if self.skipping {
            // The target would discard all of it until Sync, so vigil does not send it (a
            // refused statement must not reach the target in any form) and expects nothing.
            if let Frontend::Sync { frame } = m {
                self.skipping = false;
                up.feed(frame).await.map_err(|e| e.to_string())?;
                self.expects.push_back(Expect::Sync);
                self.client_syncs += 1;
                self.open_batch = false;
            }
            return Ok(());
        }
        self.open_batch |= matches!(
            m,
            Frontend::Parse { .. }
                | Frontend::Bind { .. }
                | Frontend::Describe { .. }
                | Frontend::Execute { .. }
                | Frontend::Close { .. }
                | Frontend::Flush { .. }
        );
        if self.copy_in
            && !matches!(
                m,
                Frontend::CopyData { .. }
                    | Frontend::CopyDone { .. }
                    | Frontend::CopyFail { .. }
                    | Frontend::Flush { .. }
                    | Frontend::Sync { .. }
            )
        {
            // The target fails the COPY on it and takes the message as the cause, answering
            // nothing vigil could expect: vigil would lose track of what answers what.
            to_client.extend_from_slice(&backend::error_response(
                Severity::Fatal,
                "08P01",
                &format!("vigil: {} in the middle of COPY input", m.name()),
                None,
            ));
            return Err(format!(
                "protocol error from the client: {} in the middle of COPY input",
                m.name()
            ));
        }
        if let Some(name) = overlong_name(&m) {
            // PostgreSQL keeps the first NAMEDATALEN - 1 bytes of a statement or portal name:
            // two names that differ only after them are one name to the server and two to
            // vigil, whose decisions and taints would then describe the wrong statement.
            let d = Decision {
                action: Action::Deny,
                rule: None,
                message: format!(
                    "statement and portal names longer than {MAX_NAME} bytes are not allowed through vigil (PostgreSQL cuts them short; this one has {} bytes)",
                    name.len()
                ),
                approvers: Vec::new(),
                incomplete: false,
            };
            let text = match &m {
                Frontend::Parse { sql, .. } => sql.clone(),
                _ => format!("<{} {name}>", m.name()),
            };
            return self.refuse_in_place(up, &text, &d).await;
        }
        match m {
            Frontend::Query { frame, sql: text } => {
                let decided = match pre {
                    Some(d) => d,
                    None => {
                        let d = self.decide(&text);
                        self.unlisted_masked(d)
                    }
                };
                let decided = self.reviewed(&text, decided);
                let refused = (decided.decision.action != Action::Allow)
                    .then(|| self.refusal(&decided.decision));
                let allowed = match &refused {
                    Some(_) => {
                        self.record_refused(&text, &decided.decision);
                        up.feed(frame_query(REFUSED_SQL))
                            .await
                            .map_err(|e| e.to_string())?;
                        None
                    }
                    None => {
                        if decided.renames {
                            self.forget_names(decided.frees);
                        }
                        up.feed(frame).await.map_err(|e| e.to_string())?;
                        Some(decided.decision.rule.clone())
                    }
                };
                self.expects
                    .push_back(Expect::Query(Box::new(Run::query(&text, decided)), refused));
                if let Some(rule) = allowed {
                    self.audit_allowed(text, rule);
                }
                self.client_syncs += 1;
                self.open_batch = false;
            }
            Frontend::Parse {
                frame,
                name,
                sql: text,
                ..
            } => {
                let decided = match pre {
                    Some(d) => d,
                    None => {
                        let d = self.decide(&text);
                        self.unlisted_masked(d)
                    }
                };
                let held = decided.decision.action == Action::Review;
                let Decided {
                    decision: d,
                    taints,
                    renames,
                    frees,
                    param_where,
                    ..
                } = self.reviewed(&text, decided);
                if held && d.action == Action::Allow {
                    self.approved_once.insert(name.clone(), false);
                } else {
                    self.approved_once.remove(&name);
                }
                if renames && d.action == Action::Allow {
                    self.forget_names(frees);
                }
                if d.action != Action::Allow {
                    self.record_refused(&text, &d);
                    let err = self.refusal(&d);
                    up.feed(frame_parse(&name, REFUSED_SQL))
                        .await
                        .map_err(|e| e.to_string())?;
                    self.expects.push_back(Expect::Refused(err));
                } else {
                    self.audit_allowed(text.clone(), d.rule.clone());
                    up.feed(frame).await.map_err(|e| e.to_string())?;
                    self.expects.push_back(Expect::Parse(name.clone()));
                }
                // The protocol and SQL PREPARE share one namespace on the target: what vigil
                // knew of a SQL statement under this name no longer describes it.
                self.sql_prepared.remove(&name);
                self.statements.insert(
                    name,
                    Prepared {
                        sql: text.into(),
                        taints,
                        prepared: d.action == Action::Allow,
                        decision: d,
                        reloads: self.reloads,
                        param_where,
                    },
                );
            }
            Frontend::Bind {
                frame,
                portal,
                statement,
                params,
                param_formats,
                ..
            } => {
                // A name vigil did not see parsed (a SQL PREPARE, or one made before a SQL
                // PREPARE, DEALLOCATE or DISCARD that may have replaced it) has no decision:
                // fail closed. And a second execution of an approved statement needs its own
                // approval. Either way the target gets `refused_in_place()` instead of the Bind.
                self.redecide_after_reload(&statement);
                let bound = self.statements.get(&statement).map(|p| {
                    (
                        p.sql.clone(),
                        p.taints.clone(),
                        p.decision.clone(),
                        p.param_where,
                    )
                });
                let refusal = match &bound {
                    None => Some("vigil has no decision for this statement name (prepare it with Parse in this session; SQL PREPARE statements run with EXECUTE)"),
                    Some(_) if self.approved_once.get(&statement) == Some(&true) => Some("the approval covered one execution of this prepared statement; prepare it again to ask anew"),
                    Some((_, _, d, _)) if d.action != Action::Allow => Some("the policy does not allow this prepared statement (it was refused when prepared, or the config was reloaded since)"),
                    Some(_) => None,
                };
                let refusal = refusal.map(str::to_owned).or_else(|| match &bound {
                    Some((sql_text, _, _, true)) => {
                        self.bound_refusal(&statement, sql_text, &params, &param_formats)
                    }
                    _ => None,
                });
                let (sql_text, taints, decision) = match (bound, refusal) {
                    (Some((sql_text, taints, decision, _)), None) => (sql_text, taints, decision),
                    (bound, why) => {
                        let d = Decision {
                            action: Action::Deny,
                            rule: None,
                            message: why.unwrap_or_default(),
                            approvers: Vec::new(),
                            incomplete: false,
                        };
                        let text = bound.map(|(sql, ..)| sql).unwrap_or_default();
                        return self.refuse_in_place(up, &text, &d).await;
                    }
                };
                // Portals and SQL cursors share one namespace too.
                if !self.sql_prepared.is_empty() {
                    self.sql_prepared.remove(&cursor_key(&portal));
                }
                if let Some(used) = self.approved_once.get_mut(&statement) {
                    *used = true;
                }
                up.feed(frame).await.map_err(|e| e.to_string())?;
                self.expects.push_back(Expect::Bind(portal.clone()));
                let params = Arc::new(
                    params
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v.as_ref().map(|b| show(b, binary_param(&param_formats, i))))
                        .collect(),
                );
                self.portals.insert(
                    portal.clone(),
                    Portal {
                        sync_no: self.client_syncs,
                        sql: sql_text,
                        taints,
                        params,
                        decision,
                        reloads: self.reloads,
                    },
                );
            }
            Frontend::Describe {
                frame,
                target,
                name,
            } => {
                up.feed(frame).await.map_err(|e| e.to_string())?;
                self.expects.push_back(Expect::Describe);
                if target == Kind::Portal {
                    self.described = Some(name);
                }
            }
            Frontend::Execute { frame, portal, .. } => {
                if let Some((text, d)) = self.portal_refusal(&portal) {
                    // Bound under a policy that a reload replaced, and the new one does not
                    // allow it outright: the Execute does not run (the target fails what vigil
                    // sends in its place, and skips the rest of the batch as for a refusal).
                    return self.refuse_in_place(up, &text, &d).await;
                }
                // vigil's own Describe of the portal right before each Execute: the columns,
                // origins and formats of what this Execute returns, whatever made the portal
                // (a Bind, or a cursor opened by SQL or by a function).
                self.executes += 1;
                let gen = self.executes;
                let (mut run, taint, bind_sync) = match self.portals.get(&portal) {
                    Some(p) => {
                        let mut r = Run::new(p.sql.clone(), p.taints.clone(), p.decision.clone());
                        r.params = p.params.clone();
                        (r, p.taints.first().cloned(), p.sync_no)
                    }
                    None => (
                        Run::new("".into(), Arc::new(Vec::new()), Decision::allow()),
                        None,
                        u64::MAX,
                    ),
                };
                run.binding = Some((portal.clone(), gen));
                // The client's own Describe of this portal, sent right before (nothing but a
                // Flush between), describes what this Execute returns as well as vigil's would.
                if described.as_deref() == Some(portal.as_str())
                    && matches!(self.expects.back(), Some(Expect::Describe))
                {
                    self.expects.pop_back();
                    self.expects
                        .push_back(Expect::OurDescribe(portal, gen, taint, bind_sync, true));
                } else {
                    up.feed(frame_describe_portal(&portal))
                        .await
                        .map_err(|e| e.to_string())?;
                    self.expects
                        .push_back(Expect::OurDescribe(portal, gen, taint, bind_sync, false));
                }
                up.feed(frame).await.map_err(|e| e.to_string())?;
                self.expects.push_back(Expect::Execute(Box::new(run)));
            }
            Frontend::Close {
                frame,
                target,
                name,
            } => {
                up.feed(frame).await.map_err(|e| e.to_string())?;
                match target {
                    Kind::Statement => {
                        self.approved_once.remove(&name);
                        self.sql_prepared.remove(&name);
                        self.statements.remove(&name)
                    }
                    Kind::Portal => {
                        self.sql_prepared.remove(&cursor_key(&name));
                        self.portals.remove(&name);
                        None
                    }
                };
                self.expects.push_back(Expect::Close);
            }
            Frontend::Sync { frame } => {
                // The target ignores a Sync in the middle of COPY input, but answers one that
                // arrives after a COPY that failed on its side (simple protocol) with a
                // ReadyForQuery nobody expects: vigil does not send it on.
                if !self.copy_in {
                    up.feed(frame).await.map_err(|e| e.to_string())?;
                    self.expects.push_back(Expect::Sync);
                    self.client_syncs += 1;
                    self.open_batch = false;
                }
            }
            Frontend::CopyDone { frame } | Frontend::CopyFail { frame, .. } => {
                self.copy_in = false;
                up.feed(frame).await.map_err(|e| e.to_string())?;
            }
            Frontend::Flush { frame } | Frontend::CopyData { frame } => {
                up.feed(frame).await.map_err(|e| e.to_string())?;
            }
            Frontend::FunctionCall { function_oid, .. } => {
                // The fast-path call runs a function by oid, outside any statement policy sees.
                let d = Decision {
                    action: Action::Deny,
                    rule: None,
                    message: format!("the fast-path function call interface (function {function_oid}) is not allowed through vigil"),
                    approvers: Vec::new(),
                    incomplete: false,
                };
                self.record_refused(&format!("<function call {function_oid}>"), &d);
                let err = self.refusal(&d);
                up.feed(frame_query(REFUSED_SQL))
                    .await
                    .map_err(|e| e.to_string())?;
                self.expects.push_back(Expect::Query(
                    Box::new(Run::new("".into(), Arc::new(Vec::new()), d)),
                    Some(err),
                ));
                self.client_syncs += 1;
                self.open_batch = false;
            }
            Frontend::AuthResponse { .. } => {
                to_client.extend_from_slice(&backend::error_response(
                    Severity::Fatal,
                    "08P01",
                    "vigil: unexpected authentication message",
                    None,
                ));
                return Err(
                    "protocol error from the client: authentication message in session".into(),
                );
            }
            Frontend::Terminate { .. } => {}
        }
        Ok(())
    }

    /// `d`, with every column masked when it names a relation the catalog does not list: it may
    /// be a view over masked columns that someone made since the catalog was read (or, inside a
    /// transaction, where vigil cannot read it, since the transaction began).
    fn unlisted_masked(&self, mut d: Decided) -> Decided {
        // Not `d.unknown`: a cached decision's flag was computed with what vigil trusted then.
        if self.catalog.has_masks() && self.unlisted(&d, false).next().is_some() {
            let taints = d
                .taints
                .iter()
                .map(|t| t.masking_all(&self.catalog))
                .collect();
            d.taints = Arc::new(taints);
        }
        d
    }

    /// Whether a relation a statement names as `label` (`OutputTaint::unknown_relations`) is a
    /// system catalog: `MaskCatalog::is_system_relation`, and unqualified only while no
    /// statement of this session may have shadowed one (`may_shadow`).
    fn system_relation(&self, label: &str) -> bool {
        (!self.may_shadow || label.contains('.')) && self.catalog.is_system_relation(label)
    }

    /// The relations `d` names that the catalog does not list, outside the system catalogs;
    /// with `fresh`, not those that the last read of the catalog did not list either.
    fn unlisted<'a>(&'a self, d: &'a Decided, fresh: bool) -> impl Iterator<Item = &'a String> {
        d.taints
            .iter()
            .flat_map(|t| &t.unknown_relations)
            .filter(move |r| {
                let known = self.system_relation(r) || (fresh && self.unresolved.contains(*r));
                !known
            })
    }

    /// A prepared DELETE or UPDATE whose condition may read parameters, decided again with the
    /// values this Bind gives (NULLs, and text-format values; a binary value is not read and
    /// stays a parameter): why it may not run with them, if so. A deny with them
    /// refuses; so does a review, unless the statement was approved as it is.
    fn bound_refusal(
        &self,
        name: &str,
        sql_text: &str,
        params: &[Option<Bytes>],
        formats: &[i16],
    ) -> Option<String> {
        let values = params
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => sql::BoundValue::Null,
                Some(_) if binary_param(formats, i) => sql::BoundValue::Opaque,
                Some(b) => {
                    std::str::from_utf8(b).map_or(sql::BoundValue::Opaque, sql::BoundValue::Text)
                }
            })
            .collect::<Vec<_>>();
        let text = sql::bind_literals(sql_text, &values)?;
        // (Text that does not analyse is refused when a rule could apply, as at Parse.)
        let d = self
            .policy
            .check_sql(&self.roles, &self.target, sql::analyze(&text).as_ref());
        let approved = self.approved_once.contains_key(name);
        match d.action {
            Action::Deny => Some(format!("with the values bound: {}", d.message)),
            Action::Review if !approved => Some(format!(
                "with the values bound this statement needs approval ({}); send it with the values written into it to ask",
                d.message
            )),
            _ => None,
        }
    }

    /// Remembers the columns of SQL-level PREPARE statements for their EXECUTE.
    /// After a statement that creates or drops names: SQL-level prepared statements and cursors
    /// share their names with protocol statements and portals, so none of what vigil remembers
    /// is trusted any more. A name vigil does not know gets the strongest mask.
    fn forget_names(&mut self, frees: bool) {
        self.sql_prepared.clear();
        self.portals.clear();
        for p in self.statements.values_mut() {
            p.taints = Arc::new(Vec::new());
        }
        // A SQL DEALLOCATE (or DISCARD) then PREPARE can put other SQL behind a name vigil saw
        // parsed: a later Bind to it is refused until the client parses it again. (PREPARE,
        // DECLARE and CLOSE cannot replace an existing statement.)
        if frees {
            self.statements.clear();
            self.approved_once.clear();
        }
    }

    /// A PREPARE or DECLARE that completed: its query's columns, for the EXECUTE or FETCH that
    /// runs it (recorded only once the target accepted it).
    fn remember_name(&mut self, taint: Option<&OutputTaint>) {
        let Some(t) = taint else { return };
        match &t.named {
            Some(mask::Named::Prepare(name)) => {
                self.sql_prepared.insert(name.clone(), t.clone());
            }
            Some(mask::Named::DeclareCursor(name)) => {
                self.sql_prepared.insert(cursor_key(name), t.clone());
            }
            _ => {}
        }
    }

    /// vigil's Describe before Execute number `gen` of `portal` answered: that Execute gets
    /// the plan.
    fn planned(
        &mut self,
        portal: &str,
        gen: u64,
        plan: Arc<Vec<Option<ColumnMask>>>,
        columns: Vec<String>,
    ) {
        for e in self.expects.iter_mut() {
            if let Expect::Execute(run) = e {
                let this = run
                    .binding
                    .as_ref()
                    .is_some_and(|(n, g)| n == portal && *g == gen);
                if this && !run.planned {
                    run.plan = plan.clone();
                    run.columns = columns.clone();
                    run.planned = true;
                }
            }
        }
    }

    /// The masks for a row description: the catalog's by column origin, combined with the
    /// statement's taint; the stronger wins.
    fn plan(
        &self,
        fields: &[FieldDescription],
        taint: Option<&OutputTaint>,
    ) -> Vec<Option<ColumnMask>> {
        if self.masks_pending {
            // The masks changed with a reload and are not read yet: every value is withheld.
            return withheld_plan(fields.len());
        }
        if !self.catalog.has_masks() {
            return Vec::new();
        }
        let n = fields.len();
        let execute_taint = taint.and_then(|t| match &t.named {
            Some(mask::Named::Execute(name)) => self.sql_prepared.get(name),
            Some(mask::Named::Fetch(name)) => self.sql_prepared.get(&cursor_key(name)),
            _ => None,
        });
        let taint = execute_taint.or(taint);
        fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                // By origin: the catalog's word for the relations it described. A relation it
                // does not know (created since, or a system catalog) is left to the analysis,
                // which resolves names and treats a masked table's new incarnation as masked.
                let known = self.catalog.relation(f.table_oid).is_some();
                let by_origin = if known {
                    self.catalog.origin_mask(f.table_oid, f.column_id)
                } else if f.table_oid >= FIRST_NORMAL_OID {
                    // A user relation the catalog does not list (made since it was read, or
                    // one the analysis took for another, such as a system catalog that a
                    // relation earlier on the search path shadows): masked.
                    self.catalog.strongest()
                } else {
                    None
                };
                let by_taint = match taint {
                    Some(t) => t.column(i, n).method(),
                    // No analysis for this result: mask what cannot be placed, except columns
                    // of system catalogs (OIDs below FirstNormalObjectId).
                    None if f.table_oid == 0 || (!known && f.table_oid >= FIRST_NORMAL_OID) => {
                        self.catalog.strongest()
                    }
                    None => None,
                };
                by_origin.max(by_taint).map(|method| ColumnMask {
                    method,
                    type_oid: f.type_oid,
                    binary: f.format == 1,
                })
            })
            .collect()
    }

    async fn on_target(&mut self, m: Backend, to_client: &mut BytesMut) -> Result<(), String> {
        match m {
            Backend::ParseComplete { frame }
            | Backend::BindComplete { frame }
            | Backend::CloseComplete { frame } => {
                self.expects.pop_front();
                to_client.extend_from_slice(&frame);
            }
            Backend::ParameterDescription { frame, .. } => to_client.extend_from_slice(&frame),
            Backend::RowDescription { frame, fields } => match self.expects.front_mut() {
                Some(Expect::OurDescribe(..)) => {
                    if let Some(Expect::OurDescribe(portal, gen, taint, bind_sync, forward)) =
                        self.expects.pop_front()
                    {
                        if forward {
                            to_client.extend_from_slice(&frame);
                        }
                        // The bound statement's taint describes this portal only if no
                        // transaction ended since the Bind (else the name may now be a cursor).
                        let taint = taint.filter(|_| self.last_idle <= bind_sync);
                        let plan = Arc::new(self.plan(&fields, taint.as_ref()));
                        let columns: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
                        self.planned(&portal, gen, plan, columns);
                    }
                }
                Some(Expect::Query(..)) => {
                    let taint = match self.expects.front() {
                        Some(Expect::Query(run, _)) => run.taint().cloned(),
                        _ => None,
                    };
                    let plan = self.plan(&fields, taint.as_ref());
                    if let Some(Expect::Query(run, _)) = self.expects.front_mut() {
                        run.plan = Arc::new(plan);
                        run.columns = fields.iter().map(|f| f.name.clone()).collect();
                        run.planned = true;
                    }
                    to_client.extend_from_slice(&frame);
                }
                Some(Expect::Describe) => {
                    self.expects.pop_front();
                    to_client.extend_from_slice(&frame);
                }
                _ => to_client.extend_from_slice(&frame),
            },
            Backend::NoData { frame } => match self.expects.front() {
                Some(Expect::OurDescribe(..)) => {
                    if let Some(Expect::OurDescribe(portal, gen, _, _, forward)) =
                        self.expects.pop_front()
                    {
                        if forward {
                            to_client.extend_from_slice(&frame);
                        }
                        self.planned(&portal, gen, Arc::new(Vec::new()), Vec::new());
                    }
                }
                _ => {
                    if matches!(self.expects.front(), Some(Expect::Describe)) {
                        self.expects.pop_front();
                    }
                    to_client.extend_from_slice(&frame);
                }
            },
            Backend::DataRow(row) => {
                let max_rows = self.max_rows;
                let has_masks = self.masks_apply();
                let run = match self.expects.front_mut() {
                    // Rows of a simple Query follow their RowDescription, which plans them.
                    Some(Expect::Query(run, _)) if run.planned || !has_masks => run,
                    Some(Expect::Execute(run)) if run.planned || !has_masks => run,
                    _ => {
                        return Err("the target sent rows vigil cannot place; the session is closed so that nothing passes unmasked".into());
                    }
                };
                let all_null = run.plan.len() == row.len()
                    && run
                        .plan
                        .iter()
                        .all(|m| m.is_some_and(|m| m.method == Method::Null));
                if self.masks_pending && !all_null {
                    // Planned before a reload changed the masks: from here on, all withheld.
                    run.plan = Arc::new(withheld_plan(row.len()));
                }
                // What the client gets: the row as it came, or rebuilt with its masked values.
                let masked = if run.plan.iter().any(Option::is_some) {
                    let body = row.frame().get(5..).unwrap_or_default();
                    let rebuilt = match self.masker.rewrite_data_row_message(body, &run.plan) {
                        Ok(b) => b,
                        Err(e) => return Err(format!("cannot mask a row: {e}")),
                    };
                    match backend::parse_frame(rebuilt) {
                        Ok(Backend::DataRow(m)) => Some(m),
                        _ => return Err("vigil built a malformed masked row".into()),
                    }
                } else {
                    None
                };
                let sent = masked.as_ref().unwrap_or(&row);
                run.count += 1;
                if run.count <= max_rows {
                    let plan = &run.plan;
                    // Binary values are recorded as hex; the plan knows the formats of masked
                    // columns only, so the others are recorded as text (lossy UTF-8).
                    let recorded = sent
                        .values()
                        .enumerate()
                        .map(|(i, v)| {
                            let binary = plan.get(i).is_some_and(|p| p.is_some_and(|m| m.binary));
                            v.map(|b| show(b, binary))
                        })
                        .collect();
                    run.rows.push(recorded);
                } else {
                    run.truncated = true;
                }
                to_client.extend_from_slice(sent.frame());
            }
            Backend::CommandComplete { frame, tag } => {
                let _ = tag;
                let done = match self.expects.front() {
                    Some(Expect::Query(run, None)) | Some(Expect::Execute(run)) => {
                        run.taint().cloned()
                    }
                    _ => None,
                };
                self.remember_name(done.as_ref());
                self.finish_statement();
                to_client.extend_from_slice(&frame);
            }
            Backend::EmptyQueryResponse { frame } | Backend::PortalSuspended { frame } => {
                self.finish_statement();
                to_client.extend_from_slice(&frame);
            }
            Backend::CopyOutResponse { frame, copy } => {
                let masks_apply = self.masks_apply();
                let masked = match self.expects.front_mut() {
                    Some(Expect::Query(run, _)) | Some(Expect::Execute(run)) => {
                        let n = copy.column_formats.len();
                        let t = run.taint();
                        let plan: Vec<Option<ColumnMask>> = (0..n)
                            .map(|i| {
                                let m = match t {
                                    _ if self.masks_pending => Some(Method::Null),
                                    Some(t) => t.column(i, n).method(),
                                    None => self.catalog.strongest(),
                                };
                                m.map(|method| ColumnMask {
                                    method,
                                    type_oid: super::masker::oid::TEXT,
                                    binary: false,
                                })
                            })
                            .collect();
                        run.plan = Arc::new(plan);
                        run.plan.iter().any(Option::is_some)
                    }
                    _ if masks_apply => {
                        return Err("COPY output vigil cannot place; the session is closed so that nothing passes unmasked".into());
                    }
                    _ => false,
                };
                if masked && copy.format != 0 {
                    return Err("binary COPY of masked columns: the session is closed".into());
                }
                to_client.extend_from_slice(&frame);
            }
            Backend::CopyData { frame } => {
                if self.masks_pending {
                    return Err("the masked columns changed with a config reload during a COPY; the session is closed so that nothing passes with the old masks".into());
                }
                let out = match self.expects.front() {
                    Some(Expect::Query(run, _)) | Some(Expect::Execute(run))
                        if run.plan.iter().any(Option::is_some) =>
                    {
                        let options = run.taint().and_then(|t| t.copy.clone());
                        let Some(options) = options else {
                            return Err("COPY of masked columns in a format vigil cannot read: the session is closed".into());
                        };
                        let line = frame.get(5..).unwrap_or_default();
                        match self.masker.rewrite_copy_row(line, &run.plan, &options) {
                            Ok(b) => message(b'd', &b),
                            Err(e) => return Err(format!("cannot mask a COPY row: {e}")),
                        }
                    }
                    Some(Expect::Query(..)) | Some(Expect::Execute(_)) => frame,
                    _ if self.masks_apply() => {
                        return Err("COPY data vigil cannot place; the session is closed so that nothing passes unmasked".into());
                    }
                    _ => frame,
                };
                to_client.extend_from_slice(&out);
            }
            Backend::CopyInResponse { frame, .. } => {
                self.copy_in = true;
                // What the client sent after the COPY before this answer reached it: the
                // target ignores Syncs until the copy ends, and fails the COPY on anything else.
                let behind = self.expects.split_off(self.expects.len().min(1));
                let syncs = behind.iter().filter(|e| matches!(e, Expect::Sync)).count();
                if syncs != behind.len() {
                    return Err("the client sent statements in the middle of COPY input; the session is closed so that vigil does not lose track of the protocol".into());
                }
                self.client_syncs = self.client_syncs.saturating_sub(syncs as u64);
                to_client.extend_from_slice(&frame);
            }
            Backend::CopyBothResponse { .. } => {
                return Err("the target started a COPY BOTH (replication) stream".into());
            }
            Backend::ParameterStatus { frame, name, value } => {
                if reads_text_differently(&name, &value) {
                    // Something vigil could not see (a function, a DO block) changed it: the
                    // statements vigil reads would now mean something else upstream.
                    to_client.extend_from_slice(&backend::error_response(
                        Severity::Fatal,
                        "08P01",
                        &format!("vigil: the target's {name} changed to {value}; vigil reads statements as UTF-8 with standard-conforming strings only, so the session is closed"),
                        None,
                    ));
                    return Err(format!("the target's {name} changed to {value}"));
                }
                to_client.extend_from_slice(&frame);
                super::pool::set_param(&mut self.upstream_params, name, value);
            }
            Backend::CopyDone { frame } | Backend::NotificationResponse { frame, .. } => {
                to_client.extend_from_slice(&frame)
            }
            Backend::NoticeResponse { frame, fields } => {
                let redact = self.masks_pending
                    || match self.expects.front() {
                        Some(Expect::Query(run, _)) | Some(Expect::Execute(run)) => {
                            run.references_masked()
                        }
                        _ => false,
                    };
                if redact {
                    to_client.extend_from_slice(&backend::notice_response(
                        Severity::Notice,
                        fields.code(),
                        "vigil: a notice was withheld: the statement reads masked columns",
                        None,
                    ));
                } else {
                    to_client.extend_from_slice(&frame);
                }
            }
            Backend::ErrorResponse { frame, fields } => {
                self.on_error(frame, fields, to_client).await;
            }
            Backend::ReadyForQuery { frame, status } => {
                self.status = status;
                self.copy_in = false;
                if !matches!(self.expects.front(), Some(Expect::Sync | Expect::Query(..))) {
                    return Err("vigil lost track of the protocol (ReadyForQuery out of step); the session is closed so that nothing passes unmasked".into());
                }
                self.expects.pop_front();
                self.answered_syncs += 1;
                if status == TransactionStatus::Idle {
                    self.last_idle = self.answered_syncs;
                }
                // Portals end with their transaction, but vigil keeps its entries: a pipelined
                // Execute may still be on its way to an entry made after this Sync. A later SQL
                // cursor of the same name comes from DECLARE, which makes vigil forget names.
                to_client.extend_from_slice(&frame);
            }
            Backend::Authentication { .. }
            | Backend::BackendKeyData { .. }
            | Backend::NegotiateProtocolVersion { .. } => {
                return Err(
                    "the target sent a startup message in the middle of the session".into(),
                );
            }
        }
        Ok(())
    }

    async fn on_error(
        &mut self,
        frame: Bytes,
        fields: backend::ErrorFields,
        to_client: &mut BytesMut,
    ) {
        self.record_current();
        // What the client sees is what is recorded: vigil's refusal, or a withheld message.
        let ours = match self.expects.front() {
            Some(Expect::Query(_, Some(err))) | Some(Expect::Refused(err)) => {
                match backend::parse_frame(err.clone()) {
                    Ok(Backend::ErrorResponse { fields, .. }) => Some(fields),
                    _ => None,
                }
            }
            _ => None,
        };
        let withheld = ours.is_none()
            && (self.masks_pending
                || matches!(self.expects.front(), Some(Expect::Sync) | None)
                    && self.catalog.has_masks()
                || matches!(self.expects.front(),
                    Some(Expect::Query(run, _)) | Some(Expect::Execute(run)) if run.references_masked()));
        let (message, code) = match &ours {
            Some(f) => (f.message().to_string(), f.code().to_string()),
            None if withheld => (WITHHELD_ERROR.to_string(), fields.code().to_string()),
            None => (fields.message().to_string(), fields.code().to_string()),
        };
        let _ = self
            .recorder
            .record(Event::Error(ErrorEvent {
                message,
                code: Some(code),
            }))
            .await;
        let masked_statement = self.masks_pending
            || match self.expects.front() {
                Some(Expect::Query(run, _)) | Some(Expect::Execute(run)) => run.references_masked(),
                _ => false,
            };
        let redacted =
            || backend::error_response(Severity::Error, fields.code(), WITHHELD_ERROR, None);
        let masks_apply = self.masks_apply();
        match self.expects.front_mut() {
            Some(Expect::Query(run, refused)) => {
                match refused.take() {
                    Some(err) => to_client.extend_from_slice(&err),
                    None if masked_statement => to_client.extend_from_slice(&redacted()),
                    None => to_client.extend_from_slice(&frame),
                }
                // The Query is refused or failed: ReadyForQuery ends it, nothing else runs.
                run.index = usize::MAX;
            }
            // An error at Sync (a deferred constraint at COMMIT) may quote any value.
            Some(Expect::Sync) | None if masks_apply => to_client.extend_from_slice(&redacted()),
            Some(Expect::Sync) | None => to_client.extend_from_slice(&frame),
            Some(_) => {
                let failed = self.expects.pop_front();
                match &failed {
                    Some(Expect::Refused(err)) => to_client.extend_from_slice(err),
                    _ if masked_statement => to_client.extend_from_slice(&redacted()),
                    _ => to_client.extend_from_slice(&frame),
                }
                if let Some(e) = failed {
                    self.not_done(e);
                }
                // The target skips everything up to the next Sync, including what the client
                // has not sent yet.
                while self
                    .expects
                    .front()
                    .is_some_and(|e| !matches!(e, Expect::Sync))
                {
                    if let Some(e) = self.expects.pop_front() {
                        self.not_done(e);
                    }
                }
                if self.expects.is_empty() {
                    self.skipping = true;
                }
            }
        }
    }

    /// A Parse or Bind that failed or that the target skipped after an error: vigil took note
    /// of its name when it went out, and the target may still hold something else under it (a
    /// Parse of a name that exists fails and keeps the old statement; so does a Bind of a
    /// portal that exists). The name is forgotten: a Bind to the statement is refused, and an
    /// Execute of the portal gets the strongest mask on what it cannot place.
    fn not_done(&mut self, e: Expect) {
        match e {
            Expect::Parse(name) => {
                self.statements.remove(&name);
                self.approved_once.remove(&name);
            }
            Expect::Bind(portal) => {
                self.portals.remove(&portal);
            }
            _ => {}
        }
    }

    /// A statement finished (CommandComplete, EmptyQueryResponse, PortalSuspended): records it
    /// (text, parameters, decision, duration, row count), then its rows as the client saw them.
    fn finish_statement(&mut self) {
        let (rows, query) = {
            let (run, simple) = match self.expects.front_mut() {
                Some(Expect::Query(run, _)) => (run, true),
                Some(Expect::Execute(run)) => (run, false),
                _ => return,
            };
            let rows = Rows {
                columns: std::mem::take(&mut run.columns),
                rows: std::mem::take(&mut run.rows),
                truncated: run.truncated,
            };
            let query = (!run.recorded).then(|| query_event(run, Some(run.count)));
            run.count = 0;
            run.truncated = false;
            run.recorded = false;
            if simple {
                // The next statement's rows wait for their own RowDescription.
                run.planned = false;
            }
            run.index = run.index.saturating_add(1);
            run.plan = Arc::new(Vec::new());
            run.started = Instant::now();
            (rows, query)
        };
        if let Some(q) = query {
            self.record(q);
        }
        if !rows.rows.is_empty() || !rows.columns.is_empty() {
            self.record(Event::Rows(rows));
        }
        if matches!(self.expects.front(), Some(Expect::Execute(_))) {
            self.expects.pop_front();
        }
    }

    /// Records the statement at the head before its error.
    fn record_current(&mut self) {
        let event = match self.expects.front_mut() {
            Some(Expect::Query(run, None)) | Some(Expect::Execute(run)) if !run.recorded => {
                run.recorded = true;
                Some(query_event(run, None))
            }
            _ => None,
        };
        if let Some(e) = event {
            self.record(e);
        }
    }

    /// Re-reads the masked columns after DDL (when the session is idle between statements). A
    /// failure ends the session: masking on a stale catalog could pass a new view unmasked.
    async fn reload_catalog(&mut self, up: &mut Up) -> Result<(), String> {
        self.catalog_stale = false;
        self.catalog_read = Instant::now();
        self.unresolved.clear();
        let config = self.gw.config();
        let mut notifications = Vec::new();
        let c = tokio::time::timeout(
            CATALOG_TIMEOUT,
            load_catalog(
                up,
                &config,
                &self.target,
                &self.roles,
                (
                    &self.gw.pg.system_relations,
                    &system_key(&self.target, &self.upstream_params),
                ),
                &mut notifications,
            ),
        )
        .await
        .map_err(|_| "the catalog did not answer in time".to_string())??;
        self.notifications.extend(notifications);
        self.catalog = Arc::new(c);
        self.mask_settings = mask_settings(&config, &self.target, &self.roles);
        self.masks_pending = false;
        self.forget_analyses();
        Ok(())
    }

    /// Nothing analysed before is used again: prepared statements are decided again at their
    /// next Bind, SQL PREPAREs and cursors get the strongest mask, bound portals lose their
    /// taint (their columns are placed by origin, or masked), and no cached decision is reused.
    fn forget_analyses(&mut self) {
        self.reloads += 1;
        self.sql_prepared.clear();
        for p in self.portals.values_mut() {
            p.taints = Arc::new(Vec::new());
        }
        self.cache.clear();
        self.shapes.clear();
    }
}

/// The Query event for the statement of `run` whose results are arriving.
fn query_event(run: &Run, rows: Option<u64>) -> Event {
    Event::Query(Query {
        sql: run.current_sql().to_string(),
        params: run.params.to_vec(),
        decision: recorded(&run.decision),
        rule: run.decision.rule.clone(),
        duration_us: Some(run.started.elapsed().as_micros() as u64),
        rows,
    })
}

fn recorded(d: &Decision) -> Recorded {
    match d.action {
        Action::Allow => Recorded::Allow,
        Action::Deny => Recorded::Deny,
        Action::Review => Recorded::Review,
    }
}

/// A value for the recording: text as text, binary as `\x` hex.
fn show(b: &[u8], binary: bool) -> String {
    if binary {
        let mut out = vec![0u8; 2 + 2 * b.len()];
        out[..2].copy_from_slice(b"\\x");
        // The buffer is exactly twice the input long, and hex digits are UTF-8.
        let _ = hex::encode_to_slice(b, &mut out[2..]);
        String::from_utf8(out).unwrap_or_default()
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// A message with `tag` and `body` (the masker's rewritten DataRow or CopyData).
fn message(tag: u8, body: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(body.len() + 5);
    f.extend_from_slice(&[tag]);
    // Bodies come from messages within the size limit: the length fits.
    f.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    f.extend_from_slice(body);
    f.freeze()
}

fn frame_query(sql_text: &str) -> Bytes {
    super::wire::frontend::query(sql_text).unwrap_or_default()
}

fn frame_parse(name: &str, sql_text: &str) -> Bytes {
    let mut b = BytesMut::new();
    let _ = postgres_protocol::message::frontend::parse(name, sql_text, std::iter::empty(), &mut b);
    b.freeze()
}

/// Why a statement that may change how the target reads statement text is refused: vigil
/// parses every statement as UTF-8 with `standard_conforming_strings` on (as libpg_query
/// does), so `client_encoding` and `standard_conforming_strings` are pinned (`SET`, `SET NAMES`,
/// `RESET`, `set_config` on them, or `set_config` with a name computed at run time). One that
/// vigil cannot see doing it (a function that does, a DO block) ends the session when the
/// target reports the change; statements the client sent before that report were already
/// read the old way.
fn encoding_change(a: &sql::Analysis) -> Option<&'static str> {
    for st in &a.statements {
        if st.kinds.iter().any(|k| {
            [
                "SET CLIENT_ENCODING",
                "RESET CLIENT_ENCODING",
                "SET STANDARD_CONFORMING_STRINGS",
                "RESET STANDARD_CONFORMING_STRINGS",
            ]
            .contains(&k.as_str())
        }) {
            return Some("client_encoding and standard_conforming_strings cannot be changed through vigil (it reads statements as UTF-8 with standard-conforming strings)");
        }
        if st
            .opaque
            .iter()
            .any(|o| matches!(o, sql::Opaque::Function { name, .. } if name == "set_config"))
        {
            return Some("set_config() with a parameter name computed at run time is not allowed through vigil (it could change how the target reads statements)");
        }
    }
    None
}

/// A reported parameter value that means the target reads statement text differently from
/// vigil: a client_encoding other than UTF8, standard_conforming_strings off.
fn reads_text_differently(name: &str, value: &str) -> bool {
    if name.eq_ignore_ascii_case("client_encoding") {
        return !crate::policy::mask::is_utf8_name(value);
    }
    name.eq_ignore_ascii_case("standard_conforming_strings") && !value.eq_ignore_ascii_case("on")
}

/// The key of a SQL cursor's columns in `Relay::sql_prepared` (whose other keys are SQL
/// PREPARE names): no identifier holds a NUL, so no prepared statement's name can be it.
/// Whether a Bind's parameter `i` is in binary format: one format code for all, or one each.
fn binary_param(formats: &[i16], i: usize) -> bool {
    match formats {
        [] => false,
        [one] => *one == 1,
        _ => formats.get(i) == Some(&1),
    }
}

fn cursor_key(name: &str) -> String {
    format!("\0cursor {name}")
}

/// The longest statement or portal name PostgreSQL keeps whole (NAMEDATALEN - 1 in a default
/// build; a server built with a larger NAMEDATALEN keeps these names whole too).
const MAX_NAME: usize = 63;

/// A statement or portal name in `m` longer than `MAX_NAME` bytes.
fn overlong_name(m: &Frontend) -> Option<&str> {
    let names: [&str; 2] = match m {
        Frontend::Parse { name, .. }
        | Frontend::Describe { name, .. }
        | Frontend::Close { name, .. } => [name, ""],
        Frontend::Bind {
            portal, statement, ..
        } => [portal, statement],
        Frontend::Execute { portal, .. } => [portal, ""],
        _ => return None,
    };
    names.into_iter().find(|n| n.len() > MAX_NAME)
}

/// What goes to the target in place of a refused Bind or Execute: a Parse that fails on
/// every PostgreSQL whatever the session holds. The server parses the text before it looks at
/// the name (so no statement the client prepared, under any name, can answer it), and a named
/// Parse that fails leaves the unnamed statement and every portal as they were. The error it
/// gets is replaced with vigil's refusal, and the server skips the rest of the batch.
fn refused_in_place() -> Bytes {
    frame_parse(REFUSED_NAME, REFUSED_SQL)
}

fn frame_describe_portal(portal: &str) -> Bytes {
    let mut b = BytesMut::new();
    let _ = postgres_protocol::message::frontend::describe(b'P', portal, &mut b);
    b.freeze()
}

/// The names of the relations of `pg_catalog` and `information_schema`, read once per target
/// and server version and shared by the sessions: about 200 names, which read by every session
/// made each new session's catalog answer longer and each idle session 20 KiB larger.
#[derive(Default)]
pub struct SystemRelations(
    std::sync::Mutex<std::collections::HashMap<String, Arc<HashSet<String>>>>,
);

impl SystemRelations {
    fn get(&self, key: &str) -> Option<Arc<HashSet<String>>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn keep(&self, key: &str, names: Arc<HashSet<String>>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Targets times server versions: bounded all the same.
        if m.len() >= 1024 {
            m.clear();
        }
        m.insert(key.to_owned(), names);
    }
}

/// The `SystemRelations` key of a target connection: the target and the server's version.
fn system_key(target: &str, params: &[(String, String)]) -> String {
    let version = params
        .iter()
        .find(|(k, _)| k == "server_version")
        .map_or("", |(_, v)| v.as_str());
    format!("{target}\0{version}")
}

/// The rows (as text) of each of `N` catalog queries, sent as one simple Query (one implicit
/// transaction, one round trip).
/// Also returns the session's `search_path` as it was before the queries set theirs.
async fn simple_result_sets<const N: usize>(
    up: &mut Up,
    queries: [String; N],
    notifications: &mut Vec<Bytes>,
) -> Result<([Vec<Vec<Option<String>>>; N], String), String> {
    // The client controls its session (search_path, temporary objects, operators): the catalog
    // queries name everything in pg_catalog and run with search_path = pg_catalog for their own
    // implicit transaction (vigil reads the catalog only outside transaction blocks).
    // A statement_timeout the client set does not apply to them either.
    // The target list is evaluated in its order: the client's search_path comes first.
    let mut sql_text = String::from(
        "select pg_catalog.current_setting('search_path'), \
         pg_catalog.set_config('search_path', 'pg_catalog', true), \
         pg_catalog.set_config('statement_timeout', '0', true)",
    );
    for q in &queries {
        sql_text.push_str("; ");
        sql_text.push_str(q);
    }
    up.send(frame_query(&sql_text))
        .await
        .map_err(|e| e.to_string())?;
    let mut sets: [Vec<Vec<Option<String>>>; N] = std::array::from_fn(|_| Vec::new());
    // The first RowDescription is set_config's: its row gives the search_path only.
    let mut described = 0usize;
    let mut search_path = None;
    let mut error = None;
    loop {
        match up.next().await {
            None => return Err("the target closed the connection".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Backend::RowDescription { .. })) => described += 1,
            Some(Ok(Backend::DataRow(r))) if described == 1 => {
                search_path = r
                    .values()
                    .next()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(b).into_owned());
            }
            Some(Ok(Backend::DataRow(r))) => {
                if let Some(set) = described.checked_sub(2).and_then(|i| sets.get_mut(i)) {
                    set.push(
                        r.values()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    );
                }
            }
            Some(Ok(Backend::ErrorResponse { fields, .. })) => error = Some(fields.to_string()),
            Some(Ok(Backend::ReadyForQuery { .. })) => break,
            // Another session's NOTIFY to a channel the client listens on: it gets it after.
            Some(Ok(Backend::NotificationResponse { frame, .. })) => notifications.push(frame),
            Some(Ok(_)) => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None if described != N + 1 => Err(format!(
            "the catalog queries answered {} result sets, not {}",
            described.saturating_sub(1),
            N
        )),
        None => match search_path {
            Some(path) => Ok((sets, path)),
            None => Err("the catalog queries did not show the search_path".into()),
        },
    }
}

/// A plan that sends every one of `n` columns as NULL (the masker's `null` needs no type).
fn withheld_plan(n: usize) -> Vec<Option<ColumnMask>> {
    vec![
        Some(ColumnMask {
            method: Method::Null,
            type_oid: 0,
            binary: false,
        });
        n
    ]
}

/// The `[[mask]]` columns and methods that apply to a user with `roles` on `target`.
fn mask_settings(
    config: &crate::config::Config,
    target: &str,
    roles: &[String],
) -> Vec<(String, Method)> {
    config
        .file
        .masks
        .iter()
        .filter(|m| m.target == target && !m.except_roles.iter().any(|r| roles.contains(r)))
        .flat_map(|m| {
            let method = m.method.parse::<Method>().unwrap_or(Method::Null);
            m.columns.iter().map(move |c| (c.clone(), method))
        })
        .collect()
}

/// A relation being read from the catalog: oid, schema, name, is-a-view, columns.
type RelRows = (u32, String, String, bool, Vec<(i16, String)>);

/// Resolves the masks that apply to this user on this target: the masked columns' tables, every
/// user relation's columns (for `*`), views (their columns derived from masked ones), and the
/// user-defined functions (whose bodies may read masked tables).
async fn load_catalog(
    up: &mut Up,
    config: &crate::config::Config,
    target: &str,
    roles: &[String],
    system: (&SystemRelations, &str),
    notifications: &mut Vec<Bytes>,
) -> Result<MaskCatalog, String> {
    let mut catalog = MaskCatalog::new();
    let masks = mask_settings(config, target, roles);
    if masks.is_empty() {
        return Ok(catalog);
    }
    let mut table_names = Vec::new();
    for (c, method) in &masks {
        let mut parts = c.splitn(3, '.');
        if let (Some(s), Some(t), Some(col)) = (parts.next(), parts.next(), parts.next()) {
            catalog.add_mask(s, t, col, *method);
            table_names.push(t.to_string());
        }
    }
    const SYSTEM: &str =
        "n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'";
    // The relations with their columns, the views' definitions and the functions: one round
    // trip (a new session waits for it).
    let queries = [
            format!(
                "select c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname \
                 from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
                 where c.relkind in ('r','v','m','p','f','S') and {SYSTEM} order by c.oid, a.attnum"
            ),
            format!(
                "select c.oid, pg_catalog.pg_get_viewdef(c.oid) from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind in ('v','m') and {SYSTEM}"
            ),
            // The source of each function: `prosrc`, or for a SQL-standard body (`prosrc` is
            // empty) its definition; for an aggregate the names of its support functions.
            format!(
                "select n.nspname, p.proname, case when p.prokind = 'a' then 'aggregate' else l.lanname end, \
                 case when p.prokind = 'a' then (select pg_catalog.concat_ws(' ', a.aggtransfn, a.aggfinalfn, \
                 a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn) \
                 from pg_catalog.pg_aggregate a where a.aggfnoid = p.oid) \
                 when p.prosrc = '' then pg_catalog.pg_get_functiondef(p.oid) else p.prosrc end \
                 from pg_catalog.pg_proc p \
                 join pg_catalog.pg_namespace n on n.oid = p.pronamespace join pg_catalog.pg_language l on l.oid = p.prolang \
                 where {SYSTEM}"
            ),
            // Operators implemented by user-defined functions, or defined by users (on a
            // built-in function, which may be a data reader).
            format!(
                "select o.oprname, p.proname from pg_catalog.pg_operator o \
                 join pg_catalog.pg_proc p on p.oid = o.oprcode join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
                 join pg_catalog.pg_namespace opn on opn.oid = o.oprnamespace \
                 where ({SYSTEM}) or opn.nspname not in ('pg_catalog', 'information_schema')"
            ),
    ];
    // The system catalogs' names (not relations someone made since): read once per target and
    // server version.
    let (cache, key) = system;
    let (([rels, views, funcs, ops], search_path), system) = match cache.get(key) {
        Some(names) => (simple_result_sets(up, queries, notifications).await?, names),
        None => {
            let [q0, q1, q2, q3] = queries;
            // information_schema is not on a search path unless the session puts it there
            // (and then another schema may come first): its names count qualified only.
            let names = "select c.relname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = 'pg_catalog' and c.relkind in ('r','v','m','p','f','S')"
                .to_string();
            let ([r0, r1, r2, r3, names], path) =
                simple_result_sets(up, [q0, q1, q2, q3, names], notifications).await?;
            let names: HashSet<String> = names
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            let names = Arc::new(names);
            cache.keep(key, names.clone());
            (([r0, r1, r2, r3], path), names)
        }
    };
    catalog.set_search_path(&search_path);
    let mut current: Option<RelRows> = None;
    let flush = |catalog: &mut MaskCatalog, cur: Option<RelRows>| {
        if let Some((oid, schema, name, view, cols)) = cur {
            if view {
                catalog.add_view(oid, &schema, &name, cols);
            } else {
                catalog.add_table(oid, &schema, &name, cols);
            }
        }
    };
    for r in rels {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let oid: u32 = get(0).parse().unwrap_or(0);
        let attnum: i16 = get(4).parse().unwrap_or(0);
        if current.as_ref().map(|c| c.0) != Some(oid) {
            flush(&mut catalog, current.take());
            let kind = get(3);
            current = Some((oid, get(1), get(2), kind == "v" || kind == "m", Vec::new()));
        }
        if let Some(c) = current.as_mut() {
            c.4.push((attnum, get(5)));
        }
    }
    flush(&mut catalog, current.take());
    let defs: Vec<(u32, String)> = views
        .into_iter()
        .filter_map(|r| {
            let oid = r.first()?.as_ref()?.parse().ok()?;
            let def = r.get(1)?.clone()?;
            Some((oid, def))
        })
        .collect();
    let refs: Vec<(u32, &str)> = defs.iter().map(|(o, d)| (*o, d.as_str())).collect();
    let get = |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    let functions: Vec<FunctionSource> = funcs
        .iter()
        .map(|f| FunctionSource {
            schema: get(f, 0),
            name: get(f, 1),
            language: get(f, 2),
            body: get(f, 3),
        })
        .collect();
    let operators: Vec<(String, String)> = ops.iter().map(|o| (get(o, 0), get(o, 1))).collect();
    catalog.set_system_relations(system);
    // A view may call a function that reads masked data, and a function may read a view
    // derived from masked columns: both grow until neither does.
    loop {
        catalog.derive_view_masks(&refs);
        if !catalog.rate_functions(&functions, &operators) {
            break;
        }
    }
    Ok(catalog)
}
