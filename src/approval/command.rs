//! The `approvals` control command as an SSH exec string (`ssh bob@bastion approvals approve 42
//! --reason "looks right"`): a pure parser, so the SSH front end and its tests share it.
//!
//! The client's shell has usually removed the quotes already (`ssh` joins its arguments with
//! spaces), so everything after `--reason` is the reason; quotes that do arrive are honoured.

/// One parsed `approvals` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Pending requests, or all recent ones.
    List {
        all: bool,
    },
    Show(u64),
    Approve {
        id: u64,
        reason: Option<String>,
    },
    Deny {
        id: u64,
        reason: Option<String>,
    },
}

pub const USAGE: &str =
    "usage: approvals list [--all] | show ID | approve ID [--reason TEXT] | deny ID --reason TEXT";

/// Parses the words after `approvals`.
pub fn parse(line: &str) -> Result<Command, String> {
    let words = split(line)?;
    let mut it = words.iter().map(String::as_str);
    let verb = it.next().unwrap_or("list");
    let rest: Vec<&str> = it.collect();
    let id = |w: Option<&&str>| -> Result<u64, String> {
        let w = w.ok_or_else(|| format!("`{verb}` needs a request number; {USAGE}"))?;
        w.trim_start_matches('#')
            .parse::<u64>()
            .map_err(|_| format!("`{w}` is not a request number; {USAGE}"))
    };
    match verb {
        "list" | "ls" => match rest.as_slice() {
            [] => Ok(Command::List { all: false }),
            ["--all" | "-a"] => Ok(Command::List { all: true }),
            _ => Err(USAGE.into()),
        },
        "show" if rest.len() == 1 => Ok(Command::Show(id(rest.first())?)),
        "approve" | "deny" => {
            let n = id(rest.first())?;
            let reason = reason(rest.get(1..).unwrap_or_default())?;
            Ok(if verb == "approve" {
                Command::Approve { id: n, reason }
            } else {
                Command::Deny { id: n, reason }
            })
        }
        _ => Err(USAGE.into()),
    }
}

/// `--reason TEXT...` or `--reason=TEXT...`, or nothing.
fn reason(words: &[&str]) -> Result<Option<String>, String> {
    match words {
        [] => Ok(None),
        [first, more @ ..] => {
            let text = if let Some(r) = first.strip_prefix("--reason=") {
                std::iter::once(r)
                    .chain(more.iter().copied())
                    .collect::<Vec<_>>()
            } else if matches!(*first, "--reason" | "-m") {
                more.to_vec()
            } else {
                return Err(format!("unexpected `{first}`; {USAGE}"));
            };
            Ok(Some(text.join(" ")).filter(|t| !t.trim().is_empty()))
        }
    }
}

/// Words split on whitespace, with '...' and "..." quoting.
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let table: &[(&str, Result<Command, ()>)] = &[
            ("", Ok(Command::List { all: false })),
            ("list", Ok(Command::List { all: false })),
            ("list --all", Ok(Command::List { all: true })),
            ("show 3", Ok(Command::Show(3))),
            (
                "approve 42",
                Ok(Command::Approve {
                    id: 42,
                    reason: None,
                }),
            ),
            (
                "approve #42 --reason looks right",
                Ok(Command::Approve {
                    id: 42,
                    reason: Some("looks right".into()),
                }),
            ),
            (
                "deny 7 --reason 'not during the freeze'",
                Ok(Command::Deny {
                    id: 7,
                    reason: Some("not during the freeze".into()),
                }),
            ),
            (
                "deny 7 --reason=freeze now",
                Ok(Command::Deny {
                    id: 7,
                    reason: Some("freeze now".into()),
                }),
            ),
            (
                "deny 7 --reason",
                Ok(Command::Deny {
                    id: 7,
                    reason: None,
                }),
            ),
            ("approve", Err(())),
            ("approve x", Err(())),
            ("approve 1 now", Err(())),
            ("approve -1", Err(())),
            ("deny 1 --reason 'open", Err(())),
            ("frobnicate", Err(())),
            ("list extra", Err(())),
        ];
        for (line, want) in table {
            assert_eq!(&parse(line).map_err(|_| ()), want, "{line}");
        }
    }
}
