//! Glob patterns (`*`, `?`, `[...]`, `\x`) and the two questions the shell matcher asks of
//! them: does this string match, and could two patterns match one common string.
//!
//! Pattern globs (in rules) use "anything" semantics: `*` and `?` also match `/`, so
//! `/dev/*` matches `/dev/disk/by-id/x`. Globs found in command lines are expanded by the shell
//! against path names, where `*`, `?` and `[...]` never match `/`; [`Glob::intersects`] takes
//! that into account for the side that is a command-line glob.

/// One element of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A literal character.
    Char(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters.
    Star,
    /// `[...]` / `[!...]`: one character from (or not from) the inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Tok {
    /// Whether this (non-star) element matches `c`. `pathname`: the glob is expanded against
    /// path names, so wildcards never match `/`.
    fn accepts(&self, c: char, pathname: bool) -> bool {
        match self {
            Tok::Char(x) => *x == c,
            Tok::Any => !(pathname && c == '/'),
            Tok::Star => !(pathname && c == '/'),
            Tok::Class { negated, ranges } => {
                if pathname && c == '/' {
                    return false;
                }
                let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                inside != *negated
            }
        }
    }

    /// Characters worth trying when asking whether two elements share a character.
    fn candidates(&self, out: &mut Vec<char>) {
        match self {
            Tok::Char(x) => out.push(*x),
            Tok::Class { ranges, .. } => {
                for (lo, hi) in ranges {
                    out.push(*lo);
                    out.push(*hi);
                    if let Some(n) = char::from_u32(u32::from(*hi).saturating_add(1)) {
                        out.push(n);
                    }
                    if let Some(p) = u32::from(*lo).checked_sub(1).and_then(char::from_u32) {
                        out.push(p);
                    }
                }
            }
            Tok::Any | Tok::Star => {}
        }
    }

    fn is_negated_class(&self) -> bool {
        matches!(self, Tok::Class { negated: true, .. })
    }
}

/// Characters tried for every pair, so that wildcards and negated classes find a witness.
const COMMON: &[char] = &[
    'a',
    'Z',
    '0',
    '9',
    '-',
    '.',
    '_',
    '/',
    ' ',
    '~',
    '=',
    ',',
    '\u{1}',
    '\u{7f}',
    '\u{e9}',
    '\u{10ffff}',
];

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
}

/// Beyond this many product states, [`Glob::intersects`] answers "yes" without looking: the
/// answer is only used to decide between "no" and "maybe", and "maybe" is the safe side.
const MAX_PRODUCT_STATES: usize = 1 << 20;

impl Glob {
    /// Parses glob syntax: `*`, `?`, `[...]` (with `!`/`^` negation, ranges and `[:class:]`),
    /// `\x` for a literal `x`. A `[` without a closing `]` is a literal `[`.
    pub(crate) fn parse(s: &str) -> Glob {
        let mut g = Glob::default();
        g.push_pattern(s);
        g
    }

    /// A glob that matches exactly `s`.
    pub(crate) fn literal(s: &str) -> Glob {
        let mut g = Glob::default();
        g.push_literal(s);
        g
    }

    /// A glob that matches every string that starts with `prefix`.
    pub(crate) fn prefix(prefix: &str) -> Glob {
        let mut g = Glob::literal(prefix);
        g.toks.push(Tok::Star);
        g
    }

    /// Appends characters that match themselves only.
    pub(crate) fn push_literal(&mut self, s: &str) {
        self.toks.extend(s.chars().map(Tok::Char));
    }

    /// Appends glob syntax.
    pub(crate) fn push_pattern(&mut self, s: &str) {
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                '*' => {
                    // Runs of stars are one star; keeping one keeps the product small.
                    if self.toks.last() != Some(&Tok::Star) {
                        self.toks.push(Tok::Star);
                    }
                    i += 1;
                }
                '?' => {
                    self.toks.push(Tok::Any);
                    i += 1;
                }
                '\\' => {
                    match chars.get(i + 1) {
                        Some(&n) => self.toks.push(Tok::Char(n)),
                        None => self.toks.push(Tok::Char('\\')),
                    }
                    i += 2;
                }
                '[' => match parse_class(&chars, i) {
                    Some((tok, next)) => {
                        self.toks.push(tok);
                        i = next;
                    }
                    None => {
                        self.toks.push(Tok::Char('['));
                        i += 1;
                    }
                },
                _ => {
                    self.toks.push(Tok::Char(c));
                    i += 1;
                }
            }
        }
    }

    /// Whether the glob has any wildcard (is not a plain string).
    pub(crate) fn has_wildcards(&self) -> bool {
        self.toks.iter().any(|t| !matches!(t, Tok::Char(_)))
    }

    /// The literal characters of the glob (outside wildcards and classes).
    pub(crate) fn literal_chars(&self) -> impl Iterator<Item = char> + '_ {
        self.toks.iter().filter_map(|t| match t {
            Tok::Char(c) => Some(*c),
            _ => None,
        })
    }

    /// The literal text before the first wildcard.
    pub(crate) fn literal_prefix(&self) -> String {
        self.toks
            .iter()
            .map_while(|t| match t {
                Tok::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Whether every string that starts with `prefix` matches. Answers "yes" only when the
    /// glob ends with `*` and what comes before that star matches some prefix of `prefix`
    /// (`/dev/*` and `/dev/sd`); "no" means "not certainly".
    pub(crate) fn matches_every_extension(&self, prefix: &str) -> bool {
        let mut end = self.toks.len();
        while end > 0 && self.toks.get(end - 1) == Some(&Tok::Star) {
            end -= 1;
        }
        let Some(head) = self.toks.get(..end).filter(|_| end < self.toks.len()) else {
            return false;
        };
        // A set-of-states simulation of `head` over `prefix`: linear in both lengths.
        let close = |states: &mut Vec<bool>| {
            for i in 0..head.len() {
                if head.get(i) == Some(&Tok::Star) && states.get(i) == Some(&true) {
                    if let Some(s) = states.get_mut(i + 1) {
                        *s = true;
                    }
                }
            }
        };
        let mut states = vec![false; head.len() + 1];
        if let Some(s) = states.first_mut() {
            *s = true;
        }
        close(&mut states);
        for c in prefix.chars() {
            if states.last() == Some(&true) {
                return true;
            }
            let mut next = vec![false; head.len() + 1];
            for (i, tok) in head.iter().enumerate() {
                if states.get(i) != Some(&true) {
                    continue;
                }
                let target = if *tok == Tok::Star {
                    i
                } else if tok.accepts(c, false) {
                    i + 1
                } else {
                    continue;
                };
                if let Some(s) = next.get_mut(target) {
                    *s = true;
                }
            }
            states = next;
            close(&mut states);
        }
        states.last() == Some(&true)
    }

    /// For a command-line glob (expanded against path names): whether some `/`-separated
    /// component could expand to `..`, so that the path climbs out of its literal prefix
    /// (`/tmp/.*` is `/tmp/..` in bash without `globskipdots`). Bash matches `.` and `..`
    /// only with a component that starts with a literal `.`.
    pub(crate) fn may_climb(&self) -> bool {
        self.toks.split(|t| *t == Tok::Char('/')).any(|comp| {
            comp.first() == Some(&Tok::Char('.'))
                && comp.iter().any(|t| !matches!(t, Tok::Char(_)))
                && (Glob {
                    toks: comp.to_vec(),
                })
                .matches("..")
        })
    }

    /// Whether `s` matches, with `*` and `?` also matching `/`.
    pub(crate) fn matches(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let (mut ti, mut ci) = (0usize, 0usize);
        // Position of the last star seen and the input position it is currently matched up to.
        let mut star: Option<(usize, usize)> = None;
        while let Some(&c) = chars.get(ci) {
            match self.toks.get(ti) {
                Some(Tok::Star) => {
                    star = Some((ti, ci));
                    ti += 1;
                }
                Some(tok) if tok.accepts(c, false) => {
                    ti += 1;
                    ci += 1;
                }
                _ => match star {
                    Some((st, sc)) => {
                        ti = st + 1;
                        ci = sc + 1;
                        star = Some((st, sc + 1));
                    }
                    None => return false,
                },
            }
        }
        while let Some(Tok::Star) = self.toks.get(ti) {
            ti += 1;
        }
        ti == self.toks.len()
    }

    /// Whether some string matches both `self` and `other`. `self_pathname`: `self` is a
    /// command-line glob expanded against path names (its wildcards never match `/`).
    /// Errs on the side of "yes" when unsure.
    pub(crate) fn intersects(&self, self_pathname: bool, other: &Glob) -> bool {
        let (n, m) = (self.toks.len(), other.toks.len());
        let width = m + 1;
        let Some(states) = (n + 1).checked_mul(width) else {
            return true;
        };
        if states > MAX_PRODUCT_STATES {
            return true;
        }
        let mut seen = vec![false; states];
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, j)) = stack.pop() {
            let Some(slot) = seen.get_mut(i * width + j) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            if i == n && j == m {
                return true;
            }
            let a = self.toks.get(i);
            let b = other.toks.get(j);
            if let Some(Tok::Star) = a {
                stack.push((i + 1, j));
                if let Some(tb) = b.filter(|t| **t != Tok::Star) {
                    if share_char(&Tok::Star, self_pathname, tb) {
                        stack.push((i, j + 1));
                    }
                }
            }
            if let Some(Tok::Star) = b {
                stack.push((i, j + 1));
                if let Some(ta) = a.filter(|t| **t != Tok::Star) {
                    if share_char(ta, self_pathname, &Tok::Star) {
                        stack.push((i + 1, j));
                    }
                }
            }
            if let (Some(ta), Some(tb)) = (a, b) {
                if *ta != Tok::Star && *tb != Tok::Star && share_char(ta, self_pathname, tb) {
                    stack.push((i + 1, j + 1));
                }
            }
        }
        false
    }
}

/// Whether some character is accepted by `a` (under `a_pathname`) and by `b`.
fn share_char(a: &Tok, a_pathname: bool, b: &Tok) -> bool {
    let mut cands = Vec::with_capacity(COMMON.len() + 8);
    a.candidates(&mut cands);
    b.candidates(&mut cands);
    cands.extend_from_slice(COMMON);
    if cands
        .iter()
        .any(|&c| a.accepts(c, a_pathname) && b.accepts(c, false))
    {
        return true;
    }
    // Two negated classes (or a negated class and a wildcard) almost always share a character
    // the candidates missed; "yes" is the safe answer.
    (a.is_negated_class() || matches!(a, Tok::Any | Tok::Star))
        && (b.is_negated_class() || matches!(b, Tok::Any | Tok::Star))
}

/// Parses a bracket expression starting at `chars[start] == '['`; returns the element and the
/// index after the closing `]`, or `None` if the bracket is not closed.
fn parse_class(chars: &[char], start: usize) -> Option<(Tok, usize)> {
    let mut i = start + 1;
    let mut negated = false;
    if matches!(chars.get(i), Some('!') | Some('^')) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        if c == '[' && chars.get(i + 1) == Some(&':') {
            // A POSIX class such as [:alpha:].
            let rest: String = chars.get(i + 2..)?.iter().collect();
            if let Some(end) = rest.find(":]") {
                let name = rest.get(..end)?;
                ranges.extend_from_slice(posix_class(name));
                i += 2 + name.chars().count() + 2;
                continue;
            }
        }
        let c = if c == '\\' {
            i += 1;
            *chars.get(i)?
        } else {
            c
        };
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|n| *n != ']') {
            let hi = *chars.get(i + 2)?;
            ranges.push((c, hi));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

/// Approximate ranges of the POSIX character classes (ASCII); unknown names match anything.
fn posix_class(name: &str) -> &'static [(char, char)] {
    match name {
        "alpha" => &[('a', 'z'), ('A', 'Z')],
        "digit" => &[('0', '9')],
        "alnum" => &[('a', 'z'), ('A', 'Z'), ('0', '9')],
        "upper" => &[('A', 'Z')],
        "lower" => &[('a', 'z')],
        "space" => &[(' ', ' '), ('\t', '\r')],
        "blank" => &[(' ', ' '), ('\t', '\t')],
        "xdigit" => &[('0', '9'), ('a', 'f'), ('A', 'F')],
        "punct" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "cntrl" => &[('\u{0}', '\u{1f}'), ('\u{7f}', '\u{7f}')],
        "print" | "graph" => &[(' ', '~')],
        _ => &[('\u{0}', '\u{10ffff}')],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("/dev/*", "/dev/sda", true),
            ("/dev/*", "/dev/disk/by-id/x", true),
            ("/dev/*", "/dev", false),
            ("mkfs*", "mkfs.ext4", true),
            ("of=/dev/sd?", "of=/dev/sda", true),
            ("of=/dev/sd?", "of=/dev/sda1", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("[[:digit:]]", "7", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("[", "[", true),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("", "", true),
            ("*", "", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::parse(p).matches(s), *want, "{p} vs {s}");
        }
    }

    #[test]
    fn intersection() {
        let cases: &[(&str, bool, &str, bool)] = &[
            // (command-line glob, pathname?, pattern, intersects)
            ("/tmp/*", true, "/", false),
            // `*` may be empty as far as this check knows: `rm -rf /*` stays "maybe" for `/`.
            ("/*", true, "/", true),
            ("/*", true, "/*", true),
            ("/*", true, "/etc", true),
            ("*", true, "/", false),
            ("*", true, "-rf", true),
            ("*.log", true, "-*", true),
            ("x*", true, "-*", false),
            ("[a-z]*", true, "-*", false),
            ("[!a-z]*", true, "-*", true),
            ("of=*", false, "of=/dev/*", true),
            ("if=*", false, "of=/dev/*", false),
        ];
        for (g, path, p, want) in cases {
            assert_eq!(
                Glob::parse(g).intersects(*path, &Glob::parse(p)),
                *want,
                "{g} ∩ {p}"
            );
        }
        assert!(Glob::parse("/dev/*").intersects(false, &Glob::prefix("/dev/")));
        assert!(!Glob::parse("/dev/*").intersects(false, &Glob::prefix("/tmp/")));
        assert!(Glob::parse("/").intersects(false, &Glob::prefix("")));
    }

    #[test]
    fn every_extension() {
        let cases: &[(&str, &str, bool)] = &[
            ("/dev/*", "/dev/", true),
            ("/dev/*", "/dev/sd", true),
            ("of=/dev/*", "of=/dev/", true),
            ("/dev/*", "/dev", false),
            ("/dev/*", "/de", false),
            ("/dev/sd?", "/dev/sd", false),
            ("*", "", true),
            ("/*", "/", true),
            ("/*", "", false),
            ("*/x/*", "a/x/", true),
            ("a*b*", "ab", true),
            ("a*b*", "ax", false),
            ("/dev/[sh]d*", "/dev/sd", true),
            ("/dev", "/dev", false),
        ];
        for (g, prefix, want) in cases {
            assert_eq!(
                Glob::parse(g).matches_every_extension(prefix),
                *want,
                "{g} ⊇ {prefix}…"
            );
        }
    }

    #[test]
    fn climbing() {
        for (g, want) in [
            ("/tmp/.*", true),
            ("/tmp/.?", true),
            ("/tmp/.[.]", true),
            ("/tmp/.*/x", true),
            ("/tmp/*", false),
            ("/tmp/?.", false),
            ("/tmp/..", false),
            ("/tmp/.x*", false),
        ] {
            assert_eq!(Glob::parse(g).may_climb(), want, "{g}");
        }
        assert_eq!(Glob::parse("of=/dev/s*").literal_prefix(), "of=/dev/s");
    }
}
