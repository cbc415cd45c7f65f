//! Parsing a rule's pattern string (`rm -rf`, `dd of=/dev/*`) and deciding it against the
//! facts of one command. The language is described in the parent module's documentation.

use super::glob::Glob;
use super::spec::{self, ArgFacts, CmdSpec, OptId, Style, Tri};
use super::word::normalize_path;

/// A pattern that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern has no words.
    #[error("empty shell pattern")]
    Empty,
    /// A quote is not closed.
    #[error("unclosed quote in shell pattern `{0}`")]
    UnclosedQuote(String),
    /// The command name holds a `/`: names are matched by base name only.
    #[error("the command name `{0}` has a `/`; patterns name commands by base name (`rm`, not `/bin/rm`)")]
    NameWithSlash(String),
    /// The pattern uses shell syntax a pattern cannot hold.
    #[error("`{word}` in a shell pattern: {why}")]
    Unsupported {
        /// The offending word.
        word: String,
        /// Why it is not accepted.
        why: &'static str,
    },
}

/// How a pattern names its command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NameMatch {
    /// A plain name: matches `name` and `name.<anything>` (`mkfs` matches `mkfs.ext4`).
    Plain(String),
    /// A glob over the base name.
    Glob(Glob),
}

/// One condition of a pattern; all must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    /// The option is given (in any spelling the option table knows).
    Opt(OptId),
    /// Some argument matches (an operand, or any word for commands like `find`).
    Operand { glob: Glob, text: String },
}

/// A parsed shell pattern: a command name and the options and operands that must all be
/// present for the pattern to match. See the module documentation for the language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellPattern {
    source: String,
    name: NameMatch,
    spec: Option<&'static CmdSpec>,
    reqs: Vec<Req>,
}

impl ShellPattern {
    /// Parses one pattern string, such as `rm -rf`, `mkfs`, `dd of=/dev/*` or `chmod -R 777 /`.
    pub fn parse(s: &str) -> Result<ShellPattern, PatternError> {
        let words = split(s)?;
        let mut words = words.into_iter();
        let Some(first) = words.next() else {
            return Err(PatternError::Empty);
        };
        if first.text.contains('/') {
            return Err(PatternError::NameWithSlash(first.text));
        }
        if first.text.is_empty() {
            return Err(PatternError::Empty);
        }
        let name = if !first.quoted && Glob::parse(&first.text).has_wildcards() {
            NameMatch::Glob(Glob::parse(&first.text))
        } else {
            NameMatch::Plain(unescape(&first.text, first.quoted))
        };
        let spec = match &name {
            NameMatch::Plain(n) => spec::lookup(n),
            NameMatch::Glob(_) => None,
        };
        let style = spec.map_or(Style::Getopt, |s| s.style);
        let mut reqs = Vec::new();
        let mut operands_only = false;
        for w in words {
            let t = w.text.as_str();
            if !w.quoted && !operands_only && style != Style::Words && t.starts_with('-') {
                if t == "--" {
                    operands_only = true;
                    continue;
                }
                if t == "-" {
                    reqs.push(operand(t, false, spec));
                    continue;
                }
                if let Some(long) = t.strip_prefix("--") {
                    if long.contains('=') {
                        return Err(PatternError::Unsupported {
                            word: w.text.clone(),
                            why: "option values are not supported; write the option alone",
                        });
                    }
                    let id = match spec {
                        Some(_) => spec::resolve_long(spec, long)
                            .map(|(id, _)| id)
                            .unwrap_or_else(|| OptId::Long(long.to_owned())),
                        None => OptId::Long(long.to_owned()),
                    };
                    reqs.push(Req::Opt(id));
                    continue;
                }
                for c in t.chars().skip(1) {
                    if c == '-' || c == '=' {
                        return Err(PatternError::Unsupported {
                            word: w.text.clone(),
                            why: "a short-option group holds only option letters",
                        });
                    }
                    reqs.push(Req::Opt(spec::resolve_short(spec, c).0));
                }
                continue;
            }
            reqs.push(operand(t, w.quoted, spec));
        }
        Ok(ShellPattern {
            source: s.trim().to_owned(),
            name,
            spec,
            reqs,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is about a command with this base name.
    pub(crate) fn names(&self, name: &str) -> bool {
        match &self.name {
            NameMatch::Plain(n) => {
                name == n
                    || name
                        .strip_prefix(n.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            NameMatch::Glob(g) => g.matches(name),
        }
    }

    /// The option table used to read arguments for this pattern.
    pub(crate) fn spec(&self) -> Option<&'static CmdSpec> {
        self.spec
    }

    /// Whether the pattern looks at arguments at all.
    pub(crate) fn inspects_args(&self) -> bool {
        !self.reqs.is_empty()
    }

    /// Decides the pattern against the facts of a command's arguments (read with
    /// [`ShellPattern::spec`]).
    pub(crate) fn decide(&self, facts: &ArgFacts) -> Tri {
        let mut maybe = None;
        for r in &self.reqs {
            let t = match r {
                Req::Opt(id) => facts.has_option(self.spec, id),
                Req::Operand { glob, text } => facts.has_operand(self.spec, glob, text),
            };
            match t {
                Tri::Yes => {}
                Tri::No => return Tri::No,
                Tri::Maybe(why) => {
                    maybe.get_or_insert(why);
                }
            }
        }
        match maybe {
            Some(why) => Tri::Maybe(why),
            None => Tri::Yes,
        }
    }
}

impl std::fmt::Display for ShellPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for ShellPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShellPattern::parse(s)
    }
}

fn operand(text: &str, quoted: bool, spec: Option<&CmdSpec>) -> Req {
    let words_style = spec.is_some_and(|s| s.style == Style::Words);
    let normalize = |v: &str| {
        if words_style {
            v.to_owned()
        } else {
            normalize_path(v).unwrap_or_else(|| v.to_owned())
        }
    };
    // Unquoted: glob syntax, backslashes escape; quoted: literal.
    let glob = if quoted {
        Glob::literal(&normalize(text))
    } else {
        Glob::parse(&normalize(text))
    };
    Req::Operand {
        glob,
        text: unescape(text, quoted),
    }
}

/// Removes backslashes from an unquoted word, for use as a plain name or display text.
fn unescape(text: &str, quoted: bool) -> String {
    if quoted {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct PatWord {
    text: String,
    /// Quoted words are literal operands.
    quoted: bool,
}

/// Splits a pattern into words: blanks separate, `'...'` and `"..."` group (making the word a
/// literal operand), `\` escapes one character. Shell operators and expansions are refused.
fn split(s: &str) -> Result<Vec<PatWord>, PatternError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(PatWord {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                    quoted = false;
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => cur.push(x),
                        None => return Err(PatternError::UnclosedQuote(s.to_owned())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '|' | ';' | '&' | '<' | '>' | '(' | ')' | '`' | '$' => {
                let why = if c == '$' || c == '`' {
                    "expansions are not supported in patterns"
                } else {
                    "a pattern describes one simple command; pipes, lists and redirections are not supported (a shell reading a pipe is already undecidable)"
                };
                return Err(PatternError::Unsupported {
                    word: c.to_string(),
                    why,
                });
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(PatWord { text: cur, quoted });
    }
    Ok(words)
}
