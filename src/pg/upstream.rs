//! The connection vigil opens to a target PostgreSQL, as a raw wire connection: TCP, TLS when the
//! target's mode wants it, a StartupMessage, authentication with vigil's own credentials
//! (trust, cleartext, MD5, SCRAM-SHA-256), then the session's ParameterStatus and BackendKeyData
//! up to the first ReadyForQuery. After that the caller relays frames; see [`Upstream`].
//!
//! Invariants: with TLS required, no byte of the startup or the password goes out before the
//! handshake succeeds, and a server that declines TLS is refused; bytes the server sent after
//! agreeing to TLS but before the handshake are never read as protocol; the password never
//! leaves [`Secret`].

#![deny(clippy::indexing_slicing)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl::SCRAM_SHA_256};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{
        self,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{self, CryptoProvider},
        ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    },
    TlsConnector,
};
use tokio_util::codec::{Framed, FramedParts};

use super::{
    scram::ScramClient,
    wire::{
        backend::{self, Authentication, Backend, ErrorFields},
        codec::{read_with, BackendCodec, CodecError},
        frontend, BackendKey, WireError, DEFAULT_MAX_MESSAGE_LEN,
    },
    Secret,
};

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Startup parameters the caller may not set: vigil chooses the user and database, and a
/// replication connection or a protocol extension would be a path policy does not understand.
const RESERVED_PARAMS: [&str; 3] = ["user", "database", "replication"];

/// Where the system's CA bundle usually is, for `verify-full` without a CA file.
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// How vigil reaches one target database.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `host:port` (`[v6]:port` for an IPv6 literal). The host is also the TLS server name.
    pub address: String,
    pub database: String,
    pub user: String,
    pub password: Option<Secret<String>>,
    pub tls: UpstreamTls,
    /// Bounds the whole of connecting: TCP, TLS, authentication, up to ReadyForQuery.
    pub connect_timeout: Duration,
    /// Startup parameters to pass on (application_name, client_encoding, DateStyle, options,
    /// ...). `user`, `database`, `replication` and `_pq_.*` are refused.
    pub params: Vec<(String, String)>,
    /// The largest message accepted from the server during the handshake.
    pub max_message_len: usize,
}

impl UpstreamSettings {
    pub fn new(
        address: impl Into<String>,
        database: impl Into<String>,
        user: impl Into<String>,
        tls: UpstreamTls,
    ) -> Self {
        UpstreamSettings {
            address: address.into(),
            database: database.into(),
            user: user.into(),
            password: None,
            tls,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            params: Vec::new(),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        }
    }
}

/// TLS to the target, with libpq's meanings of the modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// Encrypted, without checking the server's certificate (protects against eavesdropping,
    /// not against an active attacker).
    Require,
    /// Encrypted, and the certificate must chain to `ca_file` (or the system's CA bundle when
    /// `None`) and name the address's host.
    VerifyFull { ca_file: Option<PathBuf> },
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid upstream address {address:?}: expected host:port")]
    Address { address: String },
    #[error("startup parameter {name:?} cannot be passed to the target")]
    ReservedParam { name: String },
    #[error("cannot reach {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} did not complete the connection within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("{address} does not accept TLS, which the target's tls mode requires")]
    TlsRefused { address: String },
    #[error("TLS handshake with {address}: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {path}: no usable certificate in it")]
    NoCertificates { path: PathBuf },
    #[error("verify-full without a CA file, and no system CA bundle found (looked at {SYSTEM_CA_BUNDLES:?} and $SSL_CERT_FILE)")]
    NoSystemRoots,
    #[error("the server asks for a password, and none is configured for the target")]
    NoPassword,
    #[error("the server asks for {0}, which vigil does not support")]
    UnsupportedAuth(&'static str),
    #[error("the server offers SASL mechanisms {0:?}; vigil supports only SCRAM-SHA-256")]
    UnsupportedSasl(Vec<String>),
    #[error("SCRAM with the server failed: {0}")]
    Scram(#[from] super::scram::ScramError),
    /// The server sent an ErrorResponse: wrong password, unknown database, too many clients...
    #[error("the server refused the connection: {0}")]
    Server(ErrorFields),
    #[error("unexpected {message} from the server during {phase}")]
    Unexpected {
        message: &'static str,
        phase: &'static str,
    },
    #[error("the server closed the connection during {phase}")]
    Closed { phase: &'static str },
    #[error("protocol error from the server: {0}")]
    Protocol(#[from] CodecError),
    #[error("building a message: {0}")]
    Build(#[from] WireError),
    #[error("writing to the server: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamError {
    /// The server's SQLSTATE, when the server refused with an ErrorResponse.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            UpstreamError::Server(fields) => Some(fields.code()),
            _ => None,
        }
    }
}

/// Any byte stream vigil talks to a server over (plain TCP or TLS).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

pub type UpstreamStream = Box<dyn AsyncStream>;

/// A plain TCP connection to a target. It does not offer vectored writes, so the codec's
/// buffer (always one slice) goes out with send(2) rather than writev(2), whose extra steps in
/// the kernel (iovec copy, file position lock) cost about 0.5 µs per write on the hot path.
struct PlainTcp(TcpStream);

impl AsyncRead for PlainTcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainTcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// An authenticated session with a target, ready for a query. Read frames from `read_buf`
/// first, then from `stream` (or use [`Upstream::into_framed`], which does both).
pub struct Upstream {
    pub stream: UpstreamStream,
    /// ParameterStatus values in the order received (server_version, client_encoding, ...).
    pub params: Vec<(String, String)>,
    /// `None` if the server sent no BackendKeyData (then the session cannot be cancelled).
    pub backend_key: Option<BackendKey>,
    /// Bytes read after the first ReadyForQuery.
    pub read_buf: BytesMut,
    pub tls: bool,
    /// How the server authenticated vigil (for the session's audit trail).
    pub auth: AuthMethod,
}

/// The method a server used to authenticate vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No password asked (`trust`, or `peer`-like methods that need no exchange).
    None,
    Cleartext,
    Md5,
    ScramSha256,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("params", &self.params)
            .field("backend_key", &self.backend_key)
            .field("read_buf", &self.read_buf.len())
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The last value the server reported for a run-time parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A framed stream of backend messages (with `read_buf` carried over) that sends raw frames.
    pub fn into_framed(self, max_len: usize) -> Framed<UpstreamStream, BackendCodec> {
        let mut parts = FramedParts::new::<bytes::Bytes>(self.stream, BackendCodec { max_len });
        parts.read_buf = self.read_buf;
        Framed::from_parts(parts)
    }
}

/// Connects to the target, authenticates and waits for the first ReadyForQuery.
pub async fn connect(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
    let params = startup_params(settings)?;
    bounded(settings, async {
        let (mut stream, tls) = open(settings).await?;
        stream
            .write_all(&frontend::startup_message(
                params.iter().map(|(k, v)| (*k, *v)),
            )?)
            .await?;
        let mut buf = BytesMut::new();
        let auth = authenticate(settings, &mut stream, &mut buf).await?;
        let (params, backend_key) = session_start(settings, &mut stream, &mut buf).await?;
        Ok(Upstream {
            stream,
            params,
            backend_key,
            read_buf: buf,
            tls,
            auth,
        })
    })
    .await
}

/// Sends a CancelRequest for `key` on a fresh connection (with TLS as the settings say), and
/// waits until the server has closed it, i.e. has read the request. Whether anything was
/// running to cancel is not reported: the protocol does not say.
pub async fn cancel(settings: &UpstreamSettings, key: BackendKey) -> Result<(), UpstreamError> {
    bounded(settings, async {
        let (mut stream, _) = open(settings).await?;
        stream.write_all(&frontend::cancel_request(key)).await?;
        stream.flush().await?;
        let mut sink = [0u8; 64];
        // The server answers by closing; a TLS peer may close without close_notify.
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        Ok(())
    })
    .await
}

async fn bounded<T>(
    settings: &UpstreamSettings,
    f: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(settings.connect_timeout, f)
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: settings.address.clone(),
            timeout: settings.connect_timeout,
        })?
}

fn startup_params(settings: &UpstreamSettings) -> Result<Vec<(&str, &str)>, UpstreamError> {
    let mut params = vec![
        ("user", settings.user.as_str()),
        ("database", settings.database.as_str()),
    ];
    for (name, value) in &settings.params {
        let lower = name.to_ascii_lowercase();
        if RESERVED_PARAMS.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
            return Err(UpstreamError::ReservedParam { name: name.clone() });
        }
        params.push((name, value));
    }
    Ok(params)
}

/// TCP, then TLS if the mode wants it.
async fn open(settings: &UpstreamSettings) -> Result<(UpstreamStream, bool), UpstreamError> {
    let address = &settings.address;
    let host = host_of(address).ok_or_else(|| UpstreamError::Address {
        address: address.clone(),
    })?;
    let config = tls_config(&settings.tls).await?;
    let mut tcp = TcpStream::connect(address.as_str())
        .await
        .map_err(|source| UpstreamError::Connect {
            address: address.clone(),
            source,
        })?;
    tcp.set_nodelay(true)?;
    let Some(config) = config else {
        return Ok((Box::new(PlainTcp(tcp)), false));
    };
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|_| UpstreamError::Address {
            address: address.clone(),
        })?;
    tcp.write_all(&frontend::ssl_request()).await?;
    // Exactly one byte: anything after it must come through TLS.
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|_| UpstreamError::Closed {
            phase: "TLS negotiation",
        })?;
    match answer {
        [b'S'] => {}
        [b'N'] => {
            return Err(UpstreamError::TlsRefused {
                address: address.clone(),
            })
        }
        _ => {
            return Err(UpstreamError::Unexpected {
                message: "answer to SSLRequest",
                phase: "TLS negotiation",
            })
        }
    }
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| UpstreamError::Tls {
            address: address.clone(),
            source,
        })?;
    Ok((Box::new(tls), true))
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(
    settings: &UpstreamSettings,
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
) -> Result<AuthMethod, UpstreamError> {
    const PHASE: &str = "authentication";
    let password = || {
        settings
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or(UpstreamError::NoPassword)
    };
    let mut method = AuthMethod::None;
    loop {
        match read(settings, stream, buf, PHASE).await? {
            Backend::Authentication { auth, .. } => match auth {
                Authentication::Ok => return Ok(method),
                Authentication::CleartextPassword => {
                    method = AuthMethod::Cleartext;
                    stream
                        .write_all(&frontend::password_message(password()?)?)
                        .await?;
                }
                Authentication::Md5Password { salt } => {
                    method = AuthMethod::Md5;
                    let hash = md5_hash(settings.user.as_bytes(), password()?, salt);
                    stream
                        .write_all(&frontend::password_message(hash.as_bytes())?)
                        .await?;
                }
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(UpstreamError::UnsupportedSasl(mechanisms));
                    }
                    method = AuthMethod::ScramSha256;
                    scram(settings, stream, buf, password()?).await?;
                }
                Authentication::SaslContinue { .. } | Authentication::SaslFinal { .. } => {
                    return Err(UpstreamError::Unexpected {
                        message: "SASL message",
                        phase: PHASE,
                    })
                }
                Authentication::Unsupported { code } => {
                    return Err(UpstreamError::UnsupportedAuth(match code {
                        2 => "Kerberos V5",
                        6 => "SCM credentials",
                        7 | 8 => "GSSAPI",
                        9 => "SSPI",
                        _ => "an unknown authentication method",
                    }))
                }
            },
            Backend::NoticeResponse { .. } => {}
            other => return Err(unexpected(other, PHASE)),
        }
    }
}

/// SCRAM-SHA-256 without channel binding (`scram::ScramClient`, which remembers salted
/// passwords); the server's signature is checked, so a server that does not know the password
/// cannot pass.
async fn scram(
    settings: &UpstreamSettings,
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    password: &[u8],
) -> Result<(), UpstreamError> {
    const PHASE: &str = "SCRAM authentication";
    let (mut client, first) = ScramClient::new()?;
    stream
        .write_all(&frontend::sasl_initial_response_message(
            SCRAM_SHA_256,
            &first,
        )?)
        .await?;
    let data = match read(settings, stream, buf, PHASE).await? {
        Backend::Authentication {
            auth: Authentication::SaslContinue { data },
            ..
        } => data,
        other => return Err(unexpected(other, PHASE)),
    };
    let last = client.server_first(&data, password)?;
    stream
        .write_all(&frontend::sasl_response_message(&last)?)
        .await?;
    let data = match read(settings, stream, buf, PHASE).await? {
        Backend::Authentication {
            auth: Authentication::SaslFinal { data },
            ..
        } => data,
        other => return Err(unexpected(other, PHASE)),
    };
    Ok(client.server_final(&data)?)
}

/// After AuthenticationOk: ParameterStatus and BackendKeyData up to ReadyForQuery.
async fn session_start(
    settings: &UpstreamSettings,
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
) -> Result<(Vec<(String, String)>, Option<BackendKey>), UpstreamError> {
    const PHASE: &str = "session start";
    let mut params = Vec::new();
    let mut key = None;
    loop {
        match read(settings, stream, buf, PHASE).await? {
            Backend::ParameterStatus { name, value, .. } => params.push((name, value)),
            Backend::BackendKeyData { key: k, .. } => key = Some(k),
            Backend::NoticeResponse { .. } => {}
            Backend::ReadyForQuery { .. } => return Ok((params, key)),
            other => return Err(unexpected(other, PHASE)),
        }
    }
}

/// Reads one message; an ErrorResponse becomes [`UpstreamError::Server`].
async fn read(
    settings: &UpstreamSettings,
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    phase: &'static str,
) -> Result<Backend, UpstreamError> {
    let max = settings.max_message_len;
    match read_with(stream, buf, |b| backend::decode(b, max)).await? {
        Some(Backend::ErrorResponse { fields, .. }) => Err(UpstreamError::Server(fields)),
        Some(m) => Ok(m),
        None => Err(UpstreamError::Closed { phase }),
    }
}

fn unexpected(m: Backend, phase: &'static str) -> UpstreamError {
    match m {
        Backend::ErrorResponse { fields, .. } => UpstreamError::Server(fields),
        other => UpstreamError::Unexpected {
            message: other.name(),
            phase,
        },
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once(']')?;
            (host, port.strip_prefix(':')?)
        }
        None => address.rsplit_once(':')?,
    };
    let valid_port = port.parse::<u16>().is_ok();
    (!host.is_empty() && valid_port).then_some(host)
}

async fn tls_config(tls: &UpstreamTls) -> Result<Option<Arc<ClientConfig>>, UpstreamError> {
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match tls {
        UpstreamTls::Disable => return Ok(None),
        UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull { ca_file } => builder
            .with_root_certificates(roots(ca_file.as_ref()).await?)
            .with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

async fn roots(ca_file: Option<&PathBuf>) -> Result<RootCertStore, UpstreamError> {
    let path = match ca_file {
        Some(p) => p.clone(),
        None => system_bundle().await.ok_or(UpstreamError::NoSystemRoots)?,
    };
    let pem = tokio::fs::read(&path)
        .await
        .map_err(|e| UpstreamError::CaFile {
            path: path.clone(),
            source: rustls_pki_types::pem::Error::Io(e),
        })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| UpstreamError::CaFile {
            path: path.clone(),
            source,
        })?;
        // A bundle may hold certificates webpki cannot use as anchors; skip those.
        let _ = store.add(cert);
    }
    if store.is_empty() {
        return Err(UpstreamError::NoCertificates { path });
    }
    Ok(store)
}

async fn system_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    for p in from_env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
    {
        if tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file()) {
            return Some(p);
        }
    }
    None
}

/// `require`: any certificate is accepted, but the handshake signatures are still checked (so
/// the session keys are bound to the certificate the server showed).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("db.internal:5432"), Some("db.internal"));
        assert_eq!(host_of("10.0.0.6:5432"), Some("10.0.0.6"));
        assert_eq!(host_of("[::1]:5432"), Some("::1"));
        assert_eq!(host_of("db.internal"), None);
        assert_eq!(host_of(":5432"), None);
        assert_eq!(host_of("db:port"), None);
        assert_eq!(host_of("[::1]5432"), None);
    }

    #[test]
    fn reserved_startup_params_are_refused() {
        let mut s = UpstreamSettings::new("h:1", "app", "app_rw", UpstreamTls::Disable);
        s.params = vec![("application_name".into(), "psql".into())];
        assert_eq!(
            startup_params(&s).unwrap(),
            [
                ("user", "app_rw"),
                ("database", "app"),
                ("application_name", "psql")
            ]
        );
        for bad in ["user", "Database", "replication", "_pq_.compression"] {
            s.params = vec![(bad.into(), "x".into())];
            assert!(
                matches!(startup_params(&s), Err(UpstreamError::ReservedParam { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let mut s = UpstreamSettings::new("h:1", "app", "app_rw", UpstreamTls::Disable);
        s.password = Some(Secret::new("hunter2".into()));
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && d.contains("<secret>"), "{d}");
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_an_error_before_connecting() {
        let tls = UpstreamTls::VerifyFull {
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let e = tls_config(&tls).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = UpstreamSettings::new(
            format!("127.0.0.1:{port}"),
            "app",
            "app_rw",
            UpstreamTls::Disable,
        );
        let e = connect(&s).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Connect { .. }), "{e}");
    }
}
