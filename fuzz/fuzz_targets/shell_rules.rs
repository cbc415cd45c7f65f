//! Fuzzes the shell-command matcher with arbitrary command lines (bytes taken as lossy UTF-8)
//! against a few fixed patterns. Properties: it never panics or overflows the stack, it is
//! deterministic, a match names one of the patterns, and a matcher without patterns clears
//! every line.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vigil::policy::shell::{ShellMatcher, ShellPattern, Verdict};

const PATTERNS: &[&str] = &[
    "rm -rf /",
    "rm -rf",
    "dd of=/dev/*",
    "mkfs",
    "shutdown",
    "reboot",
    "chmod -R 777 /",
    "find -delete",
    "[rh]alt*",
];

static MATCHER: LazyLock<ShellMatcher> = LazyLock::new(|| {
    ShellMatcher::new(PATTERNS.iter().enumerate().filter_map(|(i, p)| {
        // A pattern that does not parse would be a bug in this target, not in the matcher.
        ShellPattern::parse(p).ok().map(|p| (i, p))
    }))
});

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let verdict = MATCHER.check(&line);
    if let Verdict::Match { id, pattern, .. } = &verdict {
        assert_eq!(
            PATTERNS.get(*id),
            Some(&pattern.as_str()),
            "a match names its pattern"
        );
    }
    assert_eq!(MATCHER.check(&line), verdict, "deterministic");
    assert_eq!(ShellMatcher::default().check(&line), Verdict::NoMatch);
});
