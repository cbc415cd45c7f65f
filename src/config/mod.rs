//! The validated configuration: everything the rest of vigil reads. Built from the file mirror
//! in `file.rs`; every problem is reported with its dotted key path, all at once.

pub mod directory;
pub mod file;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    audit::AuditSettings,
    recording::{keys::RecipientPublic, OnStoreFailure, RecordingSettings},
};
pub use file::FileConfig;

/// One thing wrong with a config, at a key path such as `recording.recipients[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem {
                path: path.clone(),
                message: source.to_string(),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Listen {
    pub ssh: Option<SocketAddr>,
    pub postgres: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory relative paths in the file are resolved against.
    pub base: PathBuf,
    pub listen: Listen,
    pub host_key: PathBuf,
    pub state: String,
    pub recording: Option<RecordingSettings>,
    /// The audit log: where, how often it is checkpointed and rotated.
    pub audit: AuditSettings,
    /// Signing keys the reading commands trust (`recording.signers`).
    pub signers: Vec<String>,
    pub directory: directory::Directory,
    pub file: FileConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|problems| ConfigError::Invalid {
            path: path.display().to_string(),
            problems,
        })
    }

    /// Parses and validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let de = toml::Deserializer::new(text);
        let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            vec![Problem {
                path: if path == "." { "(file)".into() } else { path },
                message: match line {
                    Some(l) => format!("{message} (line {l})"),
                    None => message,
                },
            }]
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            base: base.to_path_buf(),
        };
        let config = v.config(file);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(v.problems)
        }
    }

    /// The active segment of the audit log (`server.audit_log`, default `state/audit.log`).
    pub fn audit_log(&self) -> PathBuf {
        self.audit.path.clone()
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.base, p)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

struct Validator {
    problems: Vec<Problem>,
    base: PathBuf,
}

impl Validator {
    fn bad(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let listen = Listen {
            ssh: self.addr("listen.ssh", file.listen.ssh.as_deref()),
            postgres: self.addr("listen.postgres", file.listen.postgres.as_deref()),
            admin: self.addr("listen.admin", file.listen.admin.as_deref()),
        };
        let host_key = resolve(
            &self.base,
            file.server
                .host_key
                .as_deref()
                .unwrap_or(Path::new("state/host_ed25519")),
        );
        let state = file
            .server
            .state
            .clone()
            .unwrap_or_else(|| "state/vigil.db".into());
        self.state(&state);
        let (recording, signers) = match &file.recording {
            Some(r) => {
                let (settings, signers) = self.recording(r);
                (Some(settings), signers)
            }
            None => (None, Vec::new()),
        };
        let audit = self.audit(&file);
        self.directory(&file);
        self.postgres_server(&file);
        let directory = directory::Directory::from_file(&file, &self.base);
        Config {
            base: self.base.clone(),
            listen,
            host_key,
            state,
            recording,
            audit,
            signers,
            directory,
            file,
        }
    }

    fn audit(&mut self, file: &FileConfig) -> AuditSettings {
        let mut a = AuditSettings::new(resolve(
            &self.base,
            file.server
                .audit_log
                .as_deref()
                .unwrap_or(Path::new("state/audit.log")),
        ));
        let f = &file.audit;
        if let Some(d) = &f.checkpoint_interval {
            if let Some(d) = self.duration("audit.checkpoint_interval", d) {
                a.checkpoint_interval = d;
            }
        }
        if let Some(d) = &f.rotate_interval {
            if let Some(d) = self.duration("audit.rotate_interval", d) {
                a.rotate_interval = d;
            }
        }
        if let Some(s) = &f.rotate_size {
            match parse_size(s) {
                Some(n) if (4 << 10..=1 << 30).contains(&n) => a.rotate_size = n as u64,
                _ => self.bad(
                    "audit.rotate_size",
                    format!("`{s}`: expected a size from 4KiB to 1GiB, e.g. \"16MiB\""),
                ),
            }
        }
        a
    }

    /// `server.state`: a SQLite file path, or a `postgres://` URL that several instances share.
    fn state(&mut self, state: &str) {
        if state.starts_with("postgres://") || state.starts_with("postgresql://") {
            if let Err(e) = state.parse::<tokio_postgres::Config>() {
                self.bad("server.state", format!("not a PostgreSQL URL: {e}"));
            }
        } else if state.contains("://") || state.trim().is_empty() {
            self.bad(
                "server.state",
                "expected a SQLite file path (state/vigil.db) or a postgres:// URL",
            );
        }
    }

    /// The Postgres front end's own settings: TLS for clients, message size limit.
    fn postgres_server(&mut self, file: &FileConfig) {
        let s = &file.server;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            self.bad("server.tls_cert", "tls_cert and tls_key go together");
        }
        if s.require_tls && s.tls_cert.is_none() {
            self.bad(
                "server.require_tls",
                "needs server.tls_cert and server.tls_key",
            );
        }
        if let Some(m) = &s.max_message_size {
            match parse_size(m) {
                Some(n) if (1024..=1 << 30).contains(&n) => {}
                _ => self.bad(
                    "server.max_message_size",
                    format!("`{m}`: expected a size between 1KiB and 1GiB, e.g. \"16MiB\""),
                ),
            }
        }
    }

    fn addr(&mut self, path: &str, v: Option<&str>) -> Option<SocketAddr> {
        let v = v?;
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    path,
                    format!("`{v}` is not an address such as 127.0.0.1:2222"),
                );
                None
            }
        }
    }

    fn duration(&mut self, path: &str, v: &str) -> Option<Duration> {
        match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.bad(path, "must be longer than zero");
                None
            }
            Err(e) => {
                self.bad(
                    path,
                    format!("`{v}` is not a duration such as \"2s\" or \"10m\": {e}"),
                );
                None
            }
        }
    }

    fn recording(&mut self, r: &file::RecordingFile) -> (RecordingSettings, Vec<String>) {
        let store = if r.store.starts_with("s3://") || r.store.contains("://") {
            if !(r.store.starts_with("s3://") || r.store.starts_with("file:///")) {
                self.bad(
                    "recording.store",
                    "use file:///absolute/path, a path, or s3://bucket/prefix",
                );
            }
            r.store.clone()
        } else if r.store.is_empty() {
            self.bad("recording.store", "must name where recordings go");
            String::new()
        } else {
            resolve(&self.base, Path::new(&r.store))
                .display()
                .to_string()
        };
        let mut recipients = Vec::new();
        for (i, s) in r.recipients.iter().enumerate() {
            match RecipientPublic::parse(s) {
                Ok(k) => recipients.push(k),
                Err(e) => self.bad(format!("recording.recipients[{i}]"), e.to_string()),
            }
        }
        if r.recipients.is_empty() {
            self.bad("recording.recipients", "needs at least one public key from `vigil keygen`: without one nobody could read the recordings");
        }
        let spool = resolve(
            &self.base,
            r.spool.as_deref().unwrap_or(Path::new("state/spool")),
        );
        let mut settings = RecordingSettings::new(store, recipients, spool);
        if let Some(f) = &r.flush_interval {
            if let Some(d) = self.duration("recording.flush_interval", f) {
                if d > Duration::from_secs(3600) {
                    self.bad(
                        "recording.flush_interval",
                        "at most 1h: it is how much activity a crash may lose",
                    );
                }
                settings.flush_interval = d;
            }
        }
        match r.on_store_failure.as_deref() {
            None | Some("refuse") => settings.on_store_failure = OnStoreFailure::Refuse,
            Some("continue") => settings.on_store_failure = OnStoreFailure::Continue,
            Some(other) => self.bad(
                "recording.on_store_failure",
                format!("`{other}`: expected \"refuse\" or \"continue\""),
            ),
        }
        if let Some(l) = r.zstd_level {
            if !(1..=19).contains(&l) {
                self.bad("recording.zstd_level", "expected 1 to 19");
            }
            settings.zstd_level = l;
        }
        if let Some(c) = &r.chunk_size {
            match parse_size(c) {
                Some(n)
                    if (64 << 10..=crate::recording::format::MAX_CHUNK_PLAIN / 2).contains(&n) =>
                {
                    settings.chunk_bytes = n
                }
                _ => self.bad(
                    "recording.chunk_size",
                    format!("`{c}`: expected a size from 64KiB to 32MiB"),
                ),
            }
        }
        if let Some(s3) = &r.s3 {
            if !r.store.starts_with("s3://") {
                self.bad("recording.s3", "only applies to an s3:// store");
            }
            settings.s3 = s3.clone();
        }
        for (i, s) in r.signers.iter().enumerate() {
            let ok = ssh_key::PublicKey::from_openssh(s.trim())
                .map(|k| k.key_data().ed25519().is_some())
                .unwrap_or(false);
            if !ok {
                self.bad(
                    format!("recording.signers[{i}]"),
                    "expected an `ssh-ed25519 AAAA...` public key",
                );
            }
        }
        (settings, r.signers.clone())
    }

    /// Users, targets, roles, rules and masks: names unique, references resolve.
    fn directory(&mut self, f: &FileConfig) {
        let roles: Vec<&str> = f.roles.iter().map(|r| r.name.as_str()).collect();
        let targets: Vec<&str> = f.targets.iter().map(|t| t.name.as_str()).collect();
        self.unique("user", f.users.iter().map(|u| u.name.as_str()));
        self.unique("target", targets.iter().copied());
        self.unique("role", roles.iter().copied());
        self.unique("rule", f.rules.iter().map(|r| r.name.as_str()));
        for (i, u) in f.users.iter().enumerate() {
            if u.name.is_empty() || u.name.contains(['+', '@', ' ']) {
                self.bad(
                    format!("user[{i}].name"),
                    "must be non-empty, without '+', '@' or spaces",
                );
            }
            self.refs(&format!("user[{i}].roles"), &u.roles, &roles, "role");
            for (k, key) in u.ssh_keys.iter().enumerate() {
                if ssh_key::PublicKey::from_openssh(key.trim()).is_err() {
                    self.bad(
                        format!("user[{i}].ssh_keys[{k}]"),
                        "not an OpenSSH public key line",
                    );
                }
            }
        }
        for (i, t) in f.targets.iter().enumerate() {
            let p = format!("target[{i}]");
            match t.protocol.as_str() {
                "ssh" => {
                    if t.user.is_none() {
                        self.bad(
                            format!("{p}.user"),
                            "an ssh target needs the user vigil logs in as",
                        );
                    }
                    if t.key.is_none() {
                        self.bad(
                            format!("{p}.key"),
                            "an ssh target needs vigil's own key for it",
                        );
                    }
                }
                "postgres" => {
                    if t.database.is_none() {
                        self.bad(
                            format!("{p}.database"),
                            "a postgres target needs the upstream database",
                        );
                    }
                    if t.user.is_none() {
                        self.bad(
                            format!("{p}.user"),
                            "a postgres target needs the upstream user",
                        );
                    }
                }
                other => self.bad(
                    format!("{p}.protocol"),
                    format!("`{other}`: expected \"ssh\" or \"postgres\""),
                ),
            }
            if let Some(tls) = &t.tls {
                if !matches!(tls.as_str(), "disable" | "require" | "verify-full") {
                    self.bad(
                        format!("{p}.tls"),
                        format!("`{tls}`: expected disable, require or verify-full"),
                    );
                }
            }
            if t.address
                .rsplit_once(':')
                .and_then(|(h, port)| (!h.is_empty()).then(|| port.parse::<u16>().ok()))
                .flatten()
                .is_none()
            {
                self.bad(
                    format!("{p}.address"),
                    format!("`{}` is not host:port", t.address),
                );
            }
        }
        for (i, r) in f.roles.iter().enumerate() {
            self.refs(
                &format!("role[{i}].targets"),
                &r.targets,
                &targets,
                "target",
            );
        }
        for (i, r) in f.rules.iter().enumerate() {
            let p = format!("rule[{i}]");
            if !matches!(r.action.as_str(), "deny" | "review" | "allow") {
                self.bad(
                    format!("{p}.action"),
                    format!("`{}`: expected deny, review or allow", r.action),
                );
            }
            if r.action == "review" && r.approvers.is_empty() {
                self.bad(
                    format!("{p}.approvers"),
                    "a review rule needs the roles allowed to approve",
                );
            }
            if r.sql.is_empty() && r.shell.is_empty() {
                self.bad(
                    &p,
                    "names neither sql nor shell patterns: it would match nothing",
                );
            }
            self.refs(&format!("{p}.targets"), &r.targets, &targets, "target");
            self.refs(&format!("{p}.roles"), &r.roles, &roles, "role");
            self.refs(&format!("{p}.approvers"), &r.approvers, &roles, "role");
            if let Some(t) = &r.timeout {
                self.duration(&format!("{p}.timeout"), t);
            }
            if let Some(g) = &r.grant {
                self.duration(&format!("{p}.grant"), g);
            }
            if r.min_approvals == Some(0) {
                self.bad(format!("{p}.min_approvals"), "must be at least 1");
            }
        }
        if let Some(a) = &f.approvals {
            if let Some(p) = &a.poll_interval {
                self.duration("approvals.poll_interval", p);
            }
            if let Some(w) = &a.webhook {
                match url::Url::parse(w) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => self.bad(
                        "approvals.webhook",
                        format!("`{w}`: expected an http:// or https:// URL"),
                    ),
                }
            }
        }
        for (i, m) in f.masks.iter().enumerate() {
            let p = format!("mask[{i}]");
            match f.targets.iter().find(|t| t.name == m.target) {
                None => self.bad(
                    format!("{p}.target"),
                    format!("no target named `{}`", m.target),
                ),
                Some(t) if t.protocol != "postgres" => {
                    self.bad(format!("{p}.target"), "masks apply to postgres targets")
                }
                Some(_) => {}
            }
            for (k, c) in m.columns.iter().enumerate() {
                if c.split('.').filter(|s| !s.is_empty()).count() != 3 {
                    self.bad(
                        format!("{p}.columns[{k}]"),
                        format!("`{c}`: expected schema.table.column"),
                    );
                }
            }
            if !matches!(m.method.as_str(), "redact" | "partial" | "hash" | "null") {
                self.bad(
                    format!("{p}.method"),
                    format!("`{}`: expected redact, partial, hash or null", m.method),
                );
            }
            self.refs(
                &format!("{p}.except_roles"),
                &m.except_roles,
                &roles,
                "role",
            );
        }
    }

    fn unique<'a>(&mut self, table: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen = std::collections::HashSet::new();
        for (i, n) in names.enumerate() {
            if !seen.insert(n) {
                self.bad(
                    format!("{table}[{i}].name"),
                    format!("`{n}` is defined twice"),
                );
            }
        }
    }

    fn refs(&mut self, path: &str, used: &[String], known: &[&str], what: &str) {
        for (i, u) in used.iter().enumerate() {
            if !known.contains(&u.as_str()) {
                self.bad(format!("{path}[{i}]"), format!("no {what} named `{u}`"));
            }
        }
    }
}

/// "1MiB", "512KiB", "64k", "1048576".
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "vigil-pub-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn a_minimal_config_validates_with_defaults() {
        let c = Config::parse(
            &format!("[recording]\nstore = \"rec\"\nrecipients = [\"{KEY}\"]\n"),
            Path::new("/etc/vigil"),
        )
        .unwrap();
        let r = c.recording.unwrap();
        assert_eq!(r.store, "/etc/vigil/rec");
        assert_eq!(r.flush_interval, Duration::from_secs(2));
        assert_eq!(r.spool, PathBuf::from("/etc/vigil/state/spool"));
        assert_eq!(c.host_key, PathBuf::from("/etc/vigil/state/host_ed25519"));
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let e = Config::parse(
            "[recording]\nstore = \"x\"\nflush_intervall = \"2s\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].path.starts_with("recording"), "{:?}", e);
        assert!(e[0].message.contains("flush_intervall"), "{:?}", e);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = format!(
            r#"
[listen]
ssh = "nowhere"
[server]
state = "mysql://db/vigil"
[approvals]
webhook = "ftp://hooks"
poll_interval = "often"
[recording]
store = "x"
recipients = ["{KEY}", "garbage"]
flush_interval = "soon"
on_store_failure = "panic"
[[role]]
name = "engineer"
targets = ["web9"]
[[rule]]
name = "r"
action = "review"
sql = ["DROP"]
"#
        );
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "listen.ssh",
            "recording.recipients[1]",
            "recording.flush_interval",
            "recording.on_store_failure",
            "role[0].targets[0]",
            "rule[0].approvers",
            "server.state",
            "approvals.webhook",
            "approvals.poll_interval",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    #[test]
    fn audit_settings_have_defaults_and_checked_values() {
        let base = format!("[recording]\nstore = \"rec\"\nrecipients = [\"{KEY}\"]\n");
        let c = Config::parse(&base, Path::new("/etc/vigil")).unwrap();
        assert_eq!(c.audit.path, PathBuf::from("/etc/vigil/state/audit.log"));
        assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(60));
        let c = Config::parse(
            &format!("{base}[audit]\ncheckpoint_interval = \"5s\"\nrotate_size = \"1MiB\"\nrotate_interval = \"1h\"\n"),
            Path::new("/etc/vigil"),
        )
        .unwrap();
        assert_eq!(
            (
                c.audit.checkpoint_interval,
                c.audit.rotate_size,
                c.audit.rotate_interval
            ),
            (Duration::from_secs(5), 1 << 20, Duration::from_secs(3600))
        );
        let e = Config::parse(
            &format!("{base}[audit]\ncheckpoint_interval = \"soon\"\nrotate_size = \"1\"\n"),
            Path::new("."),
        )
        .unwrap_err();
        let paths: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["audit.checkpoint_interval", "audit.rotate_size"]);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("lots"), None);
    }
}
