//! The SSH client side: vigil connects to a target with its own key and refuses a target whose
//! host key is not the pinned one.

use std::{sync::Arc, time::Duration};

use russh::{client, keys::PrivateKeyWithHashAlg};

use crate::config::directory::{normalize_key, Target};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("target {target} has no pinned host_key: vigil does not connect to unverified hosts")]
    NoHostKey { target: String },
    #[error("target {target} presented host key {got}, not the pinned {expected}: refusing the connection")]
    HostKeyMismatch {
        target: String,
        expected: String,
        got: String,
    },
    #[error("cannot reach target {target} at {address}: {why}")]
    Connect {
        target: String,
        address: String,
        why: String,
    },
    #[error("target {target} refused vigil's key for user {user}")]
    Auth { target: String, user: String },
    #[error("target {target}: vigil's key {path}: {why}")]
    Key {
        target: String,
        path: String,
        why: String,
    },
    #[error("target {target} is not configured for ssh (needs user and key)")]
    Config { target: String },
    #[error("target {target}: {source}")]
    Ssh {
        target: String,
        source: russh::Error,
    },
}

/// Checks the target's host key against the pin and remembers what it saw.
pub struct PinnedHost {
    target: String,
    expected: String,
    seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let got = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.to_openssh().ok().and_then(|s| normalize_key(&s))
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => None,
        };
        let ok = got.as_deref() == Some(self.expected.as_str());
        if !ok {
            tracing::warn!(target_name = %self.target, "target host key does not match the pinned key");
        }
        if let Ok(mut s) = self.seen.lock() {
            *s = got;
        }
        Ok(ok)
    }
}

/// An authenticated connection to a target.
pub type UpstreamHandle = client::Handle<PinnedHost>;

/// Connects to `target`, checks its host key, and logs in with vigil's own key.
pub async fn connect(target: &Target) -> Result<UpstreamHandle, UpstreamError> {
    let name = target.name.clone();
    let expected = target
        .host_key
        .clone()
        .ok_or_else(|| UpstreamError::NoHostKey {
            target: name.clone(),
        })?;
    let (Some(user), Some(key_path)) = (&target.user, &target.key) else {
        return Err(UpstreamError::Config { target: name });
    };
    let key = russh::keys::load_secret_key(key_path, None).map_err(|e| UpstreamError::Key {
        target: name.clone(),
        path: key_path.display().to_string(),
        why: e.to_string(),
    })?;
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let seen = Arc::new(std::sync::Mutex::new(None));
    let pinned = PinnedHost {
        target: name.clone(),
        expected: expected.clone(),
        seen: seen.clone(),
    };
    let address = target.address.clone();
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client::connect(config, address.as_str(), pinned),
    )
    .await;
    let mut handle = match connected {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            let got = seen.lock().ok().and_then(|s| s.clone());
            return Err(match got {
                Some(got) if got != expected => UpstreamError::HostKeyMismatch {
                    target: name,
                    expected,
                    got,
                },
                _ => UpstreamError::Connect {
                    target: name,
                    address,
                    why: e.to_string(),
                },
            });
        }
        Err(_) => {
            return Err(UpstreamError::Connect {
                target: name,
                address,
                why: format!("no answer within {CONNECT_TIMEOUT:?}"),
            })
        }
    };
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let auth = handle
        .authenticate_publickey(
            user.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(|source| UpstreamError::Ssh {
            target: name.clone(),
            source,
        })?;
    if !auth.success() {
        return Err(UpstreamError::Auth {
            target: name,
            user: user.clone(),
        });
    }
    Ok(handle)
}
