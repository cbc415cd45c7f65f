//! Recording keys: auditors' X25519 recipient keys, per-recording data keys wrapped to them, and
//! the bastion's Ed25519 signing key (its SSH host key). Pure: no I/O beyond the functions that
//! say `file` in their name.
//!
//! Invariant: the bastion only ever holds recipients' *public* keys, so it can seal a recording
//! but cannot open one once the session's data key has left its memory.

use std::path::Path;

use aws_lc_rs::{
    aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM},
    agreement::{self, PrivateKey, UnparsedPublicKey, X25519},
    digest, hkdf,
    rand::{self, SystemRandom},
    signature::{self, Ed25519KeyPair, KeyPair},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use serde::{Deserialize, Serialize};

pub const PUBLIC_PREFIX: &str = "vigil-pub-1:";
pub const SECRET_PREFIX: &str = "VIGIL-SECRET-1:";
const WRAP_INFO: &[u8] = b"vigil/recording/v1/wrap";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a vigil public key (expected `{PUBLIC_PREFIX}` and 32 bytes of base64url): {0}")]
    BadPublic(String),
    #[error("not a vigil secret key file (expected a line `{SECRET_PREFIX}...`)")]
    BadSecret,
    #[error("this recording is not sealed to key {0}; it is sealed to: {1}")]
    NotARecipient(String, String),
    #[error("the wrapped data key for {0} does not open (wrong key or tampered header)")]
    Unwrap(String),
    #[error("reading key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("host key {path}: {why}")]
    HostKey { path: String, why: String },
    #[error("not an ssh-ed25519 public key: {0}")]
    BadSigner(String),
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// An auditor's public key: recordings are sealed to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecipientPublic(pub [u8; 32]);

impl RecipientPublic {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let body = s
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| KeyError::BadPublic(s.to_string()))?;
        let raw = B64
            .decode(body)
            .map_err(|_| KeyError::BadPublic(s.to_string()))?;
        let arr =
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::BadPublic(s.to_string()))?;
        Ok(RecipientPublic(arr))
    }

    /// Short stable id: the first 8 bytes of SHA-256 of the key, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&digest::digest(&digest::SHA256, &self.0).as_ref()[..8])
    }
}

impl std::fmt::Display for RecipientPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0))
    }
}

impl std::fmt::Debug for RecipientPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecipientPublic({})", self.key_id())
    }
}

/// An auditor's secret key. Prints as `<secret>`.
pub struct RecipientSecret {
    secret: [u8; 32],
    public: RecipientPublic,
}

impl std::fmt::Debug for RecipientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecipientSecret(<secret> for {})", self.public.key_id())
    }
}

impl RecipientSecret {
    pub fn generate() -> Result<Self, KeyError> {
        // X25519 takes any 32 random bytes as a secret (clamping happens in the function).
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes).map_err(|_| KeyError::Crypto("random"))?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let secret = <[u8; 32]>::try_from(bytes).map_err(|_| KeyError::BadSecret)?;
        let key =
            PrivateKey::from_private_key(&X25519, &secret).map_err(|_| KeyError::BadSecret)?;
        let public = key.compute_public_key().map_err(|_| KeyError::BadSecret)?;
        let public = <[u8; 32]>::try_from(public.as_ref()).map_err(|_| KeyError::BadSecret)?;
        Ok(RecipientSecret {
            secret,
            public: RecipientPublic(public),
        })
    }

    /// Parses the text of a secret key file: comment lines (`#`) and one `VIGIL-SECRET-1:` line.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(SECRET_PREFIX))
            .ok_or(KeyError::BadSecret)?;
        let raw = B64
            .decode(&line[SECRET_PREFIX.len()..])
            .map_err(|_| KeyError::BadSecret)?;
        Self::from_bytes(&raw)
    }

    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The secret key file's text.
    pub fn to_file_text(&self) -> String {
        format!(
            "# vigil auditor secret key: opens recordings sealed to {}\n# public key: {}\n{SECRET_PREFIX}{}\n",
            self.public.key_id(),
            self.public,
            B64.encode(self.secret)
        )
    }

    pub fn public(&self) -> RecipientPublic {
        self.public
    }

    /// The raw secret, for writing key files.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret
    }
}

/// A recording's data key wrapped for one recipient (stored in the header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub key_id: String,
    /// The sender's ephemeral X25519 public key, base64url.
    pub epk: String,
    /// AES-256-GCM of the 32-byte data key, with its tag (48 bytes), base64url.
    pub wrapped: String,
}

/// A per-recording AES-256-GCM key. Lives only in the writer's memory and in wrapped form.
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<secret>)")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; 32];
        rand::fill(&mut k).map_err(|_| KeyError::Crypto("random"))?;
        Ok(DataKey(k))
    }

    /// A known key, for fixtures and fuzzing; sessions use `generate`.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        DataKey(key)
    }

    pub fn aead(&self) -> Result<LessSafeKey, KeyError> {
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| KeyError::Crypto("aes key"))?,
        ))
    }

    /// Wraps this key for each recipient: X25519 with a fresh ephemeral key, HKDF-SHA256 with
    /// salt `epk || recipient`, then AES-256-GCM with a zero nonce (each wrapping key is used
    /// once) and the session id as associated data.
    pub fn wrap(
        &self,
        recipients: &[RecipientPublic],
        session_id: &str,
    ) -> Result<Vec<WrappedKey>, KeyError> {
        recipients
            .iter()
            .map(|r| {
                let eph =
                    PrivateKey::generate(&X25519).map_err(|_| KeyError::Crypto("x25519 keygen"))?;
                let epk = eph
                    .compute_public_key()
                    .map_err(|_| KeyError::Crypto("x25519 public"))?;
                let epk = <[u8; 32]>::try_from(epk.as_ref())
                    .map_err(|_| KeyError::Crypto("x25519 public"))?;
                let kek = agree_kek(&eph, &r.0, &epk, &r.0)?;
                let mut buf = self.0.to_vec();
                kek.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from(session_id.as_bytes()),
                    &mut buf,
                )
                .map_err(|_| KeyError::Crypto("wrap"))?;
                Ok(WrappedKey {
                    key_id: r.key_id(),
                    epk: B64.encode(epk),
                    wrapped: B64.encode(buf),
                })
            })
            .collect()
    }

    /// Finds this secret key's entry among `wrapped` and opens it.
    pub fn unwrap(
        secret: &RecipientSecret,
        wrapped: &[WrappedKey],
        session_id: &str,
    ) -> Result<Self, KeyError> {
        let id = secret.public.key_id();
        let entry = wrapped.iter().find(|w| w.key_id == id).ok_or_else(|| {
            KeyError::NotARecipient(
                id.clone(),
                wrapped
                    .iter()
                    .map(|w| w.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        let bad = || KeyError::Unwrap(id.clone());
        let epk = <[u8; 32]>::try_from(B64.decode(&entry.epk).map_err(|_| bad())?.as_slice())
            .map_err(|_| bad())?;
        let mut buf = B64.decode(&entry.wrapped).map_err(|_| bad())?;
        let own = PrivateKey::from_private_key(&X25519, &secret.secret).map_err(|_| bad())?;
        let kek = agree_kek(&own, &epk, &epk, &secret.public.0)?;
        let plain = kek
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(session_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| bad())?;
        Ok(DataKey(
            <[u8; 32]>::try_from(&plain[..]).map_err(|_| bad())?,
        ))
    }
}

/// The key-encryption key: HKDF-SHA256(salt = epk || recipient, ikm = X25519(own, peer)).
fn agree_kek(
    own: &PrivateKey,
    peer: &[u8; 32],
    epk: &[u8; 32],
    recipient: &[u8; 32],
) -> Result<LessSafeKey, KeyError> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(recipient);
    let mut kek = [0u8; 32];
    agreement::agree(
        own,
        UnparsedPublicKey::new(&X25519, peer),
        KeyError::Crypto("x25519"),
        |shared| {
            hkdf::Salt::new(hkdf::HKDF_SHA256, &salt)
                .extract(shared)
                .expand(&[WRAP_INFO], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut kek))
                .map_err(|_| KeyError::Crypto("hkdf"))
        },
    )?;
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &kek).map_err(|_| KeyError::Crypto("aes key"))?,
    ))
}

/// The bastion's Ed25519 key, which signs recording headers and trailers. It is the same key
/// file as the SSH host key (`server.host_key`, OpenSSH format).
pub struct Signer {
    pair: Ed25519KeyPair,
    public_openssh: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(<secret>, {})", self.public_openssh)
    }
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| KeyError::Crypto("ed25519 seed"))?;
        let public = <[u8; 32]>::try_from(pair.public_key().as_ref())
            .map_err(|_| KeyError::Crypto("ed25519"))?;
        let public_openssh = ssh_key::PublicKey::from(ssh_key::public::Ed25519PublicKey(public))
            .to_openssh()
            .map_err(|_| KeyError::Crypto("openssh encode"))?;
        Ok(Signer {
            pair,
            public_openssh,
        })
    }

    /// Loads the OpenSSH ed25519 key at `path`, creating it (mode 0600) when it does not exist.
    pub fn load_or_create_file(path: &Path) -> Result<Self, KeyError> {
        let err = |why: String| KeyError::HostKey {
            path: path.display().to_string(),
            why,
        };
        if !path.exists() {
            let mut seed = [0u8; 32];
            rand::fill(&mut seed).map_err(|_| KeyError::Crypto("random"))?;
            let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
            let key = ssh_key::PrivateKey::from(pair);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            key.write_openssh_file(path, ssh_key::LineEnding::LF)
                .map_err(|e| err(e.to_string()))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| err(e.to_string()))?;
            std::fs::write(path.with_extension("pub"), format!("{public}\n"))
                .map_err(|e| err(e.to_string()))?;
        }
        Self::read_file(path)
    }

    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let err = |why: String| KeyError::HostKey {
            path: path.display().to_string(),
            why,
        };
        let key = ssh_key::PrivateKey::read_openssh_file(path).map_err(|e| err(e.to_string()))?;
        let pair = key
            .key_data()
            .ed25519()
            .ok_or_else(|| err("not an ed25519 key".into()))?;
        Self::from_seed(&pair.private.to_bytes())
    }

    /// `ssh-ed25519 AAAA...`
    pub fn public_openssh(&self) -> &str {
        &self.public_openssh
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
}

/// Checks an Ed25519 signature by the key written as `ssh-ed25519 AAAA...`.
pub fn verify_signature(public_openssh: &str, msg: &[u8], sig: &[u8]) -> Result<bool, KeyError> {
    let key = ssh_key::PublicKey::from_openssh(public_openssh.trim())
        .map_err(|_| KeyError::BadSigner(public_openssh.to_string()))?;
    let ed = key
        .key_data()
        .ed25519()
        .ok_or_else(|| KeyError::BadSigner(public_openssh.to_string()))?;
    Ok(signature::UnparsedPublicKey::new(&signature::ED25519, ed.0)
        .verify(msg, sig)
        .is_ok())
}

/// Compares two `ssh-ed25519 AAAA... [comment]` strings by key, ignoring comments.
pub fn same_signer(a: &str, b: &str) -> bool {
    let key = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    key(a) == key(b)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all.
    let _ = rand::SecureRandom::fill(&SystemRandom::new(), &mut out);
    out
}

/// AES-256-GCM with an explicit nonce, for the chunk sealer.
pub fn seal(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), KeyError> {
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .map_err(|_| KeyError::Crypto("seal"))
}

pub fn open<'a>(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    buf: &'a mut [u8],
) -> Option<&'a mut [u8]> {
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .ok()
}

pub use aead::LessSafeKey as Aead;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap_for_each_recipient() {
        let a = RecipientSecret::generate().unwrap();
        let b = RecipientSecret::generate().unwrap();
        let outsider = RecipientSecret::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let wrapped = key.wrap(&[a.public(), b.public()], "s1").unwrap();
        for s in [&a, &b] {
            assert_eq!(DataKey::unwrap(s, &wrapped, "s1").unwrap().0, key.0);
        }
        assert!(matches!(
            DataKey::unwrap(&outsider, &wrapped, "s1"),
            Err(KeyError::NotARecipient(..))
        ));
        // Bound to the session id: a header moved to another session does not open.
        assert!(matches!(
            DataKey::unwrap(&a, &wrapped, "s2"),
            Err(KeyError::Unwrap(_))
        ));
    }

    #[test]
    fn key_text_round_trips() {
        let s = RecipientSecret::generate().unwrap();
        let again = RecipientSecret::parse(&s.to_file_text()).unwrap();
        assert_eq!(again.public(), s.public());
        assert_eq!(
            RecipientPublic::parse(&s.public().to_string()).unwrap(),
            s.public()
        );
        assert!(RecipientPublic::parse("vigil-pub-1:AAAA").is_err());
        assert!(RecipientSecret::parse("nothing here").is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let s = Signer::from_seed(&[7; 32]).unwrap();
        let other = Signer::from_seed(&[8; 32]).unwrap();
        let sig = s.sign(b"msg");
        assert!(verify_signature(s.public_openssh(), b"msg", &sig).unwrap());
        assert!(!verify_signature(s.public_openssh(), b"msg2", &sig).unwrap());
        assert!(!verify_signature(other.public_openssh(), b"msg", &sig).unwrap());
        assert!(same_signer(
            &format!("{} comment", s.public_openssh()),
            s.public_openssh()
        ));
    }
}
