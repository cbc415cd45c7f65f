//! Pure policy decisions: which rule applies to a user's command on a target, and what it
//! says. No I/O, no async: `check_*` functions are tested as tables.
//!
//! Rules apply to a target when their `targets` list names it (or is empty) and to a user when
//! their `roles` list names one of the user's roles (or is empty). Among the rules whose
//! patterns match, the highest `priority` wins; at equal priority deny > review > allow. For
//! shell lines an allow rule does not carve exceptions out of a deny or review rule that also
//! matches, whatever their priorities: a shell match says that some command of the line fits
//! the pattern, which cannot prove the allow covers every command and operand of the line. A line
//! whose effect a pattern cannot decide (see `shell.rs`) is refused whenever a deny or review
//! rule could apply to it: policy fails closed.

pub mod mask;
pub mod shell;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Review,
    Deny,
}

/// What policy decided about one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub rule: Option<String>,
    pub message: String,
    /// Roles allowed to approve, for `Review`.
    pub approvers: Vec<String>,
    /// Refused only because the input ends in the middle of a command (`for x in a b; do`): a
    /// shell reading it line by line runs nothing until the rest arrives.
    pub incomplete: bool,
}

impl Decision {
    pub fn allow() -> Decision {
        Decision {
            action: Action::Allow,
            rule: None,
            message: String::new(),
            approvers: Vec::new(),
            incomplete: false,
        }
    }

    /// The refusal of an interactive line that could not be reconstructed.
    pub fn refuse_unknown(why: &str) -> Decision {
        Decision {
            action: Action::Deny,
            rule: None,
            message: format!("vigil cannot tell what this line runs ({why}); it was not sent"),
            approvers: Vec::new(),
            incomplete: false,
        }
    }

    /// One line for the user: the rule's message and the rule's name.
    pub fn user_message(&self) -> String {
        let what = match self.action {
            Action::Allow => return String::new(),
            Action::Deny => self.message.clone(),
            Action::Review => format!(
                "{} (needs approval by a {}; approvals are not enabled on this bastion yet, so it was not run)",
                self.message,
                self.approvers.join(" or ")
            ),
        };
        match &self.rule {
            Some(r) => format!("{what} (rule {r})"),
            None => what,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("rule[{index}] ({name}).shell[{pattern}]: {why}")]
    Pattern {
        index: usize,
        name: String,
        pattern: usize,
        why: String,
    },
}

#[derive(Debug)]
struct Rule {
    name: String,
    priority: i64,
    targets: Vec<String>,
    roles: Vec<String>,
    action: Action,
    message: String,
    approvers: Vec<String>,
    shell: Option<shell::ShellMatcher>,
}

impl Rule {
    fn applies(&self, roles: &[String], target: &str) -> bool {
        (self.targets.is_empty() || self.targets.iter().any(|t| t == target))
            && (self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r)))
    }

    fn decision(&self) -> Decision {
        Decision {
            action: self.action,
            rule: Some(self.name.clone()),
            message: self.message.clone(),
            approvers: self.approvers.clone(),
            incomplete: false,
        }
    }
}

/// The compiled rules of a config.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn from_config(config: &Config) -> Result<Policy, PolicyError> {
        let mut rules = Vec::new();
        for (index, r) in config.file.rules.iter().enumerate() {
            let action = match r.action.as_str() {
                "deny" => Action::Deny,
                "review" => Action::Review,
                _ => Action::Allow,
            };
            let mut patterns = Vec::new();
            for (i, p) in r.shell.iter().enumerate() {
                let parsed = shell::ShellPattern::parse(p).map_err(|e| PolicyError::Pattern {
                    index,
                    name: r.name.clone(),
                    pattern: i,
                    why: e.to_string(),
                })?;
                patterns.push((i, parsed));
            }
            let shell = (!patterns.is_empty()).then(|| shell::ShellMatcher::new(patterns));
            let message = r.message.clone().unwrap_or_else(|| match action {
                Action::Deny => format!("blocked by policy: {}", r.name),
                Action::Review => format!("held for approval: {}", r.name),
                Action::Allow => String::new(),
            });
            rules.push(Rule {
                name: r.name.clone(),
                priority: r.priority,
                targets: r.targets.clone(),
                roles: r.roles.clone(),
                action,
                message,
                approvers: r.approvers.clone(),
                shell,
            });
        }
        Ok(Policy { rules })
    }

    /// Decides about a shell command line (an exec string or an interactive line).
    pub fn check_shell(&self, roles: &[String], target: &str, line: &str) -> Decision {
        let mut best: Option<&Rule> = None;
        let mut unknown: Option<(&Rule, String)> = None;
        for rule in self.rules.iter().filter(|r| r.applies(roles, target)) {
            let Some(matcher) = &rule.shell else { continue };
            match matcher.check(line) {
                shell::Verdict::Match { .. } => {
                    // An allow rule never outranks a deny or review rule that also matches:
                    // a match says that *some* command of the line fits the pattern, not that
                    // the allow covers every command and operand (`rm -rf /tmp/x /`).
                    let better = match best {
                        None => true,
                        Some(b)
                            if (b.action == Action::Allow) != (rule.action == Action::Allow) =>
                        {
                            rule.action != Action::Allow
                        }
                        Some(b) => (rule.priority, rule.action) > (b.priority, b.action),
                    };
                    if better {
                        best = Some(rule);
                    }
                }
                shell::Verdict::Unknown { reason } => {
                    if rule.action != Action::Allow
                        && unknown
                            .as_ref()
                            .is_none_or(|(u, _)| rule.priority > u.priority)
                    {
                        unknown = Some((rule, reason));
                    }
                }
                shell::Verdict::NoMatch => {}
            }
        }
        match (best, unknown) {
            // An allow match does not answer what the line's undecidable part would run.
            (Some(b), Some((u, reason))) if b.action == Action::Allow => {
                refuse_undecidable(u, &reason)
            }
            (Some(b), _) => b.decision(),
            (None, Some((u, reason))) => refuse_undecidable(u, &reason),
            (None, None) => Decision::allow(),
        }
    }
}

fn refuse_undecidable(rule: &Rule, reason: &str) -> Decision {
    Decision {
        action: Action::Deny,
        rule: Some(rule.name.clone()),
        message: format!("vigil cannot tell whether this runs a command that rule {} restricts ({reason}); refused", rule.name),
        approvers: Vec::new(),
        // The parser's word for input that stops mid-command.
        incomplete: reason.contains("end of input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &str) -> Policy {
        let text = format!(
            "[[target]]\nname = \"web1\"\nprotocol = \"ssh\"\naddress = \"h:22\"\nuser = \"u\"\nkey = \"k\"\n\
             [[target]]\nname = \"web2\"\nprotocol = \"ssh\"\naddress = \"h:22\"\nuser = \"u\"\nkey = \"k\"\n\
             [[role]]\nname = \"engineer\"\ntargets = [\"web1\", \"web2\"]\n[[role]]\nname = \"sre\"\ntargets = [\"web1\"]\n{rules}"
        );
        Policy::from_config(&Config::parse(&text, std::path::Path::new(".")).unwrap()).unwrap()
    }

    const RULES: &str = r#"
[[rule]]
name = "no-rm"
targets = ["web1"]
roles = ["engineer"]
shell = ["rm -rf"]
action = "deny"
message = "no recursive force removal"

[[rule]]
name = "tmp-is-fine"
priority = 10
targets = ["web1"]
shell = ["rm -rf /tmp/*"]
action = "allow"

[[rule]]
name = "reboots-need-review"
shell = ["reboot"]
action = "review"
approvers = ["sre"]
"#;

    #[test]
    fn rules_apply_by_target_role_priority_and_action() {
        let p = policy(RULES);
        let eng = vec!["engineer".to_string()];
        let sre = vec!["sre".to_string()];
        type Row<'a> = (&'a [String], &'a str, &'a str, Action, Option<&'a str>);
        let table: &[Row] = &[
            (&eng, "web1", "rm -rf /var", Action::Deny, Some("no-rm")),
            (&eng, "web1", "ls -la", Action::Allow, None),
            (&eng, "web2", "rm -rf /var", Action::Allow, None),
            (&sre, "web1", "rm -rf /var", Action::Allow, None),
            (&eng, "web1", "rm -rf /tmp/x", Action::Deny, Some("no-rm")),
            (&eng, "web1", "rm -rf /tmp/x /", Action::Deny, Some("no-rm")),
            (
                &sre,
                "web1",
                "rm -rf /tmp/x",
                Action::Allow,
                Some("tmp-is-fine"),
            ),
            (
                &eng,
                "web2",
                "sudo reboot",
                Action::Review,
                Some("reboots-need-review"),
            ),
            (&eng, "web1", "$X -rf /", Action::Deny, Some("no-rm")),
        ];
        for (roles, target, line, action, rule) in table {
            let d = p.check_shell(roles, target, line);
            assert_eq!(
                (d.action, d.rule.as_deref()),
                (*action, *rule),
                "{line} on {target} for {roles:?}"
            );
        }
    }

    #[test]
    fn input_that_stops_mid_command_is_marked_incomplete() {
        let p = policy(RULES);
        let eng = vec!["engineer".to_string()];
        let d = p.check_shell(&eng, "web1", "for x in a b; do");
        assert_eq!((d.action, d.incomplete), (Action::Deny, true), "{d:?}");
        let d = p.check_shell(&eng, "web1", "for x in a b; do\necho $x\ndone");
        assert_eq!(d.action, Action::Allow, "{d:?}");
        let d = p.check_shell(&eng, "web1", "for x in a b; do\nrm -rf /var\ndone");
        assert_eq!(d.action, Action::Deny);
        assert!(!p.check_shell(&eng, "web1", "$X -rf /").incomplete);
    }

    #[test]
    fn messages_name_the_rule() {
        let p = policy(RULES);
        let d = p.check_shell(&["engineer".into()], "web1", "rm -rf /");
        assert_eq!(d.user_message(), "no recursive force removal (rule no-rm)");
    }
}
