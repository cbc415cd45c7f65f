//! What the matcher knows about one shell word after quote removal: literal text, or text
//! that a run-time expansion supplies. Built by the analyser from brush-parser's word pieces.

use super::glob::Glob;

/// One stretch of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Literal text. `quoted`: it came from quotes or an escape, so glob characters and braces
    /// in it are literal.
    Lit { text: String, quoted: bool },
    /// Text known only at run time (`$X`, `$(cmd)`, `~`, `$((1+2))`, input of `xargs`...).
    /// `splits`: the expansion is unquoted (or `"$@"`), so it may become any number of words.
    /// `dash_free`: the text is known not to start with `-` (the `{}` of `find -exec`).
    Dyn { splits: bool, dash_free: bool },
}

/// A word of a command line: its source text and what its value is known to be.
#[derive(Debug, Clone)]
pub(crate) struct AbsWord {
    /// The word as written, for messages.
    pub raw: String,
    parts: Vec<Part>,
    /// For a word that is exactly a process substitution (`<(cmd)`): what reading it yields.
    pub proc_output: Option<super::analyze::Input>,
}

/// How a word behaves as an argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Exactly one word with this value.
    Static(String),
    /// An unquoted glob: it expands to the path names it matches (each a separate word), or to
    /// `text` itself when nothing matches.
    Glob { text: String, glob: Glob },
    /// A value known only at run time, starting with `prefix`. `splits`: may become any number
    /// of words with any content. `may_be_option`: the (first) word may start with `-`.
    Dynamic {
        prefix: String,
        splits: bool,
        may_be_option: bool,
    },
}

impl AbsWord {
    /// A word made of the given parts.
    pub(crate) fn new(raw: impl Into<String>, parts: Vec<Part>) -> AbsWord {
        AbsWord {
            raw: raw.into(),
            parts,
            proc_output: None,
        }
    }

    /// A literal word (used for words the matcher synthesises, such as `env -S` splits).
    pub(crate) fn literal(text: &str) -> AbsWord {
        AbsWord::new(
            text,
            vec![Part::Lit {
                text: text.to_owned(),
                quoted: true,
            }],
        )
    }

    /// A word whose whole value is known only at run time.
    pub(crate) fn dynamic(raw: &str, splits: bool, dash_free: bool) -> AbsWord {
        AbsWord::new(raw, vec![Part::Dyn { splits, dash_free }])
    }

    /// The parts, for building a longer word.
    pub(crate) fn parts_owned(&self) -> Vec<Part> {
        self.parts.clone()
    }

    /// The value, if it is one known word (no expansion, no glob, no brace expansion).
    pub(crate) fn static_value(&self) -> Option<String> {
        match self.arg() {
            Arg::Static(s) => Some(s),
            _ => None,
        }
    }

    /// The value with quotes removed, if no part is dynamic (globs are kept as written).
    pub(crate) fn text_value(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit { text, .. } => out.push_str(text),
                Part::Dyn { .. } => return None,
            }
        }
        Some(out)
    }

    /// The value with each computed part replaced by `placeholder` (globs and braces kept as
    /// written), for re-parsing a command string that is partly computed.
    pub(crate) fn skeleton(&self, placeholder: &str) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit { text, .. } => out.push_str(text),
                Part::Dyn { .. } => out.push_str(placeholder),
            }
        }
        out
    }

    /// Classifies the word as an argument.
    pub(crate) fn arg(&self) -> Arg {
        let brace = has_brace_expansion(&self.parts);
        let dynamic = self.parts.iter().any(|p| matches!(p, Part::Dyn { .. }));
        let meta = self.parts.iter().any(|p| match p {
            Part::Lit {
                text,
                quoted: false,
            } => has_glob_meta(text),
            _ => false,
        });
        if !dynamic && !brace && !meta {
            let mut s = String::new();
            for p in &self.parts {
                if let Part::Lit { text, .. } = p {
                    s.push_str(text);
                }
            }
            return Arg::Static(s);
        }
        if !dynamic && !brace {
            let mut glob = Glob::default();
            let mut text = String::new();
            for p in &self.parts {
                if let Part::Lit { text: t, quoted } = p {
                    text.push_str(t);
                    if *quoted {
                        glob.push_literal(t);
                    } else {
                        glob.push_pattern(t);
                    }
                }
            }
            return Arg::Glob { text, glob };
        }
        // Dynamic: what is known is the literal prefix up to the first expansion, glob
        // character or brace.
        let mut prefix = String::new();
        let mut may_be_option = true;
        let mut splits = brace || meta;
        let mut prefix_open = true;
        for p in &self.parts {
            match p {
                Part::Lit { text, quoted } => {
                    if !prefix_open {
                        continue;
                    }
                    if *quoted {
                        prefix.push_str(text);
                    } else {
                        let cut = text
                            .find(['*', '?', '[', '{', '@', '!', '+'])
                            .unwrap_or(text.len());
                        prefix.push_str(text.get(..cut).unwrap_or(""));
                        if cut < text.len() {
                            prefix_open = false;
                        }
                    }
                }
                Part::Dyn {
                    splits: s,
                    dash_free,
                } => {
                    if prefix_open && prefix.is_empty() && *dash_free {
                        may_be_option = false;
                    }
                    prefix_open = false;
                    splits |= *s;
                }
            }
        }
        if !prefix.is_empty() {
            may_be_option = prefix.starts_with('-');
        }
        Arg::Dynamic {
            prefix,
            splits,
            may_be_option,
        }
    }

    /// The base name of the command this word names, or why it cannot be known.
    pub(crate) fn command_name(&self) -> Result<String, String> {
        match self.arg() {
            Arg::Static(s) => return Ok(basename(&s).to_owned()),
            Arg::Glob { .. } => {
                return Err(format!(
                    "the command name `{}` is a glob expanded at run time",
                    self.raw
                ))
            }
            Arg::Dynamic { splits: true, .. } => {
                return Err(format!(
                    "the command name `{}` is computed at run time",
                    self.raw
                ))
            }
            Arg::Dynamic { .. } => {}
        }
        // A quoted expansion followed by a literal `/name` ("$DIR/rm", ~/bin/rm) still names
        // a known program.
        let mut tail = String::new();
        for p in self.parts.iter().rev() {
            match p {
                Part::Lit { text, .. } => {
                    tail.insert_str(0, text);
                    if let Some(pos) = tail.rfind('/') {
                        let base = tail.get(pos + 1..).unwrap_or("");
                        if !base.is_empty() {
                            return Ok(base.to_owned());
                        }
                        break;
                    }
                }
                Part::Dyn { .. } => break,
            }
        }
        Err(format!(
            "the command name `{}` is computed at run time",
            self.raw
        ))
    }
}

/// The last path component (`/usr/bin/rm` → `rm`); `s` itself when it has no `/`.
pub(crate) fn basename(s: &str) -> &str {
    let trimmed = s.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(p) => trimmed.get(p + 1..).unwrap_or(trimmed),
        None if trimmed.is_empty() => s,
        None => trimmed,
    }
}

/// Whether unquoted text holds a glob: `*`, `?`, or `[` with a later `]`.
pub(crate) fn has_glob_meta(text: &str) -> bool {
    if text.contains(['*', '?']) {
        return true;
    }
    match text.find('[') {
        Some(p) => text.get(p + 1..).is_some_and(|rest| rest.contains(']')),
        None => false,
    }
}

/// Whether unquoted text has an extended glob such as `@(a|b)`.
pub(crate) fn has_extglob(text: &str) -> bool {
    ["@(", "!(", "+(", "*(", "?("]
        .iter()
        .any(|o| text.contains(o))
}

/// Whether the unquoted parts of a word form a brace expansion (`{a,b}`, `{1..3}`), which
/// turns one word into several.
fn has_brace_expansion(parts: &[Part]) -> bool {
    // Unquoted characters in order; quoted text and expansions are opaque separators that do
    // not stop a brace expression (`{$a,b}` still expands).
    let mut chars: Vec<Option<char>> = Vec::new();
    for p in parts {
        match p {
            Part::Lit {
                text,
                quoted: false,
            } => chars.extend(text.chars().map(Some)),
            _ => chars.push(None),
        }
    }
    let mut open: Vec<bool> = Vec::new(); // per open brace: saw a separator
    let mut prev: Option<char> = None;
    for c in chars {
        match c {
            Some('{') => open.push(false),
            Some(',') => {
                if let Some(last) = open.last_mut() {
                    *last = true;
                }
            }
            Some('.') if prev == Some('.') => {
                if let Some(last) = open.last_mut() {
                    *last = true;
                }
            }
            // Closing a brace that saw a separator: a brace expansion.
            Some('}') if open.pop() == Some(true) => return true,
            _ => {}
        }
        prev = c;
    }
    false
}

/// Decodes the body of bash ANSI-C quoting (`$'...'`): `\n`, `\x41`, `\101`, `\u00e9`, `\cA`,
/// `\'`... As in bash, the value ends at a NUL character and unknown escapes stay as written.
pub(crate) fn decode_ansi_c(body: &str) -> String {
    decode_escapes(body, EscapeDialect::AnsiC).0
}

/// Decodes `echo -e` escapes; the flag says whether `\c` (stop output) was seen.
pub(crate) fn decode_echo(body: &str) -> (String, bool) {
    decode_escapes(body, EscapeDialect::Echo)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapeDialect {
    AnsiC,
    Echo,
}

fn decode_escapes(body: &str, dialect: EscapeDialect) -> (String, bool) {
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = chars.get(i) else {
            out.push('\\');
            break;
        };
        i += 1;
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'e' | 'E' => Some('\u{1b}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            '\'' if dialect == EscapeDialect::AnsiC => Some('\''),
            '"' if dialect == EscapeDialect::AnsiC => Some('"'),
            '?' if dialect == EscapeDialect::AnsiC => Some('?'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            continue;
        }
        let code = match e {
            'x' => Some(take_digits(&chars, &mut i, 16, 2)),
            'u' => Some(take_digits(&chars, &mut i, 16, 4)),
            'U' => Some(take_digits(&chars, &mut i, 16, 8)),
            '0' if dialect == EscapeDialect::Echo => Some(take_digits(&chars, &mut i, 8, 3)),
            '0'..='7' if dialect == EscapeDialect::AnsiC => {
                i -= 1;
                Some(take_digits(&chars, &mut i, 8, 3))
            }
            'c' if dialect == EscapeDialect::AnsiC => match chars.get(i) {
                Some(&x) => {
                    i += 1;
                    Some(Some(u32::from(x.to_ascii_uppercase()) ^ 0x40))
                }
                None => None,
            },
            'c' => return (out, true),
            _ => None,
        };
        match code {
            Some(Some(0)) => {
                // A NUL ends the string, as in bash's C strings.
                if dialect == EscapeDialect::AnsiC {
                    break;
                }
                out.push('\u{0}');
            }
            Some(Some(v)) => out.push(char::from_u32(v).unwrap_or('\u{fffd}')),
            Some(None) | None => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    (out, false)
}

/// Reads up to `max` digits in `radix` at `chars[*i..]`; `None` if there is none.
fn take_digits(chars: &[char], i: &mut usize, radix: u32, max: usize) -> Option<u32> {
    let mut v: u32 = 0;
    let mut n = 0;
    while n < max {
        let Some(d) = chars.get(*i).and_then(|c| c.to_digit(radix)) else {
            break;
        };
        v = v.saturating_mul(radix).saturating_add(d);
        *i += 1;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The command text inside backquotes, as bash reads it: `\\`, `` \` `` and `\$` lose their
/// backslash, and so does `\"` when the backquotes are inside double quotes.
pub(crate) fn unescape_backquoted(body: &str, in_double_quotes: bool) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some(&n) if n == '\\' || n == '`' || n == '$' || (in_double_quotes && n == '"') => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lexical normalisation of an absolute path (`//` → `/`, `.` dropped, `..` applied, no
/// trailing `/`), also for the value of `key=/path`. `None` when there is no absolute path.
pub(crate) fn normalize_path(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('/') {
        return Some(normalize_abs(rest));
    }
    let (key, value) = s.split_once('=')?;
    if key.is_empty() || key.contains('/') {
        return None;
    }
    let rest = value.strip_prefix('/')?;
    Some(format!("{key}={}", normalize_abs(rest)))
}

/// Whether the path in `s` (or in the value of `key=path`) has a `..` component, so that its
/// text and the path it names may differ in more than spelling.
pub(crate) fn climbs(s: &str) -> bool {
    s.split(['/', '=']).any(|c| c == "..")
}

/// What every value that starts with `prefix` is known to start with after lexical path
/// normalisation: a computed tail may hold `/..` and climb to the root, so of an absolute
/// path (or `key=/path`) only the root (`/`, `key=/`) is certain.
pub(crate) fn stable_prefix(prefix: &str) -> &str {
    if prefix.starts_with('/') {
        return "/";
    }
    if let Some((key, value)) = prefix.split_once('=') {
        if !key.is_empty() && !key.contains('/') && value.starts_with('/') {
            return prefix.get(..key.len() + 2).unwrap_or(prefix);
        }
    }
    prefix
}

fn normalize_abs(rest: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in rest.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(t: &str, quoted: bool) -> Part {
        Part::Lit {
            text: t.into(),
            quoted,
        }
    }

    #[test]
    fn ansi_c() {
        assert_eq!(decode_ansi_c("rm"), "rm");
        assert_eq!(decode_ansi_c("\\x72m"), "rm");
        assert_eq!(decode_ansi_c("\\162\\155"), "rm");
        assert_eq!(decode_ansi_c("\\u0072m"), "rm");
        assert_eq!(decode_ansi_c("r\\'m"), "r'm");
        assert_eq!(decode_ansi_c("a\\0b"), "a");
        assert_eq!(decode_ansi_c("\\q"), "\\q");
        assert_eq!(decode_ansi_c("\\cA"), "\u{1}");
        assert_eq!(decode_echo("a\\nb"), ("a\nb".into(), false));
        assert_eq!(decode_echo("a\\cb"), ("a".into(), true));
    }

    #[test]
    fn words() {
        let w = AbsWord::new("'r'm", vec![lit("r", true), lit("m", false)]);
        assert_eq!(w.static_value().as_deref(), Some("rm"));
        let w = AbsWord::new("r*m", vec![lit("r*m", false)]);
        assert!(matches!(w.arg(), Arg::Glob { .. }));
        assert!(w.command_name().is_err());
        let w = AbsWord::new("'r*m'", vec![lit("r*m", true)]);
        assert_eq!(w.static_value().as_deref(), Some("r*m"));
        let w = AbsWord::new("{rm,x}", vec![lit("{rm,x}", false)]);
        assert!(matches!(w.arg(), Arg::Dynamic { splits: true, .. }));
        let w = AbsWord::new("{}", vec![lit("{}", false)]);
        assert_eq!(w.static_value().as_deref(), Some("{}"));
        let w = AbsWord::new("[", vec![lit("[", false)]);
        assert_eq!(w.static_value().as_deref(), Some("["));
        let w = AbsWord::new(
            "\"$D/rm\"",
            vec![
                Part::Dyn {
                    splits: false,
                    dash_free: false,
                },
                lit("/bin/rm", true),
            ],
        );
        assert_eq!(w.command_name().as_deref(), Ok("rm"));
        let w = AbsWord::new(
            "$D/rm",
            vec![
                Part::Dyn {
                    splits: true,
                    dash_free: false,
                },
                lit("/rm", false),
            ],
        );
        assert!(w.command_name().is_err());
        let w = AbsWord::new(
            "-$X",
            vec![
                lit("-", false),
                Part::Dyn {
                    splits: false,
                    dash_free: false,
                },
            ],
        );
        assert!(matches!(
            w.arg(),
            Arg::Dynamic { ref prefix, may_be_option: true, splits: false } if prefix == "-"
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(basename("/usr/bin/rm"), "rm");
        assert_eq!(basename("./rm"), "rm");
        assert_eq!(basename("rm"), "rm");
        assert_eq!(normalize_path("//").as_deref(), Some("/"));
        assert_eq!(normalize_path("/./").as_deref(), Some("/"));
        assert_eq!(normalize_path("/usr/..").as_deref(), Some("/"));
        assert_eq!(normalize_path("/tmp/").as_deref(), Some("/tmp"));
        assert_eq!(
            normalize_path("of=//dev/./sda").as_deref(),
            Some("of=/dev/sda")
        );
        assert_eq!(normalize_path("x"), None);
        assert!(climbs("/tmp/../etc"));
        assert!(climbs("of=../x"));
        assert!(!climbs("/tmp/..x/a..b"));
        assert_eq!(stable_prefix("/dev/sd"), "/");
        assert_eq!(stable_prefix("of=/dev/"), "of=/");
        assert_eq!(stable_prefix("of="), "of=");
        assert_eq!(stable_prefix("a/b=/c"), "a/b=/c");
        assert_eq!(stable_prefix("-rf"), "-rf");
        assert_eq!(unescape_backquoted("\\\\rm \\$x \\`", false), "\\rm $x `");
        assert_eq!(unescape_backquoted("\\\"rm\\\"", true), "\"rm\"");
        assert_eq!(unescape_backquoted("\\\"rm\\\"", false), "\\\"rm\\\"");
    }
}
