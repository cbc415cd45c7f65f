//! Table tests for the shell matcher: for each pattern, spellings that must match, benign
//! twins that must not, and lines that must be refused as undecidable; then inputs that must
//! neither panic, overflow the stack nor take exponential time.
//!
//! Test command lines live only here, as Rust string literals: never in a shell.

use super::*;

/// The kind of a verdict, for tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Match,
    NoMatch,
    Unknown,
}

fn matcher(patterns: &[&str]) -> ShellMatcher {
    ShellMatcher::new(
        patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (i, ShellPattern::parse(p).unwrap())),
    )
}

fn kind(v: &Verdict) -> Kind {
    match v {
        Verdict::Match { .. } => Kind::Match,
        Verdict::NoMatch => Kind::NoMatch,
        Verdict::Unknown { .. } => Kind::Unknown,
    }
}

/// Checks that every line gets the verdict `want`; reports all failures at once.
fn expect(patterns: &[&str], want: Kind, lines: &[&str]) {
    let m = matcher(patterns);
    let failures: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            let got = m.check(line);
            (kind(&got) != want).then(|| format!("  {line:?}\n      got {got:?}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{patterns:?}: {} of {} lines are not {want:?}:\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n")
    );
}

// ---- rm -rf ------------------------------------------------------------------------------

const RM_RF: &[&str] = &["rm -rf"];

/// Spellings of `rm -rf`, each of which must match.
const RM_RF_MATCH: &[&str] = &[
    // Flags: grouping, order, case, long options and their abbreviations, position.
    "rm -rf /",
    "rm -fr /",
    "rm -r -f /",
    "rm -Rf /",
    "rm -f -R /",
    "rm -rfv /",
    "rm -v -rf /",
    "rm -rf -- /",
    "rm --recursive --force /",
    "rm --rec --for /",
    "rm --force --recursive x",
    "rm -r --force x",
    "rm --recursive -f /",
    "rm x -rf",
    "rm x -r y -f",
    "rm -r -f",
    "rm -rf *",
    "rm -rf \"$DIR\"",
    "rm -rf{,} /",
    // Program paths.
    "/bin/rm -rf /",
    "/usr/bin/rm -rf /",
    "./rm -rf x",
    "\"$HOME/bin/rm\" -rf x",
    // Quoting and escaping.
    r"\rm -rf /",
    r"r\m -rf /",
    "'rm' -rf /",
    "\"rm\" -rf /",
    "r''m -rf /",
    "\"r\"m -rf /",
    "$'rm' -rf /",
    r"$'\x72m' -rf /",
    r"$'\162\155' -rf /",
    "$\"rm\" -rf /",
    "rm '-rf' /",
    "rm -\"rf\" /",
    r"rm \-rf /",
    r"rm -r\f /",
    "r\\\nm -rf /",
    // Assignments and redirections.
    "FOO=1 rm -rf /",
    "FOO=1 BAR=\"a b\" rm -rf /",
    "rm -rf / 2>/dev/null",
    "< /dev/null rm -rf /",
    // Wrappers.
    "sudo rm -rf /",
    "sudo -u root rm -rf /",
    "sudo -E -- rm -rf /",
    "sudo -i rm -rf /",
    "sudo FOO=bar rm -rf /",
    "sudo -u root -g wheel -- nice -n 5 rm -rf /",
    "env -i rm -rf /",
    "env -u X rm -rf /",
    "env FOO=1 rm -rf /",
    "env -- rm -rf /",
    "env -S 'rm -rf /'",
    "nohup rm -rf / &",
    "timeout 5 rm -rf /",
    "timeout -s KILL 5 rm -rf /",
    "timeout --signal=KILL 5s rm -rf /",
    "nice -n 5 rm -rf /",
    "nice -10 rm -rf /",
    "nice rm -rf /",
    "ionice -c3 rm -rf /",
    "ionice -c 2 -n 7 rm -rf /",
    "echo / | xargs rm -rf",
    "find . -print0 | xargs -0 rm -rf",
    "xargs -I{} rm -rf {} < list",
    "command rm -rf /",
    "command -p rm -rf /",
    // A loadable builtin named `rm` exists (bash's examples/loadables): `builtin rm` can run it.
    "builtin rm -rf /",
    "exec rm -rf /",
    "exec -a foo rm -rf /",
    "time rm -rf /",
    "time -p rm -rf /",
    "stdbuf -o0 rm -rf /",
    "stdbuf -oL -eL rm -rf /",
    "doas rm -rf /",
    "doas -u root rm -rf /",
    "pkexec rm -rf /",
    "chroot / rm -rf /",
    "setsid rm -rf /",
    "busybox rm -rf /",
    "strace -f rm -rf /",
    "runuser -u root -- rm -rf /",
    "nsenter -t 1 -m -u -i -n -p rm -rf /",
    "nsenter --target 1 --mount rm -rf /",
    "nsenter -t1 -m/proc/1/ns/mnt rm -rf /",
    "unshare -m rm -rf /",
    "unshare --map-root-user --propagation private rm -rf /",
    "unshare -R /mnt rm -rf /",
    "systemd-run --pty rm -rf /",
    "systemd-run -p Nice=5 --unit x -t rm -rf /",
    "run0 rm -rf /",
    "run0 -u root --chdir / rm -rf /",
    "setpriv --reuid=0 --regid=0 --init-groups rm -rf /",
    "setpriv --reuid 0 rm -rf /",
    "prlimit --nofile=1024 rm -rf /",
    "prlimit -n1024 rm -rf /",
    "flock /tmp/l rm -rf /",
    "watch rm -rf /",
    "find / -exec rm -rf {} +",
    "find / -name x -exec rm -rf {} \\;",
    "coproc rm -rf /",
    // Code strings handed to shells and friends.
    "bash -c 'rm -rf /'",
    "sh -c \"rm -rf /\"",
    "bash -lc 'rm -rf /'",
    "bash -e -c 'rm -rf /'",
    "dash -c 'cd / && rm -rf x'",
    "zsh -c 'rm -rf /'",
    "sudo sh -c 'rm -rf /'",
    "su -c 'rm -rf /'",
    "su - root -c 'rm -rf /'",
    "su root --command='rm -rf /'",
    "eval 'rm -rf /'",
    "eval rm -rf /",
    "eval \"rm -rf $DIR\"",
    "bash -c \"sh -c 'rm -rf /'\"",
    "bash -c \"bash -c \\\"rm -rf /\\\"\"",
    "sudo -u root bash -c 'nice -n 5 rm -rf /'",
    "ssh host rm -rf /",
    "ssh -p 22 host 'rm -rf /'",
    "trap 'rm -rf /' EXIT",
    "flock /tmp/l -c 'rm -rf /'",
    "script -c 'rm -rf /' /dev/null",
    "watch -n 1 'rm -rf /'",
    "PROMPT_COMMAND='rm -rf /'",
    // Shells reading commands from standard input.
    "bash <<< 'rm -rf /'",
    "sh <<EOF\nrm -rf /\nEOF",
    "bash <<-EOF\n\trm -rf /\n\tEOF",
    "echo 'rm -rf /' | sh",
    "printf 'rm -rf /\\n' | bash",
    "echo rm -rf / | ssh host",
    // Every command of a list, pipeline or compound command.
    "true; rm -rf /",
    "true && rm -rf /",
    "false || rm -rf /",
    "ls | rm -rf /",
    "rm -rf / | cat",
    "rm -rf / &",
    "sleep 1 & rm -rf /",
    "(rm -rf /)",
    "( cd /; rm -rf x )",
    "{ rm -rf /; }",
    "! rm -rf /",
    "echo $(rm -rf /)",
    "echo \"$(rm -rf /)\"",
    "echo `rm -rf /`",
    "x=$(rm -rf /)",
    "echo ${X:-$(rm -rf /)}",
    "echo $(( $(rm -rf /) + 1 ))",
    "cat <(rm -rf /)",
    "tee >(rm -rf /)",
    "diff <(ls) <(echo; rm -rf /)",
    "cat < <(rm -rf /)",
    "if true; then rm -rf /; fi",
    "if rm -rf /; then :; fi",
    "if false; then :; elif true; then rm -rf /; else :; fi",
    "if false; then :; else rm -rf /; fi",
    "while true; do rm -rf /; done",
    "until rm -rf /; do :; done",
    "for f in a b; do rm -rf \"$f\"; done",
    "for ((i=0; i<1; i++)); do rm -rf /; done",
    "case x in x) rm -rf /;; esac",
    "case x in (x) rm -rf / ;; *) ;; esac",
    "[[ -n $(rm -rf /) ]]",
    "f() { rm -rf /; }",
    "function f { rm -rf /; }",
    "function f() ( rm -rf / )",
    "cat <<EOF\n$(rm -rf /)\nEOF",
    "ls\nrm -rf /",
    "ls \\\n; rm -rf /",
    // More evasions.
    "rm\t-rf\t/",
    "rm -rf / # bye",
    "rm -rf /;",
    "rm -$'r'f /",
    "rm -rf $'\\x2f'",
    "r$'m' -rf /",
    "\"r\"'m' -rf /",
    "rm \"-r\" \"-f\" /",
    "rm -I -rf /",
    "rm -rf --no-preserve-root /",
    "rm -rf \"${DIR:?}/\"*",
    r"\sudo \rm -rf /",
    "sudo -u#0 rm -rf /",
    "sudo --user=root rm -rf /",
    "nice --adjustment=5 rm -rf /",
    "timeout -k 5 10 rm -rf /",
    "env -C / rm -rf x",
    "env --chdir=/ rm -rf x",
    "/usr/bin/env rm -rf /",
    "sudo env rm -rf /",
    "nohup -- rm -rf /",
    "exec -c rm -rf /",
    "command -- rm -rf /",
    "builtin eval 'rm -rf /'",
    "command eval 'rm -rf /'",
    "eval -- 'rm -rf /'",
    "xargs -a list rm -rf",
    "xargs -n1 rm -rf < list",
    "find . -execdir rm -rf {} +",
    "busybox sh -c 'rm -rf /'",
    "ssh -t host 'sudo rm -rf /'",
    "ssh host -- rm -rf /",
    "ssh -o StrictHostKeyChecking=no host rm -rf /",
    "sh -c 'rm -rf \"$1\"' _ /",
    "bash -c -- 'rm -rf /'",
    "bash -xc 'rm -rf /'",
    "bash -o errexit -c 'rm -rf /'",
    "bash --norc -c 'rm -rf /'",
    "echo rm -rf / | bash -s",
    "bash /dev/stdin <<< 'rm -rf /'",
    "bash -s <<< 'rm -rf /'",
    "exec bash -c 'rm -rf /'",
    "trap -- 'rm -rf /' EXIT",
    "export PROMPT_COMMAND='rm -rf /'",
    "alias rm='rm -i'; rm -rf /",
    "f(){ rm -rf \"$@\"; }; f /",
    "rm -rf / 2>&1 | tee log",
    "exec 3>&1; rm -rf /",
    "$(rm -rf /)",
    "echo ${X:=$(rm -rf /)}",
    "echo ${X/$(rm -rf /)/}",
    "echo $[$(rm -rf /)]",
    "echo x#$(rm -rf /)",
    "a[$(rm -rf /)]=1",
    "let \"x=$(rm -rf /)\"",
    ": $((a[$(rm -rf /)]))",
    "printf -v 'a[$(rm -rf /)]' x",
    "cat <<< $(rm -rf /)",
    "time ! rm -rf /",
    "if [ -d x ]; then rm -rf x; fi",
    "[ -d x ] && rm -rf x",
];

/// Benign twins of `rm -rf`: none of them runs `rm -rf`.
const RM_RF_NO_MATCH: &[&str] = &[
    "rm -r dir",
    "rm -f file",
    "rm -- -rf",
    "rm ./-rf",
    "rm -r -- -f",
    "rm -r -i x",
    "rm -d -f x",
    "rm --force x",
    "rm --recursive x",
    "rm -f *.log",
    "rm -f -- *",
    "rm -r -- \"$X\"",
    "rm -f -- \"$F\"",
    "echo rm -rf /",
    "echo \"rm -rf /\"",
    "echo rm -rf / > notes.txt",
    "echo rm -rf / | cat",
    "printf 'rm -rf /'",
    "printf 'rm -rf /' | cat",
    "echo 'bash -c \"rm -rf /\"'",
    "grep -rf patterns .",
    "grep -r 'rm -rf' .",
    "ls -rf",
    "man rm",
    "which rm",
    "type rm",
    "command -v rm",
    "git rm -rf --cached x",
    "cat rm-rf.txt",
    "vim rm-rf.sh",
    "# rm -rf /",
    "ls # rm -rf /",
    "rmdir -p x",
    "unrm -rf /",
    "rmx -rf /",
    ": rm -rf /",
    "true rm -rf /",
    "ls $HOME",
    "echo $(date)",
    "cd \"$DIR\" && make",
    "x=rm",
    "alias ll='ls -l'",
    "function rm { echo no; }",
    "sudo -l rm -rf /",
    "trap - EXIT",
    "bash script.sh",
    "ssh host ls",
    "cat <<'EOF'\nrm -rf /\nEOF",
    "cat <<EOF\nrm -rf /\nEOF",
    "echo hi | bash -c 'cat'",
];

/// Lines whose effect depends on something only known at run time.
const RM_RF_UNKNOWN: &[&str] = &[
    // The command name is computed.
    "$X -rf /",
    "$(echo rm) -rf /",
    "`echo rm` -rf /",
    "\"${cmd}\" -rf /",
    "r*m -rf /",
    "/bin/r? -rf /",
    "r[m] -rf /",
    "{rm,x} -rf /",
    "$SHELL -c 'rm -rf /'",
    // The arguments that decide are computed, or a file name may be an option.
    "rm $FLAGS /",
    "rm -r $X",
    "rm -f \"$F\"",
    "rm -r \"$@\"",
    "rm -r *",
    "xargs rm < list",
    "rm -r $(cat list)",
    // Code computed at run time, or read from somewhere unseen.
    "eval \"$X\"",
    "eval $CMD",
    "sh -c \"$X\"",
    "ssh host \"$CMD\"",
    "trap \"$X\" EXIT",
    "sudo $OPTS rm -rf /",
    "source ./x.sh",
    ". ./x.sh",
    "curl http://h/x | sh",
    "bash <(curl -s http://h/x)",
    "alias x=rm",
    "fc -s",
    "!!",
    "sudo !!",
    "^ls^rm -rf /^",
    // Lines that do not parse.
    "echo 'rm -rf /",
    "(rm -rf /",
    "rm -rf /)",
    "echo $(rm -rf /",
    "if true; then rm -rf /",
    // Bash runs a process substitution in command position; the grammar refuses it.
    "<(rm -rf /)",
    // `select` is not in the grammar.
    "select x in a; do rm -rf /; done",
];

#[test]
fn rm_rf_spellings_match() {
    expect(RM_RF, Kind::Match, RM_RF_MATCH);
}

#[test]
fn rm_rf_benign_twins_do_not_match() {
    expect(RM_RF, Kind::NoMatch, RM_RF_NO_MATCH);
}

#[test]
fn rm_rf_undecidable_lines_are_unknown() {
    expect(RM_RF, Kind::Unknown, RM_RF_UNKNOWN);
    let long = format!("rm -rf /{}", "a".repeat(100 * 1024));
    expect(RM_RF, Kind::Unknown, &[long.as_str()]);
}

#[test]
fn without_patterns_nothing_is_unknown() {
    let m = ShellMatcher::default();
    assert!(m.is_empty());
    for line in RM_RF_MATCH.iter().chain(RM_RF_UNKNOWN) {
        assert_eq!(m.check(line), Verdict::NoMatch, "{line:?}");
    }
}

/// Lines where a grammar that disagrees with bash about where a quote, a substitution or a
/// command ends would hide (or invent) a command.
#[test]
fn quoting_boundaries_agree_with_bash() {
    expect(
        RM_RF,
        Kind::Match,
        &[
            r"echo $'\''; rm -rf / #'",
            r"echo '\'; rm -rf / #'",
            "echo ${x:-'}'}; rm -rf /",
            "echo \"${x:-\"}\"}\"; rm -rf /",
            "echo $(echo ')'); rm -rf /",
            "echo $(echo \\)); rm -rf /",
            "echo `echo \\`echo\\``; rm -rf /",
            "echo {a,b}; rm -rf /",
            "x=$'a\\nb'; rm -rf /",
            "echo \"$(echo \"$(rm -rf /)\")\"",
            "echo \"`rm -rf /`\"",
            "(( x = $(rm -rf /) ))",
            "echo $((1)); rm -rf /",
            "echo $(( (1) )); rm -rf /",
            "echo if then fi; rm -rf /",
            "{ rm -rf /; } 2>/dev/null",
            "rm -rf / <<EOF\nx\nEOF",
            "cat <<A; bash <<B\nx\nA\nrm -rf /\nB",
            "echo $(bash <<EOF\nrm -rf /\nEOF\n)",
            "echo \"a\\\"b\"; rm -rf /",
            "echo a\\;b; rm -rf /",
            "echo a#b; rm -rf /",
            "echo $(( 1 )) $( rm -rf / )",
        ],
    );
    expect(
        RM_RF,
        Kind::NoMatch,
        &[
            "echo \"\\\"; rm -rf / #\"",
            r"echo \$\(rm -rf /\)",
            r"echo \$'(rm -rf /)'",
            "echo '$(rm -rf /)'",
            "echo \"\\`rm -rf /\\`\"",
            "echo \\`rm -rf /\\`",
            "echo $'; rm -rf /'",
            "echo \"; rm -rf /\"",
            "echo a\\; rm -rf /",
            "cat <<'EOF'\n$(rm -rf /)\nEOF",
            "cat <<\\EOF\n`rm -rf /`\nEOF",
        ],
    );
    // Regression: bash reads `((` as arithmetic only when both `(` are adjacent and the inner
    // `)` is directly followed by `)`; the grammar took these subshells for arithmetic.
    expect(
        RM_RF,
        Kind::Match,
        &[
            "((rm -rf /) )",
            "( (rm -rf /))",
            "((rm -rf /) ) && ((1+2))",
            "((a) || (rm -rf /))",
            "((1+2)); rm -rf /",
            "(( (1) )) && rm -rf /",
            "echo $((rm -rf /) )",
            "echo $( (rm -rf /))",
            "for ((i=0; i<1; i++)); do rm -rf /; done",
            "! (rm -rf /)",
        ],
    );
    expect(
        RM_RF,
        Kind::NoMatch,
        &["((rm -rf /))", "(( x = (1) + (2) ))", "echo $((rm - rf))"],
    );
    let m = matcher(RM_RF);
    for line in [
        // The word parser ends `$(` at the first `)`: refused, not misread.
        "echo $(case x in x) echo;; esac); rm -rf /",
        // A negated subshell without `extglob`, a glob as command name with it.
        "!(rm -rf /)",
    ] {
        assert_ne!(kind(&m.check(line)), Kind::NoMatch, "{line:?}");
    }
}

/// Strings that bash evaluates later as code, or names that are made to run another program.
#[test]
fn delayed_evaluation() {
    expect(
        RM_RF,
        Kind::Match,
        &[
            // Arithmetic evaluates array subscripts in variable values.
            "x='a[$(rm -rf /)]'; echo $((x))",
            "export x='a[$(rm -rf /)]'",
            "mapfile -C 'rm -rf /' -c 1 a < f",
            "readarray -t -C 'rm -rf' a < f",
        ],
    );
    expect(
        RM_RF,
        Kind::Unknown,
        &[
            // `@P` expands the value like a prompt string, substitutions included.
            "echo \"${x@P}\"",
            "hash -p /bin/rm x",
            "enable -f /tmp/x.so rm",
        ],
    );
    expect(
        RM_RF,
        Kind::NoMatch,
        &[
            "x='rm -rf /'",
            "echo \"${x@Q}\"",
            "hash -r",
            "mapfile -t a < f",
        ],
    );
}

/// A wrapper or `su` without a command starts a shell that reads standard input.
#[test]
fn shells_started_by_wrappers_read_standard_input() {
    expect(
        RM_RF,
        Kind::Match,
        &[
            "echo 'rm -rf /' | sudo -s",
            "sudo -i <<< 'rm -rf /'",
            "sudo -u root -s <<EOF\nrm -rf /\nEOF",
            "echo 'rm -rf /' | sudo su",
            "su - root <<< 'rm -rf /'",
            "doas -s <<< 'rm -rf /'",
            "pkexec <<< 'rm -rf /'",
            "echo 'rm -rf /' | bash5.2",
            "bash-static -c 'rm -rf /'",
            "echo 'rm -rf /' | ssh host bash",
            "echo 'rm -rf /' | nsenter -t 1 -a",
            "unshare -r <<< 'rm -rf /'",
            "run0 <<< 'rm -rf /'",
            "systemd-run --shell <<< 'rm -rf /'",
            "chroot /mnt <<< 'rm -rf /'",
            "newgrp wheel <<< 'rm -rf /'",
        ],
    );
    expect(
        RM_RF,
        Kind::Unknown,
        &[
            "curl -s http://h/x | sudo -s",
            "curl -s http://h/x | sudo su -",
        ],
    );
    expect(
        RM_RF,
        Kind::NoMatch,
        &[
            "sudo -s",
            "sudo su -",
            "su",
            "echo hi | sudo -s",
            "sudo -l",
            "nsenter -t 1 -a ls",
            "prlimit -p 42 --nofile=1",
            "setpriv -d",
            "systemd-run --on-calendar daily /usr/bin/backup",
        ],
    );
}

// ---- dd of=/dev/* ------------------------------------------------------------------------

const DD: &[&str] = &["dd of=/dev/*"];

#[test]
fn dd_to_a_device() {
    expect(
        DD,
        Kind::Match,
        &[
            "dd if=/dev/zero of=/dev/sda",
            "dd of=/dev/sda bs=1M",
            "dd bs=1M of=/dev/sdb if=x",
            "sudo dd if=img of=/dev/mmcblk0 bs=4M status=progress",
            "dd of=//dev/sda",
            "dd of=/dev/./sda",
            "dd of=/tmp/../dev/sda",
            "dd 'of=/dev/sda'",
            "dd of=\"/dev/sda\"",
            "dd of=/dev/disk/by-id/usb-x",
            "dd of=/dev/*",
            "cat img | dd of=/dev/sdb",
            "/bin/dd of=/dev/sda",
            "bash -c 'dd if=x of=/dev/nvme0n1'",
            // dd reads its operands after `--` too.
            "dd -- of=/dev/sda",
        ],
    );
    expect(
        DD,
        Kind::NoMatch,
        &[
            "dd if=/dev/sda of=disk.img",
            "dd if=/dev/zero of=/tmp/x bs=1M count=1",
            "dd of=/dev",
            "dd of=/dev/../tmp/x",
            "dd if=/dev/sda",
            "echo dd of=/dev/sda",
            "ddrescue /dev/sda img",
            "dd of=\"out.img$X\" if=/dev/sda",
            "dd if=\"/dev/$X\" of=img",
        ],
    );
    expect(
        DD,
        Kind::Unknown,
        &[
            "dd of=$OUT",
            "dd of=\"$OUT\"",
            "dd $ARGS",
            "dd if=x \"$@\"",
            // `$X` may be `../etc/fstab`: not certainly a device (see the module docs).
            "dd of=\"/dev/$X\"",
            "dd of=/dev/sd$X",
            // `$X` may be `../dev/sda`.
            "dd of=\"/tmp/$X\"",
            "dd of=/d*/sda",
            // `$HOME` may be `/dev`.
            "dd of=\"$HOME/x\" if=/dev/sda",
        ],
    );
}

// ---- mkfs --------------------------------------------------------------------------------

const MKFS: &[&str] = &["mkfs"];

#[test]
fn mkfs_and_its_variants() {
    expect(
        MKFS,
        Kind::Match,
        &[
            "mkfs /dev/sda1",
            "mkfs -t ext4 /dev/sda1",
            "mkfs.ext4 /dev/sda1",
            "mkfs.vfat -F 32 /dev/sdc1",
            "/sbin/mkfs.xfs /dev/sdb",
            "/usr/sbin/mkfs.btrfs -f /dev/sdb",
            "sudo mkfs.ext4 /dev/sda1",
            "'mkfs.ext4' /dev/sda1",
            "mke2fs /dev/sda1",
            "mkdosfs /dev/sdc1",
            "mkntfs /dev/sdd1",
            "bash -c 'mkfs.ext4 /dev/sda1'",
            "echo y | mkfs.ext4 /dev/sda1",
        ],
    );
    expect(
        MKFS,
        Kind::NoMatch,
        &[
            "mkfsx /dev/sda",
            "xmkfs /dev/sda",
            "mkfifo p",
            "mkswap /dev/sda2",
            "echo mkfs",
            "man mkfs.ext4",
            "ls /sbin/mkfs.ext4",
            "apt install e2fsprogs",
        ],
    );
    expect(
        MKFS,
        Kind::Unknown,
        &["mkfs$X /dev/sda", "mk* /dev/sda", "\"$MKFS\" /dev/sda"],
    );
}

// ---- shutdown and reboot -----------------------------------------------------------------

const SHUTDOWN: &[&str] = &["shutdown"];
const REBOOT: &[&str] = &["reboot"];

#[test]
fn shutdown_and_its_spellings() {
    expect(
        SHUTDOWN,
        Kind::Match,
        &[
            "shutdown",
            "shutdown -h now",
            "shutdown -r now",
            "/sbin/shutdown -P +5",
            "sudo shutdown now",
            "poweroff",
            "halt",
            "halt -f",
            "systemctl poweroff",
            "systemctl halt",
            "systemctl -i poweroff",
            "systemctl --no-wall poweroff",
            "sudo systemctl poweroff --force",
            "loginctl poweroff",
            "systemctl start poweroff.target",
            "systemctl isolate halt.target",
            "init 0",
            "telinit 0",
            "sudo init 0",
            "reboot -p",
            "reboot --poweroff",
            "reboot --halt",
        ],
    );
    expect(
        SHUTDOWN,
        Kind::NoMatch,
        &[
            "reboot",
            "systemctl reboot",
            "init 6",
            "init 3",
            "systemctl status",
            "systemctl restart nginx",
            "systemctl status poweroff.target",
            "echo shutdown",
            "man shutdown",
            "last -x shutdown",
        ],
    );
    expect(
        SHUTDOWN,
        Kind::Unknown,
        &[
            "systemctl $VERB",
            "init $LEVEL",
            "$CMD now",
            "reboot $FLAGS",
        ],
    );
}

#[test]
fn reboot_and_its_spellings() {
    expect(
        REBOOT,
        Kind::Match,
        &[
            "reboot",
            "reboot -f",
            "/usr/sbin/reboot",
            "sudo reboot",
            "systemctl reboot",
            "systemctl kexec",
            "systemctl soft-reboot",
            "systemctl isolate reboot.target",
            "sudo systemctl start reboot.target",
            "init 6",
            "telinit 6",
            "shutdown -r now",
            "shutdown --reboot now",
            "shutdown -r +5 'maintenance'",
            "halt --reboot",
            "poweroff --reboot",
            "ssh host sudo reboot",
        ],
    );
    expect(
        REBOOT,
        Kind::NoMatch,
        &[
            "shutdown -h now",
            "shutdown now",
            "poweroff",
            "halt",
            "systemctl poweroff",
            "init 0",
            "last reboot",
            "echo reboot",
            "systemctl status reboot.target",
        ],
    );
    expect(
        REBOOT,
        Kind::Unknown,
        &[
            "systemctl $VERB",
            "init \"$LEVEL\"",
            "shutdown $FLAGS now",
            "halt $FLAGS",
        ],
    );
}

// ---- chmod -R 777 / ----------------------------------------------------------------------

const CHMOD: &[&str] = &["chmod -R 777 /"];

#[test]
fn chmod_modes_compare_by_value() {
    expect(
        CHMOD,
        Kind::Match,
        &[
            "chmod -R 777 /",
            "chmod -R 0777 /",
            "chmod -R 00777 /",
            "chmod 777 -R /",
            "chmod --recursive 777 /",
            "chmod --rec 777 /",
            "chmod -Rv 777 /",
            "chmod -R a+rwx /",
            "chmod -R a=rwx /",
            "chmod -R ugo=rwx //",
            "chmod -R u=rwx,g=rwx,o=rwx /",
            "chmod -R 777 /tmp/..",
            "chmod -R 777 /etc /",
            "sudo chmod -R 777 /",
        ],
    );
    expect(
        CHMOD,
        Kind::NoMatch,
        &[
            "chmod -R 755 /",
            "chmod 777 /",
            "chmod -R 777 /tmp",
            "chmod -r 777 /",
            "chmod -R 7777 /",
            "chmod -R u+x /",
            "chmod -R 777 .",
            "chmod -R -w /",
            "echo chmod -R 777 /",
        ],
    );
    expect(
        CHMOD,
        Kind::Unknown,
        &[
            "chmod -R $MODE /",
            "chmod -R 777 $DIR",
            "chmod -R 777 \"$DIR\"",
            "chmod $OPTS 777 /",
            "chmod -R 777 /*",
        ],
    );
}

// ---- paths that climb --------------------------------------------------------------------

/// Regression: `rm -rf /tmp/../etc` matched `rm -rf /tmp/*` by its text, so a higher-priority
/// `allow` rule with that pattern let it through. A path with `..` now compares by the path
/// it names, and a computed tail (`/tmp/$X`) or a glob that may expand to `..` (`/tmp/.*`)
/// may name any path.
#[test]
fn paths_compare_by_what_they_name() {
    let tmp = &["rm -rf /tmp/*"];
    expect(
        tmp,
        Kind::Match,
        &["rm -rf /tmp/x", "rm -rf /tmp/a/../b", "rm -rf /tmp/*"],
    );
    expect(
        tmp,
        Kind::NoMatch,
        &["rm -rf /tmp/../etc", "rm -rf /tmp/x/../..", "rm -rf /etc"],
    );
    expect(
        tmp,
        Kind::Unknown,
        &["rm -rf \"/tmp/$X\"", "rm -rf /tmp/.*", "rm -rf /tmp/.?/etc"],
    );
    let root = &["rm -rf /"];
    expect(
        root,
        Kind::Match,
        &["rm -rf /tmp/..", "rm -rf //", "rm -rf /./", "rm -rf x /"],
    );
    expect(
        root,
        Kind::NoMatch,
        &[
            "rm -rf /tmp/*",
            "rm -rf /tmp/x",
            "rm -rf ..",
            "rm -rf /tmp/x$",
        ],
    );
    expect(
        root,
        Kind::Unknown,
        &[
            "rm -rf \"/tmp/$X\"",
            "rm -rf /tmp/$X",
            "rm -rf \"/var/lib/$APP\"/*",
            "rm -rf /tmp/.*",
            "rm -rf /*",
            "rm -rf \"$DIR\"",
        ],
    );
    // Known limit (module docs): a match is "some operand of some command", which is what a
    // deny rule needs and what makes an outranking allow rule too broad.
    expect(
        tmp,
        Kind::Match,
        &["rm -rf /tmp/x /", "rm -rf /tmp/x; rm -rf /"],
    );
    // Where the computed tail cannot climb out of what the pattern accepts, it matches.
    let under_root = &["rm -rf /*"];
    expect(
        under_root,
        Kind::Match,
        &["rm -rf \"/$X\"", "rm -rf \"/srv/$X\""],
    );
    expect(
        &["dd of=*"],
        Kind::Match,
        &["dd of=\"$OUT\"", "dd \"of=$OUT\""],
    );
}

#[test]
fn partly_computed_code_strings() {
    // A certain match in the known part of the string is reported...
    expect(
        RM_RF,
        Kind::Match,
        &[
            "eval \"rm -rf $DIR\"",
            "sh -c \"rm -rf $1\" _ /tmp/x",
            "bash -c \"cd $D && rm -rf x\"",
            "ssh host \"rm -rf $DIR\"",
            "su -c \"rm -rf $X\"",
        ],
    );
    // ...and anything else in a computed string is undecidable.
    expect(
        RM_RF,
        Kind::Unknown,
        &[
            "eval \"rm -r $DIR\"",
            "sh -c \"ls $X\"",
            "eval \"$CMD -rf /\"",
            "eval echo *",
            "ssh host \"ls\" $X",
        ],
    );
}

// ---- verdict details ---------------------------------------------------------------------

#[test]
fn a_match_names_the_pattern_and_the_command() {
    let m = matcher(&["mkfs", "rm -rf", "shutdown"]);
    assert_eq!(
        m.check("ls; sudo rm -fr /tmp/x"),
        Verdict::Match {
            id: 1,
            pattern: "rm -rf".into(),
            command: "rm -fr /tmp/x".into(),
        }
    );
    // A match elsewhere in the line wins over an undecidable part.
    assert!(matches!(
        m.check("$X; poweroff"),
        Verdict::Match { id: 2, .. }
    ));
    let Verdict::Unknown { reason } = m.check("rm -r $X") else {
        panic!("not unknown");
    };
    assert!(reason.contains("rm -rf"), "{reason}");
}

#[test]
fn patterns_are_validated() {
    for bad in [
        "",
        "   ",
        "rm 'x",
        "/bin/rm -rf",
        "rm -rf | sh",
        "rm $X",
        "rm --preserve-root=all",
    ] {
        assert!(ShellPattern::parse(bad).is_err(), "{bad:?}");
    }
    for good in [
        "rm -rf",
        "rm -rf /",
        "mkfs*",
        "dd of=/dev/*",
        "rm -- -x",
        "find -delete",
    ] {
        assert!(ShellPattern::parse(good).is_ok(), "{good:?}");
    }
}

// ---- robustness --------------------------------------------------------------------------

/// A matcher with a few patterns of each kind, so that every code path is exercised.
fn everything() -> ShellMatcher {
    matcher(&[
        "rm -rf /",
        "dd of=/dev/*",
        "mkfs",
        "shutdown",
        "reboot",
        "chmod -R 777 /",
        "find -delete",
        "[rh]alt*",
    ])
}

/// Runs the line; any verdict is fine, a panic, a stack overflow or a hang is not.
fn survives(m: &ShellMatcher, line: &str) -> Verdict {
    m.check(line)
}

#[test]
fn deep_nesting_does_not_overflow() {
    let m = everything();
    let n = 10_000;
    let cases = [
        format!("{}rm -rf /{}", "$(".repeat(n), ")".repeat(n)),
        format!("{}rm -rf /{}", "(".repeat(n), ")".repeat(n)),
        format!("{}rm -rf /{}", "( ".repeat(n), " )".repeat(n)),
        format!("{}rm -rf /{}", "{ ".repeat(n), "; }".repeat(n)),
        format!("{}rm -rf /{}", "`".repeat(n), "`".repeat(n)),
        format!("echo {}x{}", "${".repeat(n), "}".repeat(n)),
        format!("echo {}x{}", "\"$(".repeat(n), ")\"".repeat(n)),
        format!("echo $(({}1{}))", "(".repeat(n), ")".repeat(n)),
        format!("{}rm -rf /{}", "<(".repeat(n), ")".repeat(n)),
        format!("{}rm -rf /", "if true; then ".repeat(n)),
        format!("{}true{}", "if ".repeat(n), "; then :; fi".repeat(n)),
        format!("{}rm -rf /", "! ".repeat(n)),
        format!("{}rm -rf /", "sudo ".repeat(n)),
        format!("{}rm -rf /", "time ".repeat(n)),
        format!("[[ {}a{} ]]", "( ".repeat(n), " )".repeat(n)),
        format!("[[ {}a ]]", "! ".repeat(n)),
        format!("echo {}", "'".repeat(n)),
        format!("echo {}", "\\".repeat(n)),
        format!("[[ {}a ]]", "a && ".repeat(n)),
        format!("[[ {}a ]]", "a || ".repeat(n)),
        format!("[[ {}a ]]", "-n a && ".repeat(n)),
        format!("[[ x =~ {}a{} ]]", "(".repeat(n), ")".repeat(n)),
        format!("case x in {}a) ;; esac", "a|".repeat(n)),
        format!("a=({})", "x ".repeat(n)),
        format!("{}rm -rf /", "x=1 ".repeat(n)),
        format!("rm -rf {}", "<x ".repeat(n)),
        format!("{}rm -rf /", "a && ".repeat(n)),
        format!("{}rm -rf /", "a | ".repeat(n)),
        format!("echo {}", "${a:-".repeat(n)),
        format!("echo \"{}\"", "$(".repeat(n)),
        format!("{}rm -rf /", "eval ".repeat(n)),
        format!("{}rm -rf /", "bash -c ".repeat(n)),
        format!("{}rm -rf /", "env -S ".repeat(n)),
        format!("{}rm -rf /", "xargs ".repeat(n)),
        format!("{}rm -rf /", "find -exec ".repeat(n)),
        "$(".repeat(n),
        "(".repeat(n),
        ")".repeat(n),
        "{".repeat(n),
        "[[".repeat(n),
    ];
    for line in &cases {
        // Long lines are refused before parsing; cut them to just under the limit too.
        survives(&m, line);
        let mut cut = MAX_LINE_BYTES - 1;
        while !line.is_char_boundary(cut.min(line.len())) {
            cut -= 1;
        }
        survives(&m, line.get(..cut.min(line.len())).unwrap());
    }
}

#[test]
fn nesting_at_the_limits_is_fast() {
    // Each of these sits just under a limit; a parser that backtracks exponentially on
    // nesting would not finish.
    let m = everything();
    let g = MAX_GROUPS - 2;
    let cases = [
        format!("{}rm -rf /{}", "( ".repeat(g), " )".repeat(g)),
        format!("{}rm -rf /{}", "{ ".repeat(g), "; }".repeat(g)),
        format!("{}rm -rf /{}", "$(".repeat(g), ")".repeat(g)),
        format!("{}rm -rf /{}", "\"$(".repeat(g), ")\"".repeat(g)),
        format!("{}rm -rf /{}", "if true; then ".repeat(g), "; fi".repeat(g)),
        format!(
            "{}rm -rf /{}",
            "while true; do ".repeat(g),
            "; done".repeat(g)
        ),
        format!(
            "{}rm -rf /{}",
            "case x in x) ".repeat(g),
            ";; esac".repeat(g)
        ),
        format!("{}rm -rf /{}", "f() { ".repeat(g), "; }".repeat(g)),
        format!("{}rm -rf / {}", "! ".repeat(g), ""),
        format!("[[ {}a{} ]]", "( ".repeat(g), " )".repeat(g)),
        format!("echo $(({}1{}))", "(".repeat(g), ")".repeat(g)),
        format!("{}rm -rf /{}", "( { ".repeat(g / 2), "; } )".repeat(g / 2)),
        format!("{}rm -rf /{}", "( ".repeat(g), "".repeat(g)),
        format!("{}rm -rf /{}", "if ( ".repeat(g / 2), "".repeat(g)),
        format!("{}x", "a | ".repeat(8000)),
        format!("{}x", "a && ".repeat(6000)),
        format!("{}x", "a; ".repeat(8000)),
        format!("rm -rf {}", "x ".repeat(15000)),
        format!("rm {}", "-r ".repeat(10000)),
        format!("echo {}", "a>b ".repeat(7000)),
        format!("echo {}", "$x".repeat(15000)),
        format!("echo {}", "'a'\"b\"".repeat(5000)),
        format!("echo {}", "*?[a]".repeat(6000)),
        format!("echo {}", "{a,b}".repeat(6000)),
        format!("cat {}", "<<E ".repeat(5000)),
    ];
    for line in &cases {
        survives(&m, line);
    }
}

/// Regression (fuzzing, `shell_rules`): brush-parser's tokenizer looped forever, allocating,
/// on a here-document whose tag word is only `\r` or form feeds, at the end of the input.
#[test]
fn here_document_tags_of_carriage_returns_do_not_hang() {
    let m = everything();
    for line in [
        "-\r-<<\r<\u{fffd}$c$(",
        "cat <<\r",
        "cat <<\r\r",
        "cat << \r",
        "cat <<-\u{c}",
        "cat <<\u{b}",
        "cat <<\r\nrm -rf /\n\r\n",
        "echo $(cat <<\r)",
        // The same text decoded from `$'...'` reaches the tokenizer through other paths.
        r"env -S $'cat <<\r'",
        r"bash -c $'cat <<\r'",
        r"echo $(# $'\r' <<)",
    ] {
        assert_eq!(kind(&survives(&m, line)), Kind::Unknown, "{line:?}");
    }
    // Substitutions decoded from `$'...'` are counted like written ones.
    let many = format!("env -S $'{}'", r"\x24\x28".repeat(3000));
    assert_eq!(kind(&survives(&m, &many)), Kind::Unknown);
    let many = format!("bash -c $'{}'", r"\x60".repeat(3000));
    assert_eq!(kind(&survives(&m, &many)), Kind::Unknown);
    // A carriage return without a here-document is an ordinary character.
    expect(RM_RF, Kind::Match, &["rm -rf /\r"]);
}

/// Regression (fuzzing, `shell_rules`): brush-parser's word grammar doubled its work for each
/// unclosed `(` in an arithmetic context (`${p:i(((...`), so 47 of them never finished.
#[test]
fn unclosed_parentheses_in_words_are_cheap() {
    let m = everything();
    let fuzzed = " _=\u{fffd}\u{fffd}\u{1}\0\0\0\0\0\0\x000fi\u{1e}${ p:i(((((((((((((((((((((((((((((((((((((((((((((((hL}/";
    assert_eq!(kind(&survives(&m, fuzzed)), Kind::Unknown);
    let n = 40;
    let opens = "(".repeat(n);
    let closes = ")".repeat(n);
    for line in [
        format!("echo ${{p:i{opens}x}}"),
        format!("echo ${{p:1:{opens}x}}"),
        format!("echo ${{a[{opens}x]}}"),
        format!("echo $(({opens}x))"),
        format!("echo \"${{p:i{opens}x}}\""),
        format!("echo $(echo {opens}x)"),
        format!("rm -rf {opens}"),
        // Balanced overall, but closed in the wrong place.
        format!("echo ${{p:i{opens}}}{closes}"),
        format!("echo ${{a[{opens}]}}{closes}"),
        format!("echo $(({opens}x)){closes}"),
        format!(
            "echo ${{p:i{}}}{}",
            "((((((((".repeat(5),
            "))))))))".repeat(5)
        ),
    ] {
        assert_ne!(kind(&survives(&m, &line)), Kind::Match, "{line:?}");
    }
    // As many words as the substitution limit allows, each with as many unclosed parentheses
    // as the word limit allows (4), in one line, twice over in nested strings.
    let word = format!("${{a[{}x]}}", "(".repeat(4));
    let line = format!("echo {}", [word.as_str(); MAX_GROUPS - 1].join(" "));
    survives(&m, &line);
    survives(&m, &format!("eval '{line}'; {line}"));
}

#[test]
fn one_megabyte_lines() {
    let m = everything();
    for unit in ["rm -rf / ", "$(", "(", "'", "a|", "\\"] {
        let line = unit.repeat(1024 * 1024 / unit.len());
        assert_eq!(kind(&survives(&m, &line)), Kind::Unknown, "{unit:?}");
    }
}

#[test]
fn nested_code_strings() {
    let m = matcher(RM_RF);
    // `bash -c $'...'` nested `depth` times around `rm -rf /` (backslashes double per level).
    let mut code = "rm -rf /".to_owned();
    for depth in 1..=14 {
        let escaped = code.replace('\\', "\\\\").replace('\'', "\\'");
        code = format!("bash -c $'{escaped}'");
        let want = if depth <= MAX_NESTED_SCRIPTS {
            Kind::Match
        } else {
            Kind::Unknown
        };
        assert_eq!(kind(&m.check(&code)), want, "$'' depth {depth}");
    }
    // With single quotes the line grows fourfold per level, past the length limit.
    let mut code = "rm -rf /".to_owned();
    for depth in 1..=9 {
        code = format!("sh -c '{}'", code.replace('\'', "'\\''"));
        assert_ne!(kind(&m.check(&code)), Kind::NoMatch, "'' depth {depth}");
    }
    // Double quotes inside single quotes, alternating.
    let mut code = "rm -rf /".to_owned();
    for depth in 1..=9 {
        code = if depth % 2 == 1 {
            format!(
                "bash -c \"{}\"",
                code.replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            format!("sh -c '{}'", code.replace('\'', "'\\''"))
        };
        assert_ne!(kind(&m.check(&code)), Kind::NoMatch, "mixed depth {depth}");
    }
    // Chains that nest without quoting grow linearly: run them far past the limit.
    for depth in (1..=MAX_NESTED_SCRIPTS + 2).chain([50, 300, 3000]) {
        let want = if depth <= MAX_NESTED_SCRIPTS {
            Kind::Match
        } else {
            Kind::Unknown
        };
        for prefix in ["eval ", "ssh h ", "sudo eval "] {
            let line = format!("{}'rm -rf /'", prefix.repeat(depth));
            assert_eq!(kind(&m.check(&line)), want, "{prefix}x{depth}");
        }
    }
}

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[test]
fn random_shell_like_lines() {
    const TOKENS: &[&str] = &[
        "rm",
        "-rf",
        "-r",
        "-f",
        "/",
        "dd",
        "of=/dev/sda",
        "mkfs.ext4",
        "shutdown",
        "reboot",
        "chmod",
        "-R",
        "777",
        "sudo",
        "env",
        "-S",
        "xargs",
        "find",
        "-exec",
        "{}",
        ";",
        "+",
        "bash",
        "sh",
        "-c",
        "eval",
        "su",
        "ssh",
        "h",
        "trap",
        "alias",
        "x=rm",
        "echo",
        "printf",
        "systemctl",
        "init",
        "0",
        "6",
        "if",
        "then",
        "else",
        "fi",
        "for",
        "in",
        "do",
        "done",
        "while",
        "case",
        "esac",
        "function",
        "f()",
        "{",
        "}",
        "(",
        ")",
        "((",
        "))",
        "[[",
        "]]",
        "$(",
        "`",
        "${",
        "$((",
        "<(",
        ">(",
        "<<",
        "<<<",
        "<<-",
        "EOF",
        "|",
        "||",
        "&&",
        "&",
        ">",
        "<",
        ">&",
        "2>",
        "'",
        "\"",
        "$'",
        "\\",
        "$X",
        "$@",
        "*",
        "?",
        "[",
        "]",
        "!",
        "#",
        "=",
        "~",
        ",",
        "..",
        "\n",
        " ",
        "\t",
        "{a,b}",
        "@(",
        "!(",
        "+(",
        "^",
        "%",
        "\u{e9}",
        "\0",
    ];
    const CHARS: &[&str] = &[
        "a", "r", "m", "-", "f", "/", "$", "(", ")", "{", "}", "[", "]", "'", "\"", "\\", "`", "|",
        "&", ";", "<", ">", "*", "?", "!", "#", "=", " ", "\n", "~", ",", ".", "0", "1", "^", "%",
        "@", "+", ":",
    ];
    let m = everything();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut line = String::new();
    for _ in 0..5_000 {
        line.clear();
        let len = 1 + rng.below(120);
        for _ in 0..len {
            if rng.below(3) == 0 {
                line.push_str(rng.pick(CHARS));
            } else {
                line.push_str(rng.pick(TOKENS));
                if rng.below(2) == 0 {
                    line.push(' ');
                }
            }
        }
        survives(&m, &line);
    }
}
