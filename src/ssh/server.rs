//! The SSH front end: russh server callbacks that authenticate against vigil's user directory
//! and hand each channel to its own task. Callbacks only translate; session state lives in the
//! channel tasks (`channel.rs`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use russh::{
    server::{self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
    Channel, ChannelOpenFailure, MethodKind, MethodSet,
};
use tokio::sync::Mutex as AsyncMutex;

use super::upstream::UpstreamHandle;
use crate::{audit::AuditEvent, daemon::Gateway};

/// Who logged in, and where to (`alice+web1` → user alice, target web1; `alice` → vigil itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub target: Option<String>,
}

impl Login {
    pub fn parse(name: &str) -> Login {
        match name.split_once('+') {
            Some((user, target)) if !target.is_empty() => Login {
                user: user.to_string(),
                target: Some(target.to_string()),
            },
            Some((user, _)) => Login {
                user: user.to_string(),
                target: None,
            },
            None => Login {
                user: name.to_string(),
                target: None,
            },
        }
    }
}

/// The kinds of channel a target may open back toward the user, each only after the user asked
/// for it on this connection and a role allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverse {
    /// A connection to a remote forward (`ssh -R`).
    Tcpip,
    /// The target using the user's forwarded agent (`ssh -A`).
    Agent,
    /// An X11 client on the target (`ssh -X`).
    X11,
}

/// What the channels of one SSH connection share.
pub struct Connection {
    pub login: Login,
    pub peer: Option<SocketAddr>,
    /// The connection to the target, opened by the first channel that needs it.
    upstream: AsyncMutex<Option<Arc<UpstreamHandle>>>,
    /// vigil's handle on the user's connection, for channels opened toward the user.
    client: OnceLock<server::Handle>,
    /// Reverse channel kinds the user asked for (and a role allowed) on this connection.
    requested: Mutex<Vec<Reverse>>,
}

impl Connection {
    pub fn new(login: Login, peer: Option<SocketAddr>) -> Connection {
        Connection {
            login,
            peer,
            upstream: AsyncMutex::new(None),
            client: OnceLock::new(),
            requested: Mutex::new(Vec::new()),
        }
    }

    /// The connection to `target`, opened by the first channel that needs it and shared by the
    /// connection's other channels while it stays open. Channels the target opens back go to
    /// `forward::reverse`, which relays only what the user asked for and a role allows.
    pub async fn upstream(
        self: &Arc<Self>,
        gw: &Arc<Gateway>,
        target: &crate::config::directory::Target,
    ) -> Result<Arc<UpstreamHandle>, super::upstream::UpstreamError> {
        let mut slot = self.upstream.lock().await;
        if let Some(h) = slot.as_ref().filter(|h| !h.is_closed()) {
            return Ok(h.clone());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let h = Arc::new(super::upstream::connect(target, Some(tx)).await?);
        gw.tracker
            .spawn(super::forward::reverse(gw.clone(), self.clone(), rx));
        *slot = Some(h.clone());
        Ok(h)
    }

    pub fn set_client(&self, handle: server::Handle) {
        let _ = self.client.set(handle);
    }

    pub fn client(&self) -> Option<server::Handle> {
        self.client.get().cloned()
    }

    /// Notes that the user asked for reverse channels of `kind` (after the role check).
    pub fn allow_reverse(&self, kind: Reverse) {
        if let Ok(mut r) = self.requested.lock() {
            if !r.contains(&kind) {
                r.push(kind);
            }
        }
    }

    /// Whether a channel of `kind` from the target may reach the user: asked for on this
    /// connection, and still granted by the current config.
    pub fn reverse_allowed(&self, gw: &Gateway, kind: Reverse) -> bool {
        let asked = self.requested.lock().is_ok_and(|r| r.contains(&kind));
        let grants = self.grants(gw);
        asked
            && match kind {
                Reverse::Tcpip => grants.port_forwarding,
                Reverse::Agent => grants.agent_forwarding,
                Reverse::X11 => grants.x11_forwarding,
            }
    }

    /// What the user's roles allow on the login's target (nothing without a target).
    pub fn grants(&self, gw: &Gateway) -> crate::config::directory::Grants {
        self.login
            .target
            .as_deref()
            .and_then(|t| gw.config().directory.grants(&self.login.user, t))
            .unwrap_or_default()
    }
}

/// Slows down addresses that keep failing to authenticate (after `FREE_FAILURES` within
/// `WINDOW`, each further attempt waits twice as long as the last, up to `MAX_DELAY`).
#[derive(Default)]
pub struct Failures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Password attempts (`Failures::attempt`, Postgres) per address, apart from the SSH
    /// key failures above (an SSH login does not clear them), and per user name, whatever
    /// address they come from.
    password_by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    by_user: Mutex<HashMap<String, (u32, Instant)>>,
}

/// The wait after `n` failures within `WINDOW` that began at `since`.
fn wait(n: u32, since: Instant) -> Duration {
    if n > FREE_FAILURES && since.elapsed() < WINDOW {
        let exp = (n - FREE_FAILURES).min(8);
        (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_DELAY)
    } else {
        Duration::ZERO
    }
}

/// Counts one more failure under `key` (a new window once the last one is over).
fn count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, (u32, Instant)>, key: K) {
    let e = map.entry(key).or_insert((0, Instant::now()));
    if e.1.elapsed() >= WINDOW {
        *e = (0, Instant::now());
    }
    e.0 += 1;
    if map.len() > 100_000 {
        map.retain(|_, (_, since)| since.elapsed() < WINDOW);
    }
}

const FREE_FAILURES: u32 = 6;
const WINDOW: Duration = Duration::from_secs(300);
const MAX_DELAY: Duration = Duration::from_secs(30);

impl Failures {
    pub fn delay(&self, ip: Option<IpAddr>) -> Duration {
        let Some(ip) = ip else { return Duration::ZERO };
        let Ok(map) = self.by_ip.lock() else {
            return Duration::ZERO;
        };
        map.get(&ip)
            .map_or(Duration::ZERO, |(n, since)| wait(*n, *since))
    }

    pub fn failed(&self, ip: Option<IpAddr>) {
        let (Some(ip), Ok(mut map)) = (ip, self.by_ip.lock()) else {
            return;
        };
        count(&mut map, ip);
    }

    /// A password attempt for `user` from `ip` begins: how long it waits first (the longer of
    /// the address's and the user name's wait). It counts as a failure of both at once, until
    /// `attempt_succeeded` says otherwise, so that attempts made in parallel slow each other
    /// down too, and guesses spread over many addresses still slow down for the user. The
    /// caller passes one shared name for every user name it does not know, so that names an
    /// attacker makes up do not grow the map. The price: anyone can make a known user's logins
    /// wait (up to `MAX_DELAY`) by failing in that user's name.
    pub fn attempt(&self, ip: IpAddr, user: &str) -> Duration {
        let mut delay = Duration::ZERO;
        if let Ok(mut map) = self.password_by_ip.lock() {
            delay = map.get(&ip).map_or(delay, |(n, since)| wait(*n, *since));
            count(&mut map, ip);
        }
        if let Ok(mut map) = self.by_user.lock() {
            let d = map
                .get(user)
                .map_or(Duration::ZERO, |(n, since)| wait(*n, *since));
            delay = delay.max(d);
            count(&mut map, user.to_owned());
        }
        delay
    }

    /// The attempt succeeded: the user name's count is cleared, and the address's count loses
    /// this attempt (it is not cleared: logging in to one account does not buy a guesser at
    /// that address more tries at others).
    pub fn attempt_succeeded(&self, ip: IpAddr, user: &str) {
        if let Ok(mut map) = self.by_user.lock() {
            map.remove(user);
        }
        if let Ok(mut map) = self.password_by_ip.lock() {
            if let Some(e) = map.get_mut(&ip) {
                e.0 = e.0.saturating_sub(1);
            }
        }
    }

    pub fn succeeded(&self, ip: Option<IpAddr>) {
        if let (Some(ip), Ok(mut map)) = (ip, self.by_ip.lock()) {
            map.remove(&ip);
        }
    }
}

/// The russh server configuration: vigil's host key, public-key authentication only,
/// constant-time rejections.
pub fn config(host_key: russh::keys::PrivateKey) -> server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    server::Config {
        keys: vec![host_key],
        methods,
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Per-connection russh handler.
pub struct Handler {
    gw: Arc<Gateway>,
    peer: Option<SocketAddr>,
    conn: Option<Arc<Connection>>,
}

impl Handler {
    pub fn new(gw: Arc<Gateway>, peer: Option<SocketAddr>) -> Self {
        Handler {
            gw,
            peer,
            conn: None,
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    fn known_key(&self, login: &str, key: &russh::keys::PublicKey) -> bool {
        let user = Login::parse(login).user;
        let line = key.to_openssh().unwrap_or_default();
        self.gw.config().directory.authorized_key(&user, &line)
    }

    fn audit(&self, action: &str, login: &Login, detail: Option<String>) {
        self.gw.audit.record(AuditEvent {
            user: Some(login.user.clone()),
            target: login.target.clone(),
            source: self.peer.map(|p| p.to_string()),
            protocol: Some("ssh".into()),
            detail,
            ..AuditEvent::new(action)
        });
    }
}

impl server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let delay = self.gw.failures.delay(self.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.known_key(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            self.gw.failures.failed(self.ip());
            self.audit(
                "auth.failure",
                &Login::parse(user),
                Some("public key not authorized for this user".into()),
            );
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let login = Login::parse(user);
        if !self.known_key(user, key.public_key) {
            self.gw.failures.failed(self.ip());
            self.audit(
                "auth.failure",
                &login,
                Some("public key not authorized for this user".into()),
            );
            return Ok(Auth::reject());
        }
        self.gw.failures.succeeded(self.ip());
        self.audit(
            "auth.success",
            &login,
            Some(format!("publickey {}", key.algorithm)),
        );
        self.conn = Some(Arc::new(Connection::new(login, self.peer)));
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.gw.is_shutting_down() {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        }
        conn.set_client(session.handle());
        reply.accept().await;
        let (gw, handle) = (self.gw.clone(), session.handle());
        self.gw
            .tracker
            .spawn(super::channel::run(gw, conn, channel, handle));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        conn.set_client(session.handle());
        let allowed = conn.grants(&self.gw).port_forwarding;
        let dest = format!("{host}:{port}");
        if !allowed {
            self.audit(
                "forward.refused",
                &conn.login,
                Some(format!("direct-tcpip to {dest}")),
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        reply.accept().await;
        let origin = format!("{originator}:{originator_port}");
        self.gw.tracker.spawn(super::forward::local(
            self.gw.clone(),
            conn,
            channel,
            host.to_string(),
            port,
            origin,
        ));
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: russh::ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The channel task (which sees the request too) passes it on to the target.
        Ok(self
            .conn
            .as_ref()
            .is_some_and(|c| c.grants(&self.gw).agent_forwarding))
    }

    async fn x11_request(
        &mut self,
        channel: russh::ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Answered here (russh only answers when the client asked); the channel task passes
        // the request on to the target.
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.grants(&self.gw).x11_forwarding)
        {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // A remote forward (`ssh -R`) listens on the target, for roles that allow it.
        let Some(conn) = self.conn.clone() else {
            return Ok(false);
        };
        conn.set_client(session.handle());
        let what = format!("tcpip-forward {address}:{port}");
        let target = conn
            .login
            .target
            .as_deref()
            .and_then(|t| self.gw.config().directory.target(t).cloned());
        let (true, Some(target)) = (conn.grants(&self.gw).port_forwarding, target) else {
            self.audit(
                "forward.refused",
                &conn.login,
                Some(format!("{what} (remote forwarding not granted)")),
            );
            return Ok(false);
        };
        let upstream = match conn.upstream(&self.gw, &target).await {
            Ok(h) => h,
            Err(e) => {
                self.audit("forward.failure", &conn.login, Some(format!("{what}: {e}")));
                return Ok(false);
            }
        };
        conn.allow_reverse(Reverse::Tcpip);
        match upstream.tcpip_forward(address, *port).await {
            Ok(allocated) => {
                if *port == 0 {
                    *port = allocated;
                }
                self.audit(
                    "forward.listen",
                    &conn.login,
                    Some(format!("tcpip-forward {address}:{port} on {}", target.name)),
                );
                Ok(true)
            }
            Err(e) => {
                self.audit(
                    "forward.failure",
                    &conn.login,
                    Some(format!("{what}: target refused: {e}")),
                );
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(conn) = self.conn.clone() else {
            return Ok(false);
        };
        let Some(target) = conn
            .login
            .target
            .as_deref()
            .and_then(|t| self.gw.config().directory.target(t).cloned())
        else {
            return Ok(false);
        };
        match conn.upstream(&self.gw, &target).await {
            Ok(h) => Ok(h.cancel_tcpip_forward(address, port).await.is_ok()),
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_attempts_slow_down_by_address_and_by_user() {
        let f = Failures::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        // Guesses at one user from many addresses: the user's count grows.
        let waits: Vec<Duration> = (0..10).map(|n| f.attempt(ip(n), "alice")).collect();
        assert!(waits[..=FREE_FAILURES as usize].iter().all(|d| d.is_zero()));
        assert!(waits[9] > Duration::ZERO, "{waits:?}");
        // Attempts count before they end: parallel guesses from one address slow down too.
        let waits: Vec<Duration> = (0..10)
            .map(|n| f.attempt(ip(99), &format!("u{n}")))
            .collect();
        assert!(waits[9] > Duration::ZERO, "{waits:?}");
        // A success clears its user but only takes its own attempt off the address.
        let before = f.attempt(ip(99), "mallory");
        f.attempt_succeeded(ip(99), "mallory");
        assert!(f.attempt(ip(99), "bob") >= before);
        f.attempt_succeeded(ip(1), "alice");
        assert!(f.attempt(ip(200), "alice").is_zero());
    }
}
