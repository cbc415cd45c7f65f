//! Recording container format v1: header, sealed chunks, signed trailer (pure: no I/O).
//!
//! Invariants: every chunk is bound by AES-256-GCM to its recording (header digest), its index
//! and its last-chunk flag; the header and trailer are signed by the bastion's Ed25519 key; the
//! trailer commits to the SHA-256 of every chunk object in order. So a chunk that is edited,
//! reordered, dropped, duplicated, swapped in from another recording or cut off is detected.
//! formats/recording-v1.md is the byte-exact spec; testdata/recordings/v1 must decode forever.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::keys::{self, Aead, KeyError, Signer, WrappedKey};

pub const VERSION: u16 = 1;
pub const HEADER_MAGIC: &[u8; 8] = b"VIGILHDR";
pub const CHUNK_MAGIC: &[u8; 8] = b"VIGILCHK";
pub const TRAILER_MAGIC: &[u8; 8] = b"VIGILEND";
const HEADER_SIG_CONTEXT: &[u8] = b"vigil/header/v1\0";
const TRAILER_SIG_CONTEXT: &[u8] = b"vigil/trailer/v1\0";
const CHUNK_AAD_CONTEXT: &[u8] = b"vigil/chunk/v1\0";
/// magic, index, flags, first_at, last_at, events, plain_len, cipher_len.
pub const CHUNK_PREFIX_LEN: usize = 8 + 8 + 1 + 8 + 8 + 4 + 4 + 4;
/// Largest event batch a chunk may hold uncompressed; larger claims are refused before inflating.
pub const MAX_CHUNK_PLAIN: usize = 64 << 20;
/// Largest header or trailer JSON.
pub const MAX_JSON: usize = 1 << 20;
const TAG_LEN: usize = 16;
const FLAG_LAST: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{0}: not a vigil object (bad magic)")]
    BadMagic(&'static str),
    #[error(
        "{object}: format version {version} is not supported (this vigil reads version {VERSION})"
    )]
    Version { object: &'static str, version: u16 },
    #[error("{0}: truncated")]
    Truncated(&'static str),
    #[error("{object}: malformed JSON: {why}")]
    Json { object: &'static str, why: String },
    #[error("{0}: signature does not verify (altered, or not signed by the key it names)")]
    BadSignature(&'static str),
    #[error("chunk {expected}: the object holds chunk {found} (reordered or duplicated)")]
    OutOfPlace { expected: u64, found: u64 },
    #[error("chunk {0}: seal does not open (tampered, or from another recording)")]
    Seal(u64),
    #[error(
        "chunk {index}: claims {claimed} bytes of events, over the {MAX_CHUNK_PLAIN} byte limit"
    )]
    TooLarge { index: u64, claimed: u64 },
    #[error("chunk {index}: does not inflate: {why}")]
    Inflate { index: u64, why: String },
    #[error("chunk {index}: {source}")]
    Events {
        index: u64,
        source: super::event::EventError,
    },
    #[error("chunk {index}: length fields disagree with the object ({why})")]
    Length { index: u64, why: &'static str },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What the header says, in the clear: enough to list and filter sessions without a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderInfo {
    pub version: u16,
    pub session_id: String,
    /// `ssh` or `postgres`.
    pub protocol: String,
    pub user: String,
    pub target: String,
    /// RFC 3339 UTC with microseconds.
    pub start: String,
    pub start_unix_us: u64,
    /// The bastion's signing key, `ssh-ed25519 AAAA...`.
    pub signer: String,
    pub compression: String,
    pub cipher: String,
    pub recipients: Vec<WrappedKey>,
    /// Where the client connected from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// A decoded, signature-checked header with the exact bytes it came from.
#[derive(Debug, Clone)]
pub struct Header {
    pub info: HeaderInfo,
    pub digest: [u8; 32],
    pub bytes: Bytes,
}

impl Header {
    pub fn encode(info: &HeaderInfo, signer: &Signer) -> Result<Bytes, FormatError> {
        let json = serde_json::to_vec(info).map_err(|e| FormatError::Json {
            object: "header",
            why: e.to_string(),
        })?;
        Ok(Bytes::from(signed_object(
            HEADER_MAGIC,
            &json,
            HEADER_SIG_CONTEXT,
            &[],
            signer,
        )))
    }

    /// Parses and checks the signature against the key the header names. Whether that key is
    /// one the reader trusts is the caller's question (see `reader::Trust`).
    pub fn decode(bytes: Bytes) -> Result<Header, FormatError> {
        let (json, signed) = split_signed(&bytes, HEADER_MAGIC, "header")?;
        let info: HeaderInfo = serde_json::from_slice(json).map_err(|e| FormatError::Json {
            object: "header",
            why: e.to_string(),
        })?;
        if info.version != VERSION {
            return Err(FormatError::Version {
                object: "header",
                version: info.version,
            });
        }
        check_signature(
            &info.signer,
            HEADER_SIG_CONTEXT,
            &[],
            signed,
            &bytes,
            "header",
        )?;
        Ok(Header {
            info,
            digest: keys::sha256(&bytes),
            bytes,
        })
    }
}

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The writer sealed a last chunk and closed the recording.
    Closed,
    /// The writer died; a restarted bastion uploaded what was spooled and closed it here.
    Abnormal,
}

/// Signed session metadata, listed without decrypting content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrailerInfo {
    pub session_id: String,
    pub status: Option<Status>,
    pub reason: String,
    pub end: String,
    pub end_unix_us: u64,
    pub duration_us: u64,
    /// Number of chunks, indexes 0..chunks.
    pub chunks: u64,
    /// SHA-256 over the concatenated SHA-256 digests of every chunk object, in index order.
    pub chunks_sha256: String,
    pub stored_bytes: u64,
    pub plaintext_bytes: u64,
    pub events: u64,
    pub commands: u64,
    pub queries: u64,
    pub blocked: u64,
    pub approved: u64,
}

#[derive(Debug, Clone)]
pub struct Trailer {
    pub info: TrailerInfo,
    pub bytes: Bytes,
}

impl Trailer {
    pub fn encode(
        info: &TrailerInfo,
        header: &Header,
        signer: &Signer,
    ) -> Result<Bytes, FormatError> {
        let json = serde_json::to_vec(info).map_err(|e| FormatError::Json {
            object: "trailer",
            why: e.to_string(),
        })?;
        Ok(Bytes::from(signed_object(
            TRAILER_MAGIC,
            &json,
            TRAILER_SIG_CONTEXT,
            &header.digest,
            signer,
        )))
    }

    /// Parses and checks the signature with the header's signer, bound to that header.
    pub fn decode(bytes: Bytes, header: &Header) -> Result<Trailer, FormatError> {
        let (json, signed) = split_signed(&bytes, TRAILER_MAGIC, "trailer")?;
        let info: TrailerInfo = serde_json::from_slice(json).map_err(|e| FormatError::Json {
            object: "trailer",
            why: e.to_string(),
        })?;
        check_signature(
            &header.info.signer,
            TRAILER_SIG_CONTEXT,
            &header.digest,
            signed,
            &bytes,
            "trailer",
        )?;
        if info.session_id != header.info.session_id {
            return Err(FormatError::BadSignature("trailer"));
        }
        Ok(Trailer { info, bytes })
    }
}

/// The cleartext fields at the front of a chunk object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPrefix {
    pub index: u64,
    pub last: bool,
    pub first_at: u64,
    pub last_at: u64,
    pub events: u32,
    pub plain_len: u32,
    pub cipher_len: u32,
}

impl ChunkPrefix {
    fn to_bytes(self) -> [u8; CHUNK_PREFIX_LEN] {
        let mut b = [0u8; CHUNK_PREFIX_LEN];
        b[..8].copy_from_slice(CHUNK_MAGIC);
        b[8..16].copy_from_slice(&self.index.to_be_bytes());
        b[16] = if self.last { FLAG_LAST } else { 0 };
        b[17..25].copy_from_slice(&self.first_at.to_be_bytes());
        b[25..33].copy_from_slice(&self.last_at.to_be_bytes());
        b[33..37].copy_from_slice(&self.events.to_be_bytes());
        b[37..41].copy_from_slice(&self.plain_len.to_be_bytes());
        b[41..45].copy_from_slice(&self.cipher_len.to_be_bytes());
        b
    }

    pub fn parse(bytes: &[u8]) -> Result<ChunkPrefix, FormatError> {
        let p = bytes
            .get(..CHUNK_PREFIX_LEN)
            .ok_or(FormatError::Truncated("chunk"))?;
        if &p[..8] != CHUNK_MAGIC {
            return Err(FormatError::BadMagic("chunk"));
        }
        let u64_at = |i: usize| {
            p.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        let u32_at = |i: usize| {
            p.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0)
        };
        Ok(ChunkPrefix {
            index: u64_at(8),
            last: p[16] & FLAG_LAST != 0,
            first_at: u64_at(17),
            last_at: u64_at(25),
            events: u32_at(33),
            plain_len: u32_at(37),
            cipher_len: u32_at(41),
        })
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.index.to_be_bytes());
        n[8] = if self.last { FLAG_LAST } else { 0 };
        n
    }
}

/// Compresses and seals an encoded event batch as chunk `index`.
#[allow(clippy::too_many_arguments)]
pub fn seal_chunk(
    key: &Aead,
    header_digest: &[u8; 32],
    index: u64,
    last: bool,
    batch: &[u8],
    events: u32,
    span: (u64, u64),
    zstd_level: i32,
) -> Result<Vec<u8>, FormatError> {
    let plain_len = u32::try_from(batch.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_CHUNK_PLAIN)
        .ok_or(FormatError::TooLarge {
            index,
            claimed: batch.len() as u64,
        })?;
    let mut out = Vec::with_capacity(CHUNK_PREFIX_LEN + batch.len() / 3 + 64);
    out.extend_from_slice(&[0u8; CHUNK_PREFIX_LEN]);
    let bound = zstd::zstd_safe::compress_bound(batch.len());
    out.reserve(bound + TAG_LEN);
    let mut compressed = Vec::with_capacity(bound + TAG_LEN);
    zstd::bulk::Compressor::new(zstd_level)
        .and_then(|mut c| c.compress_to_buffer(batch, &mut compressed))
        .map_err(|e| FormatError::Inflate {
            index,
            why: e.to_string(),
        })?;
    let prefix = ChunkPrefix {
        index,
        last,
        first_at: span.0,
        last_at: span.1,
        events,
        plain_len,
        cipher_len: u32::try_from(compressed.len() + TAG_LEN).map_err(|_| {
            FormatError::TooLarge {
                index,
                claimed: compressed.len() as u64,
            }
        })?,
    };
    let prefix_bytes = prefix.to_bytes();
    keys::seal(
        key,
        prefix.nonce(),
        &chunk_aad(header_digest, &prefix_bytes),
        &mut compressed,
    )?;
    out[..CHUNK_PREFIX_LEN].copy_from_slice(&prefix_bytes);
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// An opened chunk: its prefix and its event batch in the clear.
#[derive(Debug, Clone)]
pub struct OpenChunk {
    pub prefix: ChunkPrefix,
    pub batch: Bytes,
}

impl OpenChunk {
    pub fn events(&self) -> super::event::Decoder {
        super::event::Decoder::new(self.batch.clone())
    }
}

/// Checks a chunk object's framing and that it sits where it claims, without a key.
pub fn check_chunk_frame(expected: u64, bytes: &[u8]) -> Result<ChunkPrefix, FormatError> {
    let prefix = ChunkPrefix::parse(bytes)?;
    if prefix.index != expected {
        return Err(FormatError::OutOfPlace {
            expected,
            found: prefix.index,
        });
    }
    if prefix.plain_len as usize > MAX_CHUNK_PLAIN {
        return Err(FormatError::TooLarge {
            index: expected,
            claimed: u64::from(prefix.plain_len),
        });
    }
    let body = bytes.len() - CHUNK_PREFIX_LEN;
    if body != prefix.cipher_len as usize {
        return Err(FormatError::Length {
            index: expected,
            why: "ciphertext length",
        });
    }
    if body < TAG_LEN {
        return Err(FormatError::Length {
            index: expected,
            why: "shorter than the tag",
        });
    }
    Ok(prefix)
}

/// Opens chunk `expected` of the recording whose header digest is given.
pub fn open_chunk(
    key: &Aead,
    header_digest: &[u8; 32],
    expected: u64,
    bytes: &[u8],
) -> Result<OpenChunk, FormatError> {
    let prefix = check_chunk_frame(expected, bytes)?;
    let (prefix_bytes, sealed) = bytes.split_at(CHUNK_PREFIX_LEN);
    let mut buf = sealed.to_vec();
    let plain = keys::open(
        key,
        prefix.nonce(),
        &chunk_aad(header_digest, prefix_bytes),
        &mut buf,
    )
    .ok_or(FormatError::Seal(expected))?;
    let batch = zstd::bulk::decompress(plain, prefix.plain_len as usize).map_err(|e| {
        FormatError::Inflate {
            index: expected,
            why: e.to_string(),
        }
    })?;
    if batch.len() != prefix.plain_len as usize {
        return Err(FormatError::Length {
            index: expected,
            why: "inflated length",
        });
    }
    Ok(OpenChunk {
        prefix,
        batch: Bytes::from(batch),
    })
}

fn chunk_aad(header_digest: &[u8; 32], prefix: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(CHUNK_AAD_CONTEXT.len() + 32 + prefix.len());
    aad.extend_from_slice(CHUNK_AAD_CONTEXT);
    aad.extend_from_slice(header_digest);
    aad.extend_from_slice(prefix);
    aad
}

/// magic | u16 version | u32 json length | json | 64-byte Ed25519 signature.
fn signed_object(
    magic: &[u8; 8],
    json: &[u8],
    context: &[u8],
    bound: &[u8],
    signer: &Signer,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + json.len() + 64);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    let sig = signer.sign(&signing_input(context, bound, &out));
    out.extend_from_slice(&sig);
    out
}

fn signing_input(context: &[u8], bound: &[u8], signed: &[u8]) -> Vec<u8> {
    [context, bound, signed].concat()
}

/// Returns (json, signed part) after checking magic, version and lengths.
fn split_signed<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    object: &'static str,
) -> Result<(&'a [u8], &'a [u8]), FormatError> {
    if bytes.len() < 14 + 64 {
        return Err(FormatError::Truncated(object));
    }
    if &bytes[..8] != magic {
        return Err(FormatError::BadMagic(object));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(FormatError::Version { object, version });
    }
    let len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if len > MAX_JSON {
        return Err(FormatError::Json {
            object,
            why: format!("{len} bytes is over the limit"),
        });
    }
    if bytes.len() != 14 + len + 64 {
        return Err(FormatError::Truncated(object));
    }
    Ok((&bytes[14..14 + len], &bytes[..14 + len]))
}

fn check_signature(
    signer: &str,
    context: &[u8],
    bound: &[u8],
    signed: &[u8],
    whole: &[u8],
    object: &'static str,
) -> Result<(), FormatError> {
    let sig = &whole[signed.len()..];
    match keys::verify_signature(signer, &signing_input(context, bound, signed), sig) {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(FormatError::BadSignature(object)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::keys::{DataKey, RecipientSecret};

    fn header(signer: &Signer, secret: &RecipientSecret, key: &DataKey) -> Header {
        let info = HeaderInfo {
            version: VERSION,
            session_id: "20261123T000000Z-000000000001".into(),
            protocol: "ssh".into(),
            user: "alice".into(),
            target: "web1".into(),
            start: "2026-11-23T00:00:00.000000Z".into(),
            start_unix_us: 1,
            signer: signer.public_openssh().into(),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            recipients: key
                .wrap(&[secret.public()], "20261123T000000Z-000000000001")
                .unwrap(),
            client: None,
        };
        Header::decode(Header::encode(&info, signer).unwrap()).unwrap()
    }

    #[test]
    fn chunks_bind_index_flag_and_recording() {
        let signer = Signer::from_seed(&[1; 32]).unwrap();
        let secret = RecipientSecret::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let h = header(&signer, &secret, &key);
        let aead = key.aead().unwrap();
        let c = seal_chunk(&aead, &h.digest, 3, true, b"hello", 1, (5, 9), 3).unwrap();
        let opened = open_chunk(&aead, &h.digest, 3, &c).unwrap();
        assert_eq!(&opened.batch[..], b"hello");
        assert!(opened.prefix.last);
        assert!(matches!(
            open_chunk(&aead, &h.digest, 4, &c),
            Err(FormatError::OutOfPlace {
                expected: 4,
                found: 3
            })
        ));
        // Flip the last flag, or claim another index in the prefix: the seal no longer opens.
        let mut flipped = c.clone();
        flipped[16] = 0;
        assert!(matches!(
            open_chunk(&aead, &h.digest, 3, &flipped),
            Err(FormatError::Seal(3))
        ));
        let mut moved = c.clone();
        moved[15] = 4;
        assert!(matches!(
            open_chunk(&aead, &h.digest, 4, &moved),
            Err(FormatError::Seal(4))
        ));
        // Another recording's header digest.
        assert!(matches!(
            open_chunk(&aead, &[0; 32], 3, &c),
            Err(FormatError::Seal(3))
        ));
        let mut cut = c.clone();
        cut.pop();
        assert!(matches!(
            open_chunk(&aead, &h.digest, 3, &cut),
            Err(FormatError::Length { .. })
        ));
    }

    #[test]
    fn headers_and_trailers_are_signed() {
        let signer = Signer::from_seed(&[1; 32]).unwrap();
        let secret = RecipientSecret::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let h = header(&signer, &secret, &key);
        let mut bytes = h.bytes.to_vec();
        let at = bytes.windows(5).position(|w| w == b"alice").unwrap();
        bytes[at] = b'A';
        assert!(matches!(
            Header::decode(Bytes::from(bytes)),
            Err(FormatError::BadSignature("header"))
        ));

        let info = TrailerInfo {
            session_id: h.info.session_id.clone(),
            blocked: 2,
            ..Default::default()
        };
        let t = Trailer::encode(&info, &h, &signer).unwrap();
        assert_eq!(Trailer::decode(t.clone(), &h).unwrap().info, info);
        let mut edited = t.to_vec();
        let at = edited
            .windows(11)
            .position(|w| w == b"\"blocked\":2")
            .unwrap();
        edited[at + 10] = b'0';
        assert!(matches!(
            Trailer::decode(Bytes::from(edited), &h),
            Err(FormatError::BadSignature("trailer"))
        ));
        // A trailer is bound to its header.
        let other = header(&signer, &secret, &key);
        let _ = other;
        let mut hb = h.clone();
        hb.digest = [9; 32];
        assert!(Trailer::decode(t, &hb).is_err());
    }
}
