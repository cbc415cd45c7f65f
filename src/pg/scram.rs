//! Server-side SCRAM-SHA-256 (RFC 5802, RFC 7677) for vigil's own users, the way PostgreSQL
//! does it: verifiers in PostgreSQL's text form, an empty SCRAM username (the startup packet names
//! the user), no channel binding. Sans-IO: the front end moves the messages.
//!
//! Invariants: no plaintext password is stored or kept; a user vigil does not know, or one without
//! a password, goes through the same exchange with a salt derived from the username and a bastion
//! secret, and fails the same way a wrong password does; proofs are compared in constant time.
//!
//! SASLprep: vigil uses the password's UTF-8 bytes as they are. PostgreSQL and libpq apply
//! SASLprep (RFC 4013) first and fall back to the raw bytes when it fails, so the two agree on
//! every ASCII password and on any password SASLprep leaves unchanged (NFKC-normal text without
//! non-ASCII spaces or soft hyphens); a password SASLprep would rewrite works with a verifier made
//! by PostgreSQL, not with one from [`passwd_verifier`].
//!
//! Channel binding: vigil offers only `SCRAM-SHA-256`, so it accepts the GS2 flags `n` (client
//! does not support binding) and `y` (client supports it but the server did not offer it), and
//! refuses `p=` (binding required). A front end that starts offering `SCRAM-SHA-256-PLUS` must
//! refuse `y` too, or a downgrade goes unnoticed.

#![deny(clippy::indexing_slicing)]

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::{engine::general_purpose::STANDARD as B64, Engine};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;
const KEY_LEN: usize = 32;
const PREFIX: &str = "SCRAM-SHA-256$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("not a SCRAM-SHA-256 verifier ({0}); expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as `vigil passwd` prints it")]
    BadVerifier(&'static str),
    #[error("malformed SCRAM {message} message: {why}")]
    Malformed {
        message: &'static str,
        why: &'static str,
    },
    #[error("the client requires SCRAM channel binding, which vigil does not offer")]
    ChannelBindingRequired,
    #[error("SCRAM authorization identities are not supported")]
    AuthzId,
    #[error("the SCRAM channel binding data does not match the client's first message")]
    BindingMismatch,
    #[error("the SCRAM nonce does not continue the exchange")]
    NonceMismatch,
    /// The proof did not verify: wrong password, unknown user, or no password configured.
    #[error("password authentication failed")]
    BadProof,
    #[error("SCRAM message received out of order")]
    OutOfOrder,
    #[error("a SCRAM iteration count must be at least 1")]
    Iterations,
    #[error("an empty password cannot be used")]
    EmptyPassword,
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "the server asks for {0} SCRAM iterations; vigil runs at most {MAX_CLIENT_ITERATIONS}"
    )]
    TooManyIterations(u32),
    #[error("the server's SCRAM signature does not verify: it does not know the password")]
    BadServerSignature,
    #[error("the server ended the SCRAM exchange: {0}")]
    ServerError(String),
}

/// What PostgreSQL stores for a SCRAM-SHA-256 password (`pg_authid.rolpassword`):
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
/// `Debug` hides the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Verifier {{ iterations: {}, keys: <secret> }}",
            self.iterations
        )
    }
}

impl Verifier {
    /// Parses PostgreSQL's text form.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or(ScramError::BadVerifier("missing the SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::BadVerifier("missing `$` before the keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::BadVerifier(
            "missing `:` after the iteration count",
        ))?;
        let iterations = parse_iterations(iterations).ok_or(ScramError::BadVerifier(
            "the iteration count is not a positive number",
        ))?;
        let salt = B64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::BadVerifier("the salt is not base64"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(ScramError::BadVerifier("missing `:` between the keys"))?;
        Ok(Verifier {
            iterations,
            salt,
            stored_key: decode_key(stored).ok_or(ScramError::BadVerifier(
                "StoredKey is not 32 bytes of base64",
            ))?,
            server_key: decode_key(server).ok_or(ScramError::BadVerifier(
                "ServerKey is not 32 bytes of base64",
            ))?,
        })
    }

    /// A verifier for `password` with a fresh random 16-byte salt.
    pub fn generate(password: &str, iterations: u32) -> Result<Self, ScramError> {
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt).map_err(|_| ScramError::Random)?;
        Self::from_password(password.as_bytes(), &salt, iterations)
    }

    /// A verifier for `password` with a given salt: `generate` without the randomness.
    pub fn from_password(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, ScramError> {
        if password.is_empty() {
            return Err(ScramError::EmptyPassword);
        }
        let (client_key, server_key) = derive_keys(password, salt, iterations)?;
        Ok(Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key,
        })
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// PostgreSQL's text form, as [`Verifier::parse`] reads it.
    pub fn to_postgres(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// The verifier `vigil passwd` prints for a user's `password`.
pub fn passwd_verifier(password: &str) -> Result<String, ScramError> {
    Verifier::generate(password, DEFAULT_ITERATIONS).map(|v| v.to_postgres())
}

/// The bastion secret from which the salts shown to unknown users are derived. It must outlive a
/// restart (derive it from persistent key material), or an attacker who sees the salt for a name
/// change across restarts learns that the name is not a user. `Debug` prints `<secret>`.
pub struct MockKey([u8; KEY_LEN]);

impl std::fmt::Debug for MockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockKey(<secret>)")
    }
}

impl MockKey {
    /// Derives the key from persistent secret material (e.g. the bastion's host key).
    pub fn derive(secret: &[u8]) -> Self {
        MockKey(hmac_sha256(secret, b"vigil/pg/scram-mock/v1"))
    }

    /// A random key: fine for tests and single-run tools, see the type's note for servers.
    pub fn generate() -> Result<Self, ScramError> {
        let mut k = [0u8; KEY_LEN];
        rand::fill(&mut k).map_err(|_| ScramError::Random)?;
        Ok(MockKey(k))
    }

    fn credentials(&self, user: &str) -> Credentials {
        let tagged = |tag: &[u8]| {
            let mut m = tag.to_vec();
            m.extend_from_slice(user.as_bytes());
            hmac_sha256(&self.0, &m)
        };
        let salt = tagged(b"salt\0");
        Credentials {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.get(..SALT_LEN).unwrap_or(&salt).to_vec(),
            stored_key: tagged(b"stored\0"),
            server_key: tagged(b"server\0"),
            known: false,
        }
    }
}

/// The server side of one SCRAM-SHA-256 exchange:
/// SASLInitialResponse → [`ScramServer::client_first`] → AuthenticationSASLContinue,
/// SASLResponse → [`ScramServer::client_final`] → AuthenticationSASLFinal and AuthenticationOk.
/// Any error ends the exchange.
pub struct ScramServer {
    creds: Credentials,
    state: State,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramServer(<secret>)")
    }
}

struct Credentials {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    /// False for the stand-in credentials of an unknown user: never authenticates.
    known: bool,
}

enum State {
    ClientFirst,
    ClientFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ScramServer {
    /// Starts an exchange for `user`. `verifier` is `None` when the user is unknown or has no
    /// password: the exchange then runs on stand-in credentials derived from `user` and `mock`
    /// and ends in [`ScramError::BadProof`], as a wrong password does. The stand-in uses
    /// [`DEFAULT_ITERATIONS`], like every verifier `vigil passwd` makes; verifiers with another
    /// count would tell real users apart by it.
    pub fn new(verifier: Option<&Verifier>, user: &str, mock: &MockKey) -> Self {
        let creds = match verifier {
            Some(v) => Credentials {
                iterations: v.iterations,
                salt: v.salt.clone(),
                stored_key: v.stored_key,
                server_key: v.server_key,
                known: true,
            },
            None => mock.credentials(user),
        };
        ScramServer {
            creds,
            state: State::ClientFirst,
        }
    }

    /// Takes the client-first-message (the SASLInitialResponse data) and returns the
    /// server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::ClientFirst = std::mem::replace(&mut self.state, State::Done) else {
            return Err(ScramError::OutOfOrder);
        };
        let first = ClientFirst::parse(msg)?;
        let mut raw = [0u8; NONCE_LEN];
        rand::fill(&mut raw).map_err(|_| ScramError::Random)?;
        let nonce = format!("{}{}", first.nonce, B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.creds.salt),
            self.creds.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = State::ClientFinal {
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(out)
    }

    /// Takes the client-final-message (the SASLResponse data), checks the proof and returns the
    /// server-final-message.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::ClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let fin = ClientFinal::parse(msg)?;
        if fin.binding != gs2_header.as_bytes() {
            return Err(ScramError::BindingMismatch);
        }
        if fin.nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!("{client_first_bare},{server_first},{}", fin.without_proof);
        let signature = hmac_sha256(&self.creds.stored_key, auth_message.as_bytes());
        let mut client_key = fin.proof;
        for (k, s) in client_key.iter_mut().zip(signature) {
            *k ^= s;
        }
        let matches =
            constant_time::verify_slices_are_equal(&sha256(&client_key), &self.creds.stored_key)
                .is_ok();
        if !(matches && self.creds.known) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac_sha256(&self.creds.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

struct ClientFirst<'a> {
    /// `n,,` or `y,,`: what the client-final's `c=` must repeat.
    gs2_header: &'a str,
    bare: &'a str,
    nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(msg: &'a [u8]) -> Result<Self, ScramError> {
        let bad = |why| ScramError::Malformed {
            message: "client-first",
            why,
        };
        let s = std::str::from_utf8(msg).map_err(|_| bad("not UTF-8"))?;
        let (flag, rest) = s.split_once(',').ok_or(bad("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingRequired),
            _ => return Err(bad("unknown channel binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(bad("no GS2 header"))?;
        if authzid.starts_with("a=") {
            return Err(ScramError::AuthzId);
        }
        if !authzid.is_empty() {
            return Err(bad("invalid authorization identity"));
        }
        let gs2_header = s.get(..s.len() - bare.len()).ok_or(bad("no GS2 header"))?;
        let mut attrs = bare.split(',');
        match attrs.next() {
            Some(a) if a.starts_with("m=") => return Err(bad("unsupported mandatory extension")),
            // PostgreSQL ignores the SCRAM username: the startup packet names the user.
            Some(a) if a.starts_with("n=") => {}
            _ => return Err(bad("expected the username attribute n=")),
        }
        let nonce = next_attr(&mut attrs, "r=").ok_or(bad("expected the nonce attribute r="))?;
        if nonce.is_empty() || !nonce.bytes().all(printable) {
            return Err(bad("the nonce is not printable ASCII"));
        }
        if !attrs.all(extension) {
            return Err(bad("invalid attribute"));
        }
        Ok(ClientFirst {
            gs2_header,
            bare,
            nonce,
        })
    }
}

struct ClientFinal<'a> {
    binding: Vec<u8>,
    nonce: &'a str,
    without_proof: &'a str,
    proof: [u8; KEY_LEN],
}

impl<'a> ClientFinal<'a> {
    fn parse(msg: &'a [u8]) -> Result<Self, ScramError> {
        let bad = |why| ScramError::Malformed {
            message: "client-final",
            why,
        };
        let s = std::str::from_utf8(msg).map_err(|_| bad("not UTF-8"))?;
        let (without_proof, proof) = s
            .rsplit_once(",p=")
            .ok_or(bad("expected the proof attribute p= last"))?;
        let proof = decode_key(proof).ok_or(bad("the proof is not 32 bytes of base64"))?;
        let mut attrs = without_proof.split(',');
        let binding =
            next_attr(&mut attrs, "c=").ok_or(bad("expected the channel binding attribute c="))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| bad("the channel binding is not base64"))?;
        let nonce = next_attr(&mut attrs, "r=").ok_or(bad("expected the nonce attribute r="))?;
        if !attrs.all(extension) {
            return Err(bad("invalid attribute"));
        }
        Ok(ClientFinal {
            binding,
            nonce,
            without_proof,
            proof,
        })
    }
}

/// The most PBKDF2 rounds vigil runs for a login to a target (postgres-protocol's client has
/// the same limit): a target that asks for more is refused rather than spend the bastion's CPU.
pub const MAX_CLIENT_ITERATIONS: u32 = 100_000;

/// Salted-password keys remembered (`ScramClient`); the cache is emptied when it is full.
const CLIENT_KEY_CACHE: usize = 64;

/// The client side of SCRAM-SHA-256, for vigil's logins to its targets, without channel
/// binding (GS2 header `n,,`, as postgres-protocol's client without TLS binding):
/// [`ScramClient::new`] → SASLInitialResponse; AuthenticationSASLContinue →
/// [`ScramClient::server_first`] → SASLResponse; AuthenticationSASLFinal →
/// [`ScramClient::server_final`], which checks the server's signature, so that a server that
/// does not know the password cannot pass. Any error ends the exchange.
///
/// The password is SASLprep'd first, as libpq and postgres-protocol do (its bytes as they are
/// when SASLprep refuses it). The two keys of a salted password (ClientKey, ServerKey) are
/// remembered process-wide by (password, salt, iteration count): PostgreSQL keeps one salt per
/// role, so a login after the first skips the PBKDF2 rounds (4096 by default), which were the
/// largest single cost of a new session. The cache holds keys derived from passwords vigil
/// holds anyway, is keyed by a SHA-256 over the password, salt and count, and a changed
/// password or salt simply misses it.
pub struct ScramClient {
    /// `n=,r=<client nonce>`: the client-first message without its GS2 header.
    first_bare: String,
    nonce: String,
    state: ClientState,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramClient(<secret>)")
    }
}

enum ClientState {
    ServerFirst,
    ServerFinal { server_signature: [u8; KEY_LEN] },
    Done,
}

const GS2_HEADER: &str = "n,,";

impl ScramClient {
    /// A new exchange and its client-first message.
    pub fn new() -> Result<(Self, Vec<u8>), ScramError> {
        let mut raw = [0u8; NONCE_LEN];
        rand::fill(&mut raw).map_err(|_| ScramError::Random)?;
        // Base64 is printable and has no comma.
        let nonce = B64.encode(raw);
        let first_bare = format!("n=,r={nonce}");
        let message = format!("{GS2_HEADER}{first_bare}").into_bytes();
        Ok((
            ScramClient {
                first_bare,
                nonce,
                state: ClientState::ServerFirst,
            },
            message,
        ))
    }

    /// Reads the server-first message (`r=<nonce>,s=<salt>,i=<count>`); returns the
    /// client-final message with the proof.
    pub fn server_first(&mut self, msg: &[u8], password: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::ServerFirst) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ClientState::Done;
        let bad = |why| ScramError::Malformed {
            message: "server-first",
            why,
        };
        let text = std::str::from_utf8(msg).map_err(|_| bad("not UTF-8"))?;
        let mut attrs = text.split(',');
        let nonce = match attrs.next() {
            Some(a) if a.starts_with("m=") => return Err(bad("a mandatory extension")),
            Some(a) => a.strip_prefix("r=").ok_or(bad("no nonce"))?,
            None => return Err(bad("empty")),
        };
        if nonce.len() <= self.nonce.len()
            || !nonce.starts_with(&self.nonce)
            || !nonce.bytes().all(printable)
        {
            return Err(ScramError::NonceMismatch);
        }
        let salt = next_attr(&mut attrs, "s=").ok_or(bad("no salt"))?;
        let salt = B64
            .decode(salt)
            .map_err(|_| bad("the salt is not base64"))?;
        let iterations = next_attr(&mut attrs, "i=")
            .and_then(parse_iterations)
            .ok_or(bad("no iteration count"))?;
        if !attrs.all(extension) {
            return Err(bad("a malformed extension"));
        }
        if iterations > MAX_CLIENT_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        let (client_key, server_key) = salted_keys(password, &salt, iterations)?;
        // c=biws is base64 of the GS2 header `n,,`.
        let final_bare = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!("{},{text},{final_bare}", self.first_bare);
        let signature = hmac_sha256(&sha256(&client_key), auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.state = ClientState::ServerFinal {
            server_signature: hmac_sha256(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{final_bare},p={}", B64.encode(proof)).into_bytes())
    }

    /// Reads the server-final message: `v=<signature>` must be the server's proof that it
    /// knows the password; `e=<error>` is the server's refusal.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::ServerFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let bad = |why| ScramError::Malformed {
            message: "server-final",
            why,
        };
        let text = std::str::from_utf8(msg).map_err(|_| bad("not UTF-8"))?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(e) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.chars().take(200).collect()));
        }
        let v = first.strip_prefix("v=").ok_or(bad("no verifier"))?;
        let v = B64
            .decode(v)
            .map_err(|_| bad("the verifier is not base64"))?;
        constant_time::verify_slices_are_equal(&v, &server_signature)
            .map_err(|_| ScramError::BadServerSignature)
    }
}

/// ClientKey and ServerKey of `password` salted with `salt` over `iterations` rounds, from the
/// cache when this triple was seen before (see `ScramClient`).
fn salted_keys(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<([u8; KEY_LEN], [u8; KEY_LEN]), ScramError> {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock},
    };
    type Cache = Mutex<HashMap<[u8; KEY_LEN], ([u8; KEY_LEN], [u8; KEY_LEN])>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let password = saslprep(password);
    let mut id = Vec::with_capacity(password.len() + salt.len() + 16);
    id.extend_from_slice(b"vigil/pg/scram-client/v1\0");
    id.extend_from_slice(&(password.len() as u64).to_be_bytes());
    id.extend_from_slice(&password);
    id.extend_from_slice(&iterations.to_be_bytes());
    id.extend_from_slice(salt);
    let id = sha256(&id);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(keys) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(*keys);
    }
    let keys = derive_keys(&password, salt, iterations)?;
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CLIENT_KEY_CACHE {
        cache.clear();
    }
    cache.insert(id, keys);
    Ok(keys)
}

/// ClientKey and ServerKey (RFC 5802) of `password` salted with `salt` over `iterations`
/// PBKDF2 rounds.
fn derive_keys(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<([u8; KEY_LEN], [u8; KEY_LEN]), ScramError> {
    let rounds = NonZeroU32::new(iterations).ok_or(ScramError::Iterations)?;
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password,
        &mut salted,
    );
    Ok((
        hmac_sha256(&salted, b"Client Key"),
        hmac_sha256(&salted, b"Server Key"),
    ))
}

/// SASLprep (RFC 4013) of a UTF-8 password, its bytes as they are otherwise or when SASLprep
/// refuses it: what libpq sends, so that vigil's login works wherever psql's would.
fn saslprep(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(p)) => p.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

/// The next attribute's value when it is `name` (`"s="`).
fn next_attr<'a>(attrs: &mut std::str::Split<'a, char>, name: &str) -> Option<&'a str> {
    attrs.next().and_then(|a| a.strip_prefix(name))
}

/// RFC 5802 `printable`: ASCII 0x21..=0x7E except `,`.
fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// An optional extension attribute: a letter, `=`, a value.
fn extension(attr: &str) -> bool {
    let mut b = attr.bytes();
    matches!((b.next(), b.next()), (Some(c), Some(b'=')) if c.is_ascii_alphabetic())
}

fn parse_iterations(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&i| i > 0)
}

fn decode_key(s: &str) -> Option<[u8; KEY_LEN]> {
    B64.decode(s).ok()?.try_into().ok()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn mock() -> MockKey {
        MockKey::derive(b"test bastion secret")
    }

    /// Runs a whole exchange between postgres-protocol's client and our server.
    fn exchange(
        verifier: Option<&Verifier>,
        password: &[u8],
        binding: ChannelBinding,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password, binding);
        let mut server = ScramServer::new(verifier, "alice", &mock());
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).unwrap();
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("the client verifies the server");
        Ok(())
    }

    /// Runs a whole exchange between our client and our server.
    fn our_exchange(verifier: &Verifier, password: &[u8]) -> Result<(), ScramError> {
        let (mut client, first) = ScramClient::new()?;
        let mut server = ScramServer::new(Some(verifier), "alice", &mock());
        let server_first = server.client_first(&first)?;
        let last = client.server_first(&server_first, password)?;
        let server_final = server.client_final(&last)?;
        client.server_final(&server_final)
    }

    #[test]
    fn our_client_logs_in_again_from_its_cache_and_only_with_the_right_password() {
        let v = Verifier::generate("client side", 4096).unwrap();
        our_exchange(&v, b"client side").unwrap();
        // The second login takes the keys from the cache.
        our_exchange(&v, b"client side").unwrap();
        assert_eq!(our_exchange(&v, b"client sidE"), Err(ScramError::BadProof));
        // Another salt for the same password is another entry.
        let other = Verifier::generate("client side", 4096).unwrap();
        our_exchange(&other, b"client side").unwrap();
        // SASLprep as libpq: a no-break space is a space.
        let v = Verifier::generate("pass word", 4096).unwrap();
        our_exchange(&v, "pass\u{a0}word".as_bytes()).unwrap();
    }

    #[test]
    fn our_client_refuses_a_server_that_does_not_prove_the_password_or_misbehaves() {
        let v = Verifier::generate("client side", 4096).unwrap();
        let start = || {
            let (client, first) = ScramClient::new().unwrap();
            let mut server = ScramServer::new(Some(&v), "alice", &mock());
            let server_first = server.client_first(&first).unwrap();
            (client, server_first)
        };
        // A signature made without the password, and a refusal.
        let (mut c, first) = start();
        c.server_first(&first, b"client side").unwrap();
        let forged = format!("v={}", B64.encode([7u8; 32]));
        assert_eq!(
            c.server_final(forged.as_bytes()),
            Err(ScramError::BadServerSignature)
        );
        let (mut c, first) = start();
        c.server_first(&first, b"client side").unwrap();
        assert_eq!(
            c.server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
        // Out of order: the final message before the first.
        let (mut c, _) = start();
        assert_eq!(c.server_final(b"v=AAAA"), Err(ScramError::OutOfOrder));
        // A nonce that does not continue ours, too many rounds, a mandatory extension, garbage.
        let (mut c, first) = start();
        let text = String::from_utf8(first).unwrap();
        let nonce = text.split(',').next().unwrap().strip_prefix("r=").unwrap();
        // Change the first character of the nonce (to one it is not: the nonce is random).
        let other = if nonce.starts_with('x') { 'y' } else { 'x' };
        let swapped = text.replacen(nonce, &format!("{other}{}", &nonce[1..]), 1);
        assert_eq!(
            c.server_first(swapped.as_bytes(), b"client side"),
            Err(ScramError::NonceMismatch)
        );
        type Edit = fn(&str) -> String;
        let cases: [(Edit, Option<ScramError>); 6] = [
            (
                |t| t.replace(",i=4096", ",i=100001"),
                Some(ScramError::TooManyIterations(100_001)),
            ),
            (|t| format!("m=ext,{t}"), None),
            (|t| t.replace(",i=4096", ""), None),
            (|t| t.replace(",i=4096", ",i=0"), None),
            (|_| "r=".to_string(), Some(ScramError::NonceMismatch)),
            (|_| String::new(), None),
        ];
        for (edit, expected) in cases {
            let (mut c, first) = start();
            let msg = edit(std::str::from_utf8(&first).unwrap());
            let got = c.server_first(msg.as_bytes(), b"client side").unwrap_err();
            match expected {
                Some(e) => assert_eq!(got, e, "{msg}"),
                None => assert!(
                    matches!(got, ScramError::Malformed { .. }),
                    "{msg}: {got:?}"
                ),
            }
        }
        let (mut c, _) = start();
        assert!(c.server_first(&[0xff, 0xfe], b"x").is_err());
    }

    #[test]
    fn right_password_authenticates_both_ways() {
        let v = Verifier::generate("correct horse", 4096).unwrap();
        exchange(Some(&v), b"correct horse", ChannelBinding::unsupported()).unwrap();
        // "y,,": the client could bind but we did not offer PLUS.
        exchange(Some(&v), b"correct horse", ChannelBinding::unrequested()).unwrap();
    }

    #[test]
    fn wrong_password_fails() {
        let v = Verifier::generate("correct horse", 4096).unwrap();
        assert_eq!(
            exchange(Some(&v), b"battery staple", ChannelBinding::unsupported()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn unknown_user_looks_like_a_wrong_password() {
        assert_eq!(
            exchange(None, b"anything", ChannelBinding::unsupported()),
            Err(ScramError::BadProof)
        );
        // The stand-in salt is stable per user (a probe sees the same salt twice) and differs
        // between users; the iteration count is the default one real verifiers use.
        let first = |user: &str| {
            let mut s = ScramServer::new(None, user, &mock());
            let out = s.client_first(b"n,,n=,r=abcdef").unwrap();
            let out = String::from_utf8(out).unwrap();
            let salt = out.split(',').nth(1).unwrap().to_owned();
            let iters = out.split(',').nth(2).unwrap().to_owned();
            (salt, iters)
        };
        assert_eq!(first("mallory"), first("mallory"));
        assert_ne!(first("mallory").0, first("eve").0);
        assert_eq!(first("mallory").1, "i=4096");
        assert_eq!(B64.decode(&first("eve").0[2..]).unwrap().len(), SALT_LEN);
    }

    #[test]
    fn tampered_messages_fail() {
        let v = Verifier::generate("pw", 4096).unwrap();
        let run = |edit: &dyn Fn(String) -> String| {
            let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
            let mut server = ScramServer::new(Some(&v), "alice", &mock());
            let sf = server.client_first(client.message()).unwrap();
            client.update(&sf).unwrap();
            let fin = String::from_utf8(client.message().to_vec()).unwrap();
            server.client_final(edit(fin).as_bytes())
        };
        assert!(run(&|m| m).is_ok());
        // A nonce that does not continue ours.
        assert_eq!(
            run(&|m| m.replacen(",r=", ",r=X", 1)),
            Err(ScramError::NonceMismatch)
        );
        // Binding data for a different GS2 header ("y,," is eSws).
        assert_eq!(
            run(&|m| m.replacen("c=biws", "c=eSws", 1)),
            Err(ScramError::BindingMismatch)
        );
        // A flipped proof.
        assert_eq!(
            run(&|m| {
                let (head, proof) = m.rsplit_once(",p=").unwrap();
                let mut p = B64.decode(proof).unwrap();
                p[0] ^= 1;
                format!("{head},p={}", B64.encode(p))
            }),
            Err(ScramError::BadProof)
        );
        // No proof; a short proof; no binding.
        assert!(matches!(
            run(&|m| m.rsplit_once(",p=").unwrap().0.to_owned()),
            Err(ScramError::Malformed { .. })
        ));
        assert!(matches!(
            run(&|m| format!("{},p=AAAA", m.rsplit_once(",p=").unwrap().0)),
            Err(ScramError::Malformed { .. })
        ));
        assert!(matches!(
            run(&|m| m.replacen("c=biws,", "", 1)),
            Err(ScramError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_client_first_messages() {
        let v = Verifier::generate("pw", 4096).unwrap();
        let first = |m: &[u8]| ScramServer::new(Some(&v), "alice", &mock()).client_first(m);
        assert!(first(b"n,,n=,r=abc").is_ok());
        assert!(first(b"y,,n=user,r=abc,x=ext").is_ok());
        assert_eq!(
            first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBindingRequired)
        );
        assert_eq!(first(b"n,a=bob,n=,r=abc"), Err(ScramError::AuthzId));
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=a b",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=,r=abc,bogus",
            b"n,,n=,r=\xff",
        ] {
            assert!(
                matches!(first(bad), Err(ScramError::Malformed { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn messages_out_of_order_are_refused() {
        let v = Verifier::generate("pw", 4096).unwrap();
        let mut s = ScramServer::new(Some(&v), "alice", &mock());
        assert_eq!(
            s.client_final(b"c=biws,r=x,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );
        let mut s = ScramServer::new(Some(&v), "alice", &mock());
        s.client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(s.client_first(b"n,,n=,r=abc"), Err(ScramError::OutOfOrder));
        // An error ends the exchange: no second try with the same server.
        let mut s = ScramServer::new(Some(&v), "alice", &mock());
        assert!(s.client_first(b"garbage").is_err());
        assert_eq!(s.client_first(b"n,,n=,r=abc"), Err(ScramError::OutOfOrder));
    }

    #[test]
    fn verifier_from_postgres_protocol_parses_and_authenticates() {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let v = Verifier::parse(&text).unwrap();
        assert_eq!(v.iterations(), 4096);
        assert_eq!(v.to_postgres(), text);
        exchange(Some(&v), b"pw", ChannelBinding::unsupported()).unwrap();
        assert_eq!(
            exchange(Some(&v), b"pW", ChannelBinding::unsupported()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn verifier_made_by_postgresql_authenticates() {
        // `CREATE ROLE fixture PASSWORD 'pw'` in PostgreSQL 15.18 with password_encryption =
        // scram-sha-256; `SELECT rolpassword FROM pg_authid WHERE rolname = 'fixture'`.
        const PG15: &str = "SCRAM-SHA-256$4096:sjtSmcV71IVViqjp5/VVBg==$\
            W2LitgvnpkGUtCao1ObKvgc3652E1Pz+eoOqoMLRM9w=:S4IFnUkg7u89lK44C7F5JhPdChuhD6lhz8wKoijmHl4=";
        let v = Verifier::parse(PG15).unwrap();
        assert_eq!(v.to_postgres(), PG15);
        // Our derivation from the same salt gives PostgreSQL's keys.
        let salt = B64.decode("sjtSmcV71IVViqjp5/VVBg==").unwrap();
        assert_eq!(Verifier::from_password(b"pw", &salt, 4096).unwrap(), v);
        exchange(Some(&v), b"pw", ChannelBinding::unsupported()).unwrap();
        assert_eq!(
            exchange(Some(&v), b"pw ", ChannelBinding::unsupported()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn passwd_verifier_round_trips() {
        let text = passwd_verifier("s3cret pässword").unwrap();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert!(!text.contains("s3cret"));
        let v = Verifier::parse(&text).unwrap();
        exchange(
            Some(&v),
            "s3cret pässword".as_bytes(),
            ChannelBinding::unsupported(),
        )
        .unwrap();
        // Two verifiers of one password differ (fresh salts).
        assert_ne!(passwd_verifier("x").unwrap(), passwd_verifier("x").unwrap());
        assert_eq!(passwd_verifier(""), Err(ScramError::EmptyPassword));
        assert_eq!(
            Verifier::generate("x", 0).unwrap_err(),
            ScramError::Iterations
        );
    }

    #[test]
    fn bad_verifiers_are_refused_and_keys_are_not_printed() {
        let good = Verifier::generate("pw", 4096).unwrap();
        let text = good.to_postgres();
        let debug = format!("{good:?}");
        assert!(debug.contains("<secret>"), "{debug}");
        let keys = text.rsplit_once('$').unwrap().1;
        let (stored, server) = keys.split_once(':').unwrap();
        assert!(!debug.contains(stored) && !debug.contains(server));
        for bad in [
            String::new(),
            "md5abc".into(),
            text.replacen("SCRAM-SHA-256$", "SCRAM-SHA-1$", 1),
            text.replacen("$4096:", "$0:", 1),
            text.replacen("$4096:", "$-1:", 1),
            text.replacen("$4096:", "$x:", 1),
            text.replacen("$4096:", "$4096", 1),
            text.replacen(stored, "AAAA", 1),
            text.replacen(server, "!!!", 1),
            text.replacen(':', ";", 2),
            text.replacen(&format!("${stored}:"), "$", 1),
        ] {
            assert!(
                matches!(Verifier::parse(&bad), Err(ScramError::BadVerifier(_))),
                "{bad}"
            );
        }
    }
}
