//! The SSH client side: vigil connects to a target with its own key and refuses a target whose
//! host key is not the pinned one.

use std::{sync::Arc, time::Duration};

use russh::{
    client::{self, Msg},
    keys::PrivateKeyWithHashAlg,
    Channel, ChannelOpenFailure,
};
use tokio::sync::mpsc;

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

/// A channel the target opens back toward the user: a connection to a remote forward
/// (`ssh -R`), the target's use of a forwarded agent (`ssh -A`), or an X11 client (`ssh -X`).
/// The connection's reverse task (`reverse.rs`) decides and answers `reply`.
pub enum Inbound {
    ForwardedTcpip {
        channel: Channel<Msg>,
        connected: (String, u32),
        originator: (String, u32),
        reply: client::ChannelOpenHandle,
    },
    Agent {
        channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
    },
    X11 {
        channel: Channel<Msg>,
        originator: (String, u32),
        reply: client::ChannelOpenHandle,
    },
}

/// Checks the target's host key against the pin and remembers what it saw; hands channels the
/// target opens to `inbound` (refused when there is none).
pub struct PinnedHost {
    target: String,
    expected: String,
    seen: Arc<std::sync::Mutex<Option<String>>>,
    inbound: Option<mpsc::Sender<Inbound>>,
}

impl Inbound {
    /// Refuses the channel (the target sees "administratively prohibited").
    pub async fn reject(self) {
        let reply = match self {
            Inbound::ForwardedTcpip { reply, .. }
            | Inbound::Agent { reply, .. }
            | Inbound::X11 { reply, .. } => reply,
        };
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
}

impl PinnedHost {
    async fn hand_over(&self, inbound: Inbound) {
        let refused = match &self.inbound {
            Some(tx) => match tx.try_send(inbound) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i)) => i,
            },
            None => inbound,
        };
        refused.reject().await;
    }
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

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.hand_over(Inbound::ForwardedTcpip {
            channel,
            connected: (connected_address.to_string(), connected_port),
            originator: (originator_address.to_string(), originator_port),
            reply,
        })
        .await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.hand_over(Inbound::Agent { channel, reply }).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        channel: Channel<Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.hand_over(Inbound::X11 {
            channel,
            originator: (originator_address.to_string(), originator_port),
            reply,
        })
        .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // vigil never asks a target for Unix-socket forwards.
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

/// An authenticated connection to a target.
pub type UpstreamHandle = client::Handle<PinnedHost>;

/// Connects to `target`, checks its host key, and logs in with vigil's own key. Channels the
/// target opens back (remote forwards, agent, X11) go to `inbound`, or are refused without it.
pub async fn connect(
    target: &Target,
    inbound: Option<mpsc::Sender<Inbound>>,
) -> Result<UpstreamHandle, UpstreamError> {
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
        inbound,
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
