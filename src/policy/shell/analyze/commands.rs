//! Per-command handling: deciding a command against the patterns, the power-state aliases,
//! and the commands that run other commands or code (wrappers, shells, `env`, `xargs`,
//! `find -exec`, `eval`, `su -c`, `ssh`, `trap`, `alias`...).

use std::ops::ControlFlow;

use brush_parser::Token;

use super::{display, tokenize, Analyzer, Ctx, Flow, Hit, Input};
use crate::policy::shell::spec::{self, ArgFacts, CmdSpec, OptId, Tri};
use crate::policy::shell::word::{AbsWord, Arg, Part};
use crate::policy::shell::wrappers::{self, is_assignment, Unwrap};

/// Most wrappers around one command (`sudo nice timeout 5 ...`).
const MAX_WRAPPERS: usize = 32;

/// What stands for a computed part of a command string when its skeleton is walked: an
/// unquoted expansion, so any number of words with any content.
const COMPUTED: &str = "${__vigil_computed}";

/// Shells whose `-c` string, here-string or piped input is parsed as commands.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "pdksh", "ash", "yash", "posh",
    "rbash", "csh", "tcsh", "fish",
];

/// The power-state commands (see the module docs' table).
const POWER: &[&str] = &[
    "reboot",
    "poweroff",
    "halt",
    "kexec",
    "soft-reboot",
    "shutdown",
];

impl Analyzer<'_> {
    /// Decides a command (name and arguments) and the commands it runs.
    pub(super) fn invocation(
        &mut self,
        words: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        layer: usize,
    ) -> Flow {
        if layer > MAX_WRAPPERS {
            self.unknown(format!("more than {MAX_WRAPPERS} wrapper commands"));
            return ControlFlow::Continue(());
        }
        let Some((first, args)) = words.split_first() else {
            return ControlFlow::Continue(());
        };
        let name = match first.command_name() {
            Ok(n) => n,
            Err(why) => {
                self.unknown(why);
                return ControlFlow::Continue(());
            }
        };
        let display = display(words);
        self.decide(&name, args, &display)?;
        self.power_aliases(&name, args, &display, 0)?;
        self.special(&name, args, stdin, ctx, layer, &display)
    }

    /// Decides every pattern naming `name` against `args`.
    fn decide(&mut self, name: &str, args: &[AbsWord], display: &str) -> Flow {
        let mut values: Option<Vec<(String, Arg)>> = None;
        let mut facts: Vec<(Option<&'static CmdSpec>, ArgFacts)> = Vec::new();
        for rule in self.rules {
            if !rule.pattern.names(name) {
                continue;
            }
            let verdict = if rule.pattern.inspects_args() {
                let spec = rule.pattern.spec();
                let values = values
                    .get_or_insert_with(|| args.iter().map(|w| (w.raw.clone(), w.arg())).collect());
                if !facts.iter().any(|(s, _)| same_spec(*s, spec)) {
                    facts.push((spec, spec::analyze(spec, values)));
                }
                match facts.iter().find(|(s, _)| same_spec(*s, spec)) {
                    Some((_, f)) => rule.pattern.decide(f),
                    None => continue,
                }
            } else {
                Tri::Yes
            };
            match verdict {
                Tri::Yes => {
                    return ControlFlow::Break(Hit {
                        id: rule.id,
                        pattern: rule.pattern.as_str().to_owned(),
                        command: display.to_owned(),
                    })
                }
                Tri::Maybe(why) => self.unknown(format!(
                    "`{display}` may match `{}`: {why}",
                    rule.pattern.as_str()
                )),
                Tri::No => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn names_any(&self, names: &[&str]) -> bool {
        self.rules
            .iter()
            .any(|r| names.iter().any(|n| r.pattern.names(n)))
    }

    /// Power-state spellings: `systemctl reboot` is also decided as `reboot`, and so on
    /// (table in the module docs).
    fn power_aliases(&mut self, name: &str, args: &[AbsWord], display: &str, depth: usize) -> Flow {
        if depth > 3 {
            return ControlFlow::Continue(());
        }
        let mut views: Vec<(String, Vec<AbsWord>)> = Vec::new();
        match name {
            "systemctl" | "loginctl" => {
                let mut i = 0;
                while let Some(w) = args.get(i) {
                    let Some(s) = w.static_value() else {
                        if self.names_any(POWER) {
                            self.unknown(format!(
                                "`{display}`: the {name} verb is computed at run time"
                            ));
                        }
                        break;
                    };
                    if s.starts_with('-') && s.len() > 1 {
                        let short_value =
                            s.len() == 2 && s.get(1..).is_some_and(|c| "tspHMno".contains(c));
                        let long_value = [
                            "--type",
                            "--signal",
                            "--property",
                            "--host",
                            "--machine",
                            "--lines",
                            "--output",
                            "--root",
                            "--kill-whom",
                            "--job-mode",
                            "--when",
                            "--message",
                            "--what",
                            "--state",
                        ]
                        .contains(&s.as_str());
                        i += if short_value || long_value { 2 } else { 1 };
                        continue;
                    }
                    let rest = args.get(i + 1..).unwrap_or(&[]);
                    if POWER.contains(&s.as_str()) && s != "shutdown" {
                        views.push((s.clone(), rest.to_vec()));
                        if matches!(s.as_str(), "kexec" | "soft-reboot") {
                            // Both restart the running system.
                            views.push(("reboot".into(), Vec::new()));
                        }
                    } else if matches!(
                        s.as_str(),
                        "start" | "isolate" | "restart" | "try-restart" | "reload-or-restart"
                    ) {
                        for unit in rest.iter().filter_map(AbsWord::static_value) {
                            if let Some(base) = unit.strip_suffix(".target") {
                                if POWER.contains(&base) {
                                    views.push((base.to_owned(), Vec::new()));
                                }
                            }
                        }
                    }
                    break;
                }
            }
            "init" | "telinit" => {
                let level = args.iter().find(|w| {
                    w.static_value()
                        .is_none_or(|s| !s.starts_with('-') || s.len() == 1)
                });
                match level.map(AbsWord::static_value) {
                    Some(Some(l)) if l == "0" => views.push(("poweroff".into(), Vec::new())),
                    Some(Some(l)) if l == "6" => views.push(("reboot".into(), Vec::new())),
                    Some(None) if self.names_any(POWER) => self.unknown(format!(
                        "`{display}`: the run level is computed at run time"
                    )),
                    _ => {}
                }
            }
            "shutdown" | "reboot" | "poweroff" | "halt" => {
                if matches!(name, "poweroff" | "halt") {
                    views.push(("shutdown".into(), args.to_vec()));
                }
                // Options that change what the command does: `shutdown -r`, `reboot -p`,
                // `reboot --halt`, `halt --reboot`.
                let flags: &[&str] = if name == "shutdown" {
                    &["reboot"]
                } else {
                    &["reboot", "poweroff", "halt"]
                };
                let spec = spec::lookup(name);
                let values: Vec<(String, Arg)> =
                    args.iter().map(|w| (w.raw.clone(), w.arg())).collect();
                let facts = spec::analyze(spec, &values);
                for &flag in flags.iter().filter(|f| **f != name) {
                    match facts.has_option(spec, &OptId::Long(flag.into())) {
                        Tri::Yes => views.push((flag.into(), args.to_vec())),
                        Tri::Maybe(why) if self.names_any(POWER) => {
                            self.unknown(format!("`{display}` may be `{name} --{flag}`: {why}"));
                            break;
                        }
                        Tri::Maybe(_) | Tri::No => {}
                    }
                }
            }
            "mke2fs" => views.push(("mkfs.ext2".into(), args.to_vec())),
            "mkdosfs" => views.push(("mkfs.fat".into(), args.to_vec())),
            "mkntfs" => views.push(("mkfs.ntfs".into(), args.to_vec())),
            "mkexfatfs" => views.push(("mkfs.exfat".into(), args.to_vec())),
            _ => {}
        }
        for (n, a) in views {
            self.decide(&n, &a, display)?;
            self.power_aliases(&n, &a, display, depth + 1)?;
        }
        ControlFlow::Continue(())
    }

    /// Commands that run other commands or code.
    fn special(
        &mut self,
        name: &str,
        args: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        layer: usize,
        display: &str,
    ) -> Flow {
        if let Some(w) = wrappers::lookup(name) {
            return match wrappers::unwrap(w, args) {
                Unwrap::Command(i) => {
                    let inner = args.get(i..).unwrap_or(&[]);
                    self.invocation(inner, stdin, ctx, layer + 1)
                }
                Unwrap::NoCommand => ControlFlow::Continue(()),
                Unwrap::Shell => self.reads_commands(stdin, ctx, display),
                Unwrap::Unclear(why) => {
                    self.unknown(format!("`{display}`: {why}"));
                    ControlFlow::Continue(())
                }
            };
        }
        let shell = shell_base(name);
        if SHELLS.contains(&shell) {
            return self.shell(shell, args, stdin, ctx, display);
        }
        match name {
            "env" => self.env(args, stdin, ctx, layer, display),
            "xargs" => self.xargs(args, ctx, layer, display),
            "find" => self.find(args, ctx, layer, display),
            "busybox" | "toybox" => match args.first().and_then(AbsWord::static_value) {
                Some(s) if s.starts_with('-') => ControlFlow::Continue(()),
                _ => self.invocation(args, stdin, ctx, layer + 1),
            },
            "eval" => {
                // Like every bash builtin without options, `eval` skips one leading `--`.
                let code = match args.first().and_then(AbsWord::static_value).as_deref() {
                    Some("--") => args.get(1..).unwrap_or(&[]),
                    _ => args,
                };
                self.joined_code(code, stdin, ctx, display)
            }
            "source" | "." => {
                self.unknown(format!(
                    "`{display}` runs a file the policy cannot see (and may define functions or aliases)"
                ));
                ControlFlow::Continue(())
            }
            "fc" => {
                self.unknown(format!("`{display}` runs commands from the shell history"));
                ControlFlow::Continue(())
            }
            "trap" => self.trap(args, ctx, display),
            "alias" => self.alias(args, ctx, display),
            "su" | "runuser" => self.su(name, args, stdin, ctx, layer, display),
            // `newgrp [-] [GROUP]` starts a shell, which reads standard input.
            "newgrp" => self.reads_commands(stdin, ctx, display),
            "sg" => {
                let mut i = 0;
                if args.first().and_then(AbsWord::static_value).as_deref() == Some("-") {
                    i += 1;
                }
                i += 1; // the group
                if args.get(i).and_then(AbsWord::static_value).as_deref() == Some("-c") {
                    i += 1;
                }
                self.joined_code(args.get(i..).unwrap_or(&[]), stdin, ctx, display)
            }
            "ssh" => self.ssh(args, stdin, ctx, display),
            "watch" => self.watch(args, ctx, layer, display),
            "flock" => self.flock(args, stdin, ctx, layer, display),
            "script" => match option_value(args, 'c', "command", "EIOBTmo") {
                Some(code) => self.code_word(&code, stdin, ctx, display),
                None => ControlFlow::Continue(()),
            },
            "at" | "batch" => {
                for w in args {
                    let Some(s) = w.static_value() else { continue };
                    if s.starts_with('-') && s.contains(['f', 'l', 'r', 'd', 'c', 'V']) {
                        return ControlFlow::Continue(());
                    }
                }
                self.reads_commands(stdin, ctx, display)
            }
            "export" | "declare" | "typeset" | "local" | "readonly" => {
                for w in args {
                    match w.text_value() {
                        Some(t) => {
                            if let Some((n, v)) = t.split_once('=') {
                                let n = n.trim_end_matches('+');
                                self.special_variable(n, &AbsWord::literal(v), ctx)?;
                            }
                            self.subscript(w, ctx)?;
                        }
                        None => {
                            let n = w.raw.split(['=', '+']).next().unwrap_or("");
                            if matches!(n, "PROMPT_COMMAND" | "PS0" | "PS1" | "PS2" | "PS4") {
                                self.unknown(format!("{n} is set to a value computed at run time"));
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            "test" | "[" | "printf" | "read" | "unset" | "mapfile" | "readarray" | "wait" => {
                for w in args {
                    self.subscript(w, ctx)?;
                }
                if matches!(name, "mapfile" | "readarray") {
                    // `-C CODE` is evaluated as `CODE INDEX LINE` every `-c` lines.
                    if let Some(code) = option_value(args, 'C', "", "dnOsuc") {
                        let Some(text) = code.static_value() else {
                            self.unknown(format!(
                                "`{display}` runs a callback computed at run time"
                            ));
                            return ControlFlow::Continue(());
                        };
                        let called = format!("{text} {COMPUTED}");
                        return self.script(&called, &ctx.nested(Input::Terminal));
                    }
                }
                ControlFlow::Continue(())
            }
            "hash" | "enable" => {
                let option = if name == "hash" { 'p' } else { 'f' };
                if option_value(args, option, "", "").is_some() {
                    self.unknown(format!(
                        "`{display}` makes a command name run another program"
                    ));
                }
                ControlFlow::Continue(())
            }
            "let" => {
                for w in args {
                    if let Some(t) = w.text_value() {
                        self.arithmetic(&t, ctx)?;
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// A shell: `-c STRING`, commands on standard input, or a script file.
    fn shell(
        &mut self,
        name: &str,
        args: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        display: &str,
    ) -> Flow {
        let fish = name == "fish";
        let mut i = 0;
        let mut has_c = false;
        let mut stdin_mode = false;
        let mut codes: Vec<AbsWord> = Vec::new();
        while let Some(w) = args.get(i) {
            let Some(s) = w.static_value() else { break };
            if s == "--" || s == "-" {
                i += 1;
                break;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (lname, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                if fish && matches!(lname, "command" | "init-command") {
                    match value {
                        Some(v) => codes.push(AbsWord::literal(v)),
                        None => {
                            if let Some(next) = args.get(i + 1) {
                                codes.push(next.clone());
                            }
                            i += 1;
                        }
                    }
                } else if matches!(lname, "rcfile" | "init-file") && value.is_none() {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if (s.starts_with('-') || s.starts_with('+')) && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    match c {
                        'c' | 'C' if fish => {
                            let rest: String = cluster.get(k + 1..).unwrap_or(&[]).iter().collect();
                            if rest.is_empty() {
                                if let Some(next) = args.get(i + 1 + consumed) {
                                    codes.push(next.clone());
                                }
                                consumed += 1;
                            } else {
                                codes.push(AbsWord::literal(&rest));
                            }
                            break;
                        }
                        'c' => has_c = true,
                        's' => stdin_mode = true,
                        'o' | 'O' => consumed += 1,
                        _ => {}
                    }
                }
                i += 1 + consumed;
                continue;
            }
            break;
        }
        if has_c {
            if let Some(code) = args.get(i) {
                codes.push(code.clone());
            }
        }
        if !codes.is_empty() {
            for code in &codes {
                self.code_word(code, stdin, ctx, display)?;
            }
            return ControlFlow::Continue(());
        }
        match args.get(i) {
            None => self.reads_commands(stdin, ctx, display),
            Some(_) if stdin_mode => self.reads_commands(stdin, ctx, display),
            Some(script) => {
                if let Some(out) = &script.proc_output {
                    return self.reads_commands(out, ctx, display);
                }
                match script.static_value().as_deref() {
                    Some("/dev/stdin" | "/dev/fd/0" | "/proc/self/fd/0") => {
                        self.reads_commands(stdin, ctx, display)
                    }
                    // A script file: as opaque as any program run by path.
                    _ => ControlFlow::Continue(()),
                }
            }
        }
    }

    /// Runs `code` (one word) as a command string.
    fn code_word(&mut self, code: &AbsWord, stdin: &Input, ctx: &Ctx, display: &str) -> Flow {
        self.joined_code(std::slice::from_ref(code), stdin, ctx, display)
    }

    /// Runs the words joined by spaces as a command string (`eval`, `ssh host cmd...`).
    ///
    /// When parts of the string are computed at run time (`eval "rm -rf $DIR"`), the line is
    /// undecidable, but the known skeleton is still walked with each computed part standing
    /// for an unknown word: a match there is reported (as `rm $X -rf /` would be).
    fn joined_code(&mut self, words: &[AbsWord], stdin: &Input, ctx: &Ctx, display: &str) -> Flow {
        if words.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut code = Vec::with_capacity(words.len());
        let mut computed = false;
        for w in words {
            match w.static_value() {
                Some(s) => code.push(s),
                None => {
                    computed = true;
                    code.push(w.skeleton(COMPUTED));
                }
            }
        }
        let code = code.join(" ");
        if !computed {
            return self.script(&code, &ctx.nested(stdin.clone()));
        }
        self.unknown(format!(
            "`{display}` runs a command string computed at run time"
        ));
        // Only a match matters in the skeleton: every other finding is already covered by
        // the unknown above.
        let saved = self.unknown.take();
        let flow = self.script(&code, &ctx.nested(stdin.clone()));
        self.unknown = saved;
        flow
    }

    /// A shell reads commands from its standard input.
    fn reads_commands(&mut self, input: &Input, ctx: &Ctx, display: &str) -> Flow {
        match input {
            Input::Terminal | Input::File => ControlFlow::Continue(()),
            Input::Text(t) => self.script(t, &ctx.nested(Input::Terminal)),
            Input::Opaque(from) => {
                self.unknown(format!("`{display}` runs commands read from {from}"));
                ControlFlow::Continue(())
            }
        }
    }

    fn env(
        &mut self,
        args: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        layer: usize,
        display: &str,
    ) -> Flow {
        let mut words: Vec<AbsWord> = args.to_vec();
        let mut i = 0;
        let mut splits = 0;
        loop {
            let Some(w) = words.get(i) else {
                return ControlFlow::Continue(());
            };
            let Some(s) = w.static_value() else {
                if let Arg::Dynamic {
                    splits: false,
                    may_be_option: false,
                    prefix,
                } = w.arg()
                {
                    if !prefix.contains('=') {
                        break;
                    }
                }
                self.unknown(format!(
                    "`{display}`: `{}` is computed at run time, so where the command starts is unknown",
                    w.raw
                ));
                return ControlFlow::Continue(());
            };
            if s == "--" {
                i += 1;
                while words
                    .get(i)
                    .and_then(AbsWord::static_value)
                    .is_some_and(|s| is_assignment(&s))
                {
                    i += 1;
                }
                break;
            }
            if s == "-" || is_assignment(&s) {
                i += 1;
                continue;
            }
            // (start, end) of the words an `-S STRING` occupies, and the string.
            let mut split: Option<(usize, usize, AbsWord)> = None;
            if let Some(long) = s.strip_prefix("--") {
                let (lname, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let is = |full: &str| !lname.is_empty() && full.starts_with(lname);
                if is("split-string") {
                    match value {
                        Some(v) => split = Some((i, i + 1, AbsWord::literal(v))),
                        None => match words.get(i + 1) {
                            Some(next) => split = Some((i, i + 2, next.clone())),
                            None => return ControlFlow::Continue(()),
                        },
                    }
                } else {
                    let takes_value = ["unset", "chdir", "argv0"].iter().any(|f| is(f));
                    i += if takes_value && value.is_none() { 2 } else { 1 };
                    continue;
                }
            } else if s.starts_with('-') && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    let rest: String = cluster.get(k + 1..).unwrap_or(&[]).iter().collect();
                    match c {
                        'S' => {
                            split = Some(if rest.is_empty() {
                                match words.get(i + 1) {
                                    Some(next) => (i, i + 2, next.clone()),
                                    None => return ControlFlow::Continue(()),
                                }
                            } else {
                                (i, i + 1, AbsWord::literal(&rest))
                            });
                            break;
                        }
                        'u' | 'C' | 'a' => {
                            if rest.is_empty() {
                                consumed = 1;
                            }
                            break;
                        }
                        _ => {}
                    }
                }
                if split.is_none() {
                    i += 1 + consumed;
                    continue;
                }
            } else {
                break;
            }
            let Some((start, end, value)) = split else {
                break;
            };
            let Some(text) = value.static_value() else {
                self.unknown(format!(
                    "`{display}` splits a string computed at run time into a command"
                ));
                return ControlFlow::Continue(());
            };
            splits += 1;
            if splits > 8 {
                self.unknown(format!("`{display}`: too many `env -S` strings"));
                return ControlFlow::Continue(());
            }
            let Some(new_words) = self.split_words(&text, ctx)? else {
                return ControlFlow::Continue(());
            };
            let end = end.min(words.len());
            words.splice(start..end, new_words);
        }
        self.invocation(words.get(i..).unwrap_or(&[]), stdin, ctx, layer + 1)
    }

    /// Splits a string into words the way a shell would (for `env -S`).
    fn split_words(&mut self, text: &str, ctx: &Ctx) -> Flow<Option<Vec<AbsWord>>> {
        if !self.charge(text.len()) {
            return ControlFlow::Continue(None);
        }
        let tokens = match tokenize(text, &self.options) {
            Ok(t) => t,
            Err(why) => {
                self.unknown(format!("`env -S` string: {why}"));
                return ControlFlow::Continue(None);
            }
        };
        let mut out = Vec::new();
        for t in &tokens {
            match t {
                Token::Word(w, _) => out.push(self.eval_word(w, ctx)?),
                Token::Operator(o, _) => {
                    self.unknown(format!("the string `{text}` holds the operator `{o}`"));
                    return ControlFlow::Continue(None);
                }
            }
        }
        ControlFlow::Continue(Some(out))
    }

    fn xargs(&mut self, args: &[AbsWord], ctx: &Ctx, layer: usize, display: &str) -> Flow {
        let mut i = 0;
        let mut replace: Option<String> = None;
        while let Some(w) = args.get(i) {
            let Some(s) = w.static_value() else {
                if let Arg::Dynamic {
                    splits: false,
                    may_be_option: false,
                    ..
                } = w.arg()
                {
                    break;
                }
                self.unknown(format!(
                    "`{display}`: `{}` is computed at run time, so where the command starts is unknown",
                    w.raw
                ));
                return ControlFlow::Continue(());
            };
            if s == "--" {
                i += 1;
                break;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (lname, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let is = |full: &str| !lname.is_empty() && full.starts_with(lname);
                if is("replace") {
                    replace = Some(value.unwrap_or("{}").to_owned());
                } else if [
                    "arg-file",
                    "delimiter",
                    "max-args",
                    "max-procs",
                    "max-chars",
                    "process-slot-var",
                ]
                .iter()
                .any(|f| is(f))
                    && value.is_none()
                {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if s.starts_with('-') && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    let rest: String = cluster.get(k + 1..).unwrap_or(&[]).iter().collect();
                    match c {
                        'I' => {
                            if rest.is_empty() {
                                replace = args.get(i + 1).and_then(AbsWord::static_value);
                                consumed = 1;
                            } else {
                                replace = Some(rest);
                            }
                            break;
                        }
                        'i' => {
                            replace = Some(if rest.is_empty() { "{}".into() } else { rest });
                            break;
                        }
                        'e' | 'l' => break,
                        'a' | 'E' | 'd' | 's' | 'n' | 'P' | 'L' => {
                            if rest.is_empty() {
                                consumed = 1;
                            }
                            break;
                        }
                        _ => {}
                    }
                }
                i += 1 + consumed;
                continue;
            }
            break;
        }
        let Some(cmd) = args.get(i..).filter(|c| !c.is_empty()) else {
            // The default command is `echo`.
            return ControlFlow::Continue(());
        };
        let mut inner: Vec<AbsWord> = cmd.to_vec();
        match replace.filter(|r| !r.is_empty()) {
            Some(r) => {
                for w in &mut inner {
                    if let Some(t) = w.static_value() {
                        if let Some(pos) = t.find(&r) {
                            let prefix = t.get(..pos).unwrap_or("");
                            *w = AbsWord::new(
                                w.raw.clone(),
                                vec![
                                    Part::Lit {
                                        text: prefix.to_owned(),
                                        quoted: true,
                                    },
                                    Part::Dyn {
                                        splits: false,
                                        dash_free: false,
                                    },
                                ],
                            );
                        }
                    }
                }
            }
            None => inner.push(AbsWord::dynamic("<arguments read by xargs>", true, false)),
        }
        self.invocation(&inner, &Input::File, ctx, layer + 1)
    }

    fn find(&mut self, args: &[AbsWord], ctx: &Ctx, layer: usize, display: &str) -> Flow {
        let mut i = 0;
        while let Some(s) = args.get(i).and_then(AbsWord::static_value) {
            match s.as_str() {
                "-H" | "-L" | "-P" => i += 1,
                "-D" => i += 2,
                s if s.starts_with("-O") => i += 1,
                _ => break,
            }
        }
        while let Some(w) = args.get(i) {
            if let Arg::Dynamic { splits: true, .. } = w.arg() {
                self.unknown(format!(
                    "`{display}`: `{}` is computed at run time and may add `-exec`",
                    w.raw
                ));
            }
            let s = w.static_value();
            if matches!(s.as_deref(), Some("-exec" | "-execdir" | "-ok" | "-okdir")) {
                let start = i + 1;
                let mut j = start;
                let mut end = None;
                while let Some(x) = args.get(j) {
                    let v = x.static_value();
                    let prev_braces = j > start
                        && args.get(j - 1).and_then(AbsWord::static_value).as_deref() == Some("{}");
                    if v.as_deref() == Some(";") || (v.as_deref() == Some("+") && prev_braces) {
                        end = Some(j);
                        break;
                    }
                    j += 1;
                }
                let Some(end) = end else {
                    // find refuses an -exec without its terminator.
                    return ControlFlow::Continue(());
                };
                let inner: Vec<AbsWord> = args
                    .get(start..end)
                    .unwrap_or(&[])
                    .iter()
                    .map(find_braces)
                    .collect();
                self.invocation(&inner, &Input::File, ctx, layer + 1)?;
                i = end + 1;
                continue;
            }
            i += 1;
        }
        ControlFlow::Continue(())
    }

    fn trap(&mut self, args: &[AbsWord], ctx: &Ctx, display: &str) -> Flow {
        let mut i = 0;
        while let Some(s) = args.get(i).and_then(AbsWord::static_value) {
            if s == "--" {
                i += 1;
                break;
            }
            if s.starts_with('-') && s.len() > 1 {
                i += 1;
                continue;
            }
            break;
        }
        let rest = args.get(i..).unwrap_or(&[]);
        let Some(action) = rest.first().filter(|_| rest.len() >= 2) else {
            return ControlFlow::Continue(());
        };
        match action.static_value() {
            Some(a) if a.is_empty() || a == "-" => ControlFlow::Continue(()),
            Some(a) => self.script(&a, &ctx.nested(Input::Terminal)),
            None => {
                self.unknown(format!(
                    "`{display}` sets a trap to code computed at run time"
                ));
                ControlFlow::Continue(())
            }
        }
    }

    fn alias(&mut self, args: &[AbsWord], ctx: &Ctx, display: &str) -> Flow {
        for w in args {
            match w.text_value() {
                Some(t) => {
                    if let Some((_, value)) = t.split_once('=') {
                        if !value.trim().is_empty() {
                            // The alias runs with the arguments it is later given.
                            let code = format!("{value} $ALIAS_ARGUMENTS");
                            self.script(&code, &ctx.nested(Input::Terminal))?;
                        }
                    }
                }
                None if w.raw.contains('=') => {
                    self.unknown(format!("`{display}` defines an alias computed at run time"));
                }
                None => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn su(
        &mut self,
        name: &str,
        args: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        layer: usize,
        display: &str,
    ) -> Flow {
        let mut i = 0;
        let mut code: Option<AbsWord> = None;
        let mut user_mode = false;
        // The user, then arguments for the user's shell (getopt permutes, so options may
        // come between them; after `--` everything is an operand).
        let mut operands: Vec<AbsWord> = Vec::new();
        while let Some(w) = args.get(i) {
            let Some(s) = w.static_value() else {
                operands.push(w.clone());
                i += 1;
                continue;
            };
            if s == "--" {
                operands.extend(args.get(i + 1..).unwrap_or(&[]).iter().cloned());
                break;
            }
            if s == "-" {
                // `su -`: a login shell.
                i += 1;
                continue;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (lname, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let is = |full: &str| !lname.is_empty() && full.starts_with(lname);
                if is("command") || is("session-command") {
                    match value {
                        Some(v) => code = Some(AbsWord::literal(v)),
                        None => {
                            code = args.get(i + 1).cloned();
                            i += 1;
                        }
                    }
                } else if [
                    "group",
                    "supp-group",
                    "shell",
                    "whitelist-environment",
                    "user",
                ]
                .iter()
                .any(|f| is(f))
                {
                    if is("user") {
                        user_mode = true;
                    }
                    if value.is_none() {
                        i += 1;
                    }
                }
                i += 1;
                continue;
            }
            if s.starts_with('-') && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    let rest: String = cluster.get(k + 1..).unwrap_or(&[]).iter().collect();
                    match c {
                        'c' => {
                            if rest.is_empty() {
                                code = args.get(i + 1).cloned();
                                consumed = 1;
                            } else {
                                code = Some(AbsWord::literal(&rest));
                            }
                            break;
                        }
                        'u' | 'g' | 'G' | 's' | 'w' => {
                            if *c == 'u' {
                                user_mode = true;
                            }
                            if rest.is_empty() {
                                consumed = 1;
                            }
                            break;
                        }
                        _ => {}
                    }
                }
                i += 1 + consumed;
                continue;
            }
            operands.push(w.clone());
            i += 1;
        }
        if let Some(c) = code {
            return self.code_word(&c, stdin, ctx, display);
        }
        if name == "runuser" && user_mode {
            // `runuser -u USER [--] COMMAND...`: no shell.
            return self.invocation(&operands, stdin, ctx, layer + 1);
        }
        // The user's shell gets the remaining arguments: none (it reads standard input), a
        // script, or `-c CODE` after `--`.
        let shell_args = operands.get(1..).unwrap_or(&[]);
        self.shell("sh", shell_args, stdin, ctx, display)
    }

    fn ssh(&mut self, args: &[AbsWord], stdin: &Input, ctx: &Ctx, display: &str) -> Flow {
        const WITH_VALUE: &str = "BbcDEeFIiJLlmOopQRSWw";
        let mut i = 0;
        let mut host = false;
        let mut no_command = false;
        while let Some(w) = args.get(i) {
            let Some(s) = w.static_value() else {
                if host {
                    break;
                }
                host = true;
                i += 1;
                continue;
            };
            if s == "--" {
                i += 1;
                if !host {
                    host = true;
                    i += 1;
                }
                break;
            }
            if s.starts_with('-') && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    if matches!(c, 'N' | 's' | 'W' | 'O' | 'V' | 'G' | 'Q') {
                        no_command = true;
                    }
                    if WITH_VALUE.contains(*c) {
                        if k + 1 == cluster.len() {
                            consumed = 1;
                        }
                        break;
                    }
                }
                i += 1 + consumed;
                continue;
            }
            if host {
                break;
            }
            host = true;
            i += 1;
        }
        if no_command || !host {
            return ControlFlow::Continue(());
        }
        let command = args.get(i..).unwrap_or(&[]);
        if command.is_empty() {
            // The remote shell reads this command's standard input.
            return self.reads_commands(stdin, ctx, display);
        }
        self.joined_code(command, stdin, ctx, display)
    }

    fn watch(&mut self, args: &[AbsWord], ctx: &Ctx, layer: usize, display: &str) -> Flow {
        let mut i = 0;
        let mut exec = false;
        while let Some(s) = args.get(i).and_then(AbsWord::static_value) {
            if s == "--" {
                i += 1;
                break;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (lname, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                if !lname.is_empty() && "exec".starts_with(lname) {
                    exec = true;
                }
                let takes_value = ["interval", "equexit", "shotsfile"]
                    .iter()
                    .any(|f| !lname.is_empty() && f.starts_with(lname));
                i += if takes_value && value.is_none() { 2 } else { 1 };
                continue;
            }
            if s.starts_with('-') && s.len() > 1 {
                let cluster: Vec<char> = s.chars().skip(1).collect();
                let mut consumed = 0;
                for (k, c) in cluster.iter().enumerate() {
                    if *c == 'x' {
                        exec = true;
                    }
                    if matches!(c, 'n' | 'q' | 's') {
                        if k + 1 == cluster.len() {
                            consumed = 1;
                        }
                        break;
                    }
                }
                i += 1 + consumed;
                continue;
            }
            break;
        }
        let command = args.get(i..).unwrap_or(&[]);
        if exec {
            self.invocation(command, &Input::Terminal, ctx, layer + 1)
        } else {
            self.joined_code(command, &Input::Terminal, ctx, display)
        }
    }

    fn flock(
        &mut self,
        args: &[AbsWord],
        stdin: &Input,
        ctx: &Ctx,
        layer: usize,
        display: &str,
    ) -> Flow {
        let mut i = 0;
        while let Some(s) = args.get(i).and_then(AbsWord::static_value) {
            if s == "--" {
                i += 1;
                break;
            }
            if let Some(long) = s.strip_prefix("--") {
                let takes_value = ["conflict-exit-code", "timeout", "wait"]
                    .iter()
                    .any(|f| !long.is_empty() && !long.contains('=') && f.starts_with(long));
                i += if takes_value { 2 } else { 1 };
                continue;
            }
            if s.starts_with('-') && s.len() > 1 {
                let with_value = matches!(s.chars().last(), Some('E' | 'w'));
                i += if with_value { 2 } else { 1 };
                continue;
            }
            break;
        }
        i += 1; // the lock file or descriptor
        let rest = args.get(i..).unwrap_or(&[]);
        match rest.first().and_then(AbsWord::static_value).as_deref() {
            Some("-c" | "--command") => match rest.get(1) {
                Some(code) => self.code_word(code, stdin, ctx, display),
                None => ControlFlow::Continue(()),
            },
            _ => self.invocation(rest, stdin, ctx, layer + 1),
        }
    }
}

/// The value of an option such as `-c CODE` / `--command=CODE` anywhere before `--`.
fn option_value(
    args: &[AbsWord],
    short: char,
    long_name: &str,
    short_with_value: &str,
) -> Option<AbsWord> {
    let mut i = 0;
    while let Some(w) = args.get(i) {
        i += 1;
        let Some(s) = w.static_value() else { continue };
        if s == "--" {
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            let (lname, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            if !lname.is_empty() && long_name.starts_with(lname) {
                return match value {
                    Some(v) => Some(AbsWord::literal(v)),
                    None => args.get(i).cloned(),
                };
            }
            continue;
        }
        if s.starts_with('-') && s.len() > 1 {
            let cluster: Vec<char> = s.chars().skip(1).collect();
            for (k, c) in cluster.iter().enumerate() {
                let rest: String = cluster.get(k + 1..).unwrap_or(&[]).iter().collect();
                if *c == short {
                    return if rest.is_empty() {
                        args.get(i).cloned()
                    } else {
                        Some(AbsWord::literal(&rest))
                    };
                }
                if short_with_value.contains(*c) {
                    if rest.is_empty() {
                        i += 1;
                    }
                    break;
                }
            }
        }
    }
    None
}

/// `{}` in a `find -exec` command: a found path, not known statically, never an option
/// unless written after a `-`.
fn find_braces(w: &AbsWord) -> AbsWord {
    match w.static_value() {
        Some(t) if t.contains("{}") => {
            let prefix = t.split("{}").next().unwrap_or("");
            AbsWord::new(
                w.raw.clone(),
                vec![
                    Part::Lit {
                        text: prefix.to_owned(),
                        quoted: true,
                    },
                    Part::Dyn {
                        splits: false,
                        dash_free: true,
                    },
                ],
            )
        }
        _ => w.clone(),
    }
}

/// A shell's name without a version or build suffix (`bash5.2`, `bash-static`, `zsh-5.9`
/// are `bash`, `bash`, `zsh`).
fn shell_base(name: &str) -> &str {
    let name = name.strip_suffix("-static").unwrap_or(name);
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    if base.is_empty() {
        name
    } else {
        base
    }
}

fn same_spec(a: Option<&'static CmdSpec>, b: Option<&'static CmdSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
