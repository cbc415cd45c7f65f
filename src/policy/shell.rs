//! Shell-command rules (`[[rule]] shell = [...]`): does a command line run a command that a
//! pattern describes, in any spelling? Pure: no I/O, no tokio, bounded time and stack.
//!
//! A line (an SSH exec string, or one line typed at an interactive shell) is parsed with a
//! real bash grammar ([brush-parser](https://docs.rs/brush-parser)), every command that the
//! line would run is found, each word's value is computed by removing quotes and escapes, and
//! each simple command is decided against the patterns. [`ShellMatcher::check`] answers
//! [`Verdict::Match`], [`Verdict::NoMatch`], or [`Verdict::Unknown`] when the answer depends on
//! something only known at run time. **Callers refuse `Unknown`** (fail closed).
//!
//! # Pattern language
//!
//! A pattern is words separated by blanks; `'...'` and `"..."` quote, `\` escapes one
//! character. Shell operators (`|`, `;`, `&`, `<`, `>`, `(`, `)`) and expansions (`$`, `` ` ``)
//! are refused by [`ShellPattern::parse`]: a pattern describes one simple command.
//!
//! * **First word: the command**, matched against the *base name* of the program that runs
//!   (`/usr/bin/rm`, `./rm`, `"$HOME/bin/rm"` all run `rm`). A plain name `mkfs` matches `mkfs`
//!   and every `mkfs.<anything>` (`mkfs.ext4`, `mkfs.xfs`; also `rm.sh` for `rm`). A name with
//!   glob characters (`mkfs*`, `[rh]alt`) is a glob over the base name. A name with `/` is
//!   refused.
//! * **`-xyz`: short options x, y and z are all given**, in any grouping or order (`-rf` =
//!   `-fr` = `-r -f` = `-f -r`), anywhere before a `--` argument (GNU commands permute, so
//!   `rm x -rf` counts; `rm -- -rf` does not).
//! * **`--name`: the long option is given.** For the commands in the table below, short and
//!   long spellings are one option (`-R` = `-r` = `--recursive` for `rm`) and unambiguous
//!   GNU abbreviations count (`--rec`, `--recur`). For other commands, `--name` is given when
//!   some argument is `--name` or an abbreviation of it, and `-x` and `--xname` are distinct:
//!   write one pattern per spelling (`iptables -F` and `iptables --flush`).
//! * **Any other word: some operand matches this glob** (`/`, `of=/dev/*`, `777`). `*` and `?`
//!   also match `/`. Absolute paths are compared lexically normalised (`//`, `/./`, `/usr/..`
//!   and `/` are all `/`; `of=//dev/sda` is `of=/dev/sda`). For `chmod`, octal modes compare by
//!   value (`0777` = `777`) and `a=rwx`, `ugo=rwx`, `a+rwx`, `ugo+rwx`, `u=rwx,g=rwx,o=rwx`,
//!   `=rwx`, `+rwx` count as `777`. A quoted word, or any word after a `--` in the pattern, is
//!   an operand even if it starts with `-`.
//! * **Paths compare by what they name.** An operand with a `..` component compares only in
//!   its normalised form (`/tmp/../etc` is `/etc`: it matches `rm -rf /etc`, not `rm -rf
//!   /tmp/*`); others match in either form (`/tmp/` matches `/tmp/*`). A computed tail may hold
//!   `/..`, so of `"/dev/$X"` only the root `/` is certain: `dd of="/dev/$X"` is *undecidable*
//!   for `dd of=/dev/*` (`$X` may be `../etc/fstab`), and `rm -rf "/tmp/$X"` is undecidable
//!   for `rm -rf /` (`$X` may be `..`); a pattern that accepts every path under the root
//!   (`rm -rf /*` for `rm -rf "/srv/$X"`, `dd of=*` for `dd of="$OUT"`) matches. Likewise a
//!   glob component that starts with `.` may expand to `..` (`/tmp/.*`, without bash 5.2's
//!   `globskipdots`).
//! * For `find`, every word is compared whole (`find -delete` matches `find / -delete`).
//! * Option values are not supported (`--preserve-root=all` is refused).
//!
//! All conditions of a pattern must hold; a matcher holds many patterns and reports the
//! first that matches. Examples: `rm -rf`, `rm -rf /`, `mkfs`, `shutdown`, `reboot`,
//! `dd of=/dev/*`, `chmod -R 777 /`, `crontab -r`, `find -delete`.
//!
//! Option tables (GNU coreutils / util-linux / systemd spellings): `rm`, `cp`, `mv`, `chmod`
//! (where `-w`, `-rwx` are modes, not options), `chown`, `chgrp`, `ln`, `shred`, `dd`, `find`,
//! `shutdown`, `reboot`/`halt`/`poweroff`, `crontab`, `userdel`, `truncate`.
//!
//! ## Power-state spellings
//!
//! A command is also decided under the names of what it does:
//!
//! | command line | also decided as |
//! |---|---|
//! | `systemctl [opts] reboot\|poweroff\|halt\|kexec\|soft-reboot ...`, same with `loginctl` | that verb, with the rest of the arguments |
//! | `systemctl kexec`, `systemctl soft-reboot` (both restart the system) | also `reboot` |
//! | `systemctl start\|isolate\|restart reboot.target` (and the other power targets) | the target's name |
//! | `init 0`, `telinit 0` | `poweroff` |
//! | `init 6`, `telinit 6` | `reboot` |
//! | `poweroff`, `halt` (so also `systemctl poweroff`, `init 0`) | `shutdown` |
//! | `shutdown -r` / `--reboot` | `reboot` |
//! | `reboot`/`halt`/`poweroff` with `-p`/`--poweroff`, `--halt`, `--reboot` | `poweroff`, `halt`, `reboot` |
//! | `mke2fs`, `mkdosfs`, `mkntfs`, `mkexfatfs` | `mkfs.ext2`, `mkfs.fat`, `mkfs.ntfs`, `mkfs.exfat` |
//!
//! So `shutdown` blocks `poweroff`, `halt`, `systemctl poweroff`, `init 0` and `reboot --halt`;
//! `reboot` blocks `systemctl reboot`, `init 6`, `shutdown -r now` and `halt --reboot`; plain
//! `reboot` is not `shutdown`. A computed verb, run level or option of these commands
//! (`systemctl $VERB`, `init $L`, `shutdown $FLAGS`) is undecidable when any power pattern
//! exists.
//!
//! # What is looked at
//!
//! * Every command of the line: `;`, `&&`, `||`, `|`, `&`, `( )`, `{ ; }`, `if`/`while`/
//!   `until`/`for`/`case` bodies and conditions, `[[ ]]`, `(( ))`, **function bodies (checked
//!   as if run)**, `$(...)`, backquotes, `<(...)`/`>(...)`, substitutions inside `${x:-...}`,
//!   arithmetic, redirection targets, here-documents with expansions, and array subscripts
//!   that bash evaluates from strings (`[[ -v 'a[$(cmd)]' ]]`, `printf -v`, `declare`, `let`,
//!   and assignments such as `x='a[$(cmd)]'`, which a later `$((x))` runs).
//! * `((`: as in bash, an arithmetic command only when both parentheses are adjacent and the
//!   inner `)` is directly followed by `)`; `((cmd) )` and `( (cmd))` are nested subshells.
//! * Quoting: `\rm`, `r\m`, `'rm'`, `"rm"`, `r''m`, `"r"m`, `$'rm'`, `$'\x72m'`, `$"rm"`,
//!   line continuations; assignments before the command (`FOO=1 rm`); redirections anywhere.
//! * Wrappers, looked through with their own options: `sudo` (`-u`, `-E`, `--`, `VAR=val`...;
//!   `-l`/`-e`/`-v` run nothing; `-s`/`-i` without a command start a shell that reads
//!   standard input), `doas` (`-s` likewise), `pkexec` (a shell without a command),
//!   `builtin` (bash can load a builtin named `rm`: `builtin rm` counts as `rm`), `env` (`-i`,
//!   `-u NAME`, `-C DIR`,
//!   `VAR=val`, and `-S 'STRING'`, split into words), `nohup`, `setsid`, `timeout` (options and
//!   duration), `nice` (`-n N`, `-N`), `ionice`, `chrt`, `taskset`, `stdbuf`, `time` (keyword and
//!   program), `command` (`-v`/`-V` run nothing), `builtin`, `exec` (`-a NAME`), `coproc`,
//!   `chroot DIR`, `strace`, `ltrace`, `unbuffer`, `busybox`/`toybox APPLET`, `xargs` (options;
//!   the arguments it reads are unknown words appended to the command, or put in place of
//!   `-I`'s string), `find -exec/-execdir/-ok/-okdir ... ;|+` (`{}` is an unknown path that is
//!   not an option), `runuser -u USER CMD`, `flock FILE CMD`, `watch -x CMD`, `setpriv`,
//!   `prlimit`, and `nsenter`, `unshare`, `run0`, `systemd-run` (`--shell`), which start a
//!   shell reading standard input when no command is given (unit properties such as
//!   `systemd-run -p ExecStartPre=...` are not looked at).
//! * Code strings, parsed again (nested at most [`MAX_NESTED_SCRIPTS`] deep): `sh`/`bash`/
//!   `dash`/`zsh`/`ksh`/`mksh`/`ash`/`yash`/`posh`/`rbash`/`csh`/`tcsh` `-c STRING` (also
//!   `-lc`, `-c -e`, `-o opt`, and versioned names such as `bash5.2`, `bash-static`), `fish
//!   -c/-C`, `eval [--] ARGS`, `su`/`runuser -c` (and `su USER -- -c CMD`), `sg GROUP CMD`,
//!   `ssh [opts] HOST CMD...` (the remote command is checked too), `watch CMD...`, `flock FILE
//!   -c CMD`, `script -c CMD`, `trap 'CODE' SIG`, `mapfile -C CODE`, `alias name='CODE'`
//!   (checked with unknown arguments appended: `alias x=rm` is undecidable for `rm -rf`),
//!   `PROMPT_COMMAND=CODE`, substitutions in `PS0`/`PS1`/`PS2`/`PS4`.
//! * A code string partly computed at run time (`eval "rm -rf $DIR"`, `sh -c "cd $D && ..."`)
//!   is undecidable, but its known skeleton is walked with each computed part standing for
//!   unknown words, so a certain match in it is still reported.
//! * Shells (and `ssh HOST`, `at`, `batch`, `su [-] [USER]`, `sudo -s`/`-i`, `doas -s`,
//!   `pkexec`, `chroot DIR`, `newgrp`, and the wrappers above that start a shell) reading
//!   commands from standard input: a here-string or here-document is parsed;
//!   a pipe from `echo`/`printf` with static words is parsed (`echo 'rm -rf /' | sh`); any
//!   other pipe (`curl ... | sh`) or a process substitution (`bash <(curl ...)`) is
//!   undecidable. A shell reading the terminal (an interactive `bash`, `sudo -i`) is not: what
//!   is typed next is checked line by line by the caller.
//!
//! # When the answer is `Unknown`
//!
//! Only when at least one pattern exists (with none, every line is `NoMatch`), and:
//!
//! * the line does not parse (bash's `select` and `coproc NAME { }` are not supported by the
//!   grammar and are refused, and so are `case` commands inside `$( )` and a process
//!   substitution in command position), is longer than [`MAX_LINE_BYTES`], has more than
//!   [`MAX_GROUPS`] grouping constructs or substitutions in one string, nests code strings
//!   more than [`MAX_NESTED_SCRIPTS`] deep or compound commands more than
//!   [`MAX_COMPOUND_DEPTH`] deep (all checked before the parser, which recurses, runs), or
//!   holds input on which brush-parser 0.3.0 would not finish (found by fuzzing): a word with
//!   more than four unclosed `(` (its word grammar doubles its work for each), or a
//!   here-document operator in text that holds a carriage return or form feed (a tag of only
//!   those loops its tokenizer forever);
//! * a **command name** is not static: `$X -rf /`, `$(echo rm) -rf /`, `"${cmd}"`, a glob
//!   (`r*m`, `/bin/r?`), a brace expansion (`{rm,-rf,/}`), an extended glob (`!(cmd)` is a
//!   negated subshell or a glob depending on bash's `extglob`). A name like `"$DIR/rm"` or
//!   `~/bin/rm` is static (`rm`): only the directory is computed;
//! * the name matches a pattern that inspects arguments and an argument the decision needs
//!   is computed at run time: for `rm -rf`, `rm $FLAGS x`, `rm -r "$X"` and `rm -f "$F"` (a
//!   quoted expansion is one word, but that word may be `-r`), `rm -r *` (a file may be named
//!   `-f`), `xargs rm`; but not `rm -rf "$X"` (already a match), `rm -r -- "$X"` (after `--`
//!   nothing is an option), `rm -f *.log` (a name ending in `.log` cannot be an `rm` option),
//!   `ls $X` (no pattern names `ls`); for operands see "Paths compare by what they name";
//! * a wrapper's options hide where its command starts (`sudo $OPTS ls`), `eval`/`sh -c`/
//!   `trap`/`alias`/`ssh`/`mapfile -C` get a string computed at run time, `source`/`.` runs a
//!   file (it may define functions and aliases for later lines), `fc` or `!`-history
//!   expansion re-runs earlier commands, `${x@P}` expands a value like a prompt (running its
//!   substitutions), `hash -p`/`enable -f` make a name run another program, or a shell reads
//!   commands from a pipe or process it cannot see.
//!
//! # What it cannot see
//!
//! The matcher sees one line; it is a guard rail against mistakes and casual evasion, not a
//! sandbox. It does not see:
//!
//! * programs and scripts run by path (`./cleanup.sh`, `bash script.sh`, `bash < file`,
//!   `make`), and code in other languages (`python -c`, `perl -e`, `awk 'BEGIN{system(...)}'`,
//!   `vim -c '!...'`, `git -c alias...`): their contents are not shell lines here;
//! * functions, aliases and variables defined earlier in an interactive session (`x -rf /`
//!   after `alias x=rm` on a previous line: the `alias` line itself is already refused);
//! * programs copied or linked under another name (`cp /bin/rm /tmp/x; /tmp/x -rf /` runs a
//!   command named `x`), `busybox` symlinks, or names resolved by `PATH` tricks;
//! * effects spelled without the command: redirections (`cat img > /dev/sda`, `echo b >
//!   /proc/sysrq-trigger`), other programs with the same effect (`find / -delete` is not
//!   `rm -rf`, `tee /dev/sda` is not `dd`), relative paths (`cd /; rm -rf .` is not `rm -rf /`);
//! * wrappers and code strings not listed above (`tmux send-keys`, `screen`, `parallel`,
//!   `firejail`, `numactl`, `docker exec`, `kubectl exec`, `crontab` files, `bind -x`,
//!   `complete -C`, `BASH_ENV`, `strace -o '|cmd'`), and option values
//!   (`--preserve-root=all`);
//! * the stdin of an exec channel: `ssh target bash < local.sh` sends the script as channel
//!   data, and the exec string `bash` reads the terminal; callers must check such input.
//!
//! A match is conservative the other way: `rm $X -rf /` matches although `$X` might be `--`,
//! `eval "rm -rf $D"` matches although `$D` might hold a stray quote, and a function named
//! `rm` would still count as `rm`. Used in an `allow` rule, a match means "some command of the
//! line has some operand that matches", not "every command and operand is allowed": `allow
//! rm -rf /tmp/*` matches `rm -rf /tmp/x /` and `rm -rf /tmp/x; rm -rf /`, so an allow rule that
//! outranks a deny rule on the same command re-opens what the deny rule closes.

#![deny(clippy::indexing_slicing, clippy::string_slice)]

mod analyze;
mod glob;
mod pattern;
mod spec;
mod word;
mod wrappers;

#[cfg(test)]
mod tests;

pub use analyze::{MAX_COMPOUND_DEPTH, MAX_GROUPS, MAX_LINE_BYTES, MAX_NESTED_SCRIPTS};
pub use pattern::{PatternError, ShellPattern};

use analyze::{Outcome, Rule};

/// A compiled set of shell patterns, each tagged with the caller's id.
#[derive(Debug, Clone, Default)]
pub struct ShellMatcher {
    rules: Vec<Rule>,
}

/// The answer for one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A pattern matched this (sub)command.
    Match {
        /// The caller's id of the pattern.
        id: usize,
        /// The pattern as written.
        pattern: String,
        /// The simple command as written (its words, joined by spaces), for messages.
        command: String,
    },
    /// No pattern can match any command the line runs.
    NoMatch,
    /// Policy cannot tell whether a pattern's command runs; callers refuse (fail closed).
    Unknown {
        /// What could not be decided, for messages.
        reason: String,
    },
}

impl ShellMatcher {
    /// Compiles patterns; `id` is returned in [`Verdict::Match`].
    pub fn new(patterns: impl IntoIterator<Item = (usize, ShellPattern)>) -> Self {
        ShellMatcher {
            rules: patterns
                .into_iter()
                .map(|(id, pattern)| Rule { id, pattern })
                .collect(),
        }
    }

    /// Whether the matcher holds no pattern (then every line is [`Verdict::NoMatch`]).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides one command line: the first match if any command matches (a match wins over
    /// undecidable parts elsewhere in the line), else `Unknown` if some part was undecidable,
    /// else `NoMatch`.
    pub fn check(&self, line: &str) -> Verdict {
        match analyze::analyze(&self.rules, line) {
            Outcome::Hit(h) => Verdict::Match {
                id: h.id,
                pattern: h.pattern,
                command: h.command,
            },
            Outcome::Unknown(reason) => Verdict::Unknown { reason },
            Outcome::Clear => Verdict::NoMatch,
        }
    }
}
