//! Approval notifications: an HTTP POST of one JSON document per request and decision, sent by
//! background tasks with retries and backoff. Delivery never blocks or changes a decision:
//! failures are logged, and a notice that still fails after the last retry is dropped.

use std::time::Duration;

use serde::Serialize;
use tokio_util::task::TaskTracker;

use super::Approval;

/// Attempts per notice, and the wait before the first retry (doubled after each).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Deliveries under way at once; more are dropped (and logged) rather than queued without bound.
const MAX_IN_FLIGHT: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The document POSTed for each event (`approval.request`, `approval.approve`, `approval.deny`,
/// `approval.granted`, `approval.expire`, `approval.cancel`).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub event: String,
    pub time_ms: i64,
    pub instance: String,
    /// The approver who acted, for votes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub approval: Approval,
}

pub struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
    tasks: TaskTracker,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Webhook {
    pub fn new(url: &str) -> Result<Webhook, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("`{url}`: expected an http:// or https:// URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Webhook {
            url: parsed,
            client,
            tasks: TaskTracker::new(),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Queues a notice for delivery and returns at once.
    pub fn send(&self, notice: Notice) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::error!(event = %notice.event, approval = notice.approval.id, "webhook: too many deliveries under way; notice dropped");
            return;
        };
        let body = match serde_json::to_vec(&notice) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhook: cannot encode a notice");
                return;
            }
        };
        let (client, url) = (self.client.clone(), self.url.clone());
        self.tasks.spawn(async move {
            let _permit = permit;
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let sent = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let failure = match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(event = %notice.event, approval = notice.approval.id, attempt, error = %failure, "webhook delivery failed");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            tracing::error!(event = %notice.event, approval = notice.approval.id, "webhook: notice dropped after {ATTEMPTS} attempts");
        });
    }

    /// Waits for the deliveries under way (a short-lived `vigil approvals` process), at most
    /// `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.tasks.reopen();
    }
}
