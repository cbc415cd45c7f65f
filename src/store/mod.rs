//! The object store that recordings live in (off the bastion host), its key layout, and the
//! local spool that holds sealed chunks while the store is unreachable.
//!
//! Key layout (formats/store-layout-v1.md): `sessions/<id>/header`,
//! `sessions/<id>/chunk-<index:010>`, `sessions/<id>/trailer`. Object stores have no append, so
//! a recording is a set of immutable objects written while the session runs; the trailer is
//! written last, after every chunk is in the store.

pub mod spool;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    local::LocalFileSystem,
    path::Path as ObjPath,
    prefix::PrefixStore,
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::Deserialize;

/// How long one store request may take before it counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL `{url}`: {why}")]
    Url { url: String, why: String },
    #[error("store {op} {key}: {source}")]
    Request {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
    #[error("store {op} {key}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout { op: &'static str, key: String },
}

/// `[recording.s3]`: overrides of the standard `AWS_*` environment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// Name of the environment variable that holds the secret key (never the key itself).
    pub secret_access_key_env: Option<String>,
    /// Set by programs using the library, never read from a file.
    #[serde(skip)]
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens `file:///path`, a plain path, or `s3://bucket/prefix`.
    pub fn open(url: &str, s3: &S3Settings) -> Result<Store, StoreError> {
        let bad = |why: String| StoreError::Url {
            url: url.to_string(),
            why,
        };
        let inner: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name".into()));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                b = b.with_region("us-east-1");
            }
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.region {
                b = b.with_region(v);
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(var) = &s3.secret_access_key_env {
                let secret = std::env::var(var)
                    .map_err(|_| bad(format!("environment variable {var} is not set")))?;
                b = b.with_secret_access_key(secret);
            }
            if let Some(secret) = &s3.secret_access_key {
                b = b.with_secret_access_key(secret);
            }
            if let Some(v) = s3.allow_http {
                b = b.with_allow_http(v);
            }
            if let Some(v) = s3.virtual_hosted_style {
                b = b.with_config(AmazonS3ConfigKey::VirtualHostedStyleRequest, v.to_string());
            }
            // Fail fast and let the spool absorb an outage, rather than retry for minutes.
            b = b
                .with_retry(RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    backoff: BackoffConfig::default(),
                })
                // Set one by one: replacing the client options would drop AWS_ALLOW_HTTP & co.
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    "5s",
                )
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "15s");
            let s3 = b.build().map_err(|e| bad(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else {
            let path = match url.strip_prefix("file://") {
                Some(p) => p,
                None if url.contains("://") => {
                    return Err(bad("use file:///absolute/path or s3://bucket/prefix".into()))
                }
                None => url,
            };
            std::fs::create_dir_all(path).map_err(|e| bad(e.to_string()))?;
            let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
            Arc::new(LocalFileSystem::new_with_prefix(&abs).map_err(|e| bad(e.to_string()))?)
        };
        Ok(Store {
            inner,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = ObjPath::from(key);
        let fut = self.inner.put(&path, PutPayload::from_bytes(bytes));
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(StoreError::Request {
                op: "put",
                key: key.to_string(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                op: "put",
                key: key.to_string(),
            }),
        }
    }

    /// The object's bytes, or `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = ObjPath::from(key);
        let fut = async {
            match self.inner.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|source| StoreError::Request {
                op: "get",
                key: key.to_string(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                op: "get",
                key: key.to_string(),
            }),
        }
    }

    /// Names directly below `prefix/` (one level), sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let path = ObjPath::from(prefix);
        let fut = self.inner.list_with_delimiter(Some(&path));
        let r = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|source| StoreError::Request {
                op: "list",
                key: prefix.to_string(),
                source,
            })?,
            Err(_) => {
                return Err(StoreError::Timeout {
                    op: "list",
                    key: prefix.to_string(),
                })
            }
        };
        let mut out: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Object names (last path segment) and sizes below `prefix/`, sorted by name.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let path = ObjPath::from(prefix);
        let fut = self.inner.list(Some(&path)).try_collect::<Vec<_>>();
        let metas = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|source| StoreError::Request {
                op: "list",
                key: prefix.to_string(),
                source,
            })?,
            Err(_) => {
                return Err(StoreError::Timeout {
                    op: "list",
                    key: prefix.to_string(),
                })
            }
        };
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| m.location.filename().map(|f| (f.to_string(), m.size)))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Where each object of a recording lives.
pub mod layout {
    pub const SESSIONS: &str = "sessions";

    pub fn header(id: &str) -> String {
        format!("{SESSIONS}/{id}/header")
    }
    pub fn chunk(id: &str, index: u64) -> String {
        format!("{SESSIONS}/{id}/{}", chunk_name(index))
    }
    pub fn chunk_name(index: u64) -> String {
        format!("chunk-{index:010}")
    }
    pub fn trailer(id: &str) -> String {
        format!("{SESSIONS}/{id}/trailer")
    }
    pub fn session_dir(id: &str) -> String {
        format!("{SESSIONS}/{id}")
    }
    /// The index of a `chunk-NNNNNNNNNN` object name.
    pub fn parse_chunk_name(name: &str) -> Option<u64> {
        let digits = name.strip_prefix("chunk-")?;
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
    /// Session ids are `YYYYMMDDTHHMMSSZ-` and 12 hex digits: safe as one path segment.
    pub fn valid_session_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}
