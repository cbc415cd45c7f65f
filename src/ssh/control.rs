//! vigil's own commands, for a login without a target (`ssh alice@bastion`): a shell shows the
//! user's targets; exec runs `whoami` or `targets`.

use std::sync::Arc;

use bytes::Bytes;
use russh::{
    server::{self, Msg},
    Channel,
};

use super::server::Connection;
use crate::daemon::Gateway;

/// Runs one control command (or the menu, for a shell) and closes the channel.
pub async fn run(
    gw: &Arc<Gateway>,
    conn: &Connection,
    channel: &mut Channel<Msg>,
    _handle: &server::Handle,
    command: Option<String>,
    pty: bool,
) {
    let eol = if pty { "\r\n" } else { "\n" };
    let (status, out, err) = match command.as_deref().map(str::trim) {
        None => (0, menu(gw, conn, eol), String::new()),
        Some("whoami") => (0, whoami(gw, conn, eol), String::new()),
        Some("targets") => (0, targets(gw, conn, eol), String::new()),
        Some(other) => (
            2,
            String::new(),
            format!("vigil: unknown command `{other}`; try `whoami` or `targets`, or log in as {}+TARGET{eol}", conn.login.user),
        ),
    };
    if !out.is_empty() {
        let _ = channel.data_bytes(Bytes::from(out)).await;
    }
    if !err.is_empty() {
        let _ = channel.extended_data_bytes(1, Bytes::from(err)).await;
    }
    let _ = channel.exit_status(status).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

fn whoami(gw: &Gateway, conn: &Connection, eol: &str) -> String {
    let config = gw.config();
    let roles = config.directory.roles_of(&conn.login.user).join(", ");
    format!(
        "{} (roles: {}){eol}",
        conn.login.user,
        if roles.is_empty() { "none" } else { &roles }
    )
}

fn targets(gw: &Gateway, conn: &Connection, eol: &str) -> String {
    let config = gw.config();
    config
        .directory
        .targets_of(&conn.login.user)
        .iter()
        .map(|t| format!("{}\t{}{eol}", t.name, t.protocol.as_str()))
        .collect()
}

fn menu(gw: &Gateway, conn: &Connection, eol: &str) -> String {
    let config = gw.config();
    let user = &conn.login.user;
    let list = config.directory.targets_of(user);
    let port = config.listen.ssh.map(|a| a.port()).unwrap_or(22);
    let pg = config.listen.postgres;
    let mut out = format!("vigil: hello {user}. Your targets:{eol}{eol}");
    if list.is_empty() {
        out.push_str(&format!("  (none: no role grants you a target){eol}"));
    }
    for t in list {
        match t.protocol {
            crate::config::directory::Protocol::Ssh => {
                out.push_str(&format!(
                    "  {:<16} ssh -p {port} {user}+{}@<bastion>{eol}",
                    t.name, t.name
                ));
            }
            crate::config::directory::Protocol::Postgres => {
                let p = pg.map(|a| a.port()).unwrap_or(5432);
                out.push_str(&format!(
                    "  {:<16} psql \"host=<bastion> port={p} user={user} dbname={}\"{eol}",
                    t.name, t.name
                ));
            }
        }
    }
    out
}
