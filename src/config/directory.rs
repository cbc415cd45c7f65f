//! vigil's own user directory and target inventory, validated: who may log in with which key,
//! which targets each role reaches, and what each role may do there.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::file::FileConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    Postgres,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    /// Authorized keys as `algorithm base64` (comments dropped).
    pub ssh_keys: Vec<String>,
    pub password: Option<String>,
}

/// What to do with an interactive line that cannot be reconstructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownLine {
    Refuse,
    Allow,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub address: String,
    pub user: Option<String>,
    /// vigil's own credential for the target (resolved path).
    pub key: Option<PathBuf>,
    /// The pinned host key, `algorithm base64`.
    pub host_key: Option<String>,
    pub database: Option<String>,
    pub password_env: Option<String>,
    /// Extra environment variable names passed from the client.
    pub env: Vec<String>,
    pub on_unknown_line: UnknownLine,
    /// Postgres: target connections are kept between a user's sessions (`pool`, default true).
    pub pool: bool,
}

/// What a user may do on a target: the union over the roles that grant it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    pub file_transfer: bool,
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
    pub x11_forwarding: bool,
    pub record_input: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: BTreeMap<String, User>,
    targets: BTreeMap<String, Target>,
    roles: BTreeMap<String, super::file::RoleFile>,
}

/// `algorithm base64` of an OpenSSH public key line, or None when it is not one.
pub fn normalize_key(line: &str) -> Option<String> {
    let mut it = line.split_whitespace();
    let (algo, b64) = (it.next()?, it.next()?);
    ssh_key::PublicKey::from_openssh(&format!("{algo} {b64}")).ok()?;
    Some(format!("{algo} {b64}"))
}

impl Directory {
    /// Builds the directory from an already validated file (see `Validator::directory`).
    pub fn from_file(f: &FileConfig, base: &Path) -> Directory {
        let users = f
            .users
            .iter()
            .map(|u| {
                let user = User {
                    name: u.name.clone(),
                    roles: u.roles.clone(),
                    ssh_keys: u.ssh_keys.iter().filter_map(|k| normalize_key(k)).collect(),
                    password: u.password.clone(),
                };
                (u.name.clone(), user)
            })
            .collect();
        let targets = f
            .targets
            .iter()
            .map(|t| {
                let target = Target {
                    name: t.name.clone(),
                    protocol: if t.protocol == "postgres" {
                        Protocol::Postgres
                    } else {
                        Protocol::Ssh
                    },
                    address: t.address.clone(),
                    user: t.user.clone(),
                    key: t.key.as_ref().map(|k| {
                        if k.is_absolute() {
                            k.clone()
                        } else {
                            base.join(k)
                        }
                    }),
                    host_key: t.host_key.as_deref().and_then(normalize_key),
                    database: t.database.clone(),
                    password_env: t.password_env.clone(),
                    env: t.env.clone(),
                    on_unknown_line: if t.on_unknown_line.as_deref() == Some("allow") {
                        UnknownLine::Allow
                    } else {
                        UnknownLine::Refuse
                    },
                    pool: t.pool.unwrap_or(true),
                };
                (t.name.clone(), target)
            })
            .collect();
        let roles = f
            .roles
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        Directory {
            users,
            targets,
            roles,
        }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }

    /// Whether `key` (an OpenSSH public key line) is one of the user's keys.
    pub fn authorized_key(&self, user: &str, key: &str) -> bool {
        match (self.users.get(user), normalize_key(key)) {
            (Some(u), Some(k)) => u.ssh_keys.contains(&k),
            _ => false,
        }
    }

    /// What `user` may do on `target`, or None when none of the user's roles grants it.
    pub fn grants(&self, user: &str, target: &str) -> Option<Grants> {
        let u = self.users.get(user)?;
        let mut granted = None;
        for role in u.roles.iter().filter_map(|r| self.roles.get(r)) {
            if role.targets.iter().any(|t| t == target) {
                let g: &mut Grants = granted.get_or_insert_with(Grants::default);
                g.file_transfer |= role.file_transfer;
                g.port_forwarding |= role.port_forwarding;
                g.agent_forwarding |= role.agent_forwarding;
                g.x11_forwarding |= role.x11_forwarding;
                g.record_input |= role.record_input;
            }
        }
        granted
    }

    /// The targets the user's roles grant, by name.
    pub fn targets_of(&self, user: &str) -> Vec<&Target> {
        self.targets
            .values()
            .filter(|t| self.grants(user, &t.name).is_some())
            .collect()
    }

    pub fn roles_of(&self, user: &str) -> &[String] {
        self.users
            .get(user)
            .map(|u| u.roles.as_slice())
            .unwrap_or(&[])
    }
}
