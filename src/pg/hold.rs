//! Holding a Postgres statement that a `review` rule matched until it is approved: the client
//! gets a NoticeResponse naming the request (`vigil: waiting for approval #42 ...`) while the
//! statement waits in vigil; nothing of it reaches the target. The answer is the decision the
//! relay then applies: allow once the approval was consumed for this statement, else a refusal
//! with the reason (denied, timed out, cancelled), which the client gets as SQLSTATE 42501.
//!
//! What one approval covers: a simple Query message (every statement of that string, once), or
//! an extended-protocol Parse together with the first Bind of the statement it prepares (a
//! second Bind of that prepared statement is refused: each execution with other parameters
//! would need its own approval). A time-box grant (rule `grant`) covers the requester's
//! statements of that rule on that target without asking until it ends.
//!
//! A CancelRequest (psql's Ctrl-C) cancels the request the session waits for.
//!
//! The requester's justification is a comment at the start of the statement:
//! `/* reason: INC-42 fix the stuck order */ UPDATE orders ...` (or `-- reason: ...`).

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::wire::{
    backend::{self, Severity},
    BackendKey,
};
use crate::{
    approval::{Ask, Outcome, Ticket},
    daemon::Gateway,
    policy::{Action, Decision},
    recording::{
        event::{Approval, Event},
        Recorder,
    },
};

/// Who waits, for the request.
pub struct Holder<'a> {
    pub gw: &'a Arc<Gateway>,
    pub recorder: &'a Recorder,
    pub user: &'a str,
    pub target: &'a str,
    /// The session's cancel key: a CancelRequest with it cancels the request.
    pub key: BackendKey,
}

impl Holder<'_> {
    /// Waits for the approval of `sql` (decided `review` as `d`) and returns what to do with it.
    pub async fn hold<W: AsyncWrite + Unpin>(
        &self,
        sql: &str,
        d: &Decision,
        out: &mut W,
        client_gone: impl std::future::Future<Output = ()>,
    ) -> Decision {
        let gw = self.gw;
        let ask = Ask {
            user: self.user.to_string(),
            target: self.target.to_string(),
            protocol: "postgres".into(),
            command: sql.to_string(),
            rule: d.rule.clone().unwrap_or_default(),
            reason: justification(sql),
            session: Some(self.recorder.session_id().to_string()),
        };
        let config = gw.config();
        let request = match gw.approvals.request(&config, &gw.audit, ask.clone()).await {
            Ok(Ticket::Ready(a)) => {
                self.notice(
                    out,
                    &format!("vigil: covered by approval #{} (rule {})", a.id, a.rule),
                )
                .await;
                self.record(a.id, "granted", Some(a.approved_by().join(", ")), d, None)
                    .await;
                return approved(d);
            }
            Ok(Ticket::Pending(a)) => a,
            Err(e) => return refused(d, &Outcome::Failed(e.to_string())),
        };
        self.record(request.id, "requested", None, d, request.reason.clone())
            .await;
        let how = match &request.reason {
            Some(_) => String::new(),
            None => " (no justification given: start the statement with /* reason: ... */)".into(),
        };
        self.notice(
            out,
            &format!(
                "vigil: waiting for approval #{} (rule {}; approvers: {}){how}",
                request.id,
                request.rule,
                request.approvers.join(" or ")
            ),
        )
        .await;
        gw.pg.set_held(self.key, Some(request.id));
        let outcome = tokio::select! {
            o = gw.approvals.wait(&gw.audit, request.id, &ask) => o,
            () = client_gone => {
                let why = "the client went away while it waited";
                gw.approvals.cancel(&gw.audit, request.id, why).await;
                Outcome::Failed(why.to_string())
            }
            // The request stays pending in the store: once approved, the same statement sent
            // again (after the restart) uses the approval.
            _ = gw.cancelled() => Outcome::Failed(format!(
                "the bastion is shutting down; request #{} stays pending: once it is approved, send the statement again",
                request.id
            )),
        };
        gw.pg.set_held(self.key, None);
        let (by, reason) = match outcome.approval() {
            Some(a) if outcome.approved() => {
                (Some(a.approved_by().join(", ")), a.decision_reason.clone())
            }
            Some(a) => (
                a.denied_by().map(|v| v.approver.clone()),
                a.decision_reason.clone(),
            ),
            None => (None, None),
        };
        self.record(request.id, outcome.recorded_state(), by, d, reason)
            .await;
        if outcome.approved() {
            self.notice(out, &format!("vigil: {}", outcome.user_message()))
                .await;
            approved(d)
        } else {
            refused(d, &outcome)
        }
    }

    async fn notice<W: AsyncWrite + Unpin>(&self, out: &mut W, text: &str) {
        let _ = out
            .write_all(&backend::notice_response(
                Severity::Notice,
                "00000",
                text,
                None,
            ))
            .await;
        let _ = out.flush().await;
    }

    async fn record(
        &self,
        id: u64,
        state: &str,
        by: Option<String>,
        d: &Decision,
        reason: Option<String>,
    ) {
        let _ = self
            .recorder
            .record(Event::Approval(Approval {
                id,
                state: state.into(),
                by,
                rule: d.rule.clone(),
                reason,
            }))
            .await;
    }
}

fn approved(d: &Decision) -> Decision {
    Decision {
        action: Action::Allow,
        ..d.clone()
    }
}

fn refused(d: &Decision, outcome: &Outcome) -> Decision {
    Decision {
        action: Action::Deny,
        message: outcome.user_message(),
        ..d.clone()
    }
}

/// The justification in a leading `/* reason: ... */` or `-- reason: ...` comment.
pub fn justification(sql: &str) -> Option<String> {
    let s = sql.trim_start();
    let body = if let Some(rest) = s.strip_prefix("/*") {
        rest.split_once("*/")?.0
    } else if let Some(rest) = s.strip_prefix("--") {
        rest.lines().next().unwrap_or_default()
    } else {
        return None;
    };
    let body = body.trim();
    let lower = body.get(..7).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some("reason:") {
        crate::approval::clean_reason(body.get(7..).unwrap_or_default())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::justification;

    #[test]
    fn justification_comes_from_a_leading_comment() {
        let table = [
            (
                "/* reason: INC-42 fix */ UPDATE t SET x = 1",
                Some("INC-42 fix"),
            ),
            (
                "  -- Reason: late order\nDELETE FROM t WHERE id = 1",
                Some("late order"),
            ),
            ("/* just a comment */ UPDATE t SET x = 1", None),
            ("UPDATE t SET x = 1 /* reason: too late */", None),
            ("/* reason: unterminated UPDATE t", None),
            ("/* reason:   */ UPDATE t", None),
            ("/* réason: x */", None),
        ];
        for (sql, want) in table {
            assert_eq!(justification(sql).as_deref(), want, "{sql}");
        }
    }
}
