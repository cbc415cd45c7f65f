//! One SSH session channel: collects its pty and environment requests, checks the command
//! against policy before anything reaches the target, opens the matching channel on the target
//! and relays both ways while recording. Interactive shells hold each Enter until the line the
//! user submitted has been checked (`terminal.rs` reconstructs it).
//!
//! A command that a `review` rule holds waits for approval (see `approval/`): the user sees
//! `waiting for approval #N` and the command runs only once an approval for it was consumed; a
//! denial, a timeout, or Ctrl-C (or the client going away) cancels it. The requester's
//! justification comes from the `VIGIL_REASON` environment variable the client sends
//! (`ssh -o 'SetEnv=VIGIL_REASON="INC-42: restart the stuck worker"' ...`); it is not passed on.

use std::sync::Arc;

use bytes::Bytes;
use russh::{
    server::{self, Msg},
    Channel, ChannelMsg, Pty, Sig,
};

use super::{
    server::Connection,
    sftp::SftpObserver,
    terminal::{LineTracker, Step, Submitted, Verdict, ECHO_WAIT},
};
use crate::{
    audit::AuditEvent,
    config::directory::{Grants, Target, UnknownLine},
    daemon::Gateway,
    policy::{Action, Decision},
    recording::{
        event::{Command, Decision as Recorded, Event, Exit},
        Recorder, SessionMeta,
    },
};

/// Environment variables passed to targets besides each target's own `env` list.
const ENV_ALLOWED: &[&str] = &["LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM"];
/// Exit status reported when vigil refuses a command (as a shell does for "not executable").
pub const REFUSED_STATUS: u32 = 126;
/// The environment variable that carries the requester's justification for held commands.
pub const REASON_ENV: &str = "VIGIL_REASON";
/// Client messages kept while a command waits for approval (replayed once it runs); past
/// this, vigil stops reading the client until the decision (SSH flow control holds the rest).
const HELD_BACKLOG: usize = 1 << 20;

/// An X11 forwarding request, passed on to the target when the user's role allows it.
struct X11Request {
    single_connection: bool,
    protocol: String,
    cookie: String,
    screen: u32,
}

/// Agent and X11 forwarding requested on this channel (and allowed), to ask of the target.
#[derive(Default)]
struct Forwarding {
    agent: bool,
    x11: Option<X11Request>,
}

struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    px: u32,
    py: u32,
    modes: Vec<(Pty, u32)>,
}

enum Mode {
    Shell,
    Exec(String),
    Subsystem(String),
}

impl Mode {
    fn describe(&self) -> String {
        match self {
            Mode::Shell => "shell".into(),
            Mode::Exec(c) => c.clone(),
            Mode::Subsystem(s) => format!("subsystem {s}"),
        }
    }
}

/// The client side of the channel, with the session handle for replies it cannot send itself.
struct Client {
    channel: Channel<Msg>,
    handle: server::Handle,
}

impl Client {
    fn id(&self) -> russh::ChannelId {
        self.channel.id()
    }

    async fn reply(&self, ok: bool) {
        let _ = if ok {
            self.handle.channel_success(self.id()).await
        } else {
            self.handle.channel_failure(self.id()).await
        };
    }

    async fn stderr(&self, text: &str) {
        let _ = self
            .channel
            .extended_data_bytes(1, Bytes::from(text.to_string()))
            .await;
    }

    /// Tells the user why, sets a non-zero exit status and closes the channel.
    async fn refuse(&self, text: &str) {
        self.stderr(&format!("vigil: {text}\r\n")).await;
        let _ = self.channel.exit_status(REFUSED_STATUS).await;
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }
}

/// Runs a session channel to its end.
pub async fn run(
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    channel: Channel<Msg>,
    handle: server::Handle,
) {
    let client = Client { channel, handle };
    let mut client = client;
    let mut pty: Option<PtyRequest> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut justification: Option<String> = None;
    let extra_env: Vec<String> = conn
        .login
        .target
        .as_deref()
        .and_then(|t| gw.config().directory.target(t).map(|t| t.env.clone()))
        .unwrap_or_default();
    let early_grants = conn
        .login
        .target
        .as_deref()
        .and_then(|t| gw.config().directory.grants(&conn.login.user, t))
        .unwrap_or_default();
    let mut forwarding = Forwarding::default();
    let mode = loop {
        let Some(msg) = client.channel.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    px: pix_width,
                    py: pix_height,
                    modes: terminal_modes,
                });
                client.reply(true).await;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(p) = pty.as_mut() {
                    (p.cols, p.rows, p.px, p.py) = (col_width, row_height, pix_width, pix_height);
                }
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if variable_name == REASON_ENV => {
                justification = crate::approval::clean_reason(&variable_value);
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                let allowed = ENV_ALLOWED.contains(&variable_name.as_str())
                    || variable_name.starts_with("LC_")
                    || extra_env.contains(&variable_name);
                if allowed && env.len() < 64 {
                    env.push((variable_name, variable_value));
                }
            }
            ChannelMsg::RequestShell { .. } => break Mode::Shell,
            ChannelMsg::Exec { command, .. } => {
                break Mode::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            ChannelMsg::RequestSubsystem { name, .. } => break Mode::Subsystem(name),
            // russh answers these two from `server::Handler` (the same grant check), only when
            // the client wants an answer: OpenSSH does not, and a late unasked answer would be
            // taken as the answer to its next request.
            ChannelMsg::AgentForward { .. } if early_grants.agent_forwarding => {
                forwarding.agent = true;
                conn.allow_reverse(super::server::Reverse::Agent);
            }
            ChannelMsg::RequestX11 {
                single_connection,
                x11_authentication_protocol,
                x11_authentication_cookie,
                x11_screen_number,
                ..
            } if early_grants.x11_forwarding => {
                forwarding.x11 = Some(X11Request {
                    single_connection,
                    protocol: x11_authentication_protocol,
                    cookie: x11_authentication_cookie,
                    screen: x11_screen_number,
                });
                conn.allow_reverse(super::server::Reverse::X11);
            }
            ChannelMsg::AgentForward { .. } | ChannelMsg::RequestX11 { .. } => {
                // Agent and X11 forwarding hand the target a way back to the user's machine:
                // only for roles that allow it.
                gw.audit.record(AuditEvent {
                    user: Some(conn.login.user.clone()),
                    target: conn.login.target.clone(),
                    source: conn.peer.map(|p| p.to_string()),
                    protocol: Some("ssh".into()),
                    detail: Some("agent or X11 forwarding request refused (not granted)".into()),
                    ..AuditEvent::new("forward.refused")
                });
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => {}
        }
    };

    // A shell with a terminal and no target: the menu, then the picked target as if the user
    // had logged in as USER+TARGET.
    let conn = match (&conn.login.target, &mode, pty.as_mut()) {
        (None, Mode::Shell, Some(p)) => {
            client.reply(true).await;
            let mut size = (p.cols, p.rows, p.px, p.py);
            let picked = super::control::pick(&gw, &conn, &mut client.channel, &mut size).await;
            (p.cols, p.rows, p.px, p.py) = size;
            match picked {
                super::control::Picked::Target(t) => {
                    let login = super::server::Login {
                        user: conn.login.user.clone(),
                        target: Some(t),
                    };
                    let picked = Arc::new(Connection::new(login, conn.peer));
                    picked.set_client(client.handle.clone());
                    picked
                }
                super::control::Picked::Quit => {
                    let _ = client.channel.exit_status(0).await;
                    let _ = client.channel.eof().await;
                    let _ = client.channel.close().await;
                    return;
                }
            }
        }
        _ => conn,
    };
    let Some(target_name) = conn.login.target.clone() else {
        client.reply(true).await;
        super::control::run(
            &gw,
            &conn,
            &mut client.channel,
            &client.handle,
            mode_command(&mode),
            pty.is_some(),
        )
        .await;
        return;
    };
    let config = gw.config();
    let target = config.directory.target(&target_name).cloned();
    let grants = config.directory.grants(&conn.login.user, &target_name);
    let (target, grants) = match (target, grants) {
        (Some(t), Some(g)) if t.protocol == crate::config::directory::Protocol::Ssh => (t, g),
        (Some(_), Some(_)) => {
            audit_refusal(&gw, &conn, &target_name, "not an ssh target");
            client.reply(true).await;
            client
                .refuse(&format!("{target_name} is not an ssh target"))
                .await;
            return;
        }
        _ => {
            // The same answer whether the target does not exist or is not granted.
            audit_refusal(&gw, &conn, &target_name, "no role grants this target");
            client.reply(true).await;
            client
                .refuse(&format!("{} may not reach {target_name}", conn.login.user))
                .await;
            return;
        }
    };
    if let Mode::Subsystem(name) = &mode {
        if name != "sftp" || !grants.file_transfer {
            audit_refusal(
                &gw,
                &conn,
                &target_name,
                &format!("subsystem {name} refused (file transfer not granted)"),
            );
            client.reply(false).await;
            client
                .refuse(&format!(
                    "file transfer ({name}) is not allowed for {} on {target_name}",
                    conn.login.user
                ))
                .await;
            return;
        }
    }
    if let Err(e) = gw.recordings.admit() {
        audit_refusal(&gw, &conn, &target_name, &e.to_string());
        client.reply(true).await;
        client
            .refuse("sessions are refused while recordings cannot be stored; try again later")
            .await;
        return;
    }
    let meta = SessionMeta {
        protocol: "ssh".into(),
        user: conn.login.user.clone(),
        target: target_name.clone(),
        client: conn.peer.map(|p| p.to_string()),
    };
    let recorder = match gw.recordings.begin(meta).await {
        Ok(r) => r,
        Err(e) => {
            audit_refusal(&gw, &conn, &target_name, &e.to_string());
            client.reply(true).await;
            client
                .refuse("cannot start the session recording; the session is refused")
                .await;
            return;
        }
    };
    gw.audit.record(AuditEvent {
        user: Some(conn.login.user.clone()),
        target: Some(target_name.clone()),
        source: conn.peer.map(|p| p.to_string()),
        session: Some(recorder.session_id().to_string()),
        protocol: Some("ssh".into()),
        command: Some(mode.describe()),
        ..AuditEvent::new("session.start")
    });
    gw.approvals
        .session_started(
            recorder.session_id(),
            "ssh",
            &conn.login.user,
            &target_name,
            conn.peer.map(|p| p.to_string()),
        )
        .await;
    let mut session = Session {
        gw: gw.clone(),
        conn: conn.clone(),
        target,
        grants,
        recorder,
        client,
        justification,
        answered: false,
    };
    if let Some(p) = &pty {
        session
            .record(Event::Resize {
                cols: clamp16(p.cols),
                rows: clamp16(p.rows),
            })
            .await;
    }
    let reason = session.relay(mode, pty, env, forwarding).await;
    session.close(&reason).await;
}

fn mode_command(mode: &Mode) -> Option<String> {
    match mode {
        Mode::Exec(c) => Some(c.clone()),
        Mode::Shell | Mode::Subsystem(_) => None,
    }
}

fn audit_refusal(gw: &Gateway, conn: &Connection, target: &str, why: &str) {
    gw.audit.record(AuditEvent {
        user: Some(conn.login.user.clone()),
        target: Some(target.to_string()),
        source: conn.peer.map(|p| p.to_string()),
        protocol: Some("ssh".into()),
        detail: Some(why.to_string()),
        ..AuditEvent::new("access.refused")
    });
}

/// Whether the channel's program may read shell commands from its input: a shell request, or
/// an exec whose command starts a shell anywhere in it (`ssh host bash`, `exec bash`,
/// `env sh -s`, `sudo -s`, `su`). Over-approximated on purpose: gating the input of a command
/// that does not read it costs nothing but a check per line.
fn reads_commands(mode: &Mode) -> bool {
    match mode {
        Mode::Shell => true,
        Mode::Exec(command) => {
            let words: Vec<&str> = command
                .split_whitespace()
                .map(|w| w.trim_matches(['\'', '"', '(', ')', ';', '&', '|']))
                .collect();
            let basename = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
            let starts_shell = words.iter().any(|w| {
                let name = basename(w);
                SHELLS.contains(&name.as_str()) || name == "su"
            });
            let elevates = words
                .iter()
                .any(|w| matches!(basename(w).as_str(), "sudo" | "doas" | "pkexec"))
                && words.iter().any(|w| {
                    matches!(*w, "-s" | "-i" | "--shell" | "--login")
                        || w.starts_with("-s")
                        || w.starts_with("-i")
                });
            starts_shell || elevates
        }
        Mode::Subsystem(_) => false,
    }
}

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox", "tcsh", "csh",
];

/// Splits a terminal-less shell's input into lines to check one by one.
#[derive(Default)]
struct LineGate {
    partial: Vec<u8>,
}

/// Longest input line checked; a longer one is refused (it cannot be checked whole).
const MAX_GATE_LINE: usize = 64 << 10;

impl LineGate {
    /// Complete lines (with their newline) from `data`; at EOF, the unterminated rest too.
    fn feed(&mut self, data: &[u8], eof: bool) -> Result<Vec<Vec<u8>>, &'static str> {
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(at) = memchr::memchr(b'\n', &self.partial) {
            let rest = self.partial.split_off(at + 1);
            lines.push(std::mem::replace(&mut self.partial, rest));
        }
        if self.partial.len() > MAX_GATE_LINE {
            return Err("an input line longer than 64 KiB");
        }
        if eof && !self.partial.is_empty() {
            lines.push(std::mem::take(&mut self.partial));
        }
        Ok(lines)
    }
}

/// A pty size as a terminal uses it: 0 (unknown, as clients send without a real terminal)
/// means the conventional 80x24.
fn term_size(cols: u32, rows: u32) -> (u16, u16) {
    let or = |v: u32, d: u16| if v == 0 { d } else { clamp16(v) };
    (or(cols, 80), or(rows, 24))
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A started session channel.
struct Session {
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    target: Target,
    grants: Grants,
    recorder: Recorder,
    client: Client,
    /// `VIGIL_REASON` from the client: the justification of held commands.
    justification: Option<String>,
    /// The client's shell/exec request was answered already (before a hold).
    answered: bool,
}

/// How a hold for approval ended, for the caller.
struct Held {
    outcome: crate::approval::Outcome,
    /// Client messages that arrived meanwhile, in order.
    backlog: Vec<ChannelMsg>,
    /// The client closed the channel or went away.
    gone: bool,
}

impl Session {
    async fn record(&self, event: Event) {
        if let Err(e) = self.recorder.record(event).await {
            tracing::error!(session = %self.recorder.session_id(), error = %e, "recording failed");
        }
    }

    /// Decides about one line a shell reads, together with the unfinished command it continues
    /// (`relay.buffered`): the shell runs nothing until a command is complete, so a line that
    /// leaves it unfinished may pass if the line alone is not refused; the command is judged
    /// whole when its last line arrives.
    fn decide_line(&self, line: &str, buffered: &mut String) -> Decision {
        let joined = joined(buffered, line);
        let d = self.decide(&joined);
        if !d.incomplete {
            if d.action == Action::Allow {
                buffered.clear();
            }
            return d;
        }
        let alone = self.decide(line);
        if alone.action == Action::Allow || alone.incomplete {
            *buffered = joined;
            return Decision::allow();
        }
        alone
    }

    /// An audit event about this session: who, from where, on which target.
    fn audit_event(&self, action: &str) -> AuditEvent {
        AuditEvent {
            user: Some(self.conn.login.user.clone()),
            target: Some(self.target.name.clone()),
            source: self.conn.peer.map(|p| p.to_string()),
            session: Some(self.recorder.session_id().to_string()),
            protocol: Some("ssh".into()),
            ..AuditEvent::new(action)
        }
    }

    fn decide(&self, line: &str) -> Decision {
        let roles = self
            .gw
            .config()
            .directory
            .roles_of(&self.conn.login.user)
            .to_vec();
        self.gw
            .policy()
            .check_shell(&roles, &self.target.name, line)
    }

    /// Answers the client's shell/exec/subsystem request, once.
    async fn answer(&mut self, ok: bool) {
        if !self.answered {
            self.answered = true;
            self.client.reply(ok).await;
        }
    }

    /// Tells the user something while a command is held (on stderr for exec, in the terminal
    /// for an interactive line).
    async fn say(&self, text: &str, relay: Option<&mut Relay>) {
        match relay {
            Some(r) => {
                let msg = format!("\r\nvigil: {text}\r\n");
                self.record(Event::Output(Bytes::from(msg.clone()))).await;
                if let Some(t) = r.tracker.as_mut() {
                    t.local_output(msg.as_bytes());
                }
                let _ = self.client.channel.data_bytes(Bytes::from(msg)).await;
            }
            None => self.client.stderr(&format!("vigil: {text}\r\n")).await,
        }
    }

    async fn record_approval(
        &self,
        id: u64,
        state: &str,
        by: Option<String>,
        rule: &Decision,
        reason: Option<String>,
    ) {
        self.record(Event::Approval(crate::recording::event::Approval {
            id,
            state: state.into(),
            by,
            rule: rule.rule.clone(),
            reason,
        }))
        .await;
    }

    /// Holds `text` (a `review` decision) until its approval is consumed, denied, timed out or
    /// cancelled. Ctrl-C (with a terminal) or the client closing cancels; other client messages
    /// are kept for the caller. Nothing reaches the target meanwhile.
    async fn hold(
        &mut self,
        text: &str,
        d: &Decision,
        pty: bool,
        mut relay: Option<&mut Relay>,
    ) -> Held {
        use crate::approval::{Ask, Outcome, Ticket};
        let gw = self.gw.clone();
        let config = gw.config();
        let ask = Ask {
            user: self.conn.login.user.clone(),
            target: self.target.name.clone(),
            protocol: "ssh".into(),
            command: text.to_string(),
            rule: d.rule.clone().unwrap_or_default(),
            reason: self.justification.clone(),
            session: Some(self.recorder.session_id().to_string()),
        };
        let mut held = Held {
            outcome: Outcome::Failed(String::new()),
            backlog: Vec::new(),
            gone: false,
        };
        let request = match gw.approvals.request(&config, &gw.audit, ask.clone()).await {
            Ok(Ticket::Ready(a)) => {
                self.say(
                    &format!("covered by approval #{} (rule {}); running", a.id, a.rule),
                    relay.as_deref_mut(),
                )
                .await;
                self.record_approval(a.id, "granted", Some(a.approved_by().join(", ")), d, None)
                    .await;
                held.outcome = Outcome::Approved(a);
                return held;
            }
            Ok(Ticket::Pending(a)) => a,
            Err(e) => {
                held.outcome = Outcome::Failed(e.to_string());
                return held;
            }
        };
        self.record_approval(request.id, "requested", None, d, request.reason.clone())
            .await;
        let cancel = if pty { "; Ctrl-C cancels" } else { "" };
        let justification = match &request.reason {
            Some(_) => String::new(),
            None => format!(" (no justification given: set {REASON_ENV})"),
        };
        self.say(
            &format!(
                "waiting for approval #{} (rule {}; approvers: {}){justification}{cancel}",
                request.id,
                request.rule,
                request.approvers.join(" or ")
            ),
            relay.as_deref_mut(),
        )
        .await;
        let mut kept = 0usize;
        let wait = gw.approvals.wait(&gw.audit, request.id, &ask);
        tokio::pin!(wait);
        let cancelled = loop {
            tokio::select! {
                o = &mut wait => {
                    held.outcome = o;
                    break None;
                }
                m = self.client.channel.wait(), if kept < HELD_BACKLOG => match m {
                    None | Some(ChannelMsg::Close) => {
                        held.gone = true;
                        break Some("the requester went away");
                    }
                    Some(ChannelMsg::Data { data }) if pty && data.contains(&0x03) => {
                        break Some("cancelled by the requester (Ctrl-C)");
                    }
                    Some(m) => {
                        kept += match &m {
                            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
                            _ => 64,
                        };
                        held.backlog.push(m);
                    }
                },
                // The request stays pending in the store: once approved, running the same
                // command again (after the restart) uses the approval.
                _ = gw.cancelled() => {
                    held.outcome = Outcome::Failed(format!(
                        "the bastion is shutting down; request #{} stays pending: once it is approved, run the command again",
                        request.id
                    ));
                    break None;
                }
            }
        };
        if let Some(why) = cancelled {
            gw.approvals.cancel(&gw.audit, request.id, why).await;
            let mut a = request.clone();
            a.decision_reason = Some(why.to_string());
            held.outcome = Outcome::Cancelled(a);
        }
        let (by, reason) = match held.outcome.approval() {
            Some(a) if held.outcome.approved() => {
                (Some(a.approved_by().join(", ")), a.decision_reason.clone())
            }
            Some(a) => (
                a.denied_by().map(|v| v.approver.clone()),
                a.decision_reason.clone(),
            ),
            None => (None, None),
        };
        self.record_approval(request.id, held.outcome.recorded_state(), by, d, reason)
            .await;
        if !held.gone {
            self.say(&held.outcome.user_message(), relay).await;
        }
        held
    }

    async fn record_command(&self, kind: &str, text: &str, d: &Decision) {
        let decision = match d.action {
            Action::Allow => Recorded::Allow,
            Action::Deny => Recorded::Deny,
            Action::Review => Recorded::Review,
        };
        self.record(Event::Command(Command {
            kind: kind.into(),
            text: text.into(),
            decision,
            rule: d.rule.clone(),
            message: (d.action != Action::Allow).then(|| d.message.clone()),
        }))
        .await;
        if d.action == Action::Deny {
            self.gw.audit.record(AuditEvent {
                command: Some(text.into()),
                rule: d.rule.clone(),
                detail: Some(d.message.clone()),
                ..self.audit_event("command.deny")
            });
        } else {
            // Allowed commands are decisions too: the audit log shows who ran what, where.
            self.gw.audit.record(AuditEvent {
                command: Some(text.into()),
                rule: d.rule.clone(),
                detail: Some(kind.into()),
                ..self.audit_event("command.allow")
            });
        }
    }

    /// Checks, connects and relays; returns why the session ended.
    async fn relay(
        &mut self,
        mode: Mode,
        pty: Option<PtyRequest>,
        env: Vec<(String, String)>,
        forwarding: Forwarding,
    ) -> String {
        let mut backlog: Vec<ChannelMsg> = Vec::new();
        if let Mode::Exec(command) = &mode {
            // Legacy scp (`scp -O`) runs as a command on the target: it is a file transfer.
            if command.split_whitespace().next() == Some("scp") && !self.grants.file_transfer {
                let d = Decision {
                    action: Action::Deny,
                    rule: None,
                    message: format!(
                        "file transfer is not allowed for {} on {}",
                        self.conn.login.user, self.target.name
                    ),
                    approvers: Vec::new(),
                    incomplete: false,
                };
                self.record_command("exec", command, &d).await;
                self.client.reply(true).await;
                self.client.refuse(&d.user_message()).await;
                return "file transfer refused".into();
            }
            let d = self.decide(command);
            self.record_command("exec", command, &d).await;
            if d.action == Action::Review {
                // The exec request is answered now so that the client shows the wait.
                self.answer(true).await;
                let held = self.hold(command, &d, pty.is_some(), None).await;
                if held.gone {
                    return format!("client left while waiting for approval: {command}");
                }
                if !held.outcome.approved() {
                    let _ = self.client.channel.exit_status(REFUSED_STATUS).await;
                    let _ = self.client.channel.eof().await;
                    let _ = self.client.channel.close().await;
                    self.record(Event::Exit(Exit {
                        status: Some(REFUSED_STATUS as i32),
                        signal: None,
                        reason: Some("not approved".into()),
                    }))
                    .await;
                    return format!("command not approved: {command}");
                }
                backlog = held.backlog;
            } else if d.action != Action::Allow {
                self.client.reply(true).await;
                self.client.refuse(&d.user_message()).await;
                self.record(Event::Exit(Exit {
                    status: Some(REFUSED_STATUS as i32),
                    signal: None,
                    reason: Some("denied".into()),
                }))
                .await;
                return format!("command denied: {command}");
            }
        }
        let handle = match self.conn.upstream(&self.gw, &self.target).await {
            Ok(h) => h,
            Err(e) => {
                self.gw.audit.record(AuditEvent {
                    detail: Some(e.to_string()),
                    ..self.audit_event("upstream.failure")
                });
                self.answer(true).await;
                self.client.refuse(&e.to_string()).await;
                return format!("target unavailable: {e}");
            }
        };
        let up = match handle.channel_open_session().await {
            Ok(c) => c,
            Err(e) => {
                self.answer(true).await;
                self.client
                    .refuse(&format!(
                        "target {} refused a session: {e}",
                        self.target.name
                    ))
                    .await;
                return format!("target refused a session: {e}");
            }
        };
        let mut up = up;
        let mut tracker = None;
        if let Some(p) = &pty {
            if up
                .request_pty(false, &p.term, p.cols, p.rows, p.px, p.py, &p.modes)
                .await
                .is_err()
            {
                self.answer(false).await;
                return "target refused the pty".into();
            }
            if reads_commands(&mode) {
                let (cols, rows) = term_size(p.cols, p.rows);
                tracker = Some(LineTracker::new(cols, rows));
            }
        }
        for (k, v) in env {
            let _ = up.set_env(false, k, v).await;
        }
        if forwarding.agent {
            let _ = up.agent_forward(false).await;
            self.record(Event::Marker("agent forwarding requested".into()))
                .await;
        }
        if let Some(x) = &forwarding.x11 {
            let _ = up
                .request_x11(
                    false,
                    x.single_connection,
                    x.protocol.clone(),
                    x.cookie.clone(),
                    x.screen,
                )
                .await;
            self.record(Event::Marker("X11 forwarding requested".into()))
                .await;
        }
        let started = match &mode {
            Mode::Shell => up.request_shell(true).await,
            Mode::Exec(c) => up.exec(true, c.as_bytes().to_vec()).await,
            Mode::Subsystem(s) => up.request_subsystem(true, s.clone()).await,
        };
        if started.is_err() {
            self.answer(false).await;
            return "target refused the request".into();
        }
        // The target's answer to shell/exec/subsystem is the client's answer.
        let mut pending_up: Vec<ChannelMsg> = Vec::new();
        loop {
            match up.wait().await {
                Some(ChannelMsg::Success) => {
                    self.answer(true).await;
                    break;
                }
                Some(ChannelMsg::Failure) => {
                    self.answer(false).await;
                    let _ = self.client.channel.close().await;
                    return "target refused the request".into();
                }
                Some(other) => pending_up.push(other),
                None => {
                    self.answer(false).await;
                    self.client
                        .refuse(&format!("connection to {} closed", self.target.name))
                        .await;
                    return "target closed the channel".into();
                }
            }
        }
        let sftp = matches!(&mode, Mode::Subsystem(s) if s == "sftp").then(SftpObserver::new);
        // A shell without a terminal reads its commands as lines of input: check each line.
        let gate = (tracker.is_none() && reads_commands(&mode)).then(LineGate::default);
        let mut relay = Relay {
            tracker,
            gate,
            refused: false,
            buffered: String::new(),
            sftp,
            held_since: None,
            exit: None,
            record_input: self.grants.record_input,
            deferred: Default::default(),
            client_gone: false,
        };
        for m in pending_up {
            if let Some(end) = self.on_target(m, &up, &mut relay).await {
                return end;
            }
        }
        // What the client sent while the command waited for approval.
        for m in backlog {
            if let Some(end) = self.on_client(m, &up, &mut relay).await {
                return end;
            }
        }
        loop {
            while let Some(m) = relay.deferred.pop_front() {
                if let Some(end) = self.on_client(m, &up, &mut relay).await {
                    return end;
                }
            }
            if relay.client_gone {
                let _ = up.close().await;
                return "client left while a line waited for approval".into();
            }
            let echo_deadline = relay.held_since.map(|t| t + ECHO_WAIT);
            tokio::select! {
                m = self.client.channel.wait() => {
                    let Some(m) = m else {
                        let _ = up.close().await;
                        return "client disconnected".into();
                    };
                    if let Some(end) = self.on_client(m, &up, &mut relay).await {
                        return end;
                    }
                }
                m = up.wait() => {
                    let Some(m) = m else {
                        self.client.stderr(&format!("\r\nvigil: connection to {} lost\r\n", self.target.name)).await;
                        let _ = self.client.channel.exit_status(255).await;
                        let _ = self.client.channel.eof().await;
                        let _ = self.client.channel.close().await;
                        return format!("connection to {} lost", self.target.name);
                    };
                    if let Some(end) = self.on_target(m, &up, &mut relay).await {
                        return end;
                    }
                }
                _ = sleep_until(echo_deadline) => {
                    relay.held_since = None;
                    let steps = relay.tracker.as_mut().map(|t| t.echo_timeout()).unwrap_or_default();
                    self.apply(steps, &up, &mut relay).await;
                }
                _ = self.gw.cancelled() => {
                    self.client.stderr("\r\nvigil: the bastion is shutting down\r\n").await;
                    let _ = up.close().await;
                    let _ = self.client.channel.exit_status(255).await;
                    let _ = self.client.channel.close().await;
                    return "bastion shut down".into();
                }
            }
        }
    }

    /// Handles one message from the user's side; `Some(reason)` ends the session.
    async fn on_client(
        &mut self,
        m: ChannelMsg,
        up: &Channel<russh::client::Msg>,
        relay: &mut Relay,
    ) -> Option<String> {
        match m {
            ChannelMsg::Data { data } => {
                if relay.record_input {
                    self.record(Event::Input(data.clone())).await;
                }
                if relay.gate.is_some() {
                    return self.gate_input(&data, false, up, relay).await;
                }
                match relay.tracker.as_mut() {
                    Some(t) => {
                        if data.contains(&0x03) {
                            relay.buffered.clear(); // Ctrl-C: the shell drops an unfinished command
                        }
                        let steps = t.input(&data);
                        self.apply(steps, up, relay).await;
                    }
                    None => {
                        let ops = relay
                            .sftp
                            .as_mut()
                            .map(|o| o.feed(&data))
                            .unwrap_or_default();
                        for op in ops {
                            let allow = Decision::allow();
                            self.record_command("sftp", &op, &allow).await;
                        }
                        let _ = up.data_bytes(data).await;
                    }
                }
            }
            // Only for channels whose input is not checked: it must not bypass the checks.
            ChannelMsg::ExtendedData { data, ext }
                if relay.tracker.is_none() && relay.gate.is_none() =>
            {
                let _ = up.extended_data_bytes(ext, data).await;
            }
            ChannelMsg::Eof => {
                if relay.gate.is_some() {
                    self.gate_input(&[], true, up, relay).await;
                }
                if !relay.refused {
                    let _ = up.eof().await;
                }
            }
            ChannelMsg::Close => {
                let _ = up.close().await;
                return Some("client closed the channel".into());
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                // The target gets the size the line tracker emulates, so both agree.
                let (cols, rows) = match relay.tracker.as_mut() {
                    Some(t) => {
                        let (cols, rows) = term_size(col_width, row_height);
                        t.resize(cols, rows);
                        let (c, r) = t.size();
                        (u32::from(c), u32::from(r))
                    }
                    None => (col_width, row_height),
                };
                let _ = up.window_change(cols, rows, pix_width, pix_height).await;
                self.record(Event::Resize {
                    cols: clamp16(col_width),
                    rows: clamp16(row_height),
                })
                .await;
            }
            ChannelMsg::Signal { signal } => {
                let _ = up.signal(signal).await;
            }
            ChannelMsg::AgentForward { .. } | ChannelMsg::RequestX11 { .. } => {
                // Too late once the command runs: the target session is already set up, so
                // nothing is forwarded (`server::Handler` answered from the grants alone).
            }
            ChannelMsg::RequestPty { .. }
            | ChannelMsg::RequestShell { .. }
            | ChannelMsg::Exec { .. } => {
                // One command per channel.
                self.client.reply(false).await;
            }
            ChannelMsg::SetEnv { .. } => {}
            _ => {}
        }
        None
    }

    /// Handles one message from the target; `Some(reason)` ends the session.
    async fn on_target(
        &mut self,
        m: ChannelMsg,
        up: &Channel<russh::client::Msg>,
        relay: &mut Relay,
    ) -> Option<String> {
        match m {
            ChannelMsg::Data { data } => {
                self.record(Event::Output(data.clone())).await;
                let steps = relay.tracker.as_mut().map(|t| t.output(&data));
                if self.client.channel.data_bytes(data).await.is_err() {
                    return Some("client went away".into());
                }
                if let Some(steps) = steps {
                    self.apply(steps, up, relay).await;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                self.record(Event::Output(data.clone())).await;
                let steps = relay.tracker.as_mut().map(|t| t.output(&data));
                let _ = self.client.channel.extended_data_bytes(ext, data).await;
                if let Some(steps) = steps {
                    self.apply(steps, up, relay).await;
                }
            }
            ChannelMsg::Eof => {
                let _ = self.client.channel.eof().await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                let exit_status = if relay.refused {
                    REFUSED_STATUS
                } else {
                    exit_status
                };
                relay.exit = Some(Exit {
                    status: i32::try_from(exit_status).ok(),
                    signal: None,
                    reason: None,
                });
                let _ = self.client.channel.exit_status(exit_status).await;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                relay.exit = Some(Exit {
                    status: None,
                    signal: Some(sig_name(&signal_name)),
                    reason: Some(error_message.clone()),
                });
                let _ = self
                    .client
                    .handle
                    .exit_signal_request(
                        self.client.id(),
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    )
                    .await;
            }
            ChannelMsg::Close => {
                let _ = self.client.channel.close().await;
                let exit = relay.exit.take().unwrap_or_default();
                self.record(Event::Exit(exit)).await;
                return Some("target closed the channel".into());
            }
            _ => {}
        }
        None
    }

    /// Checks each complete line a terminal-less shell will read before forwarding it. The
    /// first refused line ends the input (what follows could depend on it): the shell gets EOF,
    /// finishes what it already read, and the user gets the reason and exit status 126.
    async fn gate_input(
        &mut self,
        data: &[u8],
        eof: bool,
        up: &Channel<russh::client::Msg>,
        relay: &mut Relay,
    ) -> Option<String> {
        if relay.refused {
            return None;
        }
        let gate = relay.gate.as_mut()?;
        let (lines, unreadable) = match gate.feed(data, eof) {
            Ok(lines) => (lines, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        for line in lines {
            let text = String::from_utf8_lossy(&line).into_owned();
            // What the shell runs if the line goes through: the buffered start of a multi-line
            // command and this line. That whole text is what an approver is shown.
            // (Trimmed as the decision's text is: the approver sees exactly what was judged.)
            let judged = text.trim_end_matches(['\n', '\r']);
            let whole = joined(&relay.buffered, judged);
            let d = self.decide_line(judged, &mut relay.buffered);
            if !text.trim().is_empty() {
                self.record_command("stdin", text.trim_end(), &d).await;
            }
            if d.action == Action::Review {
                let held = self.hold(&whole, &d, false, None).await;
                relay.deferred.extend(held.backlog);
                if held.gone {
                    relay.client_gone = true;
                    return None;
                }
                if held.outcome.approved() {
                    relay.buffered.clear();
                    let _ = up.data_bytes(Bytes::from(line)).await;
                    continue;
                }
                relay.refused = true;
                let _ = up.eof().await;
                return None;
            }
            if d.action != Action::Allow {
                self.refuse_input(&d, up, relay).await;
                return None;
            }
            let _ = up.data_bytes(Bytes::from(line)).await;
        }
        if let Some(why) = unreadable {
            let d = Decision::refuse_unknown(why);
            self.record_command("stdin", "<input line not readable>", &d)
                .await;
            self.refuse_input(&d, up, relay).await;
        }
        None
    }

    async fn refuse_input(
        &mut self,
        d: &Decision,
        up: &Channel<russh::client::Msg>,
        relay: &mut Relay,
    ) {
        relay.refused = true;
        self.client
            .stderr(&format!("vigil: {}\n", d.user_message()))
            .await;
        let _ = up.eof().await;
    }

    /// Carries out what the line tracker asks for: forward bytes, or decide a held line.
    async fn apply(
        &mut self,
        steps: Vec<Step>,
        up: &Channel<russh::client::Msg>,
        relay: &mut Relay,
    ) {
        let mut queue = std::collections::VecDeque::from(steps);
        while let Some(step) = queue.pop_front() {
            match step {
                Step::Forward(bytes) => {
                    let _ = up.data_bytes(Bytes::from(bytes)).await;
                }
                Step::Discarded(n) => {
                    tracing::debug!(session = %self.recorder.session_id(), bytes = n, "typed input discarded after a refused line");
                }
                Step::Submit(submitted) => {
                    relay.held_since = None;
                    let verdict = self.judge_line(submitted, relay).await;
                    if let Some(t) = relay.tracker.as_mut() {
                        queue.extend(t.resolve(verdict));
                    }
                }
            }
        }
        // A submit waiting for its echo: start the clock once.
        match relay.tracker.as_ref().map(|t| t.awaiting_echo()) {
            Some(true) if relay.held_since.is_none() => {
                relay.held_since = Some(tokio::time::Instant::now())
            }
            Some(false) => relay.held_since = None,
            _ => {}
        }
    }

    /// Decides about a submitted interactive line; tells the user when it is refused.
    async fn judge_line(&mut self, submitted: Submitted, relay: &mut Relay) -> Verdict {
        let refusal = match submitted {
            Submitted::Command(line) => {
                if line.trim().is_empty() {
                    return Verdict::Allow;
                }
                let whole = joined(&relay.buffered, &line);
                let d = self.decide_line(&line, &mut relay.buffered);
                self.record_command("shell", &line, &d).await;
                if d.action == Action::Allow {
                    return Verdict::Allow;
                }
                if d.action == Action::Review {
                    let held = self.hold(&whole, &d, true, Some(relay)).await;
                    relay.deferred.extend(held.backlog);
                    relay.client_gone |= held.gone;
                    if held.outcome.approved() {
                        relay.buffered.clear();
                        return Verdict::Allow;
                    }
                    return Verdict::Cancel;
                }
                d
            }
            Submitted::NotACommand(_) => return Verdict::Allow,
            Submitted::Unknown(why) => {
                if self.target.on_unknown_line == UnknownLine::Allow {
                    return Verdict::Allow;
                }
                let d = Decision::refuse_unknown(&why.to_string());
                self.record_command("shell", &format!("<line not readable: {why}>"), &d)
                    .await;
                d
            }
        };
        let msg = format!("\r\nvigil: {}\r\n", refusal.user_message());
        self.record(Event::Output(Bytes::from(msg.clone()))).await;
        if let Some(t) = relay.tracker.as_mut() {
            t.local_output(msg.as_bytes());
        }
        let _ = self.client.channel.data_bytes(Bytes::from(msg)).await;
        Verdict::Cancel
    }

    async fn close(self, reason: &str) {
        let event = AuditEvent {
            detail: Some(reason.to_string()),
            ..self.audit_event("session.end")
        };
        let id = self.recorder.session_id().to_string();
        if let Err(e) = self.recorder.close(reason).await {
            tracing::error!(session = ?event.session, error = %e, "closing the recording failed");
        }
        // After the recording: the index is informational and must not delay sealing.
        self.gw.approvals.session_ended(&id, reason).await;
        self.gw.audit.record(event);
    }
}

struct Relay {
    tracker: Option<LineTracker>,
    gate: Option<LineGate>,
    /// An input line was refused: the exit status the user sees is vigil's.
    refused: bool,
    /// Lines of an unfinished command the shell holds (see `decide_line`).
    buffered: String,
    sftp: Option<SftpObserver>,
    held_since: Option<tokio::time::Instant>,
    exit: Option<Exit>,
    record_input: bool,
    /// Client messages that arrived while a line waited for approval, handled next.
    deferred: std::collections::VecDeque<ChannelMsg>,
    /// The client went away while a line waited for approval.
    client_gone: bool,
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn sig_name(s: &Sig) -> String {
    match s {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(c) => c.clone(),
    }
}

/// A line after the buffered start of a multi-line command: the text the shell runs.
fn joined(buffered: &str, line: &str) -> String {
    if buffered.is_empty() {
        line.to_string()
    } else {
        format!("{buffered}\n{line}")
    }
}
