//! The Postgres front end: accepts a client, answers SSLRequest (TLS with rustls when
//! `server.tls_cert`/`tls_key` are set, else 'N') and GSSENCRequest ('N'), routes
//! CancelRequests to the upstream they belong to, authenticates the vigil user with
//! SCRAM-SHA-256 against the verifier from `vigil passwd`, checks that a role grants the target
//! named by `dbname`, then hands the connection to `session.rs`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    scram::{MockKey, ScramServer, Verifier, MECHANISM},
    upstream::{UpstreamSettings, UpstreamTls},
    wire::{
        backend::{self, Severity},
        codec::read_with,
        frontend::{self, Frontend, Startup},
        BackendKey, MAX_STARTUP_LEN,
    },
    Secret,
};
use crate::{
    audit::AuditEvent,
    config::{directory::Protocol, parse_size},
    daemon::Gateway,
};

/// The default largest message from a client or a target.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// Any client stream: plain TCP or TLS.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// What the Postgres front end shares across connections.
pub struct Shared {
    /// Key material derived from the bastion's host key: masking hashes and SCRAM stand-ins.
    secret: [u8; 32],
    /// The keys vigil handed out in BackendKeyData → where a cancel must go.
    cancels: Mutex<HashMap<BackendKey, (UpstreamSettings, BackendKey)>>,
    /// Sessions whose statement waits for approval: their key → the request a CancelRequest
    /// cancels (the target has nothing running to cancel).
    held: Mutex<HashMap<BackendKey, u64>>,
    /// Stand-in SCRAM credentials for unknown users.
    mock: MockKey,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Target connections between sessions (`pool.rs`).
    pub pool: super::pool::Pool,
    /// The system relations' names per target and server version (`session::load_catalog`).
    pub system_relations: super::session::SystemRelations,
    /// Cancels being forwarded, by the target's backend key: a connection goes back to the
    /// pool only when none is in flight for it.
    cancelling: Mutex<HashMap<BackendKey, u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("TLS certificate {path}: {why}")]
    Tls { path: String, why: String },
}

impl Shared {
    pub fn new(config: &crate::config::Config, secret: &[u8]) -> Result<Shared, FrontError> {
        let server = &config.file.server;
        let tls = match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => Some(acceptor(&config.resolve(cert), &config.resolve(key))?),
            _ => None,
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let mut derived = [0u8; 32];
        derived.copy_from_slice(digest.as_ref());
        Ok(Shared {
            secret: derived,
            cancels: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            mock: MockKey::derive(secret),
            tls,
            pool: Default::default(),
            system_relations: Default::default(),
            cancelling: Mutex::new(HashMap::new()),
        })
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub(crate) fn register(&self, ours: BackendKey, theirs: (UpstreamSettings, BackendKey)) {
        if let Ok(mut m) = self.cancels.lock() {
            m.insert(ours, theirs);
        }
    }

    /// The session with key `ours` waits for approval request `id` (None: no longer).
    pub(crate) fn set_held(&self, ours: BackendKey, id: Option<u64>) {
        if let Ok(mut m) = self.held.lock() {
            match id {
                Some(id) => m.insert(ours, id),
                None => m.remove(&ours),
            };
        }
    }

    /// The mapping for `ours`, counted as in flight until the guard is dropped.
    fn cancel_target(
        &self,
        ours: BackendKey,
    ) -> Option<(UpstreamSettings, BackendKey, Cancelling<'_>)> {
        let m = self.cancels.lock().ok()?;
        let (settings, theirs) = m.get(&ours).cloned()?;
        // Counted under the `cancels` lock: `unregister` then `cancelling` cannot miss it.
        *self
            .cancelling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(theirs)
            .or_default() += 1;
        Some((
            settings,
            theirs,
            Cancelling {
                shared: self,
                theirs,
            },
        ))
    }

    /// A cancel for the target's backend `theirs` is on its way.
    pub(crate) fn cancelling(&self, theirs: BackendKey) -> bool {
        self.cancelling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&theirs)
    }

    pub(crate) fn unregister(&self, ours: BackendKey) {
        if let Ok(mut m) = self.cancels.lock() {
            m.remove(&ours);
        }
    }
}

/// Counts one cancel in flight (`Shared::cancel_target`) until dropped.
struct Cancelling<'a> {
    shared: &'a Shared,
    theirs: BackendKey,
}

impl Drop for Cancelling<'_> {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .cancelling
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.theirs) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.theirs);
            }
        }
    }
}

fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, FrontError> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, why: String| FrontError::Tls {
        path: path.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(cert, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The largest message accepted, from `server.max_message_size`.
pub fn max_message(config: &crate::config::Config) -> usize {
    config
        .file
        .server
        .max_message_size
        .as_deref()
        .and_then(parse_size)
        .unwrap_or(DEFAULT_MAX_MESSAGE)
}

/// Serves one client connection to its end. Every failure ends in an ErrorResponse where the
/// protocol allows one, and a closed connection; nothing here takes the process down. Logging
/// in (startup, TLS, SCRAM) must end within `LOGIN_TIMEOUT`, as PostgreSQL's
/// `authentication_timeout`: a connection that says nothing does not hold its place.
pub async fn serve(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    match tokio::time::timeout(LOGIN_TIMEOUT, login(&gw, stream, peer)).await {
        Ok(Some((client, target, settings))) => {
            super::session::run(gw, client, target, settings).await
        }
        Ok(None) => {}
        Err(_) => tracing::debug!(%peer, "postgres login timed out"),
    }
}

/// How long a client has to log in.
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// SSLRequests and GSSENCRequests a client may send before its startup message.
const MAX_NEGOTIATIONS: u32 = 2;

/// Startup, TLS, SCRAM and the target's checks: the session to run, or `None` when the client
/// was refused (and told why).
async fn login(
    gw: &Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(
    super::session::Client,
    crate::config::directory::Target,
    UpstreamSettings,
)> {
    let _ = stream.set_nodelay(true);
    // A reload while the client logs in refuses it (below): it must not log in with a
    // password or a grant the reload took away.
    let reloads = gw.reloads();
    let config = gw.config();
    let max_len = max_message(&config);
    let require_tls = config.file.server.require_tls;
    let mut stream: Box<dyn ClientStream> = Box::new(stream);
    let mut buf = BytesMut::new();
    let mut tls = false;
    let mut negotiations = 0;
    let startup = loop {
        let m = match read_with(&mut stream, &mut buf, |b| {
            frontend::decode_startup(b, MAX_STARTUP_LEN)
        })
        .await
        {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                let _ = stream
                    .write_all(&backend::error_response(
                        Severity::Fatal,
                        "08P01",
                        &format!("vigil: {e}"),
                        None,
                    ))
                    .await;
                return None;
            }
        };
        if matches!(m, Startup::SslRequest | Startup::GssEncRequest) {
            negotiations += 1;
            if negotiations > MAX_NEGOTIATIONS {
                return None;
            }
        }
        match m {
            Startup::SslRequest if !tls => {
                let Some(acceptor) = gw.pg.tls.clone() else {
                    if stream.write_all(b"N").await.is_err() {
                        return None;
                    }
                    continue;
                };
                // Bytes sent before the handshake would not be protected by it.
                if !buf.is_empty() || stream.write_all(b"S").await.is_err() {
                    return None;
                }
                match acceptor.accept(stream).await {
                    Ok(s) => {
                        stream = Box::new(s);
                        tls = true;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "postgres TLS handshake failed");
                        return None;
                    }
                }
            }
            Startup::SslRequest | Startup::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return None;
                }
            }
            Startup::Cancel(key) => {
                // Carried out on its own: the login timeout must not cut it halfway.
                let gw = gw.clone();
                tokio::spawn(async move {
                    let held = gw.pg.held.lock().ok().and_then(|m| m.get(&key).copied());
                    if let Some(id) = held {
                        let why = "cancelled by the client (CancelRequest)";
                        gw.approvals.cancel(&gw.audit, id, why).await;
                        return;
                    }
                    if let Some((settings, upstream_key, _in_flight)) = gw.pg.cancel_target(key) {
                        if let Err(e) = super::upstream::cancel(&settings, upstream_key).await {
                            tracing::warn!(error = %e, "forwarding a cancel request failed");
                        }
                    }
                });
                return None;
            }
            s @ Startup::Startup { .. } => break s,
        }
    };
    let fatal = |code: &str, msg: &str| backend::error_response(Severity::Fatal, code, msg, None);
    if require_tls && !tls {
        gw.audit.record(AuditEvent {
            user: startup.param("user").map(str::to_string),
            target: startup.param("database").map(str::to_string),
            source: Some(peer.to_string()),
            protocol: Some("postgres".into()),
            detail: Some("the client did not ask for TLS, which this bastion requires".into()),
            ..AuditEvent::new("access.refused")
        });
        let _ = stream
            .write_all(&fatal(
                "28000",
                "vigil requires TLS: connect with sslmode=require",
            ))
            .await;
        return None;
    }
    let user = startup.param("user").unwrap_or_default().to_string();
    let target_name = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_string();
    let audit = |action: &str, detail: String| {
        gw.audit.record(AuditEvent {
            user: Some(user.clone()),
            target: Some(target_name.clone()),
            source: Some(peer.to_string()),
            protocol: Some("postgres".into()),
            detail: Some(detail),
            ..AuditEvent::new(action)
        });
    };

    // SCRAM-SHA-256 against the user's verifier; an unknown user runs the same exchange.
    // Per user name for the directory's users, one count for all other names.
    let counted = if config.directory.user(&user).is_some() {
        user.as_str()
    } else {
        ""
    };
    let delay = gw.failures.attempt(peer.ip(), counted);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let verifier = config
        .directory
        .user(&user)
        .and_then(|u| u.password.as_deref())
        .and_then(|p| Verifier::parse(p).ok());
    let mut scram = ScramServer::new(verifier.as_ref(), &user, &gw.pg.mock);
    let authenticated = async {
        stream
            .write_all(&backend::auth_sasl(&[MECHANISM]).ok()?)
            .await
            .ok()?;
        let first = read_auth(&mut stream, &mut buf, max_len).await?;
        let initial = frontend::sasl_initial_response(&first).ok()?;
        if initial.mechanism != MECHANISM {
            return None;
        }
        let server_first = scram.client_first(initial.data.as_deref()?).ok()?;
        stream
            .write_all(&backend::auth_sasl_continue(&server_first).ok()?)
            .await
            .ok()?;
        let last = read_auth(&mut stream, &mut buf, max_len).await?;
        let server_final = scram.client_final(&last).ok()?;
        stream
            .write_all(&backend::auth_sasl_final(&server_final).ok()?)
            .await
            .ok()?;
        Some(())
    }
    .await;
    if authenticated.is_none() {
        audit("auth.failure", "SCRAM-SHA-256 failed".into());
        let _ = stream
            .write_all(&fatal(
                "28P01",
                &format!("password authentication failed for user \"{user}\""),
            ))
            .await;
        return None;
    }
    gw.failures.attempt_succeeded(peer.ip(), counted);
    if gw.reloads() != reloads {
        audit(
            "access.refused",
            "the configuration was reloaded while the client logged in".into(),
        );
        let _ = stream
            .write_all(&fatal(
                "08004",
                "vigil: the configuration changed while you logged in; connect again",
            ))
            .await;
        return None;
    }
    audit("auth.success", "SCRAM-SHA-256".into());

    let target = config.directory.target(&target_name).cloned();
    let grants = config.directory.grants(&user, &target_name);
    let target = match (target, grants) {
        (Some(t), Some(_)) if t.protocol == Protocol::Postgres => t,
        _ => {
            // The same answer whether the target does not exist or is not granted.
            audit("access.refused", "no role grants this target".into());
            let _ = stream
                .write_all(&fatal(
                    "42501",
                    &format!("vigil: {user} may not reach {target_name}"),
                ))
                .await;
            return None;
        }
    };
    let settings = match upstream_settings(&config, &target, &startup) {
        Ok(s) => s,
        Err(why) => {
            audit("upstream.failure", why.clone());
            let _ = stream
                .write_all(&fatal("08006", &format!("vigil: {why}")))
                .await;
            return None;
        }
    };
    // Startup parameters the target gets are SETs: a rule that denies such a SET denies
    // them too. One a review rule holds is not sent (nothing can wait for approval at login).
    let roles = config.directory.roles_of(&user).to_vec();
    let policy = gw.policy();
    let mut settings = settings;
    let mut refused = None;
    settings.params.retain(|(name, value)| {
        if !PASSED_PARAMS.contains(&name.as_str()) {
            return true;
        }
        let set = format!("SET {name} TO '{}'", value.replace('\'', "''"));
        let d = policy.check_sql(
            &roles,
            &target_name,
            crate::policy::sql::analyze(&set).as_ref(),
        );
        match d.action {
            crate::policy::Action::Allow => true,
            crate::policy::Action::Review => false,
            crate::policy::Action::Deny => {
                refused.get_or_insert((name.clone(), d.message));
                false
            }
        }
    });
    if let Some((name, message)) = refused {
        audit(
            "access.refused",
            format!("startup parameter {name}: {message}"),
        );
        let _ = stream
            .write_all(&fatal(
                "42501",
                &format!("vigil: startup parameter {name}: {message}"),
            ))
            .await;
        return None;
    }
    Some((
        super::session::Client {
            stream,
            buf,
            peer,
            user,
            tls,
            max_len,
            reloads,
        },
        target,
        settings,
    ))
}

/// Reads one authentication response (a `p` message) and returns its body.
async fn read_auth(
    stream: &mut Box<dyn ClientStream>,
    buf: &mut BytesMut,
    max_len: usize,
) -> Option<bytes::Bytes> {
    match read_with(stream, buf, |b| frontend::decode(b, max_len.min(64 << 10))).await {
        Ok(Some(Frontend::AuthResponse { body, .. })) => Some(body),
        _ => None,
    }
}

/// Client startup parameters passed on to the target; the rest (user, database, options,
/// replication, protocol extensions, client_encoding) are vigil's to choose.
const PASSED_PARAMS: &[&str] = &[
    "application_name",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
];

fn upstream_settings(
    config: &crate::config::Config,
    target: &crate::config::directory::Target,
    startup: &Startup,
) -> Result<UpstreamSettings, String> {
    let file = config
        .file
        .targets
        .iter()
        .find(|t| t.name == target.name)
        .ok_or_else(|| format!("target {} is not configured", target.name))?;
    let tls = match file.tls.as_deref() {
        None | Some("disable") => UpstreamTls::Disable,
        Some("require") => UpstreamTls::Require,
        _ => UpstreamTls::VerifyFull {
            ca_file: file.ca_file.as_ref().map(|p| config.resolve(p)),
        },
    };
    let (Some(database), Some(user)) = (&target.database, &target.user) else {
        return Err(format!("target {} needs database and user", target.name));
    };
    let mut s = UpstreamSettings::new(&target.address, database, user, tls);
    if let Some(var) = &target.password_env {
        match std::env::var(var) {
            Ok(p) => s.password = Some(Secret::new(p)),
            Err(_) => {
                return Err(format!(
                    "the password of target {} is not set (environment variable {var})",
                    target.name
                ))
            }
        }
    }
    s.max_message_len = max_message(config);
    if let Startup::Startup { params, .. } = startup {
        s.params = params
            .iter()
            .filter(|(k, _)| PASSED_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect();
    }
    // vigil reads every statement as UTF-8. In a client encoding such as SJIS or BIG5 a
    // multibyte character can end in a backslash byte, so the target would read another
    // statement from the same bytes (a string literal that ends elsewhere): the target always
    // talks UTF8 with vigil, whatever the client asked for (its text must be UTF-8 anyway), and
    // the session never changes it (`session.rs`).
    s.params.push(("client_encoding".into(), "UTF8".into()));
    // Likewise, a backslash in a string literal is an ordinary character to vigil's parser.
    s.params
        .push(("standard_conforming_strings".into(), "on".into()));
    Ok(s)
}
