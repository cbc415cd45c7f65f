//! Forwarded channels, each only for a role that allows it: local forwards (`ssh -L`, a
//! direct-tcpip channel the user opens), and the channels a target opens back toward the user:
//! connections to a remote forward (`ssh -R`), the target's use of a forwarded agent (`ssh -A`)
//! and X11 clients (`ssh -X`). Each forwarded connection is its own recording that says who
//! connected where and how many bytes went each way; the bytes themselves are not recorded
//! (agent traffic is key material, and a tunnel's content is not a terminal).

use std::sync::Arc;

use russh::{client, server, Channel, ChannelMsg, ChannelOpenFailure};
use tokio::sync::mpsc;

use super::{
    server::{Connection, Reverse},
    upstream::Inbound,
};
use crate::{
    audit::AuditEvent,
    daemon::Gateway,
    recording::{
        event::{Command, Decision as Recorded, Event},
        SessionMeta,
    },
};

/// A local port forward (`ssh -L`, `ssh -W`): a direct-tcpip channel to the target, relayed
/// both ways.
pub async fn local(
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    client: Channel<server::Msg>,
    host: String,
    port: u32,
    origin: String,
) {
    let Some(target_name) = conn.login.target.clone() else {
        return;
    };
    let Some(target) = gw.config().directory.target(&target_name).cloned() else {
        return;
    };
    let what = format!("direct-tcpip {origin} -> {host}:{port}");
    let upstream = match conn.upstream(&gw, &target).await {
        Ok(h) => h,
        Err(e) => {
            let _ = client.close().await;
            audit(&gw, &conn, "forward.failure", &format!("{what}: {e}"));
            return;
        }
    };
    match upstream
        .channel_open_direct_tcpip(host.clone(), port, "127.0.0.1", 0)
        .await
    {
        Ok(up) => relay_recorded(&gw, &conn, &what, client, up).await,
        Err(e) => {
            let _ = client.close().await;
            audit(
                &gw,
                &conn,
                "forward.failure",
                &format!("{what}: target refused: {e}"),
            );
        }
    }
}

/// Serves the channels the target opens back over one upstream connection until it closes.
/// Each is relayed only when the user's role allows its kind and the user asked for it on this
/// connection (a remote forward request, `ssh -A`, `ssh -X`); otherwise the target is refused.
pub async fn reverse(
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    while let Some(i) = inbound.recv().await {
        let (gw, conn) = (gw.clone(), conn.clone());
        gw.tracker.clone().spawn(async move {
            let Some(user) = conn.client() else {
                i.reject().await;
                return;
            };
            let (kind, what) = match &i {
                Inbound::ForwardedTcpip {
                    connected,
                    originator,
                    ..
                } => (
                    Reverse::Tcpip,
                    format!(
                        "forwarded-tcpip {}:{} -> {}:{} (remote forward)",
                        originator.0, originator.1, connected.0, connected.1
                    ),
                ),
                Inbound::Agent { .. } => (Reverse::Agent, "agent channel".to_string()),
                Inbound::X11 { originator, .. } => (
                    Reverse::X11,
                    format!("x11 from {}:{}", originator.0, originator.1),
                ),
            };
            if !conn.reverse_allowed(&gw, kind) {
                audit(
                    &gw,
                    &conn,
                    "forward.refused",
                    &format!("{what}: not requested or not granted"),
                );
                i.reject().await;
                return;
            }
            let opened = match &i {
                Inbound::ForwardedTcpip {
                    connected,
                    originator,
                    ..
                } => {
                    user.channel_open_forwarded_tcpip(
                        connected.0.clone(),
                        connected.1,
                        originator.0.clone(),
                        originator.1,
                    )
                    .await
                }
                Inbound::Agent { .. } => user.channel_open_agent().await,
                Inbound::X11 { originator, .. } => {
                    user.channel_open_x11(originator.0.clone(), originator.1)
                        .await
                }
            };
            let (up, reply) = match i {
                Inbound::ForwardedTcpip { channel, reply, .. }
                | Inbound::Agent { channel, reply }
                | Inbound::X11 { channel, reply, .. } => (channel, reply),
            };
            match opened {
                Ok(down) => {
                    reply.accept().await;
                    relay_recorded(&gw, &conn, &what, down, up).await;
                }
                Err(e) => {
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    audit(
                        &gw,
                        &conn,
                        "forward.failure",
                        &format!("{what}: the user's client refused: {e}"),
                    );
                }
            }
        });
    }
}

fn audit(gw: &Gateway, conn: &Connection, action: &str, detail: &str) {
    gw.audit.record(AuditEvent {
        user: Some(conn.login.user.clone()),
        target: conn.login.target.clone(),
        source: conn.peer.map(|p| p.to_string()),
        protocol: Some("ssh".into()),
        detail: Some(detail.to_string()),
        ..AuditEvent::new(action)
    });
}

/// Relays one forwarded connection as its own recording: a command event naming it, then a
/// marker with the byte counts when it ends.
async fn relay_recorded(
    gw: &Gateway,
    conn: &Connection,
    what: &str,
    user: Channel<server::Msg>,
    target: Channel<client::Msg>,
) {
    let meta = SessionMeta {
        protocol: "ssh".into(),
        user: conn.login.user.clone(),
        target: conn.login.target.clone().unwrap_or_default(),
        client: conn.peer.map(|p| p.to_string()),
    };
    let recorder = match gw.recordings.begin(meta).await {
        Ok(r) => r,
        Err(e) => {
            // No recording, no forward.
            let _ = user.close().await;
            let _ = target.close().await;
            audit(
                gw,
                conn,
                "forward.failure",
                &format!("{what}: recording: {e}"),
            );
            return;
        }
    };
    let _ = recorder
        .record(Event::Command(Command {
            kind: "forward".into(),
            text: what.to_string(),
            decision: Recorded::Allow,
            rule: None,
            message: None,
        }))
        .await;
    gw.audit.record(AuditEvent {
        user: Some(conn.login.user.clone()),
        target: conn.login.target.clone(),
        source: conn.peer.map(|p| p.to_string()),
        session: Some(recorder.session_id().to_string()),
        protocol: Some("ssh".into()),
        detail: Some(what.to_string()),
        ..AuditEvent::new("forward.open")
    });
    let (sent, received, reason) = splice(user, target).await;
    let _ = recorder
        .record(Event::Marker(format!(
            "{what}: {sent} bytes from the user, {received} bytes from the target"
        )))
        .await;
    let _ = recorder.close(&reason).await;
}

/// Copies both ways until either side closes; returns the bytes from the user, the bytes from
/// the target and which side ended it. Each write waits for the peer's window: no unbounded
/// buffering.
async fn splice(
    mut user: Channel<server::Msg>,
    mut target: Channel<client::Msg>,
) -> (u64, u64, String) {
    let (mut sent, mut received) = (0u64, 0u64);
    let (mut user_eof, mut target_eof) = (false, false);
    let reason = loop {
        tokio::select! {
            m = user.wait() => match m {
                Some(ChannelMsg::Data { data }) => {
                    sent += data.len() as u64;
                    if target.data_bytes(data).await.is_err() {
                        break "target side failed".to_string();
                    }
                }
                Some(ChannelMsg::Eof) => {
                    user_eof = true;
                    let _ = target.eof().await;
                    if target_eof {
                        break "both sides finished".to_string();
                    }
                }
                Some(ChannelMsg::Close) | None => break "the user closed the forward".to_string(),
                _ => {}
            },
            m = target.wait() => match m {
                Some(ChannelMsg::Data { data }) => {
                    received += data.len() as u64;
                    if user.data_bytes(data).await.is_err() {
                        break "user side failed".to_string();
                    }
                }
                Some(ChannelMsg::Eof) => {
                    target_eof = true;
                    let _ = user.eof().await;
                    if user_eof {
                        break "both sides finished".to_string();
                    }
                }
                Some(ChannelMsg::Close) | None => break "the target closed the forward".to_string(),
                _ => {}
            },
        }
    };
    let _ = user.close().await;
    let _ = target.close().await;
    (sent, received, reason)
}
