//! What the matcher knows about the options of common commands (so that `-R`, `-r` and
//! `--recursive` are one option for `rm`), and how a command's arguments are read into facts:
//! options certainly present, operands, and what run-time words might add.

use super::glob::Glob;
use super::word::{climbs, normalize_path, stable_prefix, Arg};

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arity {
    /// A flag.
    None,
    /// `-x VALUE`, `-xVALUE`, `--long VALUE`, `--long=VALUE`.
    Required,
    /// `-xVALUE`, `--long=VALUE` only.
    Optional,
}

/// One option of a known command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OptDef {
    /// The short spellings (`"rR"` for rm's recursive option).
    pub shorts: &'static str,
    /// The long name without `--` (may be empty for short-only options).
    pub long: &'static str,
    pub arity: Arity,
}

/// How a command reads its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// GNU getopt_long: clustered short options, `--long[=v]` with unambiguous prefixes,
    /// options anywhere before `--`.
    Getopt,
    /// Like getopt, but a `-` word made of mode letters is a mode operand (`chmod -w f`).
    ChmodModes,
    /// Every argument is a plain word (`find / -delete`).
    Words,
}

/// The option table of one command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CmdSpec {
    pub names: &'static [&'static str],
    pub style: Style,
    pub opts: &'static [OptDef],
}

const fn o(shorts: &'static str, long: &'static str) -> OptDef {
    OptDef {
        shorts,
        long,
        arity: Arity::None,
    }
}
const fn req(shorts: &'static str, long: &'static str) -> OptDef {
    OptDef {
        shorts,
        long,
        arity: Arity::Required,
    }
}
const fn opt(shorts: &'static str, long: &'static str) -> OptDef {
    OptDef {
        shorts,
        long,
        arity: Arity::Optional,
    }
}

/// The commands whose options the matcher knows (GNU coreutils / util-linux / systemd
/// spellings). For other commands, short and long spellings are distinct options.
pub(crate) static SPECS: &[CmdSpec] = &[
    CmdSpec {
        names: &["rm"],
        style: Style::Getopt,
        opts: &[
            o("f", "force"),
            o("i", ""),
            o("I", ""),
            opt("", "interactive"),
            o("", "one-file-system"),
            o("", "no-preserve-root"),
            opt("", "preserve-root"),
            o("rR", "recursive"),
            o("d", "dir"),
            o("v", "verbose"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["cp"],
        style: Style::Getopt,
        opts: &[
            o("a", "archive"),
            o("b", ""),
            opt("", "backup"),
            o("", "attributes-only"),
            o("", "copy-contents"),
            o("d", ""),
            o("f", "force"),
            o("i", "interactive"),
            o("H", ""),
            o("l", "link"),
            o("L", "dereference"),
            o("n", "no-clobber"),
            o("P", "no-dereference"),
            o("p", ""),
            opt("", "preserve"),
            req("", "no-preserve"),
            o("", "parents"),
            o("rR", "recursive"),
            opt("", "reflink"),
            o("", "remove-destination"),
            req("", "sparse"),
            o("", "strip-trailing-slashes"),
            o("s", "symbolic-link"),
            req("S", "suffix"),
            req("t", "target-directory"),
            o("T", "no-target-directory"),
            opt("u", "update"),
            o("v", "verbose"),
            o("x", "one-file-system"),
            o("Z", ""),
            opt("", "context"),
            o("", "debug"),
            o("", "keep-directory-symlink"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["mv"],
        style: Style::Getopt,
        opts: &[
            o("b", ""),
            opt("", "backup"),
            o("f", "force"),
            o("i", "interactive"),
            o("n", "no-clobber"),
            o("", "strip-trailing-slashes"),
            req("S", "suffix"),
            req("t", "target-directory"),
            o("T", "no-target-directory"),
            opt("u", "update"),
            o("v", "verbose"),
            o("Z", "context"),
            o("", "exchange"),
            o("", "no-copy"),
            o("", "debug"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["chmod"],
        style: Style::ChmodModes,
        opts: &[
            o("c", "changes"),
            o("f", "silent"),
            o("", "quiet"),
            o("v", "verbose"),
            o("", "no-preserve-root"),
            o("", "preserve-root"),
            req("", "reference"),
            o("R", "recursive"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["chown", "chgrp"],
        style: Style::Getopt,
        opts: &[
            o("c", "changes"),
            o("f", "silent"),
            o("", "quiet"),
            o("v", "verbose"),
            o("", "dereference"),
            o("h", "no-dereference"),
            req("", "from"),
            o("", "no-preserve-root"),
            o("", "preserve-root"),
            req("", "reference"),
            o("R", "recursive"),
            o("H", ""),
            o("L", ""),
            o("P", ""),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["ln"],
        style: Style::Getopt,
        opts: &[
            o("b", ""),
            opt("", "backup"),
            o("dF", "directory"),
            o("f", "force"),
            o("i", "interactive"),
            o("L", "logical"),
            o("n", "no-dereference"),
            o("P", "physical"),
            o("r", "relative"),
            o("s", "symbolic"),
            req("S", "suffix"),
            req("t", "target-directory"),
            o("T", "no-target-directory"),
            o("v", "verbose"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["shred"],
        style: Style::Getopt,
        opts: &[
            o("f", "force"),
            req("n", "iterations"),
            req("", "random-source"),
            req("s", "size"),
            opt("u", "remove"),
            o("v", "verbose"),
            o("x", "exact"),
            o("z", "zero"),
            o("", "help"),
            o("", "version"),
        ],
    },
    CmdSpec {
        names: &["dd"],
        style: Style::Getopt,
        opts: &[o("", "help"), o("", "version")],
    },
    CmdSpec {
        names: &["find"],
        style: Style::Words,
        opts: &[],
    },
    CmdSpec {
        names: &["shutdown"],
        style: Style::Getopt,
        opts: &[
            o("H", "halt"),
            o("P", "poweroff"),
            o("r", "reboot"),
            o("h", ""),
            o("k", ""),
            o("", "no-wall"),
            o("c", ""),
            o("", "show"),
            o("", "help"),
        ],
    },
    CmdSpec {
        names: &["reboot", "halt", "poweroff"],
        style: Style::Getopt,
        opts: &[
            o("", "help"),
            o("", "halt"),
            o("p", "poweroff"),
            o("", "reboot"),
            o("f", "force"),
            o("w", "wtmp-only"),
            o("d", "no-wtmp"),
            o("n", "no-sync"),
            o("", "no-wall"),
        ],
    },
    CmdSpec {
        names: &["crontab"],
        style: Style::Getopt,
        opts: &[
            req("u", ""),
            o("l", ""),
            o("r", ""),
            o("e", ""),
            o("i", ""),
            req("s", ""),
            req("n", ""),
            o("c", ""),
            o("V", ""),
        ],
    },
    CmdSpec {
        names: &["userdel"],
        style: Style::Getopt,
        opts: &[
            o("f", "force"),
            o("h", "help"),
            o("r", "remove"),
            req("R", "root"),
            req("P", "prefix"),
            o("Z", "selinux-user"),
        ],
    },
    CmdSpec {
        names: &["truncate"],
        style: Style::Getopt,
        opts: &[
            o("c", "no-create"),
            o("o", "io-blocks"),
            req("r", "reference"),
            req("s", "size"),
            o("", "help"),
            o("", "version"),
        ],
    },
];

/// The option table for a command base name.
pub(crate) fn lookup(name: &str) -> Option<&'static CmdSpec> {
    SPECS.iter().find(|s| s.names.contains(&name))
}

/// An option as the matcher compares it: the long name when the table knows one, else the
/// spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptId {
    Short(char),
    Long(String),
}

impl std::fmt::Display for OptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptId::Short(c) => write!(f, "-{c}"),
            OptId::Long(l) => write!(f, "--{l}"),
        }
    }
}

/// Resolves a short option letter.
pub(crate) fn resolve_short(spec: Option<&CmdSpec>, c: char) -> (OptId, Arity) {
    if let Some(def) = spec.and_then(|s| s.opts.iter().find(|d| d.shorts.contains(c))) {
        let id = if def.long.is_empty() {
            OptId::Short(c)
        } else {
            OptId::Long(def.long.to_owned())
        };
        return (id, def.arity);
    }
    (OptId::Short(c), Arity::None)
}

/// Resolves a long option name (without `--` and `=value`), accepting unambiguous prefixes
/// as GNU getopt_long does. `None` when a known command would reject it as ambiguous.
pub(crate) fn resolve_long(spec: Option<&CmdSpec>, name: &str) -> Option<(OptId, Arity)> {
    let Some(spec) = spec else {
        return Some((OptId::Long(name.to_owned()), Arity::None));
    };
    let longs = || spec.opts.iter().filter(|d| !d.long.is_empty());
    if let Some(def) = longs().find(|d| d.long == name) {
        return Some((OptId::Long(def.long.to_owned()), def.arity));
    }
    let mut found = longs().filter(|d| d.long.starts_with(name));
    match (found.next(), found.next()) {
        (Some(def), None) if !name.is_empty() => {
            Some((OptId::Long(def.long.to_owned()), def.arity))
        }
        // Unknown or ambiguous: getopt_long rejects it and the command does not run.
        _ => None,
    }
}

/// Whether `s` is a chmod mode written with a leading `-` (`-w`, `-rwx`, `-x,o-r`).
fn is_dash_mode(s: &str) -> bool {
    s.len() > 1 && s.chars().all(|c| "rwxXstugoa,+-=01234567".contains(c))
}

/// Canonical form of a chmod mode for comparison: octal without leading zeros, and the
/// symbolic spellings of "everything for everyone" as `777`.
pub(crate) fn normalize_mode(s: &str) -> Option<String> {
    if !s.is_empty() && s.chars().all(|c| c.is_digit(8)) {
        let t = s.trim_start_matches('0');
        return Some(if t.is_empty() { "0".into() } else { t.into() });
    }
    let full = [
        "a=rwx",
        "ugo=rwx",
        "a+rwx",
        "ugo+rwx",
        "u=rwx,g=rwx,o=rwx",
        "u+rwx,g+rwx,o+rwx",
        "=rwx",
        "+rwx",
    ];
    full.contains(&s).then(|| "777".into())
}

/// What an argument list says, for one option table.
#[derive(Debug, Default)]
pub(crate) struct ArgFacts {
    /// Options certainly present.
    pub opts: Vec<OptId>,
    /// Set when some word computed at run time may be any option; the text names the word.
    pub any_option: Option<String>,
    /// Unquoted globs that may expand to option words.
    pub option_globs: Vec<(String, Glob)>,
    /// Operands (for [`Style::Words`]: every argument).
    pub operands: Vec<Operand>,
}

/// An operand as far as it is known.
#[derive(Debug)]
pub(crate) enum Operand {
    Static(String),
    Glob {
        text: String,
        glob: Glob,
    },
    /// A word computed at run time, known to start with `prefix`; `raw` is the word as
    /// written. `splits`: it may become any number of words (the first still starts with
    /// `prefix` when that is not empty). `certain`: the (first) word is read as an operand,
    /// not as an option.
    Dynamic {
        prefix: String,
        raw: String,
        splits: bool,
        certain: bool,
    },
}

/// Reads an argument list into facts. `args` pairs each word's source text with its value.
pub(crate) fn analyze(spec: Option<&CmdSpec>, args: &[(String, Arg)]) -> ArgFacts {
    let style = spec.map_or(Style::Getopt, |s| s.style);
    let mut f = ArgFacts::default();
    let mut after_ddash = false;
    let mut i = 0;
    while let Some((raw, arg)) = args.get(i) {
        i += 1;
        match arg {
            Arg::Static(s) => {
                let option_like = !after_ddash && s.len() > 1 && s.starts_with('-');
                if style == Style::Words || !option_like {
                    f.operands.push(Operand::Static(s.clone()));
                    continue;
                }
                if s == "--" {
                    after_ddash = true;
                    continue;
                }
                if style == Style::ChmodModes && is_dash_mode(s) {
                    f.operands.push(Operand::Static(s.clone()));
                    continue;
                }
                if let Some(long) = s.strip_prefix("--") {
                    let (name, has_value) = match long.split_once('=') {
                        Some((n, _)) => (n, true),
                        None => (long, false),
                    };
                    if let Some((id, arity)) = resolve_long(spec, name) {
                        f.opts.push(id);
                        if arity == Arity::Required && !has_value {
                            i += 1;
                        }
                    }
                    continue;
                }
                let cluster: Vec<char> = s.chars().skip(1).collect();
                i += read_cluster(spec, &cluster, &mut f.opts);
            }
            Arg::Glob { text, glob } => {
                if style != Style::Words
                    && !after_ddash
                    && glob.intersects(true, &Glob::prefix("-"))
                {
                    f.option_globs.push((text.clone(), glob.clone()));
                }
                f.operands.push(Operand::Glob {
                    text: text.clone(),
                    glob: glob.clone(),
                });
            }
            Arg::Dynamic {
                prefix,
                splits,
                may_be_option,
            } => {
                let reads_options = !after_ddash && style != Style::Words;
                if *may_be_option && reads_options {
                    // `-r$X` and `-r{a,b}` certainly hold `-r` (in their first word); anything
                    // may follow.
                    if let Some(rest) = prefix.strip_prefix('-') {
                        if !rest.starts_with('-') {
                            let cluster: Vec<char> = rest.chars().collect();
                            read_cluster(spec, &cluster, &mut f.opts);
                        }
                    }
                }
                if (*may_be_option || *splits) && reads_options {
                    f.any_option.get_or_insert_with(|| raw.clone());
                }
                f.operands.push(Operand::Dynamic {
                    prefix: prefix.clone(),
                    raw: raw.clone(),
                    splits: *splits,
                    certain: !(*may_be_option && reads_options),
                });
            }
        }
    }
    f
}

/// Reads a short-option cluster (without its `-`); returns how many following words it
/// consumed as an option value (0 or 1).
fn read_cluster(spec: Option<&CmdSpec>, cluster: &[char], opts: &mut Vec<OptId>) -> usize {
    for (k, &c) in cluster.iter().enumerate() {
        let (id, arity) = resolve_short(spec, c);
        opts.push(id);
        match arity {
            Arity::None => {}
            Arity::Optional => return 0,
            Arity::Required => return usize::from(k + 1 == cluster.len()),
        }
    }
    0
}

/// Three-valued answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tri {
    Yes,
    /// Cannot tell; the text says why.
    Maybe(String),
    No,
}

impl ArgFacts {
    /// Is option `id` given?
    pub(crate) fn has_option(&self, spec: Option<&CmdSpec>, id: &OptId) -> Tri {
        let present = self.opts.iter().any(|p| match (p, id) {
            // Without a table, `--rec` is taken as any option it abbreviates.
            (OptId::Long(p), OptId::Long(want)) if spec.is_none() => {
                !p.is_empty() && want.starts_with(p.as_str())
            }
            _ => p == id,
        });
        if present {
            return Tri::Yes;
        }
        if let Some(raw) = &self.any_option {
            return Tri::Maybe(format!("`{raw}` is computed at run time and may be `{id}`"));
        }
        for (text, glob) in &self.option_globs {
            if glob_may_supply(spec, glob, id) {
                return Tri::Maybe(format!(
                    "the glob `{text}` may expand to a file name that is read as `{id}`"
                ));
            }
        }
        Tri::No
    }

    /// Is some operand `pattern` (for [`Style::Words`]: some argument)?
    pub(crate) fn has_operand(&self, spec: Option<&CmdSpec>, pattern: &Glob, text: &str) -> Tri {
        let pattern_mode = spec
            .filter(|s| s.style == Style::ChmodModes)
            .and_then(|_| normalize_mode(text));
        let mut maybe: Option<String> = None;
        for op in &self.operands {
            match op {
                Operand::Static(s) => {
                    if static_matches(pattern, pattern_mode.as_deref(), s) {
                        return Tri::Yes;
                    }
                }
                Operand::Glob { text: t, glob } => {
                    // `/tmp/.*` may expand to `/tmp/..`: only its root is certain.
                    let climbs = glob.may_climb();
                    if !climbs && static_matches(pattern, pattern_mode.as_deref(), t) {
                        return Tri::Yes;
                    }
                    let may = if climbs {
                        let literal = glob.literal_prefix();
                        pattern.intersects(false, &Glob::prefix(stable_prefix(&literal)))
                    } else {
                        glob.intersects(true, pattern)
                    };
                    if maybe.is_none() && may {
                        maybe = Some(format!("the glob `{t}` may expand to `{text}`"));
                    }
                }
                Operand::Dynamic {
                    prefix,
                    raw,
                    splits,
                    certain,
                } => {
                    // The tail may hold `/..`: of `/dev/$X` only `/` is certain.
                    let stable = stable_prefix(prefix);
                    let one_word = !*splits || !prefix.is_empty();
                    if *certain
                        && one_word
                        && pattern_mode.is_none()
                        && pattern.matches_every_extension(stable)
                    {
                        return Tri::Yes;
                    }
                    // Further words of a splitting expansion may be anything.
                    let reach = if *splits { "" } else { stable };
                    if maybe.is_none()
                        && (pattern.intersects(false, &Glob::prefix(reach))
                            || pattern_mode.is_some())
                    {
                        maybe = Some(format!("`{raw}` is computed at run time"));
                    }
                }
            }
        }
        match maybe {
            Some(m) => Tri::Maybe(m),
            None => Tri::No,
        }
    }
}

/// Whether a known operand matches: by its text, or by its lexically normalised path; a path
/// with a `..` component only by the latter (`/tmp/../etc` is `/etc`, not something under
/// `/tmp`).
fn static_matches(pattern: &Glob, pattern_mode: Option<&str>, s: &str) -> bool {
    let normalized = normalize_path(s);
    if pattern.matches(s) && !(normalized.is_some() && climbs(s)) {
        return true;
    }
    if let Some(n) = normalized {
        if pattern.matches(&n) {
            return true;
        }
    }
    match pattern_mode {
        Some(m) => normalize_mode(s).as_deref() == Some(m),
        None => false,
    }
}

/// Whether a file name from `glob` could be read as option `id`: it must start with `-`, and
/// for a known command every literal character of the glob must fit the option spelling
/// (`*.log` cannot be any of rm's options: `.` is neither a short option nor part of a long
/// one).
fn glob_may_supply(spec: Option<&CmdSpec>, glob: &Glob, id: &OptId) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    if spec
        .opts
        .iter()
        .any(|d| d.arity != Arity::None && !d.shorts.is_empty())
    {
        return true;
    }
    let lits: Vec<char> = glob.literal_chars().filter(|c| *c != '-').collect();
    let short_ok = lits
        .iter()
        .all(|c| spec.opts.iter().any(|d| d.shorts.contains(*c)));
    let long_ok = match id {
        OptId::Long(name) => lits.iter().all(|c| name.contains(*c)),
        OptId::Short(_) => false,
    };
    short_ok || long_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> (String, Arg) {
        (s.to_owned(), Arg::Static(s.to_owned()))
    }

    #[test]
    fn rm_options() {
        let rm = lookup("rm");
        let long = |s: &str| OptId::Long(s.into());
        let f = analyze(rm, &[st("-Rf"), st("x")]);
        assert_eq!(f.has_option(rm, &long("recursive")), Tri::Yes);
        assert_eq!(f.has_option(rm, &long("force")), Tri::Yes);
        let f = analyze(rm, &[st("--rec"), st("--fo"), st("x")]);
        assert_eq!(f.has_option(rm, &long("recursive")), Tri::Yes);
        assert_eq!(f.has_option(rm, &long("force")), Tri::Yes);
        let f = analyze(rm, &[st("--"), st("-rf")]);
        assert_eq!(f.has_option(rm, &long("recursive")), Tri::No);
        let f = analyze(rm, &[st("x"), st("-rf")]);
        assert_eq!(f.has_option(rm, &long("recursive")), Tri::Yes);
        assert!(resolve_long(rm, "p").is_some());
        assert!(resolve_long(rm, "no").is_some());
        assert!(resolve_long(rm, "xyz").is_none());
    }

    #[test]
    fn chmod_modes() {
        let chmod = lookup("chmod");
        let f = analyze(chmod, &[st("-r"), st("x")]);
        assert_eq!(
            f.has_option(chmod, &OptId::Long("recursive".into())),
            Tri::No
        );
        assert_eq!(normalize_mode("0777").as_deref(), Some("777"));
        assert_eq!(normalize_mode("a+rwx").as_deref(), Some("777"));
        let f = analyze(chmod, &[st("-R"), st("0777"), st("//")]);
        assert_eq!(f.has_operand(chmod, &Glob::parse("777"), "777"), Tri::Yes);
        assert_eq!(f.has_operand(chmod, &Glob::parse("/"), "/"), Tri::Yes);
    }
}
