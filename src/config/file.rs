//! The serde mirror of the TOML config file. Unknown keys are errors (with their dotted path);
//! nothing here is interpreted: `Config::from_file` validates and converts.

use std::path::PathBuf;

use serde::Deserialize;

use crate::store::S3Settings;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listen: ListenFile,
    #[serde(default)]
    pub server: ServerFile,
    pub recording: Option<RecordingFile>,
    #[serde(default)]
    pub audit: AuditFile,
    #[serde(default, rename = "user")]
    pub users: Vec<UserFile>,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetFile>,
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleFile>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    #[serde(default, rename = "mask")]
    pub masks: Vec<MaskFile>,
    pub approvals: Option<ApprovalsFile>,
}

/// Just-in-time approval settings (the requests themselves live in `server.state`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsFile {
    /// HTTP(S) URL that gets a JSON POST on every request and decision.
    pub webhook: Option<String>,
    /// How often a held command re-reads its request in the state store, e.g. "500ms".
    pub poll_interval: Option<String>,
    /// This instance's name in requests (default host:pid).
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub ssh: Option<String>,
    pub postgres: Option<String>,
    pub admin: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub host_key: Option<PathBuf>,
    pub state: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The audit log (JSON lines); default `state/audit.log`.
    pub audit_log: Option<PathBuf>,
    /// Postgres: refuse clients that do not ask for TLS (needs tls_cert and tls_key).
    #[serde(default)]
    pub require_tls: bool,
    /// Postgres: the largest message accepted from a client or target, e.g. "16MiB".
    pub max_message_size: Option<String>,
}

/// `[audit]`: checkpoints and segments of the audit log (its path is `server.audit_log`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// How often a signed checkpoint is written while events arrive, e.g. "1m".
    pub checkpoint_interval: Option<String>,
    /// Close the active segment (and ship it) at this size, e.g. "16MiB"...
    pub rotate_size: Option<String>,
    /// ...or at this age, e.g. "10m".
    pub rotate_interval: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingFile {
    pub store: String,
    #[serde(default)]
    pub recipients: Vec<String>,
    pub spool: Option<PathBuf>,
    pub flush_interval: Option<String>,
    pub on_store_failure: Option<String>,
    pub zstd_level: Option<i32>,
    /// Plaintext bytes of events per chunk before it is sealed early, e.g. "1MiB".
    pub chunk_size: Option<String>,
    /// Bastion signing keys (`ssh-ed25519 AAAA...`) that the reading commands trust.
    #[serde(default)]
    pub signers: Vec<String>,
    pub s3: Option<S3Settings>,
    /// Postgres: result rows recorded per statement (the client gets them all); default 1000.
    pub max_rows: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub user: Option<String>,
    pub key: Option<PathBuf>,
    pub host_key: Option<String>,
    pub database: Option<String>,
    pub password_env: Option<String>,
    /// Environment variables passed from the client (besides LANG, LC_* and TERM).
    #[serde(default)]
    pub env: Vec<String>,
    /// SSH: what to do with an interactive line vigil cannot reconstruct: "refuse" (default)
    /// or "allow".
    pub on_unknown_line: Option<String>,
    /// Postgres: TLS to the target: "disable" (default), "require" or "verify-full".
    pub tls: Option<String>,
    /// Postgres: the CA certificates (PEM) for tls = "verify-full"; the system's by default.
    pub ca_file: Option<PathBuf>,
    /// Postgres: keep a target connection for the same user's next session (session pooling,
    /// `src/pg/pool.rs`); true by default. false: one target connection per session, closed
    /// with it.
    pub pool: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub name: String,
    #[serde(default)]
    pub targets: Vec<String>,
    /// SFTP and scp. Off unless a role of the user turns it on.
    #[serde(default)]
    pub file_transfer: bool,
    /// Local (`ssh -L`) and remote (`ssh -R`) TCP forwarding.
    #[serde(default)]
    pub port_forwarding: bool,
    #[serde(default)]
    pub agent_forwarding: bool,
    #[serde(default)]
    pub x11_forwarding: bool,
    /// Record what the user types (off by default: typed passwords must not land in recordings).
    #[serde(default)]
    pub record_input: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub sql: Vec<String>,
    #[serde(default)]
    pub shell: Vec<String>,
    pub action: String,
    pub message: Option<String>,
    #[serde(default)]
    pub approvers: Vec<String>,
    pub timeout: Option<String>,
    pub min_approvals: Option<u32>,
    pub grant: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskFile {
    pub target: String,
    #[serde(default)]
    pub columns: Vec<String>,
    pub method: String,
    #[serde(default)]
    pub except_roles: Vec<String>,
}
