//! The SSH bastion end to end: the real OpenSSH `ssh`, `scp` and `sftp` clients through vigil
//! (started in-process on 127.0.0.1:0) to a real `sshd` started by the harness.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use vigil::{config::Config, demo};

use crate::{
    harness::{run, vigil, Env},
    pty::Pty,
};

pub struct Bastion {
    pub env: Env,
    pub sshd: demo::LocalSshd,
    pub port: u16,
    running: Option<vigil::daemon::Running>,
    rt: tokio::runtime::Runtime,
    config: Config,
}

impl Bastion {
    pub fn start() -> Bastion {
        Self::start_with("")
    }

    /// A bastion with users alice (engineer: web1, file transfer), bob (contractor: web1),
    /// carol (no role) and dave (tunneler: web1 with port, agent and X11 forwarding); target
    /// web1 is a real sshd; `mallory-host` pins the wrong host key.
    pub fn start_with(extra: &str) -> Bastion {
        Self::start_full("", extra)
    }

    /// With extra `[server]` keys (`server_extra`) and `extra` TOML at the end.
    pub fn start_full(server_extra: &str, extra: &str) -> Bastion {
        let env = Env::new();
        let key = |name: &str| demo::write_ssh_key(&env.path(name), name).unwrap();
        std::fs::create_dir_all(env.path("state/keys")).unwrap();
        let (alice, bob, carol, dave) = (key("alice"), key("bob"), key("carol"), key("dave"));
        let target_pub = demo::write_ssh_key(&env.path("state/keys/web1"), "vigil").unwrap();
        let wrong_host = key("wrong_host");
        let sshd = demo::LocalSshd::start(&env.path("sshd"), &target_pub).unwrap_or_else(|e| {
            panic!("{e} (the SSH tests need a real sshd: apt-get install openssh-server)")
        });
        let text = format!(
            r#"
[listen]
ssh = "127.0.0.1:0"
[server]
host_key = "state/host_ed25519"
{server_extra}
[recording]
store = "store"
recipients = ["{rcpt}"]
spool = "state/spool"
flush_interval = "200ms"
[[user]]
name = "alice"
roles = ["engineer"]
ssh_keys = ["{alice}"]
[[user]]
name = "bob"
roles = ["contractor"]
ssh_keys = ["{bob}"]
[[user]]
name = "carol"
ssh_keys = ["{carol}"]
[[user]]
name = "dave"
roles = ["tunneler"]
ssh_keys = ["{dave}"]
[[target]]
name = "web1"
protocol = "ssh"
address = "{addr}"
user = "{user}"
key = "state/keys/web1"
host_key = "{host}"
env = ["VIGIL_TEST"]
[[target]]
name = "mallory-host"
protocol = "ssh"
address = "{addr}"
user = "{user}"
key = "state/keys/web1"
host_key = "{wrong}"
[[role]]
name = "engineer"
targets = ["web1", "mallory-host"]
file_transfer = true
[[role]]
name = "contractor"
targets = ["web1"]
[[role]]
name = "tunneler"
targets = ["web1"]
port_forwarding = true
agent_forwarding = true
x11_forwarding = true
[[rule]]
name = "shell-destructive"
targets = ["web1"]
shell = ["rm -rf", "mkfs", "shutdown", "reboot", "dd of=/dev/*"]
action = "deny"
message = "destructive commands are blocked"
{extra}
"#,
            rcpt = env.secret.public(),
            alice = alice.trim(),
            bob = bob.trim(),
            carol = carol.trim(),
            dave = dave.trim(),
            addr = sshd.address(),
            user = sshd.user,
            host = sshd.host_key.trim(),
            wrong = wrong_host.trim(),
        );
        let config =
            Config::parse(&text, env.dir.path()).unwrap_or_else(|p| panic!("test config: {p:?}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = rt.block_on(vigil::daemon::start(config.clone())).unwrap();
        let port = running.ssh.unwrap().port();
        Bastion {
            env,
            sshd,
            port,
            running: Some(running),
            rt,
            config,
        }
    }

    /// Stops vigil gracefully (sessions closed, recordings sealed, audit log closed).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown(Duration::from_secs(10)));
        }
    }

    /// Stops the bastion gracefully and starts it again with the same config and state (on a
    /// new port).
    pub fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown(Duration::from_secs(10)));
        }
        let running = self
            .rt
            .block_on(vigil::daemon::start(self.config.clone()))
            .unwrap();
        self.port = running.ssh.unwrap().port();
        self.running = Some(running);
    }

    /// `ssh` with `who`'s key (a key file name) logging in as `login`.
    pub fn ssh(&self, who: &str, login: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_options(who)).args([
            "-p",
            &self.port.to_string(),
            &format!("{login}@127.0.0.1"),
        ]);
        c
    }

    pub fn ssh_options(&self, who: &str) -> Vec<String> {
        let o = |s: &str| ["-o".to_string(), s.to_string()];
        let mut v = vec!["-i".to_string(), self.env.path(who).display().to_string()];
        for opt in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "BatchMode=yes",
            "LogLevel=ERROR",
        ] {
            v.extend(o(opt));
        }
        v.extend(o(&format!(
            "UserKnownHostsFile={}",
            self.env.path("known_hosts").display()
        )));
        v
    }

    pub fn store(&self) -> String {
        self.env.path("store").display().to_string()
    }

    /// Runs `vigil` with the store and key of this bastion.
    pub fn vigil(&self, args: &[&str]) -> (i32, String, String) {
        run(vigil()
            .args(args)
            .args(["--store", &self.store(), "--key"])
            .arg(self.env.key_path()))
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.env.path("state/audit.log")).unwrap_or_default()
    }

    /// The recordings so far, oldest first, once every one of them is closed.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let list = || run(vigil().args(["sessions", "--json", "--store", &self.store()])).1;
        crate::harness::wait_until("recordings are closed", Duration::from_secs(20), || {
            list().lines().all(|l| l.contains("\"state\":\"closed\""))
        });
        list()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.stop();
        // Every session of every test left a recording that verifies, seals included.
        if !std::thread::panicking() {
            let (code, out, err) = self.vigil(&["verify", "--all"]);
            assert_eq!(code, 0, "recordings do not verify: {out}{err}");
        }
    }
}

#[test]
fn exec_relays_output_stderr_and_exit_status() {
    let b = Bastion::start();
    let (code, stdout, stderr) = run(b
        .ssh("alice", "alice+web1")
        .arg("echo hello; echo oops >&2; exit 3"));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stdout, "hello\n");
    assert_eq!(stderr, "oops\n");
    let sessions = b.sessions();
    assert_eq!(sessions.len(), 1);
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (sessions[0]["user"].as_str(), sessions[0]["target"].as_str()),
        (Some("alice"), Some("web1"))
    );
    let (code, text, err) = b.vigil(&["export", &id, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("hello") && text.contains("\"status\":3"),
        "{text}"
    );
    assert!(
        text.contains("echo hello; echo oops"),
        "the exec command is recorded: {text}"
    );
    let (code, v, _) = b.vigil(&["verify", &id]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn stdin_streams_and_a_100_mb_transfer_keeps_its_sha256() {
    let b = Bastion::start();
    let data: Vec<u8> = (0..100u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = hex::encode(vigil::recording::keys::sha256(&data));
    let remote = b.env.path("upload.bin");
    let mut child = b
        .ssh("alice", "alice+web1")
        .arg(format!(
            "cat > {} && sha256sum {}",
            remote.display(),
            remote.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with(&expected),
        "upload corrupted"
    );
    let down = b
        .ssh("alice", "alice+web1")
        .arg(format!("cat {}", remote.display()))
        .output()
        .unwrap();
    assert!(down.status.success());
    assert_eq!(
        hex::encode(vigil::recording::keys::sha256(&down.stdout)),
        expected,
        "download corrupted"
    );
}

#[test]
fn denied_exec_commands_never_reach_the_target() {
    let b = Bastion::start();
    let marker = b.env.path("victim");
    let denied = [
        "rm -rf {M}",
        "rm -fr {M}",
        "rm -r -f {M}",
        "/bin/rm --recursive --force {M}",
        "\\rm -rf {M}",
        "'rm' -rf {M}",
        "sudo rm -rf {M}",
        "env FOO=1 rm -rf {M}",
        "nohup rm -rf {M}",
        "timeout 5 rm -rf {M}",
        "echo {M} | xargs rm -rf",
        "bash -c 'rm -rf {M}'",
        "sh -c \"cd / && rm -rf {M}\"",
        "true; rm -rf {M}",
        "true && rm -rf {M}",
        "false || rm -rf {M}",
        "(rm -rf {M})",
        "echo $(rm -rf {M})",
        "echo `rm -rf {M}`",
        "X=-rf; rm $X {M}",
        "dd if=/dev/zero of=/dev/null count=1",
    ];
    for spelling in denied {
        std::fs::create_dir_all(&marker).unwrap();
        let cmd = spelling.replace("{M}", &marker.display().to_string());
        let (code, _, stderr) = run(b.ssh("alice", "alice+web1").arg(&cmd));
        assert_ne!(code, 0, "{cmd}: allowed");
        assert!(
            stderr.contains("vigil:"),
            "{cmd}: no reason given: {stderr}"
        );
        assert!(marker.exists(), "{cmd}: reached the target");
    }
    let benign = [
        "rm -r {M}/nothing-here 2>/dev/null; true",
        "echo rm -rf {M}",
        "ls -rf {M}",
        "grep -rf /dev/null {M} || true",
        "printf 'rm -rf /'",
    ];
    for spelling in benign {
        let cmd = spelling.replace("{M}", &marker.display().to_string());
        let (code, _, stderr) = run(b.ssh("alice", "alice+web1").arg(&cmd));
        assert_eq!(code, 0, "{cmd}: refused: {stderr}");
    }
    assert!(b.audit().contains("command.deny"));
    let (code, hits, _) = b.vigil(&["search", "rm -rf"]);
    assert_eq!(code, 0);
    assert!(hits.contains("command"), "{hits}");
}

#[test]
fn interactive_shell_blocks_a_typed_line_and_keeps_the_session() {
    let b = Bastion::start();
    let marker = b.env.path("victim");
    std::fs::create_dir_all(&marker).unwrap();
    let mut cmd = b.ssh("alice", "alice+web1");
    cmd.arg("-tt").env("TERM", "xterm");
    let mut t = Pty::spawn(cmd, 100, 30);
    // Bash turns on bracketed paste at each prompt.
    t.expect("\x1b[?2004h");
    t.send("export PS1='vigil''-test$ '\r");
    t.expect("vigil-test$ ");
    let n = t.len();
    t.send("stty size\r");
    t.expect_from(n, "30 100", Duration::from_secs(20));
    let n = t.len();
    t.resize(120, 40);
    std::thread::sleep(Duration::from_millis(300));
    t.send("stty size\r");
    t.expect_from(n, "40 120", Duration::from_secs(20));
    let n = t.len();
    t.send(&format!("rm -rf {}\r", marker.display()));
    t.expect_from(
        n,
        "destructive commands are blocked",
        Duration::from_secs(20),
    );
    let n = t.len();
    t.send("echo still-here\r");
    t.expect_from(n, "still-here", Duration::from_secs(20));
    assert!(marker.exists(), "the blocked line ran");
    // Line editing: what the screen shows is what is checked.
    let n = t.len();
    t.send(&format!("rm -r {}\x1b[D\x1b[C -f\r", marker.display()));
    t.expect_from(
        n,
        "destructive commands are blocked",
        Duration::from_secs(20),
    );
    assert!(marker.exists(), "an edited line ran");
    // A command typed over several lines is judged whole: its lines pass while the shell only
    // buffers them, and a denied line inside it is refused.
    let n = t.len();
    t.send("for x in 1 2; do\r");
    t.expect_from(n, "> ", Duration::from_secs(20));
    t.send("echo loop$x\r");
    std::thread::sleep(Duration::from_millis(300));
    let n2 = t.len();
    t.send(&format!("rm -rf {}\r", marker.display()));
    t.expect_from(
        n2,
        "destructive commands are blocked",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(300));
    let n3 = t.len();
    t.send("done\r");
    t.expect_from(n3, "loop2", Duration::from_secs(20));
    assert!(marker.exists(), "a line inside a loop ran");
    let _ = n;
    t.send("exit 7\r");
    assert_eq!(t.wait(Duration::from_secs(20)), Some(7));
    let sessions = b.sessions();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let (_, text, _) = b.vigil(&["export", &id, "--format", "json"]);
    assert!(text.contains("\"decision\":\"deny\""), "{text}");
}

#[test]
fn access_is_refused_without_a_role_or_with_the_wrong_key() {
    let b = Bastion::start();
    let (code, _, stderr) = run(b.ssh("carol", "carol+web1").arg("true"));
    assert_ne!(code, 0);
    assert!(stderr.contains("may not reach web1"), "{stderr}");
    let (code, _, _) = run(b.ssh("bob", "alice+web1").arg("true"));
    assert_eq!(code, 255, "bob's key logged in as alice");
    assert!(b.audit().contains("auth.failure"));
    assert!(b.audit().contains("access.refused"));
}

#[test]
fn a_target_with_the_wrong_host_key_is_refused() {
    let b = Bastion::start();
    let (code, _, stderr) = run(b.ssh("alice", "alice+mallory-host").arg("true"));
    assert_ne!(code, 0);
    assert!(stderr.contains("host key"), "{stderr}");
}

#[test]
fn control_commands_without_a_target() {
    let b = Bastion::start();
    let (code, stdout, _) = run(b.ssh("alice", "alice").arg("whoami"));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("alice") && stdout.contains("engineer"),
        "{stdout}"
    );
    let (_, stdout, _) = run(b.ssh("alice", "alice").arg("targets"));
    assert!(stdout.contains("web1"), "{stdout}");
    let (code, _, _) = run(b.ssh("alice", "alice").arg("frobnicate"));
    assert_ne!(code, 0);

    // A shell with a terminal: the menu, a wrong pick, then a target by number; the session is
    // the same as `alice+web1` (policy and all).
    let mut cmd = b.ssh("alice", "alice");
    cmd.arg("-tt").env("TERM", "xterm");
    let mut t = Pty::spawn(cmd, 100, 30);
    t.expect("connect to (number or name");
    let listed = t.output();
    assert!(listed.contains("[2] web1"), "{listed}");
    let n = t.len();
    t.send("nope\r");
    t.expect_from(n, "no target `nope`", Duration::from_secs(10));
    let n = t.len();
    t.send("2\r");
    t.expect_from(n, "connecting to web1", Duration::from_secs(10));
    t.expect("\x1b[?2004h");
    t.send("export PS1='menu''-test$ '\r");
    t.expect("menu-test$ ");
    let n = t.len();
    t.send("echo picked-$((6*7))\r");
    t.expect_from(n, "picked-42", Duration::from_secs(20));
    let n = t.len();
    t.send("rm -rf /tmp/nothing-here\r");
    t.expect_from(
        n,
        "destructive commands are blocked",
        Duration::from_secs(20),
    );
    t.send("exit\r");
    assert_eq!(t.wait(Duration::from_secs(20)), Some(0));
    let sessions = b.sessions();
    assert!(sessions
        .iter()
        .any(|s| s["user"] == "alice" && s["target"] == "web1"));

    // Leaving the menu ends the connection cleanly.
    let mut cmd = b.ssh("alice", "alice");
    cmd.arg("-tt").env("TERM", "xterm");
    let mut t = Pty::spawn(cmd, 100, 30);
    t.expect("connect to (number or name");
    t.send("q\r");
    assert_eq!(t.wait(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_command_killed_by_a_signal_reports_it_as_a_direct_login_does() {
    let b = Bastion::start();
    // Direct to sshd with the target key, and through vigil: the same exit status.
    let direct = || {
        let mut c = Command::new("ssh");
        c.args(b.ssh_options("state/keys/web1")).args([
            "-p",
            &b.sshd.port.to_string(),
            &format!("{}@127.0.0.1", b.sshd.user),
            "kill -TERM $$",
        ]);
        run(&mut c)
    };
    let (direct_code, _, direct_err) = direct();
    let (code, _, err) = run(b.ssh("alice", "alice+web1").arg("kill -TERM $$"));
    assert_eq!(code, direct_code, "direct: {direct_err} vigil: {err}");
    assert_ne!(code, 0);
    // The recording ends with the signal.
    let id = b.sessions().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, json, _) = b.vigil(&["export", &id, "--format", "json"]);
    assert!(json.contains("TERM"), "{json}");
}

#[test]
fn scp_and_sftp_follow_the_role() {
    let b = Bastion::start();
    let local = b.env.path("local.txt");
    std::fs::write(&local, b"file transfer through vigil\n").unwrap();
    let remote = b.env.path("remote.txt");
    let dest = format!("alice+web1@127.0.0.1:{}", remote.display());
    let mut c = Command::new("scp");
    c.args(b.ssh_options("alice"))
        .args(["-P", &b.port.to_string()])
        .arg(&local)
        .arg(&dest);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 0, "scp up: {err}");
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        b"file transfer through vigil\n"
    );
    let back = b.env.path("back.txt");
    let mut c = Command::new("scp");
    c.args(b.ssh_options("alice"))
        .args(["-P", &b.port.to_string()])
        .arg(&dest)
        .arg(&back);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 0, "scp down: {err}");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        b"file transfer through vigil\n"
    );
    // The file operations are in the recordings.
    let (code, hits, _) = b.vigil(&["search", &format!("open {}", remote.display())]);
    assert_eq!(code, 0, "sftp open not recorded");
    assert!(
        hits.contains("(write,create") && hits.contains("(read)"),
        "{hits}"
    );
    // Legacy scp runs as a command on the target; bob may not transfer files either way.
    let mut c = Command::new("scp");
    c.args(["-O"])
        .args(b.ssh_options("bob"))
        .args(["-P", &b.port.to_string()])
        .arg(&local)
        .arg(format!("bob+web1@127.0.0.1:{}", remote.display()));
    let (code, _, _) = run(&mut c);
    assert_ne!(code, 0, "legacy scp allowed without file_transfer");
    // bob's role does not grant file transfer.
    let mut c = Command::new("sftp");
    c.args(b.ssh_options("bob"))
        .args(["-P", &b.port.to_string(), "-b", "-", "bob+web1@127.0.0.1"]);
    let (code, _, _) = run(&mut c);
    assert_ne!(code, 0, "sftp allowed without file_transfer");
}

#[test]
fn port_forwarding_is_refused_by_default() {
    let b = Bastion::start();
    let mut c = b.ssh("alice", "alice+web1");
    c.args(["-W", &b.sshd.address()]);
    let (code, _, stderr) = run(&mut c);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("prohibited") || stderr.contains("forwarding failed"),
        "{stderr}"
    );
    assert!(b.audit().contains("forward.refused"));
}

#[test]
fn environment_passes_only_through_the_allowlist() {
    let b = Bastion::start();
    let mut c = b.ssh("alice", "alice+web1");
    c.args(["-o", "SendEnv=VIGIL_TEST", "-o", "SendEnv=VIGIL_SECRET"])
        .env("VIGIL_TEST", "passed")
        .env("VIGIL_SECRET", "leaked")
        .arg("echo \"[$VIGIL_TEST][$VIGIL_SECRET]\"");
    let (code, stdout, stderr) = run(&mut c);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "[passed][]\n");
}

#[test]
fn a_target_that_dies_mid_session_ends_it_cleanly_with_the_reason() {
    let b = Bastion::start();
    let child = b
        .ssh("alice", "alice+web1")
        .arg("echo started; sleep 31.4159")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Find the sshd process serving that command on the target (the nearest sshd above the
    // `sleep`) and kill it.
    let parent = |pid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .unwrap_or("1")
            .to_string()
    };
    let comm = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut killed = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("pgrep")
            .args(["-f", "^sleep 31.4159"])
            .output()
            .unwrap();
        let Some(pid) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
        else {
            continue;
        };
        let mut p = parent(&pid);
        while p != "1" && comm(&p) != "sshd" {
            p = parent(&p);
        }
        assert_ne!(p, "1", "no sshd above the target command");
        killed = Command::new("kill")
            .args(["-9", &p])
            .status()
            .unwrap()
            .success();
        break;
    }
    assert!(killed, "could not find the target's session process");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("started"));
    assert!(
        stderr.contains("vigil:") && stderr.contains("web1"),
        "{stderr}"
    );
    let sessions = b.sessions();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let (_, text, _) = b.vigil(&["export", &id, "--format", "json"]);
    assert!(
        text.contains("lost") || text.contains("closed the channel"),
        "the recording says why it ended: {}",
        &text[..text.len().min(600)]
    );
}

#[test]
fn a_shell_without_a_terminal_has_each_input_line_checked() {
    let b = Bastion::start();
    let marker = b.env.path("victim");
    std::fs::create_dir_all(&marker).unwrap();
    let feed = |login_args: &[&str], script: String| {
        let mut c = b.ssh("alice", "alice+web1");
        c.args(login_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let m = marker.display().to_string();
    for args in [
        &["-T"][..],
        &["bash"][..],
        &["sh", "-s"][..],
        &["exec bash"][..],
        &["env", "bash"][..],
    ] {
        let (code, stdout, stderr) = feed(args, format!("echo first\nrm -rf {m}\necho never\n"));
        assert_ne!(code, Some(0), "{args:?}: {stdout}");
        assert!(
            stdout.contains("first") && !stdout.contains("never"),
            "{args:?}: {stdout}"
        );
        assert!(
            stderr.contains("destructive commands are blocked"),
            "{args:?}: {stderr}"
        );
        assert!(marker.exists(), "{args:?}: the line ran");
        let (code, stdout, stderr) = feed(args, "echo one\necho two\n".into());
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stdout, "one\ntwo\n");
        let (code, stdout, stderr) = feed(args, "for i in 1 2; do\n  echo i$i\ndone\n".into());
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stdout, "i1\ni2\n");
        let (code, _, _) = feed(args, format!("for i in 1; do\n  rm -rf {m}\ndone\n"));
        assert_ne!(code, Some(0), "{args:?}: a loop with a denied body ran");
        assert!(marker.exists());
    }
}

/// A TCP server on the test side that answers each connection's first line with `pong <line>`.
fn pong_server() -> u16 {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut line).is_ok() {
                let _ = (&conn).write_all(format!("pong {line}").as_bytes());
            }
        }
    });
    port
}

/// A Python one-liner for the target: connect to 127.0.0.1:PORT, send `ping`, print the answer.
fn ping_script(port: u16) -> String {
    format!(
        "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', {port})); s.sendall(b'ping\\n'); print(s.makefile().readline().strip())\""
    )
}

#[test]
fn local_and_remote_forwarding_follow_the_role() {
    let b = Bastion::start();
    // Local (-W, a direct-tcpip channel): allowed for dave, it reaches the target's sshd.
    let mut c = b.ssh("dave", "dave+web1");
    c.args(["-W", &b.sshd.address()]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");

    // Remote (-R): a program on the target connects to the forwarded port and reaches a
    // server on the user's side.
    let pong = pong_server();
    let remote = crate::harness::free_port();
    let (code, stdout, stderr) = run(b.ssh("dave", "dave+web1").args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{remote}:127.0.0.1:{pong}"),
        &ping_script(remote),
    ]));
    assert_eq!((code, stdout.trim()), (0, "pong ping"), "{stderr}");
    assert!(b.audit().contains("forward.listen"), "{}", b.audit());
    assert!(b.audit().contains("forward.open"));

    // alice's role does not allow remote forwarding: the request fails, nothing listens.
    let (code, _, stderr) = run(b.ssh("alice", "alice+web1").args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{remote}:127.0.0.1:{pong}"),
        "true",
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("forwarding failed"), "{stderr}");
    assert!(b.audit().contains("remote forwarding not granted"));

    // Each forwarded connection is a recording with who connected where and the byte counts.
    let sessions = b.sessions();
    let forwards: Vec<_> = sessions
        .iter()
        .filter(|s| s["user"] == "dave")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let texts: Vec<String> = forwards
        .iter()
        .map(|id| b.vigil(&["export", id, "--format", "json"]).1)
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("forwarded-tcpip") && t.contains("5 bytes from the target")),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.contains("direct-tcpip")));
}

#[test]
fn agent_forwarding_follows_the_role() {
    let b = Bastion::start();
    let sock = b.env.path("agent.sock");
    struct Agent(std::process::Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Agent(
        Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (apt-get install openssh-client)"),
    );
    crate::harness::wait_until("ssh-agent socket", Duration::from_secs(10), || {
        sock.exists()
    });
    let (code, _, err) = run(Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &sock)
        .arg(b.env.path("bob")));
    assert_eq!(code, 0, "{err}");
    let bob_pub = std::fs::read_to_string(b.env.path("bob.pub")).unwrap();
    let bob_blob = bob_pub.split_whitespace().nth(1).unwrap().to_string();

    // dave may forward his agent: the target can list its keys (and nothing else reaches it).
    let (code, out, err) = run(b
        .ssh("dave", "dave+web1")
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-A", "ssh-add -L"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&bob_blob), "{out}");

    // alice may not: the target sees no agent.
    let (code, out, err) = run(b
        .ssh("alice", "alice+web1")
        .env("SSH_AUTH_SOCK", &sock)
        .args(["-A", "ssh-add -L; echo SOCK=$SSH_AUTH_SOCK"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(&bob_blob), "{out}");
    assert!(
        out.contains("SOCK=\n") || out.trim_end().ends_with("SOCK="),
        "{out}"
    );
    assert!(b
        .audit()
        .contains("agent or X11 forwarding request refused"));
}

#[test]
fn x11_forwarding_follows_the_role() {
    use std::io::Read;
    let b = Bastion::start();
    // A stand-in X server on the user's side: display :N is TCP port 6000+N. It records the
    // first bytes of each connection (an X11 connection setup).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(port > 6000, "cannot map port {port} to a display");
    let display = format!("127.0.0.1:{}", port - 6000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 12];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = tx.send(buf.to_vec());
            }
        }
    });
    // On the target: read the forwarded display and its cookie, and send an X11 setup request
    // (byte order, version 11.0, MIT-MAGIC-COOKIE-1) as an X client would.
    let client = r#"python3 -c "
import os, socket, struct, subprocess
d = os.environ['DISPLAY']
host, num = d.rsplit(':', 1)
num = int(num.split('.')[0])
cookie = subprocess.run(['xauth', 'list', d], capture_output=True, text=True).stdout.split()[-1]
name = b'MIT-MAGIC-COOKIE-1'
data = bytes.fromhex(cookie)
pad = lambda b: b + bytes((4 - len(b) % 4) % 4)
msg = struct.pack('<cxHHHHxx', b'l', 11, 0, len(name), len(data)) + pad(name) + pad(data)
s = socket.create_connection(('127.0.0.1', 6000 + num))
s.sendall(msg)
s.settimeout(5)
try:
    s.recv(1)
except Exception:
    pass
print('display', d)
""#;
    let (code, out, err) = run(b
        .ssh("dave", "dave+web1")
        .env("DISPLAY", &display)
        .args(["-Y", client]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("display localhost:1"), "{out}{err}");
    let setup = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no X11 connection reached the user's display");
    assert_eq!(&setup[..4], &[b'l', 0, 11, 0], "{setup:?}");

    // alice's role does not allow X11: the target gets no display.
    let (code, out, _) = run(b
        .ssh("alice", "alice+web1")
        .env("DISPLAY", &display)
        .args(["-Y", "echo DISPLAY=$DISPLAY"]));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "DISPLAY=");
}
