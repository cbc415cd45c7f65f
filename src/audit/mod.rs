//! The audit log: one JSON object per line for every authentication, session, decision and
//! refusal, with identity, source address, target, session id and time.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::Mutex,
    time::SystemTime,
};

use serde::Serialize;

/// One audit event. Fields that do not apply are omitted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEvent {
    /// e.g. `auth.success`, `auth.failure`, `session.start`, `session.end`, `command.deny`,
    /// `access.refused`, `config.load`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The approval request an event concerns (`approval.*`, `grant.use`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
    /// Who asked, when `user` is someone else acting on the request (an approver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// The justification or reason given with a request or decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(action: &str) -> Self {
        AuditEvent {
            action: action.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// Appends audit events to a file (and to the tracing log).
pub struct Audit {
    file: Option<Mutex<File>>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Some(Mutex::new(file)),
        })
    }

    /// An audit log that only goes to the tracing log.
    pub fn tracing_only() -> Audit {
        Audit { file: None }
    }

    pub fn record(&self, event: AuditEvent) {
        let line = Line {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            event: &event,
        };
        let mut json = serde_json::to_vec(&line).unwrap_or_default();
        json.push(b'\n');
        tracing::info!(target: "vigil::audit", action = %event.action, user = ?event.user, target_name = ?event.target, detail = ?event.detail, "audit");
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                if let Err(e) = f.write_all(&json) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
        }
    }
}
