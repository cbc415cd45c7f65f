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
//!
//! SQL is decided per operation (one action on one relation, see `sql.rs`): among the rules
//! whose patterns match an operation the highest priority wins, at equal priority deny, then
//! review, then allow, so a higher-priority allow (`DELETE on staging.*`) carves an exception out
//! of a deny (`DELETE`). Unlike a shell line, an operation is precise enough for that: allow rules match
//! only relations they certainly name. A statement's decision is its strongest operation's, and
//! a query string's the strongest of its statements' (an allow for one statement does not cover
//! the next). A string that does not parse, or an opaque statement (`DO`, `EXECUTE`, a plpgsql
//! function body), is refused whenever a deny or review rule with SQL patterns applies.

pub mod mask;
pub mod shell;
pub mod sql;

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
                "{} (needs approval by a {})",
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
    #[error("rule[{index}] ({name}).sql[{pattern}]: {why}")]
    SqlPattern {
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
    sql: Option<sql::SqlMatcher>,
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
            let mut patterns = Vec::new();
            for (i, p) in r.sql.iter().enumerate() {
                let parsed = sql::SqlPattern::parse(p).map_err(|e| PolicyError::SqlPattern {
                    index,
                    name: r.name.clone(),
                    pattern: i,
                    why: e.to_string(),
                })?;
                patterns.push((i, parsed));
            }
            let mode = match action {
                Action::Allow => sql::MatchMode::Permit,
                Action::Review | Action::Deny => sql::MatchMode::Restrict,
            };
            let sql = (!patterns.is_empty()).then(|| sql::SqlMatcher::new(patterns, mode));
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
                sql,
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

    /// Decides about a query string (a simple Query, or one extended-protocol Parse), given
    /// [`sql::analyze`]'s answer for it: every operation of every statement is decided and the
    /// strongest decision wins.
    pub fn check_sql(
        &self,
        roles: &[String],
        target: &str,
        analysis: Result<&sql::Analysis, &sql::SqlError>,
    ) -> Decision {
        let rules: Vec<(&Rule, &sql::SqlMatcher)> = self
            .rules
            .iter()
            .filter(|r| r.applies(roles, target))
            .filter_map(|r| r.sql.as_ref().map(|m| (r, m)))
            .collect();
        // The rule that refuses what cannot be seen: the strongest deny or review rule.
        let restricting = strongest(
            rules
                .iter()
                .map(|(r, _)| *r)
                .filter(|r| r.action != Action::Allow),
        );
        let analysis = match analysis {
            Ok(a) => a,
            Err(e) => {
                return match restricting {
                    Some(r) => refuse_unseen_sql(r, &e.to_string()),
                    None => Decision::allow(),
                }
            }
        };
        // The strongest decision so far; among equals the first (an allow names its rule).
        let stronger = |d: &Decision, than: &Option<Decision>| {
            than.as_ref().is_none_or(|t| d.action > t.action)
        };
        let mut verdict: Option<Decision> = None;
        for statement in &analysis.statements {
            let mut decision: Option<Decision> = None;
            for part in statement.operations.iter().flat_map(aspects) {
                let matching = rules
                    .iter()
                    .filter(|(_, m)| m.matching(&part).is_some())
                    .map(|(r, _)| *r);
                if let Some(rule) = strongest(matching) {
                    let d = rule.decision();
                    if stronger(&d, &decision) {
                        decision = Some(d);
                    }
                }
            }
            let denied = decision.as_ref().is_some_and(|d| d.action == Action::Deny);
            if !denied {
                if let (Some(why), Some(r)) = (statement.opaque.first(), restricting) {
                    decision = Some(refuse_unseen_sql(r, &why.to_string()));
                }
            }
            if let Some(d) = decision {
                if stronger(&d, &verdict) {
                    verdict = Some(d);
                }
            }
        }
        verdict.unwrap_or_else(Decision::allow)
    }
}

/// An operation split into what it does, each decided on its own: its kinds grouped by what
/// they name ([`aspect`]). `DROP` and `DROP TABLE` name one thing at two levels of detail (a
/// priority allow of `DROP TABLE on scratch.*` overrides a deny of `DROP`), and so do `COPY t
/// TO STDOUT` and `SELECT`, while `ALTER TABLE t DROP COLUMN c` both alters and drops: an
/// allow of `ALTER TABLE on t` does not cover the drop.
fn aspects(op: &sql::Operation) -> Vec<sql::Operation> {
    let mut groups: Vec<&str> = op.kinds.iter().map(|k| aspect(k)).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.len() <= 1 {
        return vec![op.clone()];
    }
    groups
        .iter()
        .map(|g| sql::Operation {
            kinds: op
                .kinds
                .iter()
                .filter(|k| aspect(k) == *g)
                .cloned()
                .collect(),
            relation: op.relation.clone(),
            without_where: op.without_where,
        })
        .collect()
}

/// What a kind names: its first word, except for the kinds that only say how a read, a write or
/// a transaction start is spelled.
fn aspect(kind: &str) -> &str {
    match kind {
        "START TRANSACTION" => "BEGIN",
        "COPY TO STDOUT" => "SELECT",
        "COPY FROM STDIN" => "INSERT",
        k => k.split(' ').next().unwrap_or_default(),
    }
}

/// The rule that wins among matching ones: highest priority, then deny > review > allow, then
/// the first written.
fn strongest<'a>(rules: impl Iterator<Item = &'a Rule>) -> Option<&'a Rule> {
    rules.fold(None, |best: Option<&Rule>, r| match best {
        Some(b) if (b.priority, b.action) >= (r.priority, r.action) => Some(b),
        _ => Some(r),
    })
}

fn refuse_unseen_sql(rule: &Rule, reason: &str) -> Decision {
    Decision {
        action: Action::Deny,
        rule: Some(rule.name.clone()),
        message: format!(
            "vigil cannot tell whether this SQL does what rule {} restricts ({reason}); refused",
            rule.name
        ),
        approvers: Vec::new(),
        incomplete: false,
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

    fn sql_policy(rules: &str) -> Result<Policy, PolicyError> {
        let text = format!(
            "[[target]]\nname = \"appdb\"\nprotocol = \"postgres\"\naddress = \"h:5432\"\ndatabase = \"app\"\nuser = \"u\"\n\
             [[target]]\nname = \"otherdb\"\nprotocol = \"postgres\"\naddress = \"h:5432\"\ndatabase = \"other\"\nuser = \"u\"\n\
             [[role]]\nname = \"engineer\"\ntargets = [\"appdb\", \"otherdb\"]\n[[role]]\nname = \"dba\"\ntargets = [\"appdb\"]\n\
             [[role]]\nname = \"reviewer\"\ntargets = [\"appdb\"]\n{rules}"
        );
        Policy::from_config(&Config::parse(&text, std::path::Path::new(".")).unwrap())
    }

    const SQL_RULES: &str = r#"
[[rule]]
name = "no-destructive-sql"
targets = ["appdb"]
roles = ["engineer"]
sql = ["DROP", "TRUNCATE", "DELETE without WHERE", "UPDATE without WHERE"]
action = "deny"
message = "destructive statements are blocked; ask the DBA team"

[[rule]]
name = "writes-need-review"
targets = ["appdb"]
sql = ["UPDATE", "DELETE", "INSERT"]
action = "review"
approvers = ["reviewer"]

[[rule]]
name = "staging-is-scratch"
priority = 10
targets = ["appdb"]
sql = ["DELETE on staging.*", "UPDATE on staging.*"]
action = "allow"

[[rule]]
name = "dba-drops-scratch"
priority = 10
roles = ["dba"]
sql = ["DROP TABLE on scratch.*"]
action = "allow"

[[rule]]
name = "ledger-appends"
priority = 10
targets = ["appdb"]
sql = ["INSERT on public.ledger", "ALTER TABLE on public.ledger"]
action = "allow"

[[rule]]
name = "secrets"
priority = 20
targets = ["appdb"]
sql = ["* on secrets.keys"]
action = "deny"
"#;

    #[test]
    fn an_allow_covers_the_spellings_of_what_it_names() {
        use Action::{Allow, Deny};
        let p = sql_policy(
            r#"
[[rule]]
name = "nothing-else"
targets = ["appdb"]
sql = ["*"]
action = "deny"

[[rule]]
name = "reports"
priority = 10
targets = ["appdb"]
sql = ["SELECT on reports.*", "BEGIN", "COMMIT", "INSERT on reports.inbox"]
action = "allow"
"#,
        )
        .unwrap();
        let eng = vec!["engineer".to_string()];
        for (sql, want) in [
            ("SELECT * FROM reports.daily", Allow),
            ("COPY reports.daily TO STDOUT", Allow),
            ("START TRANSACTION", Allow),
            ("COPY reports.inbox FROM STDIN", Allow),
            ("COPY reports.inbox FROM '/etc/passwd'", Deny),
            ("DELETE FROM reports.daily WHERE id = 1", Deny),
        ] {
            let d = p.check_sql(&eng, "appdb", sql::analyze(sql).as_ref());
            assert_eq!(d.action, want, "{sql}: {d:?}");
        }
    }

    #[test]
    fn sql_rules_apply_by_target_role_priority_and_action() {
        use Action::{Allow, Deny, Review};
        let p = sql_policy(SQL_RULES).unwrap();
        let eng = vec!["engineer".to_string()];
        let dba = vec!["dba".to_string()];
        type Row<'a> = (&'a [String], &'a str, &'a str, Action, Option<&'a str>);
        let table: &[Row] = &[
            (&eng, "appdb", "SELECT * FROM t", Allow, None),
            (&eng, "appdb", "", Allow, None),
            (&eng, "appdb", "DROP TABLE t", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "drop /* x */ schema s cascade", Deny, Some("no-destructive-sql")),
            (&eng, "otherdb", "DROP TABLE t", Allow, None),
            (&dba, "appdb", "DROP TABLE t", Allow, None),
            (&dba, "appdb", "DROP TABLE scratch.t", Allow, Some("dba-drops-scratch")),
            (&eng, "appdb", "DELETE FROM t WHERE id = 1", Review, Some("writes-need-review")),
            (&eng, "appdb", "DELETE FROM t", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "DELETE FROM t WHERE 1 = 1", Deny, Some("no-destructive-sql")),
            (&dba, "appdb", "DELETE FROM t", Review, Some("writes-need-review")),
            (&eng, "appdb", "DELETE FROM staging.t WHERE id = 1", Allow, Some("staging-is-scratch")),
            // The higher-priority allow carves the exception out of the deny.
            (&eng, "appdb", "DELETE FROM staging.t", Allow, Some("staging-is-scratch")),
            // Unqualified: the search_path might not lead to staging.
            (&eng, "appdb", "DELETE FROM t2 WHERE x = 1", Review, Some("writes-need-review")),
            // Every statement is decided; the strongest decision wins.
            (&eng, "appdb", "DELETE FROM staging.t WHERE id = 1; DELETE FROM t", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "SELECT 1; INSERT INTO t VALUES (1)", Review, Some("writes-need-review")),
            // ... and every operation of a statement.
            (
                &eng,
                "appdb",
                "WITH x AS (DELETE FROM public.users RETURNING id) DELETE FROM staging.t WHERE id IN (SELECT id FROM x)",
                Deny,
                Some("no-destructive-sql"),
            ),
            (&eng, "appdb", "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2", Review, Some("writes-need-review")),
            (&eng, "appdb", "COPY t FROM STDIN", Review, Some("writes-need-review")),
            // An allow covers the part of an operation it names, not what else it does.
            (&eng, "appdb", "INSERT INTO public.ledger VALUES (1)", Allow, Some("ledger-appends")),
            (&eng, "appdb", "ALTER TABLE public.ledger ADD COLUMN c int", Allow, Some("ledger-appends")),
            (&eng, "appdb", "ALTER TABLE public.ledger DROP COLUMN c", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "ALTER TABLE public.ledger ALTER COLUMN c TYPE text", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "COPY public.ledger FROM STDIN", Allow, Some("ledger-appends")),
            (&eng, "appdb", "EXPLAIN DELETE FROM t", Allow, None),
            (&eng, "appdb", "EXPLAIN ANALYZE DELETE FROM t", Deny, Some("no-destructive-sql")),
            (&eng, "appdb", "PREPARE p AS DELETE FROM t", Deny, Some("no-destructive-sql")),
            (&dba, "appdb", "SELECT * FROM secrets.keys", Deny, Some("secrets")),
            (&dba, "appdb", "DELETE FROM staging.t USING secrets.keys", Deny, Some("secrets")),
            (&dba, "otherdb", "SELECT * FROM secrets.keys", Allow, None),
            // Opaque and unparseable: refused when a deny or review rule applies, naming the
            // strongest such rule.
            (&eng, "appdb", "DO $$ BEGIN DELETE FROM t; END $$", Deny, Some("secrets")),
            (&eng, "appdb", "EXECUTE p", Deny, Some("secrets")),
            (&eng, "appdb", "SELECT 1; SELECT dblink_exec('', 'DROP TABLE t')", Deny, Some("secrets")),
            (&eng, "appdb", "drop tabel t", Deny, Some("secrets")),
            (&eng, "appdb", "SELECT 1\0", Deny, Some("secrets")),
            (&eng, "appdb", "TRUNCATE t; DO $$ $$", Deny, Some("no-destructive-sql")),
            (&eng, "otherdb", "DO $$ BEGIN DELETE FROM t; END $$", Allow, None),
            (&eng, "otherdb", "drop tabel t", Allow, None),
        ];
        for (roles, target, sql, action, rule) in table {
            let analysis = sql::analyze(sql);
            let d = p.check_sql(roles, target, analysis.as_ref());
            assert_eq!(
                (d.action, d.rule.as_deref()),
                (*action, *rule),
                "{sql} on {target} for {roles:?}: {d:?}"
            );
        }
    }

    #[test]
    fn sql_refusals_say_why() {
        let p = sql_policy(SQL_RULES).unwrap();
        let eng = vec!["engineer".to_string()];
        let check = |sql: &str| p.check_sql(&eng, "appdb", sql::analyze(sql).as_ref());
        assert_eq!(
            check("DROP TABLE t").user_message(),
            "destructive statements are blocked; ask the DBA team (rule no-destructive-sql)"
        );
        let d = check("DO $$ BEGIN END $$");
        assert!(
            d.message.contains("a DO block runs code vigil cannot see"),
            "{d:?}"
        );
        let d = check("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$");
        assert!(d.message.contains("plpgsql routine body"), "{d:?}");
        let d = check("selec 1");
        assert!(
            d.message.contains("syntax error at or near \"selec\""),
            "{d:?}"
        );
        let d = check("DELETE FROM t WHERE id = 1");
        assert_eq!(d.approvers, ["reviewer"]);
    }

    #[test]
    fn bad_sql_patterns_fail_at_load() {
        let e = sql_policy(
            "[[rule]]\nname = \"r\"\nsql = [\"DROP\", \"DELETE witout WHERE\"]\naction = \"deny\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule[0] (r).sql[1]: unknown statement kind `DELETE witout WHERE`; expected a kind \
             such as DROP, DROP TABLE, DELETE, UPDATE, INSERT, COPY PROGRAM, ALTER SYSTEM, GRANT, \
             CREATE FUNCTION, or `*`"
        );
    }

    /// A decision reused by shape (the session's cache, `sql::Shape`) must be the decision the
    /// string would get on its own: for every statement whose shape is reusable, every variant
    /// with other numbers decides alike.
    #[test]
    fn shape_reuse_never_changes_a_decision() {
        let p = sql_policy(SQL_RULES).unwrap();
        let eng = vec!["engineer".to_string()];
        let decide = |sql: &str| {
            sql::constants::watch();
            let d = p.check_sql(&eng, "appdb", sql::analyze(sql).as_ref());
            (d.action, d.rule, sql::constants::was_read())
        };
        let corpus = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 41237;",
            "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 5, -1234, CURRENT_TIMESTAMP);",
            "DELETE FROM t WHERE 1 = 0",
            "DELETE FROM t WHERE 1 = 1",
            "DELETE FROM t WHERE 2 > 1",
            "DELETE FROM t WHERE 1",
            "DELETE FROM t WHERE 1::bool",
            "DELETE FROM t WHERE id = 5",
            "DELETE FROM t WHERE 1 = 1 AND id = 2",
            "DELETE FROM t WHERE 1 = 0 OR 1 = 1",
            "DELETE FROM t WHERE NOT 0",
            "DELETE FROM t WHERE 0 <> 1",
            "DELETE FROM t WHERE 1 IS NOT NULL",
            "DELETE FROM t WHERE 5 IN (5, 6)",
            "DELETE FROM t WHERE 2 BETWEEN 1 AND 3",
            "UPDATE t SET a = 2 WHERE 3 = 3",
            "UPDATE t SET a = 2 WHERE 3.5 = 3.5",
            "UPDATE t SET a = 2 WHERE 1e3 = 1000",
            "UPDATE staging.t SET a = 2",
            "SELECT * FROM t ORDER BY 1 LIMIT 5 OFFSET 10",
            "SELECT 1; DELETE FROM t WHERE 1 = 1; SELECT 2",
            "COPY t TO STDOUT WITH (HEADER 1)",
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv, HEADER 0)",
            "SELECT set_config('search_path', 'x', 1::bool)",
            "SELECT * FROM secrets.keys WHERE id = 1",
            "DROP TABLE t; SELECT 1",
            "SELECT numeric(10, 2) '1.5', 'a1'::varchar(20)",
            "PREPARE p AS DELETE FROM t WHERE 1 = 1",
            "WITH d AS (DELETE FROM t WHERE 1 = 1 RETURNING *) SELECT 1",
            "SELECT $1 + 2",
            "FETCH 5 FROM c",
            "TRUNCATE t",
        ];
        let variants = [
            "0",
            "1",
            "2",
            "7",
            "00",
            "2147483647",
            "99999999999",
            "1.5",
            "0.0",
            "1e3",
        ];
        let (mut reused, mut tried) = (0, 0);
        for e in corpus {
            let Some(shape) = sql::shape(e) else { continue };
            let (action, rule, read) = decide(e);
            let agrees = sql::parse(e).is_ok_and(|parsed| shape.agrees_with(&parsed.numbers));
            if read || !agrees {
                continue;
            }
            reused += 1;
            for v in variants {
                // Every number of the exemplar replaced by `v`, and each one alone.
                let mut all = String::new();
                let mut at = 0;
                for r in &shape.numbers {
                    all.push_str(&e[at..r.start]);
                    all.push_str(v);
                    at = r.end;
                }
                all.push_str(&e[at..]);
                let mut texts = vec![all];
                for r in &shape.numbers {
                    texts.push(format!("{}{v}{}", &e[..r.start], &e[r.end..]));
                }
                for t in texts {
                    let s = sql::shape(&t).expect("a variant has a shape");
                    if s.key != shape.key {
                        // Another class of number (an integer for a float): another shape.
                        continue;
                    }
                    tried += 1;
                    let (a, r, _) = decide(&t);
                    assert_eq!((a, r.clone()), (action, rule.clone()), "{e} reused for {t}");
                }
            }
        }
        assert!(
            reused >= 10,
            "only {reused} statements had a reusable shape"
        );
        assert!(tried >= 200, "only {tried} variants tried");
        // The ones whose decision depends on a number are never reusable.
        for e in [
            "DELETE FROM t WHERE 1 = 1",
            "DELETE FROM t WHERE 1 = 0",
            "EXPLAIN (ANALYZE 1) DELETE FROM t",
        ] {
            assert!(decide(e).2, "{e}: a number's value was read");
        }
    }

    /// Every read of a numeric constant's value in the analyses is reported (see
    /// `sql::constants`), or the shape cache could reuse a decision that depends on it.
    #[test]
    fn every_read_of_a_number_is_reported() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy");
        let mut files = vec![dir.join("mask.rs")];
        for e in std::fs::read_dir(dir.join("sql")).unwrap() {
            files.push(e.unwrap().path());
        }
        let mut reads = 0;
        for f in files {
            if f.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.contains("ival") || line.contains("fval") {
                    reads += 1;
                    let before = &lines[i.saturating_sub(3)..i];
                    assert!(
                        before.iter().any(|l| l.contains("constants::read()")),
                        "{}:{}: a number's value is read without constants::read()",
                        f.display(),
                        i + 1
                    );
                }
            }
        }
        assert!(reads >= 4, "the scan found {reads} reads");
    }
}
