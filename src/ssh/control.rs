//! vigil's own commands, for a login without a target (`ssh alice@bastion`): a shell with a
//! terminal shows the user's targets as a menu and connects to the one picked (`pick`); exec
//! runs `whoami`, `targets` or `approvals ...` (list, show, approve, deny: the approver is the
//! user authenticated by their key, so every separation-of-duties check applies to them).

use std::sync::Arc;

use bytes::Bytes;
use russh::{
    server::{self, Msg},
    Channel, ChannelMsg,
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
        Some(c) if c == "approvals" || c.starts_with("approvals ") => {
            approvals(gw, conn, c.get("approvals".len()..).unwrap_or_default(), eol).await
        }
        Some(other) => (
            2,
            String::new(),
            format!("vigil: unknown command `{other}`; try `whoami`, `targets` or `approvals list`, or log in as {}+TARGET{eol}", conn.login.user),
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

/// What the menu asks of the channel task after the user picked.
pub enum Picked {
    /// Connect this channel to the named ssh target.
    Target(String),
    /// The user left the menu (q, Ctrl-C, Ctrl-D) or the channel closed.
    Quit,
}

/// The interactive menu of a shell with a terminal: numbered ssh targets, a line editor (vigil is
/// the terminal's only peer here, so it echoes), a number or a name + Enter picks. Window changes
/// while the menu shows are kept in `size`.
pub async fn pick(
    gw: &Arc<Gateway>,
    conn: &Connection,
    channel: &mut Channel<Msg>,
    size: &mut (u32, u32, u32, u32),
) -> Picked {
    let eol = "\r\n";
    let ssh_targets: Vec<String> = gw
        .config()
        .directory
        .targets_of(&conn.login.user)
        .iter()
        .filter(|t| t.protocol == crate::config::directory::Protocol::Ssh)
        .map(|t| t.name.clone())
        .collect();
    let mut text = menu(gw, conn, eol);
    if ssh_targets.is_empty() {
        let _ = channel.data_bytes(Bytes::from(text)).await;
        return Picked::Quit;
    }
    text.push_str(eol);
    for (i, t) in ssh_targets.iter().enumerate() {
        text.push_str(&format!("  [{}] {t}{eol}", i + 1));
    }
    let prompt = "vigil: connect to (number or name, q to quit): ";
    text.push_str(&format!("{eol}{prompt}"));
    if channel.data_bytes(Bytes::from(text)).await.is_err() {
        return Picked::Quit;
    }
    let mut line = String::new();
    while let Some(msg) = channel.wait().await {
        let data = match msg {
            ChannelMsg::Data { data } => data,
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                *size = (col_width, row_height, pix_width, pix_height);
                continue;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return Picked::Quit,
            _ => continue,
        };
        let mut echo = Vec::new();
        for &b in data.iter() {
            match b {
                // Ctrl-C, Ctrl-D
                0x03 | 0x04 => return Picked::Quit,
                b'\r' | b'\n' => {
                    let choice = line.trim().to_string();
                    line.clear();
                    echo.extend_from_slice(eol.as_bytes());
                    let picked = choice
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|i| ssh_targets.get(i).cloned())
                        .or_else(|| ssh_targets.iter().find(|t| **t == choice).cloned());
                    match (choice.as_str(), picked) {
                        ("q" | "quit" | "exit", _) => {
                            let _ = channel.data_bytes(Bytes::from(echo)).await;
                            return Picked::Quit;
                        }
                        (_, Some(t)) => {
                            echo.extend_from_slice(
                                format!("vigil: connecting to {t}{eol}").as_bytes(),
                            );
                            let _ = channel.data_bytes(Bytes::from(echo)).await;
                            return Picked::Target(t);
                        }
                        ("", None) => echo.extend_from_slice(prompt.as_bytes()),
                        (_, None) => echo.extend_from_slice(
                            format!("vigil: no target `{choice}` in your list{eol}{prompt}")
                                .as_bytes(),
                        ),
                    }
                }
                // Backspace / DEL
                0x08 | 0x7f if line.pop().is_some() => {
                    echo.extend_from_slice(b"\x08 \x08");
                }
                b if (0x20..0x7f).contains(&b) && line.len() < 256 => {
                    line.push(char::from(b));
                    echo.push(b);
                }
                _ => {}
            }
        }
        if !echo.is_empty() && channel.data_bytes(Bytes::from(echo)).await.is_err() {
            return Picked::Quit;
        }
    }
    Picked::Quit
}

/// `approvals list | show ID | approve ID [--reason ...] | deny ID --reason ...`, acting as
/// the authenticated user: (exit status, stdout, stderr).
async fn approvals(
    gw: &Gateway,
    conn: &Connection,
    args: &str,
    eol: &str,
) -> (u32, String, String) {
    use crate::approval::command::{parse, Command};
    let user = &conn.login.user;
    let lines = |s: String| s.replace('\n', eol);
    let command = match parse(args) {
        Ok(c) => c,
        Err(e) => return (2, String::new(), format!("vigil: {e}{eol}")),
    };
    let config = gw.config();
    let now = crate::approval::now_ms();
    let (approve, id, reason) = match command {
        Command::List { all } => {
            return match gw.approvals.list(all).await {
                Ok(list) => {
                    let mine: String = list
                        .iter()
                        .filter(|a| visible(a, user, config.directory.roles_of(user)))
                        .map(|a| lines(a.describe(now)))
                        .collect();
                    if mine.is_empty() {
                        (
                            0,
                            format!("no approval requests for you{eol}"),
                            String::new(),
                        )
                    } else {
                        (0, mine, String::new())
                    }
                }
                Err(e) => (1, String::new(), format!("vigil: {e}{eol}")),
            };
        }
        Command::Show(id) => {
            return match gw.approvals.get(id).await {
                Ok(Some(a)) if visible(&a, user, config.directory.roles_of(user)) => {
                    (0, lines(a.describe(now)), String::new())
                }
                Ok(_) => (
                    1,
                    String::new(),
                    format!("vigil: there is no approval request #{id} that you may see{eol}"),
                ),
                Err(e) => (1, String::new(), format!("vigil: {e}{eol}")),
            };
        }
        Command::Approve { id, reason } => (true, id, reason),
        Command::Deny { id, reason } => (false, id, reason),
    };
    match gw
        .approvals
        .decide(
            &config,
            &gw.audit,
            user,
            id,
            approve,
            reason.as_deref(),
            conn.peer.map(|p| p.to_string()),
        )
        .await
    {
        Ok(a) => (
            0,
            format!(
                "#{} {} by {user}; now {}{eol}",
                a.id,
                if approve { "approved" } else { "denied" },
                a.state
            ),
            String::new(),
        ),
        Err(e) => (1, String::new(), format!("vigil: {e}{eol}")),
    }
}

/// Over SSH a user sees their own requests and those they may decide on: a request shows the
/// exact command or statement, which is for the requester and the approvers only.
fn visible(a: &crate::approval::Approval, user: &str, roles: &[String]) -> bool {
    a.requester == user || a.approvers.iter().any(|r| roles.contains(r))
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
