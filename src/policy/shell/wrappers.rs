//! Commands that run another command given as their arguments (`sudo`, `nice`, `timeout`...):
//! how to skip their own options to find the command they run.
//!
//! Commands with stranger argument conventions (`env -S`, `xargs`, `find -exec`, shells,
//! `ssh`, `su -c`...) are handled by the analyser itself.

use super::word::{AbsWord, Arg};

/// The option conventions of one wrapper. All of them stop reading options at the first
/// operand (getopt `+` mode), as the real programs do.
#[derive(Debug)]
pub(crate) struct Wrapper {
    pub names: &'static [&'static str],
    /// Short options that take a value (`-u root`, `-uroot`).
    pub short_arg: &'static str,
    /// Short options whose value is optional and only attached (`-i{}`).
    pub short_opt_arg: &'static str,
    /// Long options that take a value (`--user root`, `--user=root`).
    pub long_arg: &'static [&'static str],
    /// Short options after which no command runs (`sudo -l`, `command -v`).
    pub no_exec_short: &'static str,
    /// Long options after which no command runs.
    pub no_exec_long: &'static [&'static str],
    /// Operands before the command (`timeout DURATION`, `chroot NEWROOT`).
    pub positionals: usize,
    /// `NAME=VALUE` words may precede the command (`sudo FOO=1 cmd`).
    pub assignments: bool,
    /// `-NUM` / `--NUM` are options (`nice -10 cmd`).
    pub numeric: bool,
    /// Short options that start a shell when no command is given (`sudo -s`, `sudo -i`).
    pub shell_short: &'static str,
    /// Long options that start a shell when no command is given (`sudo --login`).
    pub shell_long: &'static [&'static str],
    /// Without a command, a shell starts (`pkexec`).
    pub shell_by_default: bool,
}

const BASE: Wrapper = Wrapper {
    names: &[],
    short_arg: "",
    short_opt_arg: "",
    long_arg: &[],
    no_exec_short: "",
    no_exec_long: &[],
    positionals: 0,
    assignments: false,
    numeric: false,
    shell_short: "",
    shell_long: &[],
    shell_by_default: false,
};

/// The wrappers the matcher looks through.
pub(crate) static WRAPPERS: &[Wrapper] = &[
    Wrapper {
        names: &["sudo"],
        short_arg: "aCcDgpRrTtUu",
        long_arg: &[
            "auth-type",
            "close-from",
            "login-class",
            "chdir",
            "group",
            "host",
            "prompt",
            "chroot",
            "role",
            "command-timeout",
            "type",
            "other-user",
            "user",
        ],
        no_exec_short: "elvVK",
        no_exec_long: &[
            "edit",
            "list",
            "validate",
            "version",
            "help",
            "remove-timestamp",
        ],
        assignments: true,
        shell_short: "is",
        shell_long: &["login", "shell"],
        ..BASE
    },
    Wrapper {
        names: &["doas"],
        short_arg: "Cu",
        no_exec_short: "C",
        shell_short: "s",
        ..BASE
    },
    Wrapper {
        names: &["pkexec"],
        long_arg: &["user"],
        no_exec_long: &["version", "help"],
        shell_by_default: true,
        ..BASE
    },
    Wrapper {
        names: &["nohup", "setsid", "builtin", "coproc", "unbuffer"],
        no_exec_long: &["help", "version"],
        ..BASE
    },
    Wrapper {
        names: &["stdbuf"],
        short_arg: "ioe",
        long_arg: &["input", "output", "error"],
        no_exec_long: &["help", "version"],
        ..BASE
    },
    Wrapper {
        names: &["timeout"],
        short_arg: "ks",
        long_arg: &["kill-after", "signal"],
        no_exec_long: &["help", "version"],
        positionals: 1,
        ..BASE
    },
    Wrapper {
        names: &["nice"],
        short_arg: "n",
        long_arg: &["adjustment"],
        no_exec_long: &["help", "version"],
        numeric: true,
        ..BASE
    },
    Wrapper {
        names: &["ionice"],
        short_arg: "cnpPu",
        long_arg: &["class", "classdata", "pid", "pgid", "uid"],
        no_exec_short: "pPuh",
        no_exec_long: &["pid", "pgid", "uid", "help", "version"],
        ..BASE
    },
    Wrapper {
        names: &["chrt"],
        short_arg: "TPD",
        long_arg: &["sched-runtime", "sched-period", "sched-deadline"],
        no_exec_short: "pmhV",
        no_exec_long: &["pid", "max", "help", "version"],
        positionals: 1,
        ..BASE
    },
    Wrapper {
        names: &["taskset"],
        no_exec_short: "phV",
        no_exec_long: &["pid", "help", "version"],
        positionals: 1,
        ..BASE
    },
    Wrapper {
        names: &["time"],
        short_arg: "fo",
        long_arg: &["format", "output"],
        no_exec_short: "V",
        no_exec_long: &["help", "version"],
        ..BASE
    },
    Wrapper {
        names: &["command"],
        no_exec_short: "vV",
        ..BASE
    },
    Wrapper {
        names: &["exec"],
        short_arg: "a",
        ..BASE
    },
    Wrapper {
        names: &["chroot"],
        long_arg: &["groups", "userspec"],
        no_exec_long: &["help", "version"],
        positionals: 1,
        // `chroot DIR` alone runs `$SHELL -i`.
        shell_by_default: true,
        ..BASE
    },
    Wrapper {
        names: &["strace"],
        short_arg: "abeEIoOpPsSuUX",
        long_arg: &[
            "columns",
            "attach",
            "trace",
            "trace-path",
            "signal",
            "status",
            "output",
            "string-limit",
            "user",
            "env",
            "summary-sort-by",
            "const-print-style",
            "detach-on",
            "read",
            "write",
            "quiet",
            "silence",
            "inject",
            "fault",
        ],
        no_exec_short: "hV",
        no_exec_long: &["help", "version"],
        ..BASE
    },
    // util-linux and systemd: without a command they start the user's shell.
    Wrapper {
        names: &["nsenter"],
        short_arg: "tNSG",
        short_opt_arg: "muinpCUTrwW",
        long_arg: &["target", "net-socket", "setuid", "setgid"],
        no_exec_short: "hV",
        no_exec_long: &["help", "version"],
        shell_by_default: true,
        ..BASE
    },
    Wrapper {
        names: &["unshare"],
        short_arg: "RwSGl",
        long_arg: &[
            "map-user",
            "map-users",
            "map-group",
            "map-groups",
            "owner",
            "propagation",
            "setgroups",
            "setuid",
            "setgid",
            "root",
            "wd",
            "monotonic",
            "boottime",
            "load-interp",
        ],
        no_exec_short: "hV",
        no_exec_long: &["help", "version"],
        shell_by_default: true,
        ..BASE
    },
    Wrapper {
        names: &["systemd-run"],
        short_arg: "HMCupE",
        long_arg: &[
            "host",
            "machine",
            "capsule",
            "unit",
            "property",
            "description",
            "slice",
            "expand-environment",
            "service-type",
            "uid",
            "gid",
            "nice",
            "working-directory",
            "root-directory",
            "setenv",
            "output",
            "json",
            "job-mode",
            "background",
            "path-property",
            "socket-property",
            "timer-property",
            "on-active",
            "on-boot",
            "on-startup",
            "on-unit-active",
            "on-unit-inactive",
            "on-calendar",
        ],
        no_exec_short: "h",
        no_exec_long: &["help", "version"],
        shell_short: "S",
        shell_long: &["shell"],
        ..BASE
    },
    Wrapper {
        names: &["run0"],
        short_arg: "ugD",
        long_arg: &[
            "machine",
            "unit",
            "property",
            "description",
            "slice",
            "user",
            "group",
            "nice",
            "chdir",
            "setenv",
            "background",
            "shell-prompt-prefix",
            "lightweight",
            "area",
        ],
        no_exec_short: "hV",
        no_exec_long: &["help", "version"],
        shell_by_default: true,
        ..BASE
    },
    Wrapper {
        names: &["setpriv"],
        long_arg: &[
            "inh-caps",
            "ambient-caps",
            "ruid",
            "euid",
            "rgid",
            "egid",
            "reuid",
            "regid",
            "groups",
            "bounding-set",
            "securebits",
            "pdeathsig",
            "ptracer",
            "selinux-label",
            "apparmor-profile",
            "landlock-access",
            "landlock-rule",
            "seccomp-filter",
        ],
        no_exec_short: "dhV",
        no_exec_long: &["dump", "list-caps", "help", "version"],
        ..BASE
    },
    Wrapper {
        names: &["prlimit"],
        short_arg: "po",
        short_opt_arg: "cdefilmnqrstuvxy",
        long_arg: &["output"],
        no_exec_short: "pVh",
        no_exec_long: &["pid", "version", "help"],
        ..BASE
    },
    Wrapper {
        names: &["ltrace"],
        short_arg: "aAeEnopsuxXDFlL",
        long_arg: &["align", "output", "library", "indent"],
        no_exec_short: "hV",
        no_exec_long: &["help", "version"],
        ..BASE
    },
];

/// The wrapper table entry for a command base name.
pub(crate) fn lookup(name: &str) -> Option<&'static Wrapper> {
    WRAPPERS.iter().find(|w| w.names.contains(&name))
}

/// Where a wrapper's command is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unwrap {
    /// The command starts at this argument index.
    Command(usize),
    /// The wrapper runs no command (an option says so, or none is given).
    NoCommand,
    /// No command is given and the wrapper starts a shell, which reads standard input.
    Shell,
    /// A word computed at run time hides where the command starts.
    Unclear(String),
}

/// Whether `s` is `NAME=VALUE` with a valid shell variable name.
pub(crate) fn is_assignment(s: &str) -> bool {
    match s.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Finds the command a wrapper runs.
pub(crate) fn unwrap(w: &Wrapper, args: &[AbsWord]) -> Unwrap {
    let mut i = 0;
    let mut in_options = true;
    let mut positionals = w.positionals;
    let mut shell = w.shell_by_default;
    while let Some(word) = args.get(i) {
        let Some(s) = word.static_value() else {
            match word.arg() {
                // One word computed at run time: it fills an operand slot, or it is the
                // command when it cannot be an option or an assignment.
                Arg::Dynamic {
                    splits: false,
                    may_be_option,
                    prefix,
                } => {
                    if positionals > 0 {
                        positionals -= 1;
                        in_options = false;
                        i += 1;
                        continue;
                    }
                    let assignment = w.assignments && prefix.contains('=');
                    if (!may_be_option || !in_options) && !assignment {
                        return Unwrap::Command(i);
                    }
                }
                // A glob in command position: the analyser reports the glob name.
                Arg::Glob { .. } if positionals == 0 => return Unwrap::Command(i),
                _ => {}
            }
            return Unwrap::Unclear(format!(
                "`{}` is computed at run time, so where the command starts is unknown",
                word.raw
            ));
        };
        if in_options && s == "--" {
            in_options = false;
            i += 1;
            continue;
        }
        if in_options && s.len() > 1 && s.starts_with('-') {
            let body = s.trim_start_matches('-');
            if w.numeric && !body.is_empty() && body.chars().all(|c| c.is_ascii_digit()) {
                i += 1;
                continue;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (name, has_value) = match long.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (long, false),
                };
                // An exact name wins over abbreviations (`--login` is not `--login-class`).
                let exact = [w.no_exec_long, w.long_arg, w.shell_long]
                    .iter()
                    .any(|list| list.contains(&name));
                let matches = |list: &[&str]| {
                    !name.is_empty()
                        && list
                            .iter()
                            .any(|l| *l == name || (!exact && l.starts_with(name)))
                };
                if matches(w.no_exec_long) && !matches(w.long_arg) {
                    return Unwrap::NoCommand;
                }
                if matches(w.shell_long) {
                    shell = true;
                }
                i += 1;
                if matches(w.long_arg) && !has_value {
                    i += 1;
                }
                continue;
            }
            let cluster: Vec<char> = s.chars().skip(1).collect();
            i += 1;
            for (k, c) in cluster.iter().enumerate() {
                if w.no_exec_short.contains(*c) {
                    return Unwrap::NoCommand;
                }
                if w.shell_short.contains(*c) {
                    shell = true;
                }
                if w.short_arg.contains(*c) {
                    if k + 1 == cluster.len() {
                        i += 1;
                    }
                    break;
                }
                if w.short_opt_arg.contains(*c) {
                    break;
                }
            }
            continue;
        }
        if positionals > 0 {
            positionals -= 1;
            in_options = false;
            i += 1;
            continue;
        }
        if w.assignments && is_assignment(&s) {
            in_options = false;
            i += 1;
            continue;
        }
        return Unwrap::Command(i);
    }
    if shell {
        Unwrap::Shell
    } else {
        Unwrap::NoCommand
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<AbsWord> {
        s.split_whitespace().map(AbsWord::literal).collect()
    }

    #[test]
    fn finds_the_command() {
        let cases: &[(&str, &str, Unwrap)] = &[
            ("sudo", "-u root -E -- rm -rf /", Unwrap::Command(4)),
            ("sudo", "-uroot rm", Unwrap::Command(1)),
            ("sudo", "--user root rm", Unwrap::Command(2)),
            ("sudo", "--user=root FOO=1 rm", Unwrap::Command(2)),
            ("sudo", "-l rm", Unwrap::NoCommand),
            ("sudo", "-i", Unwrap::Shell),
            ("sudo", "-u root -s", Unwrap::Shell),
            ("sudo", "--login rm", Unwrap::Command(1)),
            ("sudo", "--login-class x rm", Unwrap::Command(2)),
            ("sudo", "-u root", Unwrap::NoCommand),
            ("doas", "-s", Unwrap::Shell),
            ("pkexec", "", Unwrap::Shell),
            ("pkexec", "--user root", Unwrap::Shell),
            ("pkexec", "--version", Unwrap::NoCommand),
            ("timeout", "-s KILL 10 rm", Unwrap::Command(3)),
            ("timeout", "--signal=KILL 10s rm", Unwrap::Command(2)),
            ("nice", "-n 5 rm", Unwrap::Command(2)),
            ("nice", "-10 rm", Unwrap::Command(1)),
            ("ionice", "-c3 rm", Unwrap::Command(1)),
            ("ionice", "-c3 -p 42", Unwrap::NoCommand),
            ("chroot", "/srv rm", Unwrap::Command(1)),
            ("command", "-v rm", Unwrap::NoCommand),
            ("command", "-p rm", Unwrap::Command(1)),
            ("exec", "-a name rm", Unwrap::Command(2)),
            ("stdbuf", "-oL rm", Unwrap::Command(1)),
            ("stdbuf", "-o L rm", Unwrap::Command(2)),
            ("taskset", "-c 0-3 rm", Unwrap::Command(2)),
            ("strace", "-f -e trace=all -o /tmp/x rm", Unwrap::Command(5)),
        ];
        for (name, args, want) in cases {
            let w = lookup(name).unwrap();
            assert_eq!(&unwrap(w, &words(args)), want, "{name} {args}");
        }
    }
}
