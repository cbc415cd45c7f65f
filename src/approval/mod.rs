//! Just-in-time approval: the async side of a `review` decision. A held command becomes a
//! request in the state store; approvers vote from their own identity; the session that holds
//! the command waits for the outcome and runs the command only with an approval it consumed.
//!
//! Separation of duties is enforced here and in the store, never by a user interface: the
//! requester never votes on their own request (there is no admin exception), a voter must hold a
//! role the rule names in `approvers` (the roles are read from the config at vote time, the
//! rule's approver roles are fixed when the request is made), `min_approvals` counts distinct
//! approvers, any denial ends the request, a request that timed out takes no vote, and an
//! approval is consumed atomically: a one-shot approval runs one command once; a time box (rule
//! `grant`) covers the requester's commands of that rule on that target until it ends.
//!
//! Instances learn of decisions by polling the store (every `approvals.poll_interval`), so a
//! vote cast on any instance sharing the store, or by `vigil approvals` on the host, reaches the
//! waiting session; votes cast on the same instance wake it at once, and with a PostgreSQL store
//! so do votes cast anywhere (LISTEN/NOTIFY; polling stays as the fallback).

pub mod command;
pub mod store;
pub mod webhook;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    audit::{Audit, AuditEvent},
    config::Config,
};
pub use store::{LiveSession, StateStore, StoreError, VoteError, VoteOutcome};

/// Where the engine's audit events go: the bastion's audit log, or (for `vigil approvals` on the
/// host, which must not write the log a running bastion owns) a [`Deferred`] list that goes to
/// the store's outbox, from which a running instance records it.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}

impl AuditSink for Audit {
    fn record(&self, event: AuditEvent) {
        Audit::record(self, event)
    }
}

/// Audit events kept for the outbox.
#[derive(Default)]
pub struct Deferred(std::sync::Mutex<Vec<AuditEvent>>);

impl AuditSink for Deferred {
    fn record(&self, event: AuditEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

impl Deferred {
    pub fn take(&self) -> Vec<AuditEvent> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// How long a request waits for its approvers when the rule names no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often a waiting session re-reads its request when no poll interval is configured.
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);
/// The longest command or statement text stored with a request.
const MAX_COMMAND: usize = 64 << 10;
/// Failed reads of the state store a waiting command tolerates in a row before it is refused.
const STORE_RETRIES: u32 = 3;
/// How often a running bastion expires pending requests whose deadline passed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// An instance unseen for this long no longer has live sessions in the index (it crashed).
pub const LIVE_WINDOW: Duration = Duration::from_secs(30);
/// The longest justification or decision reason stored.
const MAX_REASON: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    /// A one-shot approval whose command ran.
    Used,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Used => "used",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            "cancelled" => State::Cancelled,
            "used" => State::Used,
            _ => return None,
        })
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vote {
    pub approver: String,
    pub approve: bool,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// A request as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub id: u64,
    pub requester: String,
    pub target: String,
    pub protocol: String,
    /// The exact command line or SQL text that waits.
    pub command: String,
    pub rule: String,
    /// The requester's justification.
    pub reason: Option<String>,
    /// Roles allowed to approve (the rule's `approvers` when the request was made).
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// 0: one command; otherwise the time box an approval grants, in seconds.
    pub grant_secs: u64,
    pub session: Option<String>,
    /// The vigil instance that holds the command.
    pub instance: String,
    pub state: State,
    pub created_ms: i64,
    /// Pending until then; later it has expired.
    pub expires_ms: i64,
    /// An approval is usable until then (one command, or the time box).
    pub valid_until_ms: Option<i64>,
    pub decided_ms: Option<i64>,
    /// The reason given with the deciding vote (or why it expired or was cancelled).
    pub decision_reason: Option<String>,
    pub votes: Vec<Vote>,
}

impl Approval {
    /// Who approved, in order.
    pub fn approved_by(&self) -> Vec<String> {
        self.votes
            .iter()
            .filter(|v| v.approve)
            .map(|v| v.approver.clone())
            .collect()
    }

    /// Who denied, if anyone did.
    pub fn denied_by(&self) -> Option<&Vote> {
        self.votes.iter().find(|v| !v.approve)
    }

    /// A human summary, several lines, for `approvals list`.
    pub fn describe(&self, now_ms: i64) -> String {
        let approvals = self.votes.iter().filter(|v| v.approve).count();
        let left = match self.state {
            State::Pending => format!(
                ", {} approval(s) of {} so far, expires in {}s",
                approvals,
                self.min_approvals,
                (self.expires_ms - now_ms).max(0) / 1000
            ),
            _ => String::new(),
        };
        let mut out = format!(
            "#{} {}{left}\n  requester: {}\n  target:    {} ({})\n  rule:      {} (approvers: {}; {})\n  command:   {}\n  reason:    {}\n",
            self.id,
            self.state,
            self.requester,
            self.target,
            self.protocol,
            self.rule,
            self.approvers.join(", "),
            if self.grant_secs > 0 {
                format!("grants {}s", self.grant_secs)
            } else {
                "one command".into()
            },
            self.command,
            self.reason.as_deref().unwrap_or("(none given)"),
        );
        for v in &self.votes {
            out.push_str(&format!(
                "  {}: {}{}\n",
                if v.approve {
                    "approved by"
                } else {
                    "denied by"
                },
                v.approver,
                v.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// A request to store.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub requester: String,
    pub target: String,
    pub protocol: String,
    pub command: String,
    pub rule: String,
    pub reason: Option<String>,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub grant_secs: u64,
    pub session: Option<String>,
    pub instance: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rule `{0}` is not a review rule of the running config; nothing can approve it")]
    NoSuchRule(String),
    #[error("{approver} may not decide on #{id}: it needs a role among {roles:?}")]
    NotApprover {
        approver: String,
        id: u64,
        roles: Vec<String>,
    },
    #[error("{0} is not a user of this bastion")]
    UnknownUser(String),
    #[error("a denial needs a reason (--reason ...)")]
    ReasonNeeded,
    #[error(transparent)]
    Vote(#[from] VoteError),
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("the command is {0} bytes long; vigil holds commands of at most 64 KiB for approval")]
    TooLong(usize),
}

/// What a held command asks approval for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub command: String,
    pub rule: String,
    pub reason: Option<String>,
    pub session: Option<String>,
}

/// The answer to [`Approvals::request`].
#[derive(Debug)]
pub enum Ticket {
    /// An approval that already covers the command was consumed for it (a time box, or a
    /// one-shot approval of this exact command granted after an earlier request).
    Ready(Approval),
    /// The command waits for this request (new, or an identical one already pending).
    Pending(Approval),
}

/// How a wait ended.
#[derive(Debug)]
pub enum Outcome {
    /// Approved and consumed for this command: run it.
    Approved(Approval),
    Denied(Approval),
    Expired(Approval),
    Cancelled(Approval),
    /// The approval was already used (a replay) or its window ended before it could be used.
    Unusable(Approval),
    /// The store could not answer: the command is refused.
    Failed(String),
}

impl Outcome {
    /// One line for the user who waits.
    pub fn user_message(&self) -> String {
        match self {
            Outcome::Approved(a) => format!(
                "approval #{} granted by {}; running",
                a.id,
                a.approved_by().join(", ")
            ),
            Outcome::Denied(a) => {
                let (by, why) = a
                    .denied_by()
                    .map(|v| (v.approver.as_str(), v.reason.as_deref().unwrap_or("")))
                    .unwrap_or(("an approver", ""));
                format!("approval #{} denied by {by}: {why}; not run", a.id)
            }
            Outcome::Expired(a) => {
                format!("approval #{} timed out without a decision; not run", a.id)
            }
            Outcome::Cancelled(a) => format!(
                "approval #{} cancelled ({}); not run",
                a.id,
                a.decision_reason.as_deref().unwrap_or("cancelled")
            ),
            Outcome::Unusable(a) => format!(
                "approval #{} was already used or is no longer valid; not run",
                a.id
            ),
            Outcome::Failed(why) => format!("approval cannot be decided ({why}); not run"),
        }
    }

    pub fn approved(&self) -> bool {
        matches!(self, Outcome::Approved(_))
    }

    /// The state name recorded in the session's recording.
    pub fn recorded_state(&self) -> &'static str {
        match self {
            Outcome::Approved(_) => "approved",
            Outcome::Denied(_) => "denied",
            Outcome::Expired(_) => "expired",
            Outcome::Cancelled(_) | Outcome::Unusable(_) | Outcome::Failed(_) => "cancelled",
        }
    }

    pub fn approval(&self) -> Option<&Approval> {
        match self {
            Outcome::Approved(a)
            | Outcome::Denied(a)
            | Outcome::Expired(a)
            | Outcome::Cancelled(a)
            | Outcome::Unusable(a) => Some(a),
            Outcome::Failed(_) => None,
        }
    }
}

/// A review rule's approval settings, from the running config.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub approvers: Vec<String>,
    pub timeout: Duration,
    pub grant: Option<Duration>,
    pub min_approvals: u32,
}

impl RuleSettings {
    pub fn of(config: &Config, rule: &str) -> Option<RuleSettings> {
        let r = config
            .file
            .rules
            .iter()
            .find(|r| r.name == rule && r.action == "review")?;
        let dur = |s: &Option<String>| s.as_deref().and_then(|t| humantime::parse_duration(t).ok());
        Some(RuleSettings {
            approvers: r.approvers.clone(),
            timeout: dur(&r.timeout).unwrap_or(DEFAULT_TIMEOUT),
            grant: dur(&r.grant),
            min_approvals: r.min_approvals.unwrap_or(1).max(1),
        })
    }
}

/// The approvals engine of one vigil instance (or of `vigil approvals` on the host).
pub struct Approvals {
    store: Arc<dyn StateStore>,
    instance: String,
    poll: Duration,
    changed: Notify,
    webhook: Option<webhook::Webhook>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// A justification or reason as stored: control characters removed, trimmed, bounded; empty is
/// none.
pub fn clean_reason(s: &str) -> Option<String> {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    let s = s.trim();
    (!s.is_empty()).then(|| clip(s, MAX_REASON))
}

impl Approvals {
    /// Opens the state store `server.state` names and the webhook `approvals.webhook` names.
    pub async fn open(config: &Config) -> Result<Approvals, ApprovalError> {
        let store = store::open(&config.state, &config.base).await?;
        let settings = config.file.approvals.clone().unwrap_or_default();
        let poll = settings
            .poll_interval
            .as_deref()
            .and_then(|p| humantime::parse_duration(p).ok())
            .unwrap_or(DEFAULT_POLL);
        let webhook = match &settings.webhook {
            Some(url) => Some(webhook::Webhook::new(url).map_err(ApprovalError::Webhook)?),
            None => None,
        };
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "vigil".into());
        let instance = settings
            .instance
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", std::process::id()));
        Ok(Approvals {
            store,
            instance,
            poll,
            changed: Notify::new(),
            webhook,
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Waits until the webhook deliveries under way are done, or `grace` passed.
    pub async fn drain(&self, grace: Duration) {
        if let Some(w) = &self.webhook {
            w.drain(grace).await;
        }
    }

    /// Asks approval for a held command: uses an approval that already covers it, joins an
    /// identical pending request, or makes a new one (audit `approval.request`, webhook).
    pub async fn request(
        &self,
        config: &Config,
        audit: &dyn AuditSink,
        ask: Ask,
    ) -> Result<Ticket, ApprovalError> {
        let rule = RuleSettings::of(config, &ask.rule)
            .ok_or_else(|| ApprovalError::NoSuchRule(ask.rule.clone()))?;
        // Not clipped: an approval of a prefix must not cover a longer command.
        if ask.command.len() > MAX_COMMAND {
            return Err(ApprovalError::TooLong(ask.command.len()));
        }
        let command = ask.command.clone();
        let now = now_ms();
        if let Some(open) = self
            .store
            .find_open(&ask.user, &ask.target, &ask.rule, &command, now)
            .await?
        {
            if open.state == State::Pending {
                return Ok(Ticket::Pending(open));
            }
            if self.store.consume(open.id, now).await? {
                self.use_event(audit, &open, &ask, &command);
                return Ok(Ticket::Ready(open));
            }
        }
        let timeout = i64::try_from(rule.timeout.as_millis()).unwrap_or(i64::MAX);
        let new = NewApproval {
            requester: ask.user.clone(),
            target: ask.target.clone(),
            protocol: ask.protocol.clone(),
            command,
            rule: ask.rule.clone(),
            reason: ask.reason.as_deref().and_then(clean_reason),
            approvers: rule.approvers.clone(),
            min_approvals: rule.min_approvals,
            grant_secs: rule.grant.map(|g| g.as_secs().max(1)).unwrap_or(0),
            session: ask.session.clone(),
            instance: self.instance.clone(),
            created_ms: now,
            expires_ms: now.saturating_add(timeout),
        };
        let a = self.store.create(new).await?;
        audit.record(AuditEvent {
            user: Some(a.requester.clone()),
            target: Some(a.target.clone()),
            protocol: Some(a.protocol.clone()),
            session: a.session.clone(),
            command: Some(a.command.clone()),
            rule: Some(a.rule.clone()),
            approval: Some(a.id),
            reason: a.reason.clone(),
            detail: Some(format!(
                "approvers: {}; {} approval(s) needed",
                a.approvers.join(", "),
                a.min_approvals
            )),
            ..AuditEvent::new("approval.request")
        });
        self.notify("approval.request", &a, None, a.reason.clone());
        Ok(Ticket::Pending(a))
    }

    /// Waits for the outcome of request `id` and, when it is approved, consumes the approval for
    /// this one command. Cancel by dropping the future and calling [`Approvals::cancel`].
    pub async fn wait(&self, audit: &dyn AuditSink, id: u64, ask: &Ask) -> Outcome {
        let mut failures = 0u32;
        loop {
            // Listened for before the request is read: a change between the read and the wait
            // below would otherwise wake nobody (`notify_waiters` keeps no permit), and the wait
            // would last until the next poll.
            let remote = self.store.changed();
            let local = self.changed.notified();
            tokio::pin!(local);
            local.as_mut().enable();
            let mut remote_wait = remote.as_deref().map(|n| Box::pin(n.notified()));
            if let Some(r) = remote_wait.as_mut() {
                r.as_mut().enable();
            }
            let a = match self.store.get(id).await {
                Ok(Some(a)) => a,
                Ok(None) => return Outcome::Failed(format!("request #{id} vanished")),
                // A shared store may blip: retry a few times, then refuse.
                Err(e) if failures < STORE_RETRIES => {
                    failures += 1;
                    tracing::warn!(approval = id, error = %e, "state store read failed; retrying");
                    tokio::time::sleep(self.poll * failures).await;
                    continue;
                }
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            failures = 0;
            let now = now_ms();
            match a.state {
                State::Pending if now >= a.expires_ms => {
                    match self
                        .store
                        .close_pending(id, State::Expired, "timed out".into(), now)
                        .await
                    {
                        Ok(true) => {
                            audit.record(AuditEvent {
                                detail: Some("timed out without a decision".into()),
                                ..request_event(&a, "approval.expire")
                            });
                            self.notify("approval.expire", &a, None, None);
                        }
                        Ok(false) => {}
                        Err(e) => return Outcome::Failed(e.to_string()),
                    }
                }
                State::Pending => {
                    let left =
                        Duration::from_millis(u64::try_from(a.expires_ms - now).unwrap_or(0));
                    let elsewhere = async {
                        match remote_wait {
                            Some(n) => n.await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = &mut local => {}
                        _ = elsewhere => {}
                        _ = tokio::time::sleep(self.poll.min(left)) => {}
                    }
                }
                State::Approved => {
                    return match self.store.consume(id, now).await {
                        Ok(true) => {
                            self.use_event(audit, &a, ask, &a.command);
                            Outcome::Approved(a)
                        }
                        Ok(false) => {
                            audit.record(AuditEvent {
                                detail: Some("approval already used or no longer valid".into()),
                                ..request_event(&a, "approval.replay")
                            });
                            Outcome::Unusable(a)
                        }
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                }
                State::Denied => return Outcome::Denied(a),
                State::Expired => return Outcome::Expired(a),
                State::Cancelled => return Outcome::Cancelled(a),
                State::Used => {
                    audit.record(AuditEvent {
                        detail: Some("approval already used".into()),
                        ..request_event(&a, "approval.replay")
                    });
                    return Outcome::Unusable(a);
                }
            }
        }
    }

    /// The requester gave up waiting (Ctrl-C, disconnect): a pending request is cancelled.
    pub async fn cancel(&self, audit: &dyn AuditSink, id: u64, why: &str) {
        let cancelled = self
            .store
            .close_pending(id, State::Cancelled, why.to_string(), now_ms())
            .await;
        match cancelled {
            Ok(true) => {
                if let Ok(Some(a)) = self.store.get(id).await {
                    audit.record(AuditEvent {
                        detail: Some(why.to_string()),
                        ..request_event(&a, "approval.cancel")
                    });
                    self.notify("approval.cancel", &a, None, Some(why.to_string()));
                }
                self.changed.notify_waiters();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(approval = id, error = %e, "cannot cancel an approval request")
            }
        }
    }

    /// One approver's decision, with every separation-of-duties check. Refusals are audited
    /// (`approval.refused`) and returned. `source` says where the approver acted from (their
    /// SSH client's address, or `host` for `vigil approvals`).
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        config: &Config,
        audit: &dyn AuditSink,
        approver: &str,
        id: u64,
        approve: bool,
        reason: Option<&str>,
        source: Option<String>,
    ) -> Result<Approval, ApprovalError> {
        let reason = reason.and_then(clean_reason);
        let result = self
            .check_and_vote(config, approver, id, approve, reason.clone())
            .await;
        match &result {
            Ok(a) => {
                let action = if approve {
                    "approval.approve"
                } else {
                    "approval.deny"
                };
                audit.record(AuditEvent {
                    user: Some(approver.to_string()),
                    requester: Some(a.requester.clone()),
                    reason: reason.clone(),
                    source: source.clone(),
                    detail: Some(format!("now {}", a.state)),
                    ..request_event(a, action)
                });
                self.notify(action, a, Some(approver), reason.clone());
                if a.state == State::Approved {
                    audit.record(AuditEvent {
                        user: Some(a.requester.clone()),
                        detail: Some(format!(
                            "approved by {}; {}",
                            a.approved_by().join(", "),
                            if a.grant_secs > 0 {
                                format!("time box of {}s", a.grant_secs)
                            } else {
                                "one command".into()
                            }
                        )),
                        ..request_event(a, "approval.granted")
                    });
                    self.notify("approval.granted", a, Some(approver), reason.clone());
                }
                self.changed.notify_waiters();
            }
            Err(e) => {
                let requester = match self.store.get(id).await {
                    Ok(Some(a)) => Some(a.requester),
                    _ => None,
                };
                audit.record(AuditEvent {
                    user: Some(approver.to_string()),
                    requester,
                    source,
                    approval: Some(id),
                    reason,
                    detail: Some(e.to_string()),
                    ..AuditEvent::new("approval.refused")
                });
            }
        }
        result
    }

    async fn check_and_vote(
        &self,
        config: &Config,
        approver: &str,
        id: u64,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Approval, ApprovalError> {
        if !approve && reason.is_none() {
            return Err(ApprovalError::ReasonNeeded);
        }
        if config.directory.user(approver).is_none() {
            return Err(ApprovalError::UnknownUser(approver.to_string()));
        }
        let a = self.store.get(id).await?.ok_or(VoteError::NotFound(id))?;
        if a.requester == approver {
            return Err(VoteError::OwnRequest(approver.to_string(), id).into());
        }
        let roles = config.directory.roles_of(approver);
        if !a.approvers.iter().any(|r| roles.contains(r)) {
            return Err(ApprovalError::NotApprover {
                approver: approver.to_string(),
                id,
                roles: a.approvers.clone(),
            });
        }
        let vote = Vote {
            approver: approver.to_string(),
            approve,
            reason,
            at_ms: now_ms(),
        };
        match self.store.vote(id, vote, now_ms()).await? {
            VoteOutcome::Counted(a) => Ok(*a),
            VoteOutcome::Refused(e) => Err(e.into()),
        }
    }

    /// Expires pending requests whose deadline passed (also those nobody waits for any more),
    /// with their audit events and notices. Any instance may do it: only one wins each.
    pub async fn sweep(&self, audit: &dyn AuditSink) -> Result<usize, ApprovalError> {
        let now = now_ms();
        self.store.sessions_seen(self.instance.clone(), now).await?;
        let mut expired = 0;
        for a in self.store.list(false, 1000).await? {
            if a.expires_ms <= now
                && self
                    .store
                    .close_pending(a.id, State::Expired, "timed out".into(), now)
                    .await?
            {
                audit.record(AuditEvent {
                    detail: Some("timed out without a decision".into()),
                    ..request_event(&a, "approval.expire")
                });
                self.notify("approval.expire", &a, None, None);
                expired += 1;
            }
        }
        if expired > 0 {
            self.changed.notify_waiters();
        }
        Ok(expired)
    }

    /// The session index: a session started on this instance. The index is informational (the
    /// recordings are the record), so a failure is logged and the session goes on.
    pub async fn session_started(
        &self,
        id: &str,
        protocol: &str,
        user: &str,
        target: &str,
        client: Option<String>,
    ) {
        let row = LiveSession {
            id: id.to_string(),
            protocol: protocol.to_string(),
            user: user.to_string(),
            target: target.to_string(),
            client,
            instance: self.instance.clone(),
            started_ms: now_ms(),
        };
        if let Err(e) = self.store.session_started(row).await {
            tracing::warn!(session = id, error = %e, "cannot add the session to the index");
        }
    }

    pub async fn session_ended(&self, id: &str, reason: &str) {
        if let Err(e) = self
            .store
            .session_ended(id.to_string(), reason.to_string(), now_ms())
            .await
        {
            tracing::warn!(session = id, error = %e, "cannot close the session in the index");
        }
    }

    /// Sessions running now on any instance that shares the store (one seen within
    /// [`LIVE_WINDOW`]), newest first.
    pub async fn live_sessions(&self) -> Result<Vec<LiveSession>, ApprovalError> {
        let since = now_ms().saturating_sub(i64::try_from(LIVE_WINDOW.as_millis()).unwrap_or(0));
        Ok(self.store.live_sessions(since).await?)
    }

    /// Puts audit events in the store's outbox, for a running instance to record in its log.
    pub async fn defer_audit(&self, events: Vec<AuditEvent>) -> Result<(), ApprovalError> {
        let json = events
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .collect();
        Ok(self.store.outbox_push(json, now_ms()).await?)
    }

    /// Records the outbox's audit events (from `vigil approvals` on the host) in this
    /// instance's log, each once.
    pub async fn drain_outbox(&self, audit: &dyn AuditSink) -> Result<usize, ApprovalError> {
        let events = self.store.outbox_take(100).await?;
        let n = events.len();
        for text in events {
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => audit.record(event_from_json(&v)),
                Err(e) => {
                    tracing::error!(error = %e, "an audit event in the outbox does not parse")
                }
            }
        }
        Ok(n)
    }

    /// Requests, newest first: pending ones, or `all`.
    pub async fn list(&self, all: bool) -> Result<Vec<Approval>, ApprovalError> {
        Ok(self.store.list(all, 200).await?)
    }

    pub async fn get(&self, id: u64) -> Result<Option<Approval>, ApprovalError> {
        Ok(self.store.get(id).await?)
    }

    fn use_event(&self, audit: &dyn AuditSink, a: &Approval, ask: &Ask, command: &str) {
        audit.record(AuditEvent {
            user: Some(ask.user.clone()),
            session: ask.session.clone(),
            command: Some(command.to_string()),
            detail: Some(if a.grant_secs > 0 {
                "within a time-box grant".into()
            } else {
                "one-shot approval consumed".into()
            }),
            ..request_event(a, "grant.use")
        });
    }

    fn notify(&self, event: &str, a: &Approval, actor: Option<&str>, reason: Option<String>) {
        if let Some(w) = &self.webhook {
            w.send(webhook::Notice {
                event: event.to_string(),
                time_ms: now_ms(),
                instance: self.instance.clone(),
                actor: actor.map(str::to_string),
                reason,
                approval: a.clone(),
            });
        }
    }
}

/// An audit event as `serde_json` wrote it for the outbox.
fn event_from_json(v: &serde_json::Value) -> AuditEvent {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    AuditEvent {
        user: text("user"),
        source: text("source"),
        target: text("target"),
        session: text("session"),
        protocol: text("protocol"),
        command: text("command"),
        rule: text("rule"),
        detail: text("detail"),
        approval: v.get("approval").and_then(|x| x.as_u64()),
        requester: text("requester"),
        reason: text("reason"),
        ..AuditEvent::new(&text("action").unwrap_or_else(|| "approval.unknown".into()))
    }
}

/// The audit event of a request, without an actor.
fn request_event(a: &Approval, action: &str) -> AuditEvent {
    AuditEvent {
        user: Some(a.requester.clone()),
        target: Some(a.target.clone()),
        protocol: Some(a.protocol.clone()),
        session: a.session.clone(),
        command: Some(a.command.clone()),
        rule: Some(a.rule.clone()),
        approval: Some(a.id),
        ..AuditEvent::new(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Approval {
        Approval {
            id: 7,
            requester: "alice".into(),
            target: "web1".into(),
            protocol: "ssh".into(),
            command: "systemctl restart app".into(),
            rule: "restarts".into(),
            reason: Some("INC-1".into()),
            approvers: vec!["reviewer".into()],
            min_approvals: 2,
            grant_secs: 0,
            session: None,
            instance: "i".into(),
            state: State::Pending,
            created_ms: 1_000,
            expires_ms: 61_000,
            valid_until_ms: None,
            decided_ms: None,
            decision_reason: None,
            votes: Vec::new(),
        }
    }

    fn vote(who: &str, approve: bool, at: i64) -> Vote {
        Vote {
            approver: who.into(),
            approve,
            reason: (!approve).then(|| "no".into()),
            at_ms: at,
        }
    }

    #[test]
    fn votes_follow_separation_of_duties() {
        let a = pending();
        // The requester never votes, whatever their roles.
        assert_eq!(
            store::apply_vote(&a, &vote("alice", true, 2_000), 2_000),
            Err(VoteError::OwnRequest("alice".into(), 7))
        );
        // One approval of two: still pending.
        let a1 = store::apply_vote(&a, &vote("bob", true, 2_000), 2_000).unwrap();
        assert_eq!(a1.state, State::Pending);
        // The same approver twice does not count twice.
        assert_eq!(
            store::apply_vote(&a1, &vote("bob", true, 3_000), 3_000),
            Err(VoteError::AlreadyVoted {
                id: 7,
                approver: "bob".into()
            })
        );
        // A second distinct approver approves; a one-shot approval lasts the rule's timeout.
        let a2 = store::apply_vote(&a1, &vote("dave", true, 3_000), 3_000).unwrap();
        assert_eq!(a2.state, State::Approved);
        assert_eq!(a2.valid_until_ms, Some(63_000));
        assert_eq!(a2.approved_by(), ["bob", "dave"]);
        // Decided requests take no more votes.
        assert!(matches!(
            store::apply_vote(&a2, &vote("erin", false, 4_000), 4_000),
            Err(VoteError::NotPending { .. })
        ));
        // Any denial ends the request.
        let d = store::apply_vote(&a1, &vote("erin", false, 3_000), 3_000).unwrap();
        assert_eq!(d.state, State::Denied);
        assert_eq!(d.decision_reason.as_deref(), Some("no"));
        // No vote after the deadline.
        assert_eq!(
            store::apply_vote(&a, &vote("bob", true, 61_000), 61_000),
            Err(VoteError::Expired(7))
        );
    }

    #[test]
    fn a_time_box_lasts_the_grant() {
        let mut a = pending();
        a.min_approvals = 1;
        a.grant_secs = 1800;
        let a = store::apply_vote(&a, &vote("bob", true, 5_000), 5_000).unwrap();
        assert_eq!(a.valid_until_ms, Some(5_000 + 1_800_000));
    }

    #[test]
    fn outbox_events_round_trip() {
        let e = AuditEvent {
            user: Some("bob".into()),
            source: Some("host:uid 0".into()),
            approval: Some(42),
            reason: Some("ok".into()),
            ..AuditEvent::new("approval.approve")
        };
        let back = event_from_json(&serde_json::to_value(&e).unwrap());
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&e).unwrap()
        );
    }

    #[test]
    fn reasons_are_cleaned() {
        assert_eq!(
            clean_reason("  \x1b[2Jhi\n there "),
            Some("[2Jhi there".into())
        );
        assert_eq!(clean_reason(" \t "), None);
        assert_eq!(clean_reason(&"é".repeat(1000)).map(|s| s.len()), Some(1024));
    }
}
