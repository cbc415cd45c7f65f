//! The state store: approval requests, their votes and the grants they make, in an embedded
//! SQLite file (the default) or a PostgreSQL database that several vigil instances share.
//!
//! Every state change is one transaction that re-reads the row it changes (SQLite `BEGIN
//! IMMEDIATE`, PostgreSQL `SELECT ... FOR UPDATE`), so two approvers, two instances or an
//! approver racing the timeout cannot both win: a request leaves `pending` once, and a one-shot
//! approval goes from `approved` to `used` once. Ids are never reused (SQLite AUTOINCREMENT,
//! PostgreSQL BIGSERIAL), so an old id cannot name a new request.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;

use super::{Approval, NewApproval, State, Vote};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state store (postgres): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("state store: {0}")]
    Task(String),
    #[error("state store: row {id} is damaged: {why}")]
    Damaged { id: u64, why: String },
}

/// Why a vote was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("there is no approval request #{0}")]
    NotFound(u64),
    #[error("#{id} is {state}, no longer pending")]
    NotPending { id: u64, state: State },
    #[error("#{0} timed out before this decision")]
    Expired(u64),
    #[error(
        "{approver} already decided on #{id}; a second vote by the same approver does not count"
    )]
    AlreadyVoted { id: u64, approver: String },
    #[error("{0} asked for #{1}: a requester can never approve or deny their own request")]
    OwnRequest(String, u64),
}

/// One row of the session index: a session that runs (or ran) on some instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveSession {
    pub id: String,
    pub protocol: String,
    pub user: String,
    pub target: String,
    pub client: Option<String>,
    pub instance: String,
    pub started_ms: i64,
}

/// What a vote or a state change did.
#[derive(Debug)]
pub enum VoteOutcome {
    Counted(Box<Approval>),
    Refused(VoteError),
}

/// The operations vigil needs from its state store. Each one is atomic.
pub trait StateStore: Send + Sync {
    /// Stores a new pending request and returns it with its id.
    fn create(&self, new: NewApproval) -> BoxFuture<'_, Result<Approval, StoreError>>;
    fn get(&self, id: u64) -> BoxFuture<'_, Result<Option<Approval>, StoreError>>;
    /// Newest first; `all` includes decided, expired and used requests.
    fn list(&self, all: bool, limit: u32) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>>;
    /// What already answers `user` running `command` under `rule` on `target`: an unused
    /// one-shot approval of that exact command, a time-box grant of the rule, or a pending request
    /// for that exact command (in that order of preference).
    fn find_open<'a>(
        &'a self,
        user: &'a str,
        target: &'a str,
        rule: &'a str,
        command: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
    /// Counts one approver's decision (see [`apply_vote`]).
    fn vote(
        &self,
        id: u64,
        vote: Vote,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<VoteOutcome, StoreError>>;
    /// Uses an approval for one command: a one-shot approval becomes `used` (true once, ever);
    /// a time box answers true until it ends.
    fn consume(&self, id: u64, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// The session index: a session started on an instance.
    fn session_started(&self, s: LiveSession) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The session ended.
    fn session_ended(
        &self,
        id: String,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The instance is alive: its open sessions were seen now.
    fn sessions_seen(&self, instance: String, now_ms: i64)
        -> BoxFuture<'_, Result<(), StoreError>>;
    /// Sessions not ended whose instance was seen since `since_ms`, newest first.
    fn live_sessions(&self, since_ms: i64) -> BoxFuture<'_, Result<Vec<LiveSession>, StoreError>>;
    /// Ends a pending request (`Expired` only once its deadline passed, or `Cancelled`); false
    /// when it was no longer pending.
    fn close_pending(
        &self,
        id: u64,
        to: State,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Audit events written by a process that does not own the audit log (JSON lines).
    fn outbox_push(
        &self,
        events: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Takes up to `limit` outbox events, oldest first; each is taken once.
    fn outbox_take(&self, limit: u32) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// Woken when another process changed a request (PostgreSQL LISTEN/NOTIFY), if the store
    /// can tell; waiters poll the store anyway.
    fn changed(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Opens the store that `server.state` names: a `postgres://` (or `postgresql://`) URL, or a
/// SQLite file path (relative to `base`), created with its schema when missing.
pub async fn open(state: &str, base: &Path) -> Result<Arc<dyn StateStore>, StoreError> {
    if state.starts_with("postgres://") || state.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(state).await?))
    } else {
        let path = Path::new(state.strip_prefix("sqlite:").unwrap_or(state));
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        };
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Arc::new(store))
    }
}

/// The decision rules for one vote on a request, the same for every backend: the requester
/// never votes on their own request; only a pending request before its deadline takes votes; an
/// approver counts once; a denial ends the request; `min_approvals` distinct approvals approve
/// it, and the approval is then usable for the rule's timeout (one command) or its grant (a
/// time box).
pub fn apply_vote(a: &Approval, vote: &Vote, now_ms: i64) -> Result<Approval, VoteError> {
    if vote.approver == a.requester {
        return Err(VoteError::OwnRequest(vote.approver.clone(), a.id));
    }
    if a.state != State::Pending {
        return Err(VoteError::NotPending {
            id: a.id,
            state: a.state,
        });
    }
    if now_ms >= a.expires_ms {
        return Err(VoteError::Expired(a.id));
    }
    if a.votes.iter().any(|v| v.approver == vote.approver) {
        return Err(VoteError::AlreadyVoted {
            id: a.id,
            approver: vote.approver.clone(),
        });
    }
    let mut next = a.clone();
    next.votes.push(vote.clone());
    let approvals = next.votes.iter().filter(|v| v.approve).count();
    if !vote.approve {
        next.state = State::Denied;
        next.decided_ms = Some(now_ms);
        next.decision_reason = vote.reason.clone();
    } else if approvals >= usize::try_from(a.min_approvals.max(1)).unwrap_or(usize::MAX) {
        next.state = State::Approved;
        next.decided_ms = Some(now_ms);
        next.decision_reason = vote.reason.clone();
        let window = if a.grant_secs > 0 {
            a.grant_secs.saturating_mul(1000)
        } else {
            // A one-shot approval waits for its command as long as the request could wait.
            u64::try_from(a.expires_ms.saturating_sub(a.created_ms)).unwrap_or(0)
        };
        next.valid_until_ms =
            Some(now_ms.saturating_add(i64::try_from(window).unwrap_or(i64::MAX)));
    }
    Ok(next)
}

const COLUMNS: &str = "id, requester, target, protocol, command, rule, reason, approvers, \
    min_approvals, grant_secs, session, instance, state, created_ms, expires_ms, valid_until_ms, \
    decided_ms, decision_reason";

/// Reads [`COLUMNS`] in order with the backend's getter.
macro_rules! raw_row {
    ($r:expr, $get:ident) => {
        Ok(RawRow {
            id: $r.$get(0)?,
            requester: $r.$get(1)?,
            target: $r.$get(2)?,
            protocol: $r.$get(3)?,
            command: $r.$get(4)?,
            rule: $r.$get(5)?,
            reason: $r.$get(6)?,
            approvers: $r.$get(7)?,
            min_approvals: $r.$get(8)?,
            grant_secs: $r.$get(9)?,
            session: $r.$get(10)?,
            instance: $r.$get(11)?,
            state: $r.$get(12)?,
            created_ms: $r.$get(13)?,
            expires_ms: $r.$get(14)?,
            valid_until_ms: $r.$get(15)?,
            decided_ms: $r.$get(16)?,
            decision_reason: $r.$get(17)?,
        })
    };
}

/// Reads a [`LiveSession`] (the columns of `LIVE_SESSIONS`) with the backend's getter.
macro_rules! live_row {
    ($r:expr, $get:ident) => {
        Ok(LiveSession {
            id: $r.$get(0)?,
            protocol: $r.$get(1)?,
            user: $r.$get(2)?,
            target: $r.$get(3)?,
            client: $r.$get(4)?,
            instance: $r.$get(5)?,
            started_ms: $r.$get(6)?,
        })
    };
}

/// One row's columns, as both backends read them.
struct RawRow {
    id: i64,
    requester: String,
    target: String,
    protocol: String,
    command: String,
    rule: String,
    reason: Option<String>,
    approvers: String,
    min_approvals: i64,
    grant_secs: i64,
    session: Option<String>,
    instance: String,
    state: String,
    created_ms: i64,
    expires_ms: i64,
    valid_until_ms: Option<i64>,
    decided_ms: Option<i64>,
    decision_reason: Option<String>,
}

impl RawRow {
    fn into_approval(self, votes: Vec<Vote>) -> Result<Approval, StoreError> {
        let id = u64::try_from(self.id).unwrap_or(0);
        let damaged = |why: String| StoreError::Damaged { id, why };
        Ok(Approval {
            id,
            requester: self.requester,
            target: self.target,
            protocol: self.protocol,
            command: self.command,
            rule: self.rule,
            reason: self.reason,
            approvers: serde_json::from_str(&self.approvers)
                .map_err(|e| damaged(format!("approvers: {e}")))?,
            min_approvals: u32::try_from(self.min_approvals)
                .map_err(|_| damaged("min_approvals".into()))?,
            grant_secs: u64::try_from(self.grant_secs).map_err(|_| damaged("grant_secs".into()))?,
            session: self.session,
            instance: self.instance,
            state: State::parse(&self.state)
                .ok_or_else(|| damaged(format!("state `{}`", self.state)))?,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            valid_until_ms: self.valid_until_ms,
            decided_ms: self.decided_ms,
            decision_reason: self.decision_reason,
            votes,
        })
    }
}

/// The statements both backends run, in SQLite's `?N` placeholders ([`pg_sql`] converts).
const SELECT_VOTES: &str = "SELECT approver, approve, reason, at_ms FROM vigil_approval_votes \
    WHERE approval = ?1 ORDER BY at_ms, approver";
const INSERT: &str = "INSERT INTO vigil_approvals (requester, target, protocol, command, rule, \
    reason, approvers, min_approvals, grant_secs, session, instance, state, created_ms, expires_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, ?13)";
const INSERT_VOTE: &str = "INSERT INTO vigil_approval_votes (approval, approver, approve, reason, \
    at_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
const UPDATE_VOTED: &str = "UPDATE vigil_approvals SET state = ?2, valid_until_ms = ?3, \
    decided_ms = ?4, decision_reason = ?5 WHERE id = ?1";
const USE_ONE_SHOT: &str = "UPDATE vigil_approvals SET state = 'used' WHERE id = ?1 \
    AND state = 'approved' AND grant_secs = 0 AND valid_until_ms > ?2";
const COUNT_TIME_BOX: &str = "SELECT COUNT(*) FROM vigil_approvals WHERE id = ?1 \
    AND state = 'approved' AND grant_secs > 0 AND valid_until_ms > ?2";
const CLOSE_PENDING: &str = "UPDATE vigil_approvals SET state = ?2, decided_ms = ?3, \
    decision_reason = ?4 WHERE id = ?1 AND state = 'pending' AND (?2 <> 'expired' OR expires_ms <= ?3)";
/// Usable one-shot approvals of the exact command first, then time boxes of the rule, then a
/// pending request for the exact command.
const FIND_OPEN: &str = "WHERE requester = ?1 AND target = ?2 AND rule = ?3 AND ( \
    (state = 'approved' AND grant_secs = 0 AND command = ?4 AND valid_until_ms > ?5) \
    OR (state = 'approved' AND grant_secs > 0 AND valid_until_ms > ?5) \
    OR (state = 'pending' AND command = ?4 AND expires_ms > ?5)) \
    ORDER BY CASE state WHEN 'approved' THEN 0 ELSE 1 END, id LIMIT 1";

const SESSION_START: &str = "INSERT INTO vigil_sessions (id, protocol, user_name, target, client, \
    instance, started_ms, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)";
const SESSION_END: &str =
    "UPDATE vigil_sessions SET ended_ms = ?3, end_reason = ?2 WHERE id = ?1 AND ended_ms IS NULL";
const SESSIONS_SEEN: &str =
    "UPDATE vigil_sessions SET seen_ms = ?2 WHERE instance = ?1 AND ended_ms IS NULL";
const LIVE_SESSIONS: &str = "SELECT id, protocol, user_name, target, client, instance, started_ms \
    FROM vigil_sessions WHERE ended_ms IS NULL AND seen_ms >= ?1 ORDER BY started_ms DESC LIMIT 1000";

const OUTBOX_PUSH: &str = "INSERT INTO vigil_audit_outbox (event, created_ms) VALUES (?1, ?2)";

/// A statement in PostgreSQL's `$N` placeholders.
fn pg_sql(sql: &str) -> String {
    (1..=13).rev().fold(sql.to_string(), |s, n| {
        s.replace(&format!("?{n}"), &format!("${n}"))
    })
}

fn approvers_json(a: &[String]) -> String {
    serde_json::to_string(a).unwrap_or_else(|_| "[]".into())
}

fn id_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// SQLite

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vigil_approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    protocol TEXT NOT NULL,
    command TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT,
    approvers TEXT NOT NULL,
    min_approvals INTEGER NOT NULL,
    grant_secs INTEGER NOT NULL,
    session TEXT,
    instance TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    valid_until_ms INTEGER,
    decided_ms INTEGER,
    decision_reason TEXT
);
CREATE INDEX IF NOT EXISTS vigil_approvals_open ON vigil_approvals (requester, target, rule, state);
CREATE TABLE IF NOT EXISTS vigil_audit_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vigil_sessions (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    user_name TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT,
    instance TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS vigil_approval_votes (
    approval INTEGER NOT NULL REFERENCES vigil_approvals (id),
    approver TEXT NOT NULL,
    approve INTEGER NOT NULL,
    reason TEXT,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (approval, approver)
);
";

/// The embedded store: one SQLite file, shared by the daemon and `vigil approvals` on the same
/// host (SQLite's file locks keep their transactions apart).
pub struct SqliteStore {
    conn: Arc<Mutex<rusqlite::Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Task(format!("{}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(err)?;
        conn.execute_batch(SQLITE_SCHEMA).map_err(err)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` on the connection in a blocking task.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let conn = self.conn.clone();
        let path = self.path.display().to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn
                    .lock()
                    .map_err(|_| StoreError::Task("state store lock poisoned".into()))?;
                f(&mut guard).map_err(|source| StoreError::Sqlite { path, source })
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    raw_row!(r, get)
}

fn sqlite_votes(c: &rusqlite::Connection, id: i64) -> rusqlite::Result<Vec<Vote>> {
    let mut st = c.prepare_cached(SELECT_VOTES)?;
    let rows = st.query_map([id], |r| {
        Ok(Vote {
            approver: r.get(0)?,
            approve: r.get::<_, i64>(1)? != 0,
            reason: r.get(2)?,
            at_ms: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Rows of a query with their votes.
fn sqlite_select(
    c: &rusqlite::Connection,
    where_sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<(RawRow, Vec<Vote>)>> {
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM vigil_approvals {where_sql}"
    ))?;
    let rows: Vec<RawRow> = st
        .query_map(params, sqlite_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|r| {
            let v = sqlite_votes(c, r.id)?;
            Ok((r, v))
        })
        .collect()
}

fn finish(rows: Vec<(RawRow, Vec<Vote>)>) -> Result<Vec<Approval>, StoreError> {
    rows.into_iter().map(|(r, v)| r.into_approval(v)).collect()
}

/// Result of a vote transaction before row decoding errors are mapped.
enum RawVote {
    Counted(Box<RawRow>, Vec<Vote>),
    Refused(VoteError),
}

impl StateStore for SqliteStore {
    fn create(&self, new: NewApproval) -> BoxFuture<'_, Result<Approval, StoreError>> {
        let fut = self.with(move |c| {
            c.execute(
                INSERT,
                rusqlite::params![
                    new.requester,
                    new.target,
                    new.protocol,
                    new.command,
                    new.rule,
                    new.reason,
                    approvers_json(&new.approvers),
                    i64::from(new.min_approvals),
                    i64::try_from(new.grant_secs).unwrap_or(i64::MAX),
                    new.session,
                    new.instance,
                    new.created_ms,
                    new.expires_ms,
                ],
            )?;
            let id = c.last_insert_rowid();
            sqlite_select(c, "WHERE id = ?1", &[&id])
        });
        Box::pin(async move {
            finish(fut.await?)?
                .pop()
                .ok_or_else(|| StoreError::Task("the new request vanished".into()))
        })
    }

    fn get(&self, id: u64) -> BoxFuture<'_, Result<Option<Approval>, StoreError>> {
        let fut = self.with(move |c| sqlite_select(c, "WHERE id = ?1", &[&id_i64(id)]));
        Box::pin(async move { Ok(finish(fut.await?)?.pop()) })
    }

    fn list(&self, all: bool, limit: u32) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        let fut = self.with(move |c| {
            let filter = if all { "" } else { "WHERE state = 'pending'" };
            sqlite_select(
                c,
                &format!("{filter} ORDER BY id DESC LIMIT ?1"),
                &[&i64::from(limit)],
            )
        });
        Box::pin(async move { finish(fut.await?) })
    }

    fn find_open<'a>(
        &'a self,
        user: &'a str,
        target: &'a str,
        rule: &'a str,
        command: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        let (user, target, rule, command) = (
            user.to_string(),
            target.to_string(),
            rule.to_string(),
            command.to_string(),
        );
        let fut = self.with(move |c| {
            sqlite_select(c, FIND_OPEN, &[&user, &target, &rule, &command, &now_ms])
        });
        Box::pin(async move { Ok(finish(fut.await?)?.into_iter().next()) })
    }

    fn vote(
        &self,
        id: u64,
        vote: Vote,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<VoteOutcome, StoreError>> {
        let fut = self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut rows = sqlite_select(&tx, "WHERE id = ?1", &[&id_i64(id)])?;
            let Some((row, votes)) = rows.pop() else {
                return Ok(Ok(RawVote::Refused(VoteError::NotFound(id))));
            };
            let current = match row.into_approval(votes) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let next = match apply_vote(&current, &vote, now_ms) {
                Ok(n) => n,
                Err(e) => return Ok(Ok(RawVote::Refused(e))),
            };
            tx.execute(
                INSERT_VOTE,
                rusqlite::params![
                    id_i64(id),
                    vote.approver,
                    i64::from(vote.approve),
                    vote.reason,
                    vote.at_ms
                ],
            )?;
            tx.execute(
                UPDATE_VOTED,
                rusqlite::params![
                    id_i64(id),
                    next.state.as_str(),
                    next.valid_until_ms,
                    next.decided_ms,
                    next.decision_reason
                ],
            )?;
            let mut rows = sqlite_select(&tx, "WHERE id = ?1", &[&id_i64(id)])?;
            tx.commit()?;
            Ok(match rows.pop() {
                Some((r, v)) => Ok(RawVote::Counted(Box::new(r), v)),
                None => Ok(RawVote::Refused(VoteError::NotFound(id))),
            })
        });
        Box::pin(async move {
            match fut.await?? {
                RawVote::Counted(r, v) => Ok(VoteOutcome::Counted(Box::new(r.into_approval(v)?))),
                RawVote::Refused(e) => Ok(VoteOutcome::Refused(e)),
            }
        })
    }

    fn consume(&self, id: u64, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with(move |c| {
            let used = c.execute(USE_ONE_SHOT, rusqlite::params![id_i64(id), now_ms])?;
            if used == 1 {
                return Ok(true);
            }
            let boxed: i64 =
                c.query_row(COUNT_TIME_BOX, rusqlite::params![id_i64(id), now_ms], |r| {
                    r.get(0)
                })?;
            Ok(boxed == 1)
        })
    }

    fn session_started(&self, s: LiveSession) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(move |c| {
            c.execute(
                SESSION_START,
                rusqlite::params![
                    s.id,
                    s.protocol,
                    s.user,
                    s.target,
                    s.client,
                    s.instance,
                    s.started_ms
                ],
            )
            .map(|_| ())
        })
    }

    fn session_ended(
        &self,
        id: String,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(move |c| {
            c.execute(SESSION_END, rusqlite::params![id, reason, now_ms])
                .map(|_| ())
        })
    }

    fn sessions_seen(
        &self,
        instance: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(move |c| {
            c.execute(SESSIONS_SEEN, rusqlite::params![instance, now_ms])
                .map(|_| ())
        })
    }

    fn live_sessions(&self, since_ms: i64) -> BoxFuture<'_, Result<Vec<LiveSession>, StoreError>> {
        self.with(move |c| {
            let mut st = c.prepare(LIVE_SESSIONS)?;
            let rows = st.query_map([since_ms], |r| live_row!(r, get))?;
            rows.collect()
        })
    }

    fn outbox_push(
        &self,
        events: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(move |c| {
            let tx = c.transaction()?;
            for e in &events {
                tx.execute(OUTBOX_PUSH, rusqlite::params![e, now_ms])?;
            }
            tx.commit()
        })
    }

    fn outbox_take(&self, limit: u32) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows: Vec<(i64, String)> = {
                let mut st =
                    tx.prepare("SELECT id, event FROM vigil_audit_outbox ORDER BY id LIMIT ?1")?;
                let rows = st.query_map([i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            if let Some((last, _)) = rows.last() {
                tx.execute("DELETE FROM vigil_audit_outbox WHERE id <= ?1", [last])?;
            }
            tx.commit()?;
            Ok(rows.into_iter().map(|(_, e)| e).collect())
        })
    }

    fn close_pending(
        &self,
        id: u64,
        to: State,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.with(move |c| {
            let n = c.execute(
                CLOSE_PENDING,
                rusqlite::params![id_i64(id), to.as_str(), now_ms, reason],
            )?;
            Ok(n == 1)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vigil_approvals (
    id BIGSERIAL PRIMARY KEY,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    protocol TEXT NOT NULL,
    command TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT,
    approvers TEXT NOT NULL,
    min_approvals BIGINT NOT NULL,
    grant_secs BIGINT NOT NULL,
    session TEXT,
    instance TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    valid_until_ms BIGINT,
    decided_ms BIGINT,
    decision_reason TEXT
);
CREATE INDEX IF NOT EXISTS vigil_approvals_open ON vigil_approvals (requester, target, rule, state);
CREATE TABLE IF NOT EXISTS vigil_audit_outbox (
    id BIGSERIAL PRIMARY KEY,
    event TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS vigil_sessions (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    user_name TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT,
    instance TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS vigil_approval_votes (
    approval BIGINT NOT NULL REFERENCES vigil_approvals (id),
    approver TEXT NOT NULL,
    approve BOOLEAN NOT NULL,
    reason TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (approval, approver)
);
";

/// The channel on which instances announce request changes (`NOTIFY`), so that a held command
/// on another instance learns of its approval at once rather than at its next poll.
const CHANNEL: &str = "vigil_approvals";

/// A PostgreSQL database shared by several vigil instances. One connection, reopened after it
/// fails; operations are short transactions. TLS to the state database is not supported yet:
/// reach it over a local socket or a trusted network.
pub struct PgStore {
    url: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    changed: Arc<tokio::sync::Notify>,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore {
            url: url.to_string(),
            client: tokio::sync::Mutex::new(None),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let mut guard = store.client.lock().await;
        let client = store.connect().await?;
        // Instances starting together must not race on CREATE TABLE IF NOT EXISTS.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(7155913); {PG_SCHEMA} COMMIT;"
            ))
            .await?;
        *guard = Some(client);
        drop(guard);
        Ok(store)
    }

    /// Connects and LISTENs: notifications wake the waiters of this process.
    async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        use futures::StreamExt;
        let (client, mut connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        let changed = self.changed.clone();
        tokio::spawn(async move {
            // Polling for messages also drives the connection.
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => changed.notify_waiters(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "state store connection ended");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(client)
    }

    /// The connection, reopened when the last one closed.
    async fn client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<tokio_postgres::Client>>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect().await?);
        }
        Ok(guard)
    }
}

fn pg_row(r: &tokio_postgres::Row) -> Result<RawRow, tokio_postgres::Error> {
    raw_row!(r, try_get)
}

async fn pg_select<C: tokio_postgres::GenericClient>(
    c: &C,
    where_sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Approval>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM vigil_approvals {where_sql}"),
            params,
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let raw = pg_row(row)?;
        let votes = c
            .query(&pg_sql(SELECT_VOTES), &[&raw.id])
            .await?
            .iter()
            .map(|v| {
                Ok(Vote {
                    approver: v.try_get(0)?,
                    approve: v.try_get(1)?,
                    reason: v.try_get(2)?,
                    at_ms: v.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        out.push(raw.into_approval(votes)?);
    }
    Ok(out)
}

/// `client` without a connection: the store could not reconnect.
fn gone() -> StoreError {
    StoreError::Task("no connection to the state database".into())
}

impl StateStore for PgStore {
    fn create(&self, new: NewApproval) -> BoxFuture<'_, Result<Approval, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            let row = c
                .query_one(
                    &format!("{} RETURNING id", pg_sql(INSERT)),
                    &[
                        &new.requester,
                        &new.target,
                        &new.protocol,
                        &new.command,
                        &new.rule,
                        &new.reason,
                        &approvers_json(&new.approvers),
                        &i64::from(new.min_approvals),
                        &i64::try_from(new.grant_secs).unwrap_or(i64::MAX),
                        &new.session,
                        &new.instance,
                        &new.created_ms,
                        &new.expires_ms,
                    ],
                )
                .await?;
            let id: i64 = row.try_get(0)?;
            pg_select(c, "WHERE id = $1", &[&id])
                .await?
                .pop()
                .ok_or_else(|| StoreError::Task("the new request vanished".into()))
        })
    }

    fn get(&self, id: u64) -> BoxFuture<'_, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            Ok(pg_select(c, "WHERE id = $1", &[&id_i64(id)]).await?.pop())
        })
    }

    fn list(&self, all: bool, limit: u32) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            let filter = if all { "" } else { "WHERE state = 'pending'" };
            pg_select(
                c,
                &format!("{filter} ORDER BY id DESC LIMIT $1"),
                &[&i64::from(limit)],
            )
            .await
        })
    }

    fn find_open<'a>(
        &'a self,
        user: &'a str,
        target: &'a str,
        rule: &'a str,
        command: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Approval>, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            let sql = pg_sql(FIND_OPEN);
            Ok(
                pg_select(c, &sql, &[&user, &target, &rule, &command, &now_ms])
                    .await?
                    .into_iter()
                    .next(),
            )
        })
    }

    fn vote(
        &self,
        id: u64,
        vote: Vote,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<VoteOutcome, StoreError>> {
        Box::pin(async move {
            let mut guard = self.client().await?;
            let c = guard.as_mut().ok_or_else(gone)?;
            let tx = c.transaction().await?;
            let Some(current) = pg_select(&tx, "WHERE id = $1 FOR UPDATE", &[&id_i64(id)])
                .await?
                .pop()
            else {
                return Ok(VoteOutcome::Refused(VoteError::NotFound(id)));
            };
            let next = match apply_vote(&current, &vote, now_ms) {
                Ok(n) => n,
                Err(e) => return Ok(VoteOutcome::Refused(e)),
            };
            tx.execute(
                &pg_sql(INSERT_VOTE),
                &[
                    &id_i64(id),
                    &vote.approver,
                    &vote.approve,
                    &vote.reason,
                    &vote.at_ms,
                ],
            )
            .await?;
            tx.execute(
                &pg_sql(UPDATE_VOTED),
                &[
                    &id_i64(id),
                    &next.state.as_str(),
                    &next.valid_until_ms,
                    &next.decided_ms,
                    &next.decision_reason,
                ],
            )
            .await?;
            let after = pg_select(&tx, "WHERE id = $1", &[&id_i64(id)]).await?.pop();
            // Delivered to the listening instances when the transaction commits.
            tx.batch_execute(&format!("NOTIFY {CHANNEL}")).await?;
            tx.commit().await?;
            Ok(match after {
                Some(a) => VoteOutcome::Counted(Box::new(a)),
                None => VoteOutcome::Refused(VoteError::NotFound(id)),
            })
        })
    }

    fn consume(&self, id: u64, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            let used = c
                .execute(&pg_sql(USE_ONE_SHOT), &[&id_i64(id), &now_ms])
                .await?;
            if used == 1 {
                return Ok(true);
            }
            let row = c
                .query_one(&pg_sql(COUNT_TIME_BOX), &[&id_i64(id), &now_ms])
                .await?;
            Ok(row.try_get::<_, i64>(0)? == 1)
        })
    }

    fn session_started(&self, s: LiveSession) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            c.execute(
                &pg_sql(SESSION_START),
                &[
                    &s.id,
                    &s.protocol,
                    &s.user,
                    &s.target,
                    &s.client,
                    &s.instance,
                    &s.started_ms,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn session_ended(
        &self,
        id: String,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            c.execute(&pg_sql(SESSION_END), &[&id, &reason, &now_ms])
                .await?;
            Ok(())
        })
    }

    fn sessions_seen(
        &self,
        instance: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            c.execute(&pg_sql(SESSIONS_SEEN), &[&instance, &now_ms])
                .await?;
            Ok(())
        })
    }

    fn live_sessions(&self, since_ms: i64) -> BoxFuture<'_, Result<Vec<LiveSession>, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            c.query(&pg_sql(LIVE_SESSIONS), &[&since_ms])
                .await?
                .iter()
                .map(|r| live_row!(r, try_get))
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(StoreError::from)
        })
    }

    fn outbox_push(
        &self,
        events: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut guard = self.client().await?;
            let c = guard.as_mut().ok_or_else(gone)?;
            let tx = c.transaction().await?;
            for e in &events {
                tx.execute(&pg_sql(OUTBOX_PUSH), &[e, &now_ms]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn outbox_take(&self, limit: u32) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            // Several instances drain at once: each row goes to one of them.
            let rows = c
                .query(
                    "DELETE FROM vigil_audit_outbox WHERE id IN (SELECT id FROM vigil_audit_outbox \
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, event",
                    &[&i64::from(limit)],
                )
                .await?;
            let mut taken = rows
                .iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            taken.sort();
            Ok(taken.into_iter().map(|(_, e)| e).collect())
        })
    }

    fn close_pending(
        &self,
        id: u64,
        to: State,
        reason: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let guard = self.client().await?;
            let c = guard.as_ref().ok_or_else(gone)?;
            let n = c
                .execute(
                    &pg_sql(CLOSE_PENDING),
                    &[&id_i64(id), &to.as_str(), &now_ms, &reason],
                )
                .await?;
            if n == 1 {
                c.batch_execute(&format!("NOTIFY {CHANNEL}")).await?;
            }
            Ok(n == 1)
        })
    }

    fn changed(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.changed.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(command: &str, grant_secs: u64) -> NewApproval {
        NewApproval {
            requester: "alice".into(),
            target: "web1".into(),
            protocol: "ssh".into(),
            command: command.into(),
            rule: "r".into(),
            reason: Some("INC-1".into()),
            approvers: vec!["reviewer".into()],
            min_approvals: 1,
            grant_secs,
            session: None,
            instance: "i".into(),
            created_ms: 1_000,
            expires_ms: 11_000,
        }
    }

    fn yes(who: &str) -> Vote {
        Vote {
            approver: who.into(),
            approve: true,
            reason: None,
            at_ms: 2_000,
        }
    }

    #[tokio::test]
    async fn sqlite_consumes_once_and_expires_only_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state/vigil.db")).unwrap();
        let a = s.create(new("ls", 0)).await.unwrap();
        assert_eq!((a.id, a.state), (1, State::Pending));
        // Not consumable while pending; found as the pending request for the same command.
        assert!(!s.consume(a.id, 2_000).await.unwrap());
        let open = s
            .find_open("alice", "web1", "r", "ls", 2_000)
            .await
            .unwrap();
        assert_eq!(open.map(|o| o.id), Some(1));
        assert!(s
            .find_open("alice", "web1", "r", "id", 2_000)
            .await
            .unwrap()
            .is_none());
        assert!(!s
            .close_pending(a.id, State::Expired, "t".into(), 5_000)
            .await
            .unwrap());
        let VoteOutcome::Counted(v) = s.vote(a.id, yes("bob"), 2_000).await.unwrap() else {
            panic!("vote refused")
        };
        assert_eq!(v.state, State::Approved);
        assert!(matches!(
            s.vote(a.id, yes("dave"), 2_000).await.unwrap(),
            VoteOutcome::Refused(VoteError::NotPending { .. })
        ));
        assert!(s.consume(a.id, 3_000).await.unwrap());
        assert!(
            !s.consume(a.id, 3_000).await.unwrap(),
            "a one-shot approval ran twice"
        );
        assert_eq!(s.get(a.id).await.unwrap().unwrap().state, State::Used);
        // A time box is usable until it ends, for any command of the rule.
        let b = s.create(new("reboot", 60)).await.unwrap();
        s.vote(b.id, yes("bob"), 2_000).await.unwrap();
        let open = s
            .find_open("alice", "web1", "r", "other", 3_000)
            .await
            .unwrap();
        assert_eq!(open.map(|o| o.id), Some(b.id));
        assert!(s.consume(b.id, 3_000).await.unwrap());
        assert!(s.consume(b.id, 61_000).await.unwrap());
        assert!(!s.consume(b.id, 62_000).await.unwrap());
        // Expiry after the deadline, once.
        let c = s.create(new("x", 0)).await.unwrap();
        assert!(s
            .close_pending(c.id, State::Expired, "t".into(), 11_000)
            .await
            .unwrap());
        assert!(!s
            .close_pending(c.id, State::Cancelled, "t".into(), 11_000)
            .await
            .unwrap());
        // The session index: live while open and seen recently.
        let live = |id: &str| LiveSession {
            id: id.into(),
            protocol: "ssh".into(),
            user: "alice".into(),
            target: "web1".into(),
            client: None,
            instance: "i".into(),
            started_ms: 1_000,
        };
        s.session_started(live("s1")).await.unwrap();
        s.session_started(live("s2")).await.unwrap();
        s.session_ended("s2".into(), "done".into(), 2_000)
            .await
            .unwrap();
        assert_eq!(s.live_sessions(500).await.unwrap(), vec![live("s1")]);
        assert!(
            s.live_sessions(5_000).await.unwrap().is_empty(),
            "an unseen instance is live"
        );
        s.sessions_seen("i".into(), 6_000).await.unwrap();
        assert_eq!(s.live_sessions(5_000).await.unwrap().len(), 1);
        // The audit outbox hands each event out once, in order.
        s.outbox_push(vec!["a".into(), "b".into()], 1)
            .await
            .unwrap();
        s.outbox_push(vec!["c".into()], 2).await.unwrap();
        assert_eq!(s.outbox_take(2).await.unwrap(), ["a", "b"]);
        assert_eq!(s.outbox_take(10).await.unwrap(), ["c"]);
        assert!(s.outbox_take(10).await.unwrap().is_empty());
        // Reopening keeps everything; ids are never reused.
        drop(s);
        let s = SqliteStore::open(&dir.path().join("state/vigil.db")).unwrap();
        assert_eq!(s.list(true, 10).await.unwrap().len(), 3);
        assert_eq!(s.create(new("y", 0)).await.unwrap().id, 4);
    }
}
