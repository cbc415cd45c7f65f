//! The analyser: parses a command line with brush-parser, walks every command that would
//! run (lists, pipelines, compound commands, function bodies, substitutions, strings handed
//! to shells and wrappers), and decides each simple command against the patterns.
//!
//! It keeps the first undecidable point as the "unknown" reason and stops at the first
//! match. Every recursion is bounded (see the limits below) so that hostile input can cost
//! neither unbounded time nor stack. `commands.rs` holds the per-command handlers.

mod commands;

use std::ops::ControlFlow;

use brush_parser::ast;
use brush_parser::word::{WordPiece, WordPieceWithSource};
use brush_parser::{ParserOptions, SourceInfo, Token};

use super::pattern::ShellPattern;
use super::word::{decode_ansi_c, decode_echo, has_extglob, unescape_backquoted, AbsWord, Part};

/// Longest command line analysed; longer ones are undecidable.
pub const MAX_LINE_BYTES: usize = 32 * 1024;
/// Deepest nesting of command strings (`sh -c`, `eval`, `$(...)`, backquotes, `ssh host cmd`).
pub const MAX_NESTED_SCRIPTS: usize = 10;
/// Most grouping constructs in one string handed to the parser (parentheses, braces,
/// substitutions, `if`/`while`/`case`/`for`, `[[`, `!`). The parser recurses on them.
pub const MAX_GROUPS: usize = 48;
/// Deepest nesting of compound commands, over all nested strings together.
pub const MAX_COMPOUND_DEPTH: usize = 64;
/// Total bytes handed to the parser for one line (nested strings are parsed again).
const PARSE_BUDGET: usize = 4 * MAX_LINE_BYTES;

/// A pattern with the caller's id.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: usize,
    pub pattern: ShellPattern,
}

/// A match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub id: usize,
    pub pattern: String,
    pub command: String,
}

/// The analysis of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit(Hit),
    Unknown(String),
    Clear,
}

/// What a command reads on its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The session's terminal or channel: later input is the caller's to check.
    Terminal,
    /// Known text.
    Text(String),
    /// A file the policy cannot see (as with any script run by path).
    File,
    /// Data produced at run time; the text says by what.
    Opaque(String),
}

/// Analyses one line against the rules.
pub(crate) fn analyze(rules: &[Rule], line: &str) -> Outcome {
    if rules.is_empty() {
        return Outcome::Clear;
    }
    if line.len() > MAX_LINE_BYTES {
        return Outcome::Unknown(format!(
            "the command line is longer than {MAX_LINE_BYTES} bytes"
        ));
    }
    let mut a = Analyzer {
        rules,
        budget: PARSE_BUDGET,
        unknown: None,
        options: ParserOptions::default(),
    };
    if let Some(why) = history_expansion(line) {
        a.unknown(why);
    }
    let ctx = Ctx {
        scripts: 0,
        depth: 0,
        stdin: Input::Terminal,
    };
    match a.script(line, &ctx) {
        ControlFlow::Break(hit) => Outcome::Hit(hit),
        ControlFlow::Continue(()) => match a.unknown {
            Some(why) => Outcome::Unknown(why),
            None => Outcome::Clear,
        },
    }
}

type Flow<T = ()> = ControlFlow<Hit, T>;

#[derive(Debug, Clone)]
struct Ctx {
    /// Nesting of command strings.
    scripts: usize,
    /// Nesting of compound commands.
    depth: usize,
    /// What the current command reads.
    stdin: Input,
}

impl Ctx {
    fn nested(&self, stdin: Input) -> Ctx {
        Ctx {
            scripts: self.scripts + 1,
            depth: self.depth,
            stdin,
        }
    }

    fn with_stdin(&self, stdin: Input) -> Ctx {
        Ctx {
            stdin,
            ..self.clone()
        }
    }
}

/// How word pieces are read.
#[derive(Clone, Copy)]
struct PieceMode {
    in_double_quotes: bool,
    /// Report unquoted text that a real word could not hold (a sign that the word parser
    /// and the shell disagree on where a substitution ends).
    check_split: bool,
}

/// Redirection effects on one command.
#[derive(Default)]
struct Redirs {
    stdin: Option<Input>,
    stdout_redirected: bool,
}

struct Analyzer<'a> {
    rules: &'a [Rule],
    budget: usize,
    unknown: Option<String>,
    options: ParserOptions,
}

impl Analyzer<'_> {
    fn unknown(&mut self, why: impl Into<String>) {
        if self.unknown.is_none() {
            self.unknown = Some(why.into());
        }
    }

    /// Takes `n` bytes from the parse budget; false (and unknown) when it is spent.
    fn charge(&mut self, n: usize) -> bool {
        match self.budget.checked_sub(n) {
            Some(rest) => {
                self.budget = rest;
                true
            }
            None => {
                self.budget = 0;
                self.unknown("the command line is too complex to analyse");
                false
            }
        }
    }

    // ---- programs ------------------------------------------------------------------------

    /// Parses and walks a command string.
    fn script(&mut self, text: &str, ctx: &Ctx) -> Flow {
        if ctx.scripts > MAX_NESTED_SCRIPTS {
            self.unknown(format!(
                "commands are nested more than {MAX_NESTED_SCRIPTS} levels deep"
            ));
            return ControlFlow::Continue(());
        }
        if !self.charge(text.len()) {
            return ControlFlow::Continue(());
        }
        let tokens = match tokenize(text, &self.options) {
            Ok(t) => t,
            Err(why) => {
                self.unknown(why);
                return ControlFlow::Continue(());
            }
        };
        if let Err(why) = check_tokens(&tokens) {
            self.unknown(why);
            return ControlFlow::Continue(());
        }
        let tokens = match false_arithmetic(text, &tokens) {
            Ok(None) => Ok(tokens),
            Ok(Some(fixed)) => tokenize(&fixed, &self.options),
            Err(why) => Err(why),
        };
        let tokens = match tokens {
            Ok(t) => t,
            Err(why) => {
                self.unknown(why);
                return ControlFlow::Continue(());
            }
        };
        let program =
            match brush_parser::parse_tokens(&tokens, &self.options, &SourceInfo::default()) {
                Ok(p) => p,
                Err(e) => {
                    self.unknown(format!("the command line does not parse: {e}"));
                    return ControlFlow::Continue(());
                }
            };
        for list in &program.complete_commands {
            self.compound_list(list, ctx)?;
        }
        ControlFlow::Continue(())
    }

    /// Walks a list; yields what its output is known to be.
    fn compound_list(&mut self, list: &ast::CompoundList, ctx: &Ctx) -> Flow<Input> {
        let mut out = Input::Text(String::new());
        for item in &list.0 {
            out = self.and_or(&item.0, ctx)?;
        }
        if list.0.len() > 1 {
            out = Input::Opaque("the output of a command list".into());
        }
        ControlFlow::Continue(out)
    }

    fn and_or(&mut self, list: &ast::AndOrList, ctx: &Ctx) -> Flow<Input> {
        let mut out = self.pipeline(&list.first, ctx)?;
        for next in &list.additional {
            let (ast::AndOr::And(p) | ast::AndOr::Or(p)) = next;
            self.pipeline(p, ctx)?;
            out = Input::Opaque("the output of a command list".into());
        }
        ControlFlow::Continue(out)
    }

    fn pipeline(&mut self, p: &ast::Pipeline, ctx: &Ctx) -> Flow<Input> {
        let mut stdin = ctx.stdin.clone();
        for cmd in &p.seq {
            let out = self.command(cmd, &ctx.with_stdin(stdin))?;
            stdin = out;
        }
        ControlFlow::Continue(stdin)
    }

    fn command(&mut self, cmd: &ast::Command, ctx: &Ctx) -> Flow<Input> {
        match cmd {
            ast::Command::Simple(sc) => self.simple(sc, ctx),
            ast::Command::Compound(cc, redirects) => {
                let mut r = Redirs::default();
                if let Some(list) = redirects {
                    for redirect in &list.0 {
                        self.redirect(redirect, ctx, &mut r)?;
                    }
                }
                let inner = ctx.with_stdin(r.stdin.unwrap_or_else(|| ctx.stdin.clone()));
                self.compound(cc, &inner)?;
                ControlFlow::Continue(Input::Opaque("the output of a compound command".into()))
            }
            ast::Command::Function(f) => {
                // The body is checked as if it ran: the function may be called later.
                let mut r = Redirs::default();
                if let Some(list) = &f.body.1 {
                    for redirect in &list.0 {
                        self.redirect(redirect, ctx, &mut r)?;
                    }
                }
                self.compound(&f.body.0, &ctx.with_stdin(Input::Terminal))?;
                ControlFlow::Continue(Input::Text(String::new()))
            }
            ast::Command::ExtendedTest(t) => {
                self.extended_test(&t.expr, ctx)?;
                ControlFlow::Continue(Input::Text(String::new()))
            }
        }
    }

    fn compound(&mut self, cc: &ast::CompoundCommand, ctx: &Ctx) -> Flow {
        if ctx.depth >= MAX_COMPOUND_DEPTH {
            self.unknown(format!(
                "compound commands are nested more than {MAX_COMPOUND_DEPTH} levels deep"
            ));
            return ControlFlow::Continue(());
        }
        let ctx = &Ctx {
            depth: ctx.depth + 1,
            ..ctx.clone()
        };
        match cc {
            ast::CompoundCommand::Arithmetic(a) => self.arithmetic(&a.expr.value, ctx),
            ast::CompoundCommand::ArithmeticForClause(f) => {
                for e in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.arithmetic(&e.value, ctx)?;
                }
                unit(self.compound_list(&f.body.list, ctx))
            }
            ast::CompoundCommand::BraceGroup(b) => unit(self.compound_list(&b.list, ctx)),
            ast::CompoundCommand::Subshell(s) => unit(self.compound_list(&s.list, ctx)),
            ast::CompoundCommand::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.eval_word(&w.value, ctx)?;
                }
                unit(self.compound_list(&f.body.list, ctx))
            }
            ast::CompoundCommand::CaseClause(c) => {
                self.eval_word(&c.value.value, ctx)?;
                for item in &c.cases {
                    for p in &item.patterns {
                        self.eval_word(&p.value, ctx)?;
                    }
                    if let Some(list) = &item.cmd {
                        self.compound_list(list, ctx)?;
                    }
                }
                ControlFlow::Continue(())
            }
            ast::CompoundCommand::IfClause(i) => {
                self.compound_list(&i.condition, ctx)?;
                self.compound_list(&i.then, ctx)?;
                for e in i.elses.iter().flatten() {
                    if let Some(c) = &e.condition {
                        self.compound_list(c, ctx)?;
                    }
                    self.compound_list(&e.body, ctx)?;
                }
                ControlFlow::Continue(())
            }
            ast::CompoundCommand::WhileClause(w) | ast::CompoundCommand::UntilClause(w) => {
                self.compound_list(&w.0, ctx)?;
                unit(self.compound_list(&w.1.list, ctx))
            }
        }
    }

    fn extended_test(&mut self, e: &ast::ExtendedTestExpr, ctx: &Ctx) -> Flow {
        match e {
            ast::ExtendedTestExpr::And(a, b) | ast::ExtendedTestExpr::Or(a, b) => {
                self.extended_test(a, ctx)?;
                self.extended_test(b, ctx)
            }
            ast::ExtendedTestExpr::Not(a) | ast::ExtendedTestExpr::Parenthesized(a) => {
                self.extended_test(a, ctx)
            }
            ast::ExtendedTestExpr::UnaryTest(pred, w) => {
                let v = self.eval_word(&w.value, ctx)?;
                if matches!(pred, ast::UnaryPredicate::ShellVariableIsSetAndAssigned) {
                    self.subscript(&v, ctx)?;
                }
                ControlFlow::Continue(())
            }
            ast::ExtendedTestExpr::BinaryTest(_, a, b) => {
                self.eval_word(&a.value, ctx)?;
                self.eval_word(&b.value, ctx)?;
                ControlFlow::Continue(())
            }
        }
    }

    // ---- simple commands -----------------------------------------------------------------

    fn simple(&mut self, sc: &ast::SimpleCommand, ctx: &Ctx) -> Flow<Input> {
        let mut words: Vec<AbsWord> = Vec::new();
        let mut r = Redirs::default();
        if let Some(prefix) = &sc.prefix {
            for item in &prefix.0 {
                self.item(item, ctx, &mut words, &mut r, true)?;
            }
        }
        if let Some(w) = &sc.word_or_name {
            let v = self.eval_word(&w.value, ctx)?;
            words.push(v);
        }
        if let Some(suffix) = &sc.suffix {
            for item in &suffix.0 {
                self.item(item, ctx, &mut words, &mut r, false)?;
            }
        }
        if words.is_empty() {
            return ControlFlow::Continue(Input::Text(String::new()));
        }
        let stdin = r.stdin.clone().unwrap_or_else(|| ctx.stdin.clone());
        self.invocation(&words, &stdin, ctx, 0)?;
        if r.stdout_redirected {
            return ControlFlow::Continue(Input::Text(String::new()));
        }
        ControlFlow::Continue(static_output(&words))
    }

    fn item(
        &mut self,
        item: &ast::CommandPrefixOrSuffixItem,
        ctx: &Ctx,
        words: &mut Vec<AbsWord>,
        r: &mut Redirs,
        in_prefix: bool,
    ) -> Flow {
        match item {
            ast::CommandPrefixOrSuffixItem::IoRedirect(redirect) => {
                self.redirect(redirect, ctx, r)?;
            }
            ast::CommandPrefixOrSuffixItem::Word(w) => {
                let v = self.eval_word(&w.value, ctx)?;
                words.push(v);
            }
            ast::CommandPrefixOrSuffixItem::AssignmentWord(a, w) => {
                let (name, value) = self.assignment(a, ctx)?;
                if in_prefix {
                    self.special_variable(&name, &value, ctx)?;
                    // Arithmetic later evaluates the value's subscripts (`x='a[$(cmd)]'`,
                    // then `$((x))`).
                    self.subscript(&value, ctx)?;
                } else {
                    // An argument of `export`/`declare`/...: checked by the builtin's handler.
                    let mut parts = vec![Part::Lit {
                        text: format!("{name}="),
                        quoted: true,
                    }];
                    parts.extend(value.parts_owned());
                    words.push(AbsWord::new(w.value.clone(), parts));
                }
            }
            ast::CommandPrefixOrSuffixItem::ProcessSubstitution(kind, sub) => {
                let out = self.compound_list(&sub.list, &ctx.nested(Input::Terminal))?;
                let sign = match kind {
                    ast::ProcessSubstitutionKind::Read => "<",
                    ast::ProcessSubstitutionKind::Write => ">",
                };
                let mut w = AbsWord::new(
                    format!("{sign}(...)"),
                    vec![
                        Part::Lit {
                            text: "/dev/fd/".into(),
                            quoted: true,
                        },
                        Part::Dyn {
                            splits: false,
                            dash_free: true,
                        },
                    ],
                );
                if matches!(kind, ast::ProcessSubstitutionKind::Read) {
                    w.proc_output = Some(out);
                }
                words.push(w);
            }
        }
        ControlFlow::Continue(())
    }

    /// Evaluates an assignment's value (and subscript); returns the name and the value.
    fn assignment(&mut self, a: &ast::Assignment, ctx: &Ctx) -> Flow<(String, AbsWord)> {
        let name = match &a.name {
            ast::AssignmentName::VariableName(n) => n.clone(),
            ast::AssignmentName::ArrayElementName(n, index) => {
                self.arithmetic(index, ctx)?;
                n.clone()
            }
        };
        match &a.value {
            ast::AssignmentValue::Scalar(w) => {
                let v = self.eval_word(&w.value, ctx)?;
                ControlFlow::Continue((name, v))
            }
            ast::AssignmentValue::Array(items) => {
                for (key, value) in items {
                    if let Some(k) = key {
                        self.eval_word(&k.value, ctx)?;
                    }
                    let v = self.eval_word(&value.value, ctx)?;
                    if name == "PROMPT_COMMAND" {
                        self.special_variable(&name, &v, ctx)?;
                    }
                }
                ControlFlow::Continue((name, AbsWord::dynamic("(...)", true, false)))
            }
        }
    }

    /// Variables whose value bash later runs as code.
    fn special_variable(&mut self, name: &str, value: &AbsWord, ctx: &Ctx) -> Flow {
        match name {
            "PROMPT_COMMAND" => match value.text_value() {
                Some(code) => self.script(&code, &ctx.nested(Input::Terminal)),
                None => {
                    self.unknown("PROMPT_COMMAND is set to a value computed at run time");
                    ControlFlow::Continue(())
                }
            },
            "PS0" | "PS1" | "PS2" | "PS4" => match value.text_value() {
                Some(text) => unit(self.scan_expansions(&text, ctx)),
                None => {
                    self.unknown(format!("{name} is set to a value computed at run time"));
                    ControlFlow::Continue(())
                }
            },
            _ => ControlFlow::Continue(()),
        }
    }

    fn redirect(&mut self, redirect: &ast::IoRedirect, ctx: &Ctx, r: &mut Redirs) -> Flow {
        let reads_stdin = |fd: &Option<ast::IoFd>| matches!(fd, None | Some(0));
        let writes_stdout = |fd: &Option<ast::IoFd>| matches!(fd, None | Some(1));
        match redirect {
            ast::IoRedirect::File(fd, kind, target) => match target {
                ast::IoFileRedirectTarget::Filename(w)
                | ast::IoFileRedirectTarget::Duplicate(w) => {
                    self.eval_word(&w.value, ctx)?;
                    match kind {
                        ast::IoFileRedirectKind::Read if reads_stdin(fd) => {
                            r.stdin = Some(Input::File);
                        }
                        ast::IoFileRedirectKind::Write
                        | ast::IoFileRedirectKind::Append
                        | ast::IoFileRedirectKind::Clobber
                            if writes_stdout(fd) =>
                        {
                            r.stdout_redirected = true;
                        }
                        _ => {}
                    }
                }
                ast::IoFileRedirectTarget::ProcessSubstitution(_, sub) => {
                    let out = self.compound_list(&sub.list, &ctx.nested(Input::Terminal))?;
                    if matches!(kind, ast::IoFileRedirectKind::Read) && reads_stdin(fd) {
                        r.stdin = Some(out);
                    }
                }
                ast::IoFileRedirectTarget::Fd(_) => {}
            },
            ast::IoRedirect::HereDocument(fd, doc) => {
                let body = if doc.remove_tabs {
                    doc.doc
                        .value
                        .split_inclusive('\n')
                        .map(|l| l.trim_start_matches('\t'))
                        .collect::<String>()
                } else {
                    doc.doc.value.clone()
                };
                let input = if doc.requires_expansion {
                    if self.scan_expansions(&body, ctx)? {
                        Input::Opaque("a here-document with expansions".into())
                    } else {
                        Input::Text(heredoc_unescape(&body))
                    }
                } else {
                    Input::Text(body)
                };
                if reads_stdin(fd) {
                    r.stdin = Some(input);
                }
            }
            ast::IoRedirect::HereString(fd, w) => {
                let v = self.eval_word(&w.value, ctx)?;
                if reads_stdin(fd) {
                    r.stdin = Some(match v.static_value() {
                        Some(s) => Input::Text(s + "\n"),
                        None => Input::Opaque(format!("the here-string `{}`", v.raw)),
                    });
                }
            }
            ast::IoRedirect::OutputAndError(w, _) => {
                self.eval_word(&w.value, ctx)?;
                r.stdout_redirected = true;
            }
        }
        ControlFlow::Continue(())
    }

    // ---- words ---------------------------------------------------------------------------

    /// Evaluates one word; walks the commands its substitutions run.
    fn eval_word(&mut self, raw: &str, ctx: &Ctx) -> Flow<AbsWord> {
        let mode = PieceMode {
            in_double_quotes: false,
            check_split: true,
        };
        self.eval_word_with(raw, ctx, mode)
    }

    fn eval_word_with(&mut self, raw: &str, ctx: &Ctx, mode: PieceMode) -> Flow<AbsWord> {
        let dynamic = || AbsWord::dynamic(raw, true, false);
        // Plain words (the vast majority) need no parsing.
        if !raw.contains(['\'', '"', '\\', '$', '`', '~']) && !has_extglob(raw) {
            return ControlFlow::Continue(AbsWord::new(
                raw,
                vec![Part::Lit {
                    text: raw.to_owned(),
                    quoted: false,
                }],
            ));
        }
        if !self.charge(raw.len()) {
            return ControlFlow::Continue(dynamic());
        }
        let pieces = match parse_word(raw, &self.options) {
            Ok(p) => p,
            Err(WordError::Limit(why)) => {
                self.unknown(why);
                return ControlFlow::Continue(dynamic());
            }
            Err(WordError::Syntax(e)) => {
                self.unknown(format!("the word `{raw}` does not parse: {e}"));
                return ControlFlow::Continue(dynamic());
            }
        };
        let mut parts = Vec::new();
        self.pieces(&pieces, raw, mode, &mut parts, ctx)?;
        ControlFlow::Continue(AbsWord::new(raw, parts))
    }

    fn pieces(
        &mut self,
        pieces: &[WordPieceWithSource],
        raw: &str,
        mode: PieceMode,
        parts: &mut Vec<Part>,
        ctx: &Ctx,
    ) -> Flow {
        let unquoted = !mode.in_double_quotes;
        for p in pieces {
            let slice = raw.get(p.start_index..p.end_index).unwrap_or("");
            match &p.piece {
                WordPiece::Text(s) => {
                    if mode.in_double_quotes {
                        parts.push(Part::Lit {
                            text: s.replace("\\\n", ""),
                            quoted: true,
                        });
                    } else if has_extglob(s) {
                        parts.push(Part::Dyn {
                            splits: true,
                            dash_free: false,
                        });
                    } else {
                        if mode.check_split
                            && s.contains([' ', '\t', '\n', ';', '&', '|', '<', '>', '(', ')'])
                        {
                            self.unknown(format!(
                                "the word `{raw}` is not split the way the shell would split it"
                            ));
                        }
                        parts.push(Part::Lit {
                            text: s.clone(),
                            quoted: false,
                        });
                    }
                }
                WordPiece::SingleQuotedText(s) => parts.push(Part::Lit {
                    text: s.clone(),
                    quoted: true,
                }),
                WordPiece::AnsiCQuotedText(s) => parts.push(Part::Lit {
                    text: decode_ansi_c(s),
                    quoted: true,
                }),
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    parts.push(Part::Lit {
                        text: String::new(),
                        quoted: true,
                    });
                    let inner_mode = PieceMode {
                        in_double_quotes: true,
                        ..mode
                    };
                    self.pieces(inner, raw, inner_mode, parts, ctx)?;
                }
                WordPiece::TildePrefix(_) => parts.push(Part::Dyn {
                    splits: false,
                    dash_free: true,
                }),
                WordPiece::ParameterExpansion(_) => {
                    // Nested words (`${x:-$(cmd)}`, `${a[$(cmd)]}`) run their substitutions.
                    if let Some(inner) = slice.strip_prefix("${").and_then(|s| s.strip_suffix('}'))
                    {
                        if inner.contains(['$', '`']) {
                            self.nested_word(inner, ctx)?;
                        }
                        if inner.ends_with("@P") {
                            self.unknown(format!(
                                "`{slice}` expands a value like a prompt string, running its substitutions"
                            ));
                        }
                    }
                    parts.push(Part::Dyn {
                        splits: unquoted || slice.contains('@'),
                        dash_free: false,
                    });
                }
                WordPiece::CommandSubstitution(code) => {
                    self.substitution(code, ctx)?;
                    parts.push(Part::Dyn {
                        splits: unquoted,
                        dash_free: false,
                    });
                }
                WordPiece::BackquotedCommandSubstitution(_) => {
                    let body = slice
                        .strip_prefix('`')
                        .and_then(|s| s.strip_suffix('`'))
                        .unwrap_or("");
                    let code = unescape_backquoted(body, mode.in_double_quotes);
                    self.script(&code, &ctx.nested(ctx.stdin.clone()))?;
                    parts.push(Part::Dyn {
                        splits: unquoted,
                        dash_free: false,
                    });
                }
                WordPiece::EscapeSequence(s) => {
                    let mut chars = s.chars();
                    chars.next();
                    let rest: String = chars.collect();
                    parts.push(Part::Lit {
                        text: if rest.is_empty() { s.clone() } else { rest },
                        quoted: true,
                    });
                }
                WordPiece::ArithmeticExpression(e) => {
                    self.arithmetic(&e.value, ctx)?;
                    parts.push(Part::Dyn {
                        splits: unquoted,
                        dash_free: false,
                    });
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Walks the substitutions of text nested in a parameter expansion.
    fn nested_word(&mut self, inner: &str, ctx: &Ctx) -> Flow {
        if !self.charge(inner.len()) {
            return ControlFlow::Continue(());
        }
        match parse_word(inner, &self.options) {
            Ok(pieces) => {
                let mode = PieceMode {
                    in_double_quotes: false,
                    check_split: false,
                };
                let mut parts = Vec::new();
                self.pieces(&pieces, inner, mode, &mut parts, ctx)
            }
            Err(WordError::Limit(why)) => {
                self.unknown(why);
                ControlFlow::Continue(())
            }
            Err(_) if inner.contains("$(") || inner.contains('`') => {
                self.unknown(format!("the expansion `${{{inner}}}` does not parse"));
                ControlFlow::Continue(())
            }
            Err(WordError::Syntax(_)) => ControlFlow::Continue(()),
        }
    }

    /// Walks the commands of `$(code)`.
    fn substitution(&mut self, code: &str, ctx: &Ctx) -> Flow {
        if code.contains('#') {
            // The word parser ends `$(` at the first `)`; if a comment inside runs past it,
            // the shell would read further. Check that a `)` after the text closes it.
            let probe = format!("{code}\n)");
            let closes = tokenize(&probe, &self.options)
                .ok()
                .and_then(|t| t.last().cloned())
                .is_some_and(|t| matches!(t, Token::Operator(ref o, _) if o == ")"));
            if !closes {
                self.unknown("a comment hides where a command substitution ends");
            }
        }
        self.script(code, &ctx.nested(ctx.stdin.clone()))
    }

    /// Walks substitutions inside an arithmetic expression.
    fn arithmetic(&mut self, expr: &str, ctx: &Ctx) -> Flow {
        if expr.contains(['$', '`']) {
            self.scan_expansions(expr, ctx)?;
        }
        ControlFlow::Continue(())
    }

    /// Bash evaluates array subscripts in names given as strings (`[[ -v 'a[$(cmd)]' ]]`,
    /// `printf -v 'a[$(cmd)]'`): walk substitutions in such a name.
    fn subscript(&mut self, w: &AbsWord, ctx: &Ctx) -> Flow {
        if let Some(t) = w.text_value() {
            if t.contains('[') && (t.contains("$(") || t.contains('`')) {
                self.scan_expansions(&t, ctx)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// Finds and walks the substitutions in text read like the inside of double quotes
    /// (here-document bodies, prompt strings, arithmetic). Yields whether the text has any
    /// expansion (so its value is not static).
    fn scan_expansions(&mut self, text: &str, ctx: &Ctx) -> Flow<bool> {
        let mut dynamic = false;
        let mut i = 0;
        while let Some(rest) = text.get(i..) {
            let Some(c) = rest.chars().next() else { break };
            if c == '\\' {
                i += 1 + rest.chars().nth(1).map_or(0, char::len_utf8);
                continue;
            }
            if c == '`' {
                let Some(len) = backquote_len(rest) else {
                    self.unknown("an unterminated backquote");
                    return ControlFlow::Continue(true);
                };
                let body = rest.get(1..len - 1).unwrap_or("");
                let code = unescape_backquoted(body, false);
                self.script(&code, &ctx.nested(ctx.stdin.clone()))?;
                dynamic = true;
                i += len;
                continue;
            }
            if rest.starts_with("$(") || rest.starts_with("${") {
                let Some(len) = self.expansion_len(rest) else {
                    self.unknown("an expansion that does not parse");
                    return ControlFlow::Continue(true);
                };
                let piece = rest.get(..len).unwrap_or("");
                self.eval_word_with(
                    piece,
                    ctx,
                    PieceMode {
                        in_double_quotes: false,
                        check_split: false,
                    },
                )?;
                dynamic = true;
                i += len;
                continue;
            }
            if c == '$'
                && rest
                    .chars()
                    .nth(1)
                    .is_some_and(|n| n.is_ascii_alphanumeric() || "_@*#?$!-".contains(n))
            {
                dynamic = true;
            }
            i += c.len_utf8();
        }
        ControlFlow::Continue(dynamic)
    }

    /// The length of the `$(...)` / `${...}` expansion at the start of `rest`: the shortest
    /// prefix ending at a closer, with balanced brackets, that parses as one expansion.
    fn expansion_len(&mut self, rest: &str) -> Option<usize> {
        let (open, close) = if rest.starts_with("$(") {
            ('(', ')')
        } else {
            ('{', '}')
        };
        let mut depth = 0usize;
        let mut tries = 0;
        for (k, c) in rest.char_indices() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let cand = rest.get(..k + 1)?;
                    tries += 1;
                    if tries > MAX_GROUPS || !self.charge(cand.len()) {
                        return None;
                    }
                    if let Ok(pieces) = parse_word(cand, &self.options) {
                        if pieces.len() == 1
                            && pieces.first().is_some_and(|p| p.end_index == cand.len())
                        {
                            return Some(cand.len());
                        }
                    }
                }
            }
        }
        None
    }
}

/// The words of a command for messages, shortened.
fn display(words: &[AbsWord]) -> String {
    const MAX: usize = 256;
    let joined = words
        .iter()
        .map(|w| w.raw.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.len() <= MAX {
        return joined;
    }
    let mut end = MAX;
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", joined.get(..end).unwrap_or(""))
}

/// What a command writes to a pipe, when that is known statically (`echo`, `printf`).
fn static_output(words: &[AbsWord]) -> Input {
    let Some((first, args)) = words.split_first() else {
        return Input::Text(String::new());
    };
    let name = first.command_name().unwrap_or_default();
    let opaque = || Input::Opaque(format!("the output of `{}`", first.raw));
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        match a.static_value() {
            Some(v) => values.push(v),
            None => return opaque(),
        }
    }
    match name.as_str() {
        "echo" => {
            let mut newline = true;
            let mut escapes = false;
            let mut start = 0;
            for v in &values {
                let Some(flags) = v.strip_prefix('-') else {
                    break;
                };
                if flags.is_empty() || !flags.chars().all(|c| "neE".contains(c)) {
                    break;
                }
                for c in flags.chars() {
                    match c {
                        'n' => newline = false,
                        'e' => escapes = true,
                        _ => escapes = false,
                    }
                }
                start += 1;
            }
            let mut text = values.get(start..).unwrap_or(&[]).join(" ");
            if escapes {
                let (decoded, stop) = decode_echo(&text);
                text = decoded;
                if stop {
                    newline = false;
                }
            }
            if newline {
                text.push('\n');
            }
            Input::Text(text)
        }
        "printf" => {
            let Some((format, rest)) = values.split_first() else {
                return opaque();
            };
            let mut out = String::new();
            let mut args = rest.iter();
            // Enough for the usual one-shot formats; anything fancier is opaque.
            let mut chars = format.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some('s') => out.push_str(args.next().map_or("", String::as_str)),
                    Some('b') => {
                        out.push_str(&decode_echo(args.next().map_or("", String::as_str)).0)
                    }
                    _ => return opaque(),
                }
            }
            if args.next().is_some() {
                return opaque();
            }
            Input::Text(decode_echo(&out).0)
        }
        _ => opaque(),
    }
}

/// A here-document body after the shell's backslash processing (no expansions in it).
fn heredoc_unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('$' | '`' | '\\') => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                Some('\n') => {
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

/// Length of the backquoted text at the start of `s` (which starts with a backquote),
/// including both backquotes.
fn backquote_len(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (k, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '`' {
            return Some(k + 1);
        }
    }
    None
}

/// Grouping characters in a word: the word parser recurses on them.
fn group_count(s: &str) -> usize {
    s.chars().filter(|c| matches!(c, '(' | '{' | '`')).count()
}

/// Cheap checks before tokenising: the tokenizer recurses on substitutions, and an
/// over-long descriptor number would overflow the parser's integer.
fn prescan(text: &str) -> Result<(), String> {
    let substitutions = text.matches("$(").count()
        + text.matches("${").count()
        + text.matches('`').count()
        + text.matches("<(").count()
        + text.matches(">(").count();
    if substitutions > MAX_GROUPS {
        return Err(format!(
            "the command line has more than {MAX_GROUPS} substitutions"
        ));
    }

    let mut digits = 0usize;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            continue;
        }
        if (c == '<' || c == '>') && digits >= 9 {
            return Err("a file descriptor number is too large".into());
        }
        digits = 0;
    }
    Ok(())
}

/// Most `(` in a word that no later `)` closes. brush-parser's word grammar backtracks on
/// each of them (its arithmetic rules are tried from several alternatives), doubling the work
/// per parenthesis (found by fuzzing: `${p:i((((...`); balanced nesting costs nothing extra.
const MAX_UNCLOSED_PARENS: usize = 4;

/// Why a word was not parsed.
enum WordError {
    /// Refused before parsing: the parser would recurse or backtrack too much.
    Limit(String),
    /// The grammar rejects it.
    Syntax(String),
}

/// Parses a word with brush-parser's word grammar; every call goes through here.
fn parse_word(text: &str, options: &ParserOptions) -> Result<Vec<WordPieceWithSource>, WordError> {
    if group_count(text) > MAX_GROUPS {
        return Err(WordError::Limit(format!(
            "a word has more than {MAX_GROUPS} nested substitutions"
        )));
    }
    let mut open = 0usize;
    for c in text.chars() {
        match c {
            '(' => open += 1,
            ')' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    if open > MAX_UNCLOSED_PARENS {
        return Err(WordError::Limit(format!(
            "a word has more than {MAX_UNCLOSED_PARENS} unclosed parentheses"
        )));
    }
    brush_parser::word::parse(text, options).map_err(|e| WordError::Syntax(e.to_string()))
}

/// Tokenises with brush-parser after [`prescan`]; every call goes through here, whatever the
/// text (a line, a decoded `$'...'` string, an `env -S` string).
///
/// brush-parser 0.3.0 makes a here-document tag of the tag word with leading ASCII whitespace
/// trimmed: a tag word of only `\r` or form feeds (not blanks to the shell) becomes an empty
/// tag, which at the end of the input "ends" the document forever while the tokenizer
/// allocates (found by fuzzing). Such text is refused first; vertical tab too, to be safe.
fn tokenize(text: &str, options: &ParserOptions) -> Result<Vec<Token>, String> {
    prescan(text)?;
    if text.contains("<<") && text.contains(['\r', '\u{b}', '\u{c}']) {
        return Err("a here-document next to a carriage return or form feed".into());
    }
    brush_parser::uncached_tokenize_str(text, &options.tokenizer_options())
        .map_err(|e| format!("the command line does not parse: {e}"))
}

/// Checks on the token stream before the (backtracking) parser sees it: every `(` has a
/// `)`, and grouping is not too deep.
fn check_tokens(tokens: &[Token]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    let mut groups = 0usize;
    for t in tokens {
        match t {
            Token::Operator(op, _) => {
                for c in op.chars() {
                    match c {
                        '(' => {
                            depth += 1;
                            groups += 1;
                            max_depth = max_depth.max(depth);
                        }
                        // A `)` closing a `case` pattern has no `(`.
                        ')' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            Token::Word(w, _) => {
                if matches!(
                    w.as_str(),
                    "{" | "if"
                        | "case"
                        | "while"
                        | "until"
                        | "for"
                        | "select"
                        | "[["
                        | "!"
                        | "function"
                        | "coproc"
                ) {
                    groups += 1;
                }
                if group_count(w) > MAX_GROUPS {
                    return Err(format!(
                        "a word has more than {MAX_GROUPS} nested substitutions"
                    ));
                }
            }
        }
    }
    if depth != 0 {
        return Err("the command line does not parse: unbalanced parentheses".into());
    }
    if groups > MAX_GROUPS || max_depth > MAX_GROUPS {
        return Err(format!(
            "the command line has more than {MAX_GROUPS} grouping constructs"
        ));
    }
    Ok(())
}

/// Bash reads `((` as an arithmetic command only when the two parentheses are adjacent and
/// the `)` that closes the inner one is directly followed by `)`; otherwise the line holds
/// nested subshells (`((rm -rf /) )`, `( (rm -rf /))`). The grammar ignores that adjacency
/// and would take both for arithmetic. Yields the text with a newline after the first `(` of
/// each such pair (the same commands to bash, and no longer arithmetic to the grammar), or
/// `None` when nothing needs changing.
fn false_arithmetic(text: &str, tokens: &[Token]) -> Result<Option<String>, String> {
    let is_op = |t: Option<&Token>, s: &str| matches!(t, Some(Token::Operator(o, _)) if o == s);
    let loc = |t: Option<&Token>| t.map(|t| t.location().clone());
    let mut splits: Vec<usize> = Vec::new();
    let mut k = 0;
    while k + 1 < tokens.len() {
        if !(is_op(tokens.get(k), "(") && is_op(tokens.get(k + 1), "(")) {
            k += 1;
            continue;
        }
        let (Some(first), Some(second)) = (loc(tokens.get(k)), loc(tokens.get(k + 1))) else {
            break;
        };
        // The `)` that closes the second `(`.
        let mut depth = 0usize;
        let mut close = None;
        for (j, t) in tokens.iter().enumerate().skip(k + 1) {
            if is_op(Some(t), "(") {
                depth += 1;
            } else if is_op(Some(t), ")") {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    close = Some(j);
                    break;
                }
            }
        }
        let closes_twice = close.is_some_and(|j| {
            is_op(tokens.get(j + 1), ")")
                && loc(tokens.get(j)).map(|l| l.end.index)
                    == loc(tokens.get(j + 1)).map(|l| l.start.index)
        });
        if first.end.index != second.start.index || !closes_twice {
            splits.push(first.end.index);
        }
        k += 1;
    }
    if splits.is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len() + splits.len());
    let mut located = 0;
    for (ci, ch) in text.chars().enumerate() {
        if splits.contains(&ci) {
            // The character before must be the `(` of the token.
            if !out.ends_with('(') {
                return Err("the command line does not parse: misplaced parentheses".into());
            }
            out.push('\n');
            located += 1;
        }
        out.push(ch);
    }
    if located != splits.len() {
        return Err("the command line does not parse: misplaced parentheses".into());
    }
    Ok(Some(out))
}

/// Interactive bash expands `!!`, `!-2`, `!rm`, `^a^b` from its history before parsing; the
/// result cannot be known from the line alone.
fn history_expansion(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('^') && trimmed.get(1..).is_some_and(|r| r.contains('^')) {
        return Some("`^old^new` re-runs a command from the shell history".into());
    }
    let mut in_single = false;
    let mut prev: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !in_single => {
                chars.next();
                prev = None;
                continue;
            }
            '\'' => in_single = !in_single,
            '!' if !in_single => {
                let next = chars.peek().copied();
                let designator = match next {
                    None => false,
                    Some(n) => !(n.is_whitespace() || matches!(n, '=' | '(' | '"' | ')')),
                };
                if designator && !matches!(prev, Some('$' | '{' | '[')) {
                    return Some(
                        "`!` history expansion re-runs commands from the shell history".into(),
                    );
                }
            }
            _ => {}
        }
        prev = Some(c);
    }
    None
}

/// Drops the value of a flow.
fn unit<T>(f: Flow<T>) -> Flow {
    match f {
        ControlFlow::Continue(_) => ControlFlow::Continue(()),
        ControlFlow::Break(b) => ControlFlow::Break(b),
    }
}
