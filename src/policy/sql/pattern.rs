//! `[[rule]] sql = [...]` patterns: parsing (at config load) and matching against one operation.
//! The language is described in `sql.rs`.

use super::classify::{object_words, FIXED_KINDS};
use super::{Operation, Relation};

/// A compiled SQL pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlPattern {
    text: String,
    /// `None`: `*`, any kind.
    kind: Option<Vec<String>>,
    without_where: bool,
    relation: Option<RelationPattern>,
}

/// How a matcher treats what it cannot know (the `search_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchMode {
    /// For deny and review rules: match whenever the statement *may* touch the relation. An
    /// unqualified relation in a statement matches a pattern's schema; names compare without
    /// regard to case.
    #[default]
    Restrict,
    /// For allow rules: match only when it certainly does. An unqualified relation in a statement
    /// never matches a pattern that names a schema; names compare as PostgreSQL folded them.
    Permit,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("unterminated quoted name")]
    Unterminated,
    #[error("unknown statement kind `{0}`; expected a kind such as DROP, DROP TABLE, DELETE, UPDATE, INSERT, COPY PROGRAM, ALTER SYSTEM, GRANT, CREATE FUNCTION, or `*`")]
    UnknownKind(String),
    #[error("`{0}` is not a word of a statement kind")]
    BadWord(String),
    #[error("`without` must be followed by `WHERE`")]
    Without,
    #[error("`without WHERE` applies only to DELETE, UPDATE and `*`")]
    WithoutWhereKind,
    #[error("`on` must be followed by one relation (`name`, `schema.name`, globs with * and ?)")]
    On,
    #[error("`{0}` is given twice")]
    Twice(&'static str),
    #[error("bad relation `{0}`: expected `name` or `schema.name`")]
    Relation(String),
    #[error("unexpected `{0}` after the relation")]
    Trailing(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RelationPattern {
    schema: Option<NamePattern>,
    name: NamePattern,
}

/// One part of a relation pattern: a glob over an unquoted name (stored lower-case), or a
/// quoted name compared exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    text: String,
    quoted: bool,
}

impl SqlPattern {
    pub fn parse(text: &str) -> Result<SqlPattern, PatternError> {
        let tokens = tokens(text)?;
        let mut rest = tokens.iter().map(String::as_str).peekable();
        let mut words = Vec::new();
        while let Some(w) = rest.peek() {
            if w.eq_ignore_ascii_case("on") || w.eq_ignore_ascii_case("without") {
                break;
            }
            words.push(*w);
            rest.next();
        }
        if words.is_empty() {
            return Err(PatternError::Empty);
        }
        let kind = kind_words(&words)?;
        let mut without_where = false;
        let mut relation = None;
        while let Some(w) = rest.next() {
            if w.eq_ignore_ascii_case("without") {
                if without_where {
                    return Err(PatternError::Twice("without WHERE"));
                }
                if !rest.next().is_some_and(|w| w.eq_ignore_ascii_case("where")) {
                    return Err(PatternError::Without);
                }
                without_where = true;
            } else if w.eq_ignore_ascii_case("on") {
                if relation.is_some() {
                    return Err(PatternError::Twice("on"));
                }
                relation = Some(relation_pattern(rest.next().ok_or(PatternError::On)?)?);
            } else {
                return Err(PatternError::Trailing(w.to_owned()));
            }
        }
        if without_where {
            let fits = match &kind {
                None => true,
                Some(k) => k == &["DELETE"] || k == &["UPDATE"],
            };
            if !fits {
                return Err(PatternError::WithoutWhereKind);
            }
        }
        Ok(SqlPattern {
            text: text.to_owned(),
            kind,
            without_where,
            relation,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the operation fits the pattern.
    pub fn matches(&self, op: &Operation, mode: MatchMode) -> bool {
        let kind = match &self.kind {
            None => true,
            Some(words) => op.kinds.iter().any(|k| starts_with_words(k, words)),
        };
        kind && (!self.without_where || op.without_where)
            && self
                .relation
                .as_ref()
                .is_none_or(|p| op.relation.as_ref().is_some_and(|r| p.matches(r, mode)))
    }
}

/// Whether `kind`'s words begin with `words` (`DROP` begins `DROP TABLE`).
fn starts_with_words(kind: &str, words: &[String]) -> bool {
    let mut have = kind.split(' ');
    words.iter().all(|w| have.next() == Some(w.as_str()))
}

/// Splits on blanks outside double quotes.
fn tokens(text: &str) -> Result<Vec<String>, PatternError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if c.is_whitespace() && !quoted {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if quoted {
        return Err(PatternError::Unterminated);
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

fn kind_words(words: &[&str]) -> Result<Option<Vec<String>>, PatternError> {
    if words == ["*"] {
        return Ok(None);
    }
    let mut upper = Vec::new();
    for w in words {
        let ok = w
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && w.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok {
            return Err(PatternError::BadWord((*w).to_owned()));
        }
        upper.push(w.to_ascii_uppercase());
    }
    // CREATE USER and CREATE GROUP are CREATE ROLE (but CREATE USER MAPPING is not).
    if matches!(
        upper.first().map(String::as_str),
        Some("CREATE" | "ALTER" | "DROP")
    ) && matches!(upper.get(1).map(String::as_str), Some("USER" | "GROUP"))
        && upper.get(2).map(String::as_str) != Some("MAPPING")
    {
        if let Some(w) = upper.get_mut(1) {
            *w = "ROLE".to_owned();
        }
    }
    if !is_known_kind(&upper) {
        return Err(PatternError::UnknownKind(words.join(" ")));
    }
    Ok(Some(upper))
}

/// Whether some kind the classifier produces begins with these words.
fn is_known_kind(words: &[String]) -> bool {
    if matches!(
        words.first().map(String::as_str),
        Some("SET" | "RESET" | "SHOW")
    ) {
        return true;
    }
    let families = ["CREATE", "ALTER", "DROP"].into_iter().flat_map(|verb| {
        (0..=i64::from(u8::MAX)).filter_map(move |t| {
            let w = object_words(t);
            (t == 0 || w != "OBJECT").then(|| format!("{verb} {w}"))
        })
    });
    FIXED_KINDS
        .iter()
        .map(|k| (*k).to_owned())
        .chain(families)
        .any(|k| starts_with_words(&k, words))
}

fn relation_pattern(token: &str) -> Result<RelationPattern, PatternError> {
    let bad = || PatternError::Relation(token.to_owned());
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = token.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if current.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(name_part(std::mem::take(&mut current), was_quoted).ok_or_else(bad)?);
                was_quoted = false;
            }
            _ if quoted => current.push(c),
            _ if was_quoted => return Err(bad()),
            c if c.is_alphanumeric() || matches!(c, '_' | '$' | '*' | '?') => {
                current.push(c.to_ascii_lowercase());
            }
            _ => return Err(bad()),
        }
    }
    if quoted {
        return Err(PatternError::Unterminated);
    }
    parts.push(name_part(current, was_quoted).ok_or_else(bad)?);
    let name = parts.pop().ok_or_else(bad)?;
    let schema = parts.pop();
    if !parts.is_empty() {
        return Err(bad());
    }
    Ok(RelationPattern { schema, name })
}

fn name_part(text: String, quoted: bool) -> Option<NamePattern> {
    (!text.is_empty()).then_some(NamePattern { text, quoted })
}

impl RelationPattern {
    fn matches(&self, rel: &Relation, mode: MatchMode) -> bool {
        let schema = match (&self.schema, &rel.schema) {
            (None, _) => true,
            (Some(p), Some(s)) => p.matches(s, mode),
            // Unqualified in the statement: the search_path decides which schema it is in.
            (Some(_), None) => mode == MatchMode::Restrict,
        };
        // A whole schema holds this relation, as far as a deny or review rule can tell; an
        // allow rule covers it only with a name pattern that matches every name (`s.*`).
        let whole = rel.is_whole_schema() && mode == MatchMode::Restrict;
        schema && (whole || self.name.matches(&rel.name, mode))
    }
}

impl NamePattern {
    fn matches(&self, name: &str, mode: MatchMode) -> bool {
        if self.quoted {
            return self.text == name;
        }
        match mode {
            // Both sides folded fully: the pattern keeps non-ASCII capitals as PostgreSQL
            // keeps them in unquoted names (`Ärzte`), and a deny must match `"ärzte"` too.
            MatchMode::Restrict => glob(&fold(&self.text), &fold(name)),
            MatchMode::Permit => glob(&self.text, name),
        }
    }
}

/// Lower case, character by character (`str::to_lowercase` folds a final Σ by its context,
/// which would make `ΟΔΟΣ*` miss `ΟΔΟΣA`).
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// `*` (any run of characters) and `?` (one character).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}
