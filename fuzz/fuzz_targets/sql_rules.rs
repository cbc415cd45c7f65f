//! Fuzzes SQL classification and matching with arbitrary query strings (bytes taken as lossy
//! UTF-8). Properties: it never panics or overflows the stack, it is deterministic, statement
//! spans lie inside the string, a match names one of the patterns, a matcher without patterns
//! answers `NoMatch`, and policy fails closed: where a deny rule applies, a string that does not
//! parse or holds an opaque statement is never allowed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;
use vigil::policy::sql::{self, MatchMode, SqlMatcher, SqlPattern, Verdict};
use vigil::policy::{Action, Policy};

const PATTERNS: &[&str] = &[
    "DROP",
    "TRUNCATE",
    "DELETE without WHERE",
    "UPDATE without WHERE",
    "COPY PROGRAM",
    "ALTER SYSTEM",
    "GRANT",
    "CREATE FUNCTION",
    "DELETE on public.users",
    "SELECT on payroll.*",
    "* on secrets.keys",
];

static MATCHER: LazyLock<SqlMatcher> = LazyLock::new(|| {
    SqlMatcher::new(
        PATTERNS.iter().enumerate().filter_map(|(i, p)| {
            // A pattern that does not parse would be a bug in this target, not in the matcher.
            SqlPattern::parse(p).ok().map(|p| (i, p))
        }),
        MatchMode::Restrict,
    )
});

static POLICY: LazyLock<Option<Policy>> = LazyLock::new(|| {
    let text = r#"
[[target]]
name = "appdb"
protocol = "postgres"
address = "h:5432"
database = "app"
user = "u"

[[rule]]
name = "no-drop"
sql = ["DROP"]
action = "deny"

[[rule]]
name = "scratch"
priority = 10
sql = ["DROP TABLE on scratch.*", "* on staging.*"]
action = "allow"
"#;
    let config = Config::parse(text, std::path::Path::new(".")).ok()?;
    Policy::from_config(&config).ok()
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let analysis = sql::analyze(&text);
    assert_eq!(sql::analyze(&text), analysis, "deterministic");
    if let Ok(a) = &analysis {
        for s in &a.statements {
            assert!(text.get(s.span.clone()).is_some(), "span {:?}", s.span);
        }
        let verdict = MATCHER.check(a);
        if let Verdict::Match { pattern, statement } = verdict {
            assert!(pattern < PATTERNS.len() && statement < a.statements.len());
        }
        assert_eq!(SqlMatcher::default().check(a), Verdict::NoMatch);
    }
    if let Some(policy) = POLICY.as_ref() {
        let d = policy.check_sql(&[], "appdb", analysis.as_ref());
        let unseen = analysis
            .as_ref()
            .map_or(true, |a| a.statements.iter().any(|s| s.is_opaque()));
        if unseen {
            assert_eq!(d.action, Action::Deny, "{d:?}");
        }
    }
});
