//! Target connections kept after their session, for the next session to the same target with
//! the same login: session pooling, as pgbouncer's `pool_mode = session`. A new session then
//! skips the TCP (and TLS) handshake, the login and the target's backend start, and reads its
//! catalog from a warm backend.
//!
//! A connection goes back only when its session ended cleanly (the client sent Terminate or
//! closed its end) with nothing in flight: no transaction open, no statement, batch or COPY
//! pending, nothing unread (`session.rs`). It is then reset with `DISCARD ALL`, which drops
//! what a session leaves behind on the target: temporary tables, prepared statements, cursors,
//! `SET` and `SET ROLE` / `SET SESSION AUTHORIZATION`, LISTEN registrations, advisory locks,
//! cached plans and sequence state. Only a reset that completes (its command tag, then
//! ReadyForQuery outside a transaction, within `RESET_TIMEOUT`) keeps the connection.
//!
//! What `DISCARD ALL` cannot see, a pooled connection carries to the next session: state kept
//! in a backend's own memory by procedural languages and extensions (PL/Python's `GD`/`SD`,
//! PL/Perl's `%_SHARED`, `pg_variables`, dblink's named connections, libraries `LOAD`ed).
//! vigil's users differ in what they may see (rules, masks) while they share the target's
//! login, so a connection is only ever reused by the same vigil user, and only under the same
//! config (a reload starts new pools): one user cannot leave data behind for another, and a
//! changed rule, mask, credential or CA file applies to every later session. vigil's own
//! per-session state (policy, masks, prepared names, cancel keys) is new for every session.
//!
//! Cancel keys: a session's key is withdrawn before its connection is reset and kept, so a
//! CancelRequest that arrives later finds nothing. One already on its way to the target (looked
//! up before) is waited for (`front::Shared::cancelling`): the reset starts only once no cancel
//! for that backend is in flight, so that a late cancel meets the idle backend (which ignores
//! it), or the reset (which then fails, and the connection is closed), never the next session.
//!
//! Connections are kept per (vigil user, config generation, address, database, target user,
//! password, TLS, startup parameters), at most `MAX_IDLE` each and `MAX_IDLE_TOTAL` in all (they
//! hold backends of the target: bounded, so that they cannot use up its connections), for
//! `IDLE_TIMEOUT`, and closed with Terminate when that runs out. One the target closed or wrote
//! to while idle is dropped when it would be taken. One whose peer vanished without a word (a
//! half-open TCP connection, a backend that hangs) is found by the session that takes it before
//! its client is told anything: the first round trip (the catalog read, or an empty query when
//! there is nothing to read and the connection waited `CHECK_AFTER` or longer) must be answered
//! within `CHECK_TIMEOUT`, else the session drops it and logs in afresh.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::{
    upstream::{UpstreamSettings, UpstreamStream},
    wire::{
        backend::{Backend, TransactionStatus},
        codec::BackendCodec,
        frontend, BackendKey,
    },
};
use crate::daemon::Gateway;

/// How long a connection waits in the pool for a next session.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per target login and vigil user.
pub const MAX_IDLE: usize = 16;
/// Idle connections kept in all.
pub const MAX_IDLE_TOTAL: usize = 64;
/// How long the reset may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that waited this long is checked with an empty query before it is used, when
/// its session would not talk to it first anyway (as pgbouncer's `server_check_delay`).
pub const CHECK_AFTER: Duration = Duration::from_secs(30);
/// How long the first round trip on a kept connection may take before it is given up for a new
/// one.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

type Up = Framed<UpstreamStream, BackendCodec>;

/// A logged-in target connection, between sessions.
pub struct Idle {
    pub up: Up,
    /// The target's ParameterStatus values, as a new client is told them.
    pub params: Vec<(String, String)>,
    pub backend_key: Option<BackendKey>,
}

struct Kept {
    id: u64,
    since: Instant,
    idle: Idle,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<[u8; 32], Vec<Kept>>>,
    next_id: AtomicU64,
}

impl Pool {
    /// A kept connection for `settings`, the most recently returned first, and how long it
    /// waited. `scope`: the vigil user and the config generation (see the module docs).
    pub fn take(&self, settings: &UpstreamSettings, scope: &str) -> Option<(Idle, Duration)> {
        let key = key(settings, scope);
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(&key)?;
        while let Some(mut kept) = list.pop() {
            if kept.since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // Anything readable now (the target's goodbye, an error, end of stream) means the
            // connection is not the quiet, reset one that was put here.
            if futures::FutureExt::now_or_never(kept.idle.up.next()).is_none()
                && kept.idle.up.read_buffer().is_empty()
            {
                return Some((kept.idle, kept.since.elapsed()));
            }
        }
        None
    }

    fn insert(&self, key: [u8; 32], idle: Idle) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().map(Vec::len).sum();
        let list = map.entry(key).or_default();
        list.retain(|k| k.since.elapsed() < IDLE_TIMEOUT);
        if list.len() >= MAX_IDLE || total >= MAX_IDLE_TOTAL {
            return None;
        }
        list.push(Kept {
            id,
            since: Instant::now(),
            idle,
        });
        Some(id)
    }

    /// Takes connection `id` out of the pool, when no session took it.
    fn expire(&self, key: &[u8; 32], id: u64) -> Option<Idle> {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(key)?;
        let kept = list
            .iter()
            .position(|k| k.id == id)
            .map(|i| list.remove(i).idle);
        if list.is_empty() {
            map.remove(key);
        }
        kept
    }

    /// Idle connections kept now, over all targets.
    pub fn len(&self) -> usize {
        let map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resets `idle` in the background and keeps it for `IDLE_TIMEOUT` (the caller checked that
/// its session ended cleanly, and withdrew its cancel key). A cancel still in flight, a reset
/// that fails, or a full pool closes it.
pub fn keep(gw: Arc<Gateway>, settings: &UpstreamSettings, scope: &str, mut idle: Idle) {
    let key = key(settings, scope);
    tokio::spawn(async move {
        let ready = async {
            if let Some(k) = idle.backend_key {
                while gw.pg.cancelling(k) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            reset(&mut idle).await
        };
        if !matches!(tokio::time::timeout(RESET_TIMEOUT, ready).await, Ok(true)) {
            return;
        }
        let Some(id) = gw.pg.pool.insert(key, idle) else {
            return;
        };
        tokio::time::sleep(IDLE_TIMEOUT).await;
        if let Some(mut idle) = gw.pg.pool.expire(&key, id) {
            // Said goodbye to, as a client would: the target logs no lost connection.
            let _ = tokio::time::timeout(RESET_TIMEOUT, idle.up.send(frontend::terminate())).await;
        }
    });
}

/// Whether a kept connection still answers: an empty query, answered with
/// EmptyQueryResponse and ReadyForQuery outside a transaction within `CHECK_TIMEOUT`.
pub async fn check(idle: &mut Idle) -> bool {
    let answered = round_trip(idle, "", |m| {
        matches!(m, Backend::EmptyQueryResponse { .. })
    });
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, answered).await,
        Ok(true)
    )
}

/// `DISCARD ALL`, answered with its tag and ReadyForQuery outside a transaction; the
/// ParameterStatus values it reports (the ones the session had changed) update `params`.
async fn reset(idle: &mut Idle) -> bool {
    round_trip(
        idle,
        "DISCARD ALL",
        |m| matches!(m, Backend::CommandComplete { tag, .. } if tag == "DISCARD ALL"),
    )
    .await
}

/// Sends the simple query `sql`: true when the target answered it with a message `done`
/// accepts, then ReadyForQuery outside a transaction (notices and notifications in between
/// are dropped, ParameterStatus values kept in `params`).
async fn round_trip(idle: &mut Idle, sql: &str, done: impl Fn(&Backend) -> bool) -> bool {
    let Ok(query) = frontend::query(sql) else {
        return false;
    };
    if idle.up.send(query).await.is_err() {
        return false;
    }
    let mut answered = false;
    loop {
        match idle.up.next().await {
            Some(Ok(Backend::ParameterStatus { name, value, .. })) => {
                set_param(&mut idle.params, name, value)
            }
            Some(Ok(Backend::NoticeResponse { .. } | Backend::NotificationResponse { .. })) => {}
            Some(Ok(Backend::ReadyForQuery { status, .. })) => {
                return answered && status == TransactionStatus::Idle;
            }
            Some(Ok(m)) if done(&m) => answered = true,
            _ => return false,
        }
    }
}

/// Records a ParameterStatus value.
pub fn set_param(params: &mut Vec<(String, String)>, name: String, value: String) {
    match params.iter_mut().find(|(n, _)| *n == name) {
        Some(p) => p.1 = value,
        None => params.push((name, value)),
    }
}

/// Which pool a connection belongs to: the vigil user and config generation (`scope`), and
/// everything that made its login and session start.
fn key(s: &UpstreamSettings, scope: &str) -> [u8; 32] {
    let mut id = Vec::with_capacity(256);
    let mut put = |b: &[u8]| {
        id.extend_from_slice(&(b.len() as u64).to_be_bytes());
        id.extend_from_slice(b);
    };
    put(b"vigil/pg/pool/v1");
    put(scope.as_bytes());
    put(s.address.as_bytes());
    put(s.database.as_bytes());
    put(s.user.as_bytes());
    put(s
        .password
        .as_ref()
        .map_or(&b""[..], |p| p.expose().as_bytes()));
    put(format!("{:?}", s.tls).as_bytes());
    let mut params: Vec<_> = s.params.iter().collect();
    params.sort();
    for (k, v) in params {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    crate::recording::keys::sha256(&id)
}
