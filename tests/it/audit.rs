//! The audit log end to end: a real vigil with the real `ssh` client and sshd writes the
//! events; `vigil audit verify` passes the untouched log and names each form of tampering;
//! segments reach a real S3 server while vigil runs, and survive an outage of it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use vigil::{demo, recording::keys::sha256};

use crate::{
    harness::{run, vigil, wait_until, Env, S3Server, S3_BUCKET},
    ssh::Bastion,
};

/// Checkpoints every 200ms; segments close at 4KiB (about a dozen events), never by age.
const AUDIT: &str =
    "[audit]\ncheckpoint_interval = \"200ms\"\nrotate_size = \"4KiB\"\nrotate_interval = \"1h\"\n";

/// `audit.log.<digits>`: a closed segment (not the lock file).
fn is_segment(name: &str) -> bool {
    name.strip_prefix("audit.log.")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The log's files (closed segments, then the active one), as (name, lines).
fn segments(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment(n))
        .collect();
    names.sort();
    if std::fs::metadata(dir.join("audit.log")).is_ok_and(|m| m.len() > 0) {
        names.push("audit.log".into());
    }
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            (n, text.lines().map(str::to_string).collect())
        })
        .collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// `vigil audit --json` on the log at `log`.
fn events(log: &Path) -> Vec<Value> {
    let (code, out, err) = run(vigil().args(["audit", "--json", "--log"]).arg(log));
    assert_eq!(code, 0, "{err}");
    out.lines().map(json).collect()
}

/// The first `action` event that `pred` accepts.
fn find(events: &[Value], action: &str, pred: &dyn Fn(&Value) -> bool) -> Value {
    events
        .iter()
        .find(|e| e["action"] == action && pred(e))
        .unwrap_or_else(|| panic!("no {action} event in {events:?}"))
        .clone()
}

fn is_checkpoint(line: &str) -> bool {
    json(line)["action"] == "audit.checkpoint"
}

/// A copy of the log in a fresh directory, to tamper with.
fn copy_log(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit.log") {
            std::fs::copy(e.path(), to.path().join(&name)).unwrap();
        }
    }
    to
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// `vigil audit verify` on the log in `dir`: (exit code, stdout + stderr).
fn verify(dir: &Path, signer: &str, store: Option<&str>) -> (i32, String) {
    let mut cmd = vigil();
    cmd.args(["audit", "verify", "--log"])
        .arg(dir.join("audit.log"))
        .args(["--signer", signer]);
    if let Some(s) = store {
        cmd.args(["--store", s]);
    }
    let (code, out, err) = run(&mut cmd);
    (code, format!("{out}{err}"))
}

/// The first closed segment with an event line at `at` (and `at + 1`) that is not a checkpoint.
fn pick(segs: &[(String, Vec<String>)], at: usize) -> (String, Vec<String>) {
    segs.iter()
        .find(|(n, l)| {
            n != "audit.log"
                && l.len() > at + 2
                && !is_checkpoint(&l[at])
                && !is_checkpoint(&l[at + 1])
        })
        .cloned()
        .unwrap_or_else(|| panic!("no segment with events at line {at}: {segs:?}"))
}

#[test]
fn ssh_events_are_chained_and_each_form_of_tampering_is_named() {
    let mut b = Bastion::start_with(AUDIT);
    let (code, out, err) = run(b.ssh("alice", "alice+web1").arg("echo hello"));
    assert_eq!((code, out.trim()), (0, "hello"), "{err}");
    let (code, _, _) = run(b.ssh("alice", "alice+web1").arg("rm -rf /tmp/nothing-here"));
    assert_ne!(code, 0);
    // Events, then a pause longer than the checkpoint interval: an interval checkpoint.
    std::thread::sleep(Duration::from_millis(800));
    let (code, _, _) = run(b.ssh("carol", "carol+web1").arg("true"));
    assert_ne!(code, 0);
    let (code, _, _) = run(b.ssh("bob", "alice+web1").arg("true"));
    assert_ne!(code, 0);
    for i in 0..6 {
        let (code, _, err) = run(b.ssh("alice", "alice+web1").arg(format!("echo {i}")));
        assert_eq!(code, 0, "{err}");
    }
    std::thread::sleep(Duration::from_millis(800));
    let signer = std::fs::read_to_string(b.env.path("state/host_ed25519.pub")).unwrap();
    let signer = signer.trim().to_string();
    let key_id = vigil::audit::files::key_id(&signer).unwrap();
    let store_dir = b.env.path("store").join("audit").join(&key_id);
    // Closed segments and checkpoints reach the store while vigil runs.
    wait_until(
        "segments and checkpoints are in the store",
        Duration::from_secs(10),
        || {
            let names: Vec<String> = std::fs::read_dir(&store_dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.iter().any(|n| n.starts_with("segment-"))
                && names.iter().any(|n| n.starts_with("checkpoint-"))
        },
    );
    b.stop();

    let state = b.env.path("state");
    let store = b.store();
    let (code, out) = verify(&state, &signer, Some(&store));
    assert_eq!(code, 0, "the untouched log must verify: {out}");
    assert!(out.contains(": ok:"), "{out}");
    let (code, out, err) =
        run(vigil().args(["audit", "verify", "--store", &store, "--signer", &signer]));
    assert_eq!(code, 0, "the store's copy must verify: {out}{err}");

    // Every kind of event, with who, from where, on what, in which session, and when.
    let events = events(&state.join("audit.log"));
    let find = |action: &str, pred: &dyn Fn(&Value) -> bool| find(&events, action, pred);
    let any = |_: &Value| true;
    let ok = find("auth.success", &|e| e["user"] == "alice");
    assert_eq!(ok["target"], "web1");
    assert!(ok["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    find("auth.failure", &|e| e["user"] == "alice");
    let start = find("session.start", &|e| e["user"] == "alice");
    assert!(start["session"].as_str().unwrap().len() > 10, "{start}");
    find("session.end", &|e| e["session"] == start["session"]);
    let allow = find("command.allow", &|e| e["command"] == "echo hello");
    assert_eq!(allow["session"], start["session"]);
    find("command.deny", &|e| {
        e["command"] == "rm -rf /tmp/nothing-here"
    });
    find("access.refused", &|e| e["user"] == "carol");
    find("config.load", &any);
    assert!(events.iter().all(|e| e["action"] != "audit.checkpoint"));
    let (code, table, _) = run(vigil()
        .args([
            "audit", "--action", "auth.*", "--user", "alice", "--since", "1h", "--log",
        ])
        .arg(state.join("audit.log")));
    assert_eq!(code, 0);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("auth.success") && table.contains("auth.failure"),
        "{table}"
    );
    assert!(!table.contains("session.start"), "{table}");

    let segs = segments(&state);
    assert!(segs.len() >= 3, "size rotation made segments: {segs:?}");

    // Edited: a field of one event.
    let t = copy_log(&state);
    let (name, mut lines) = pick(&segs, 2);
    let seq = json(&lines[2])["seq"].as_u64().unwrap();
    lines[2] = lines[2].replacen("\"action\":\"", "\"action\":\"x", 1);
    write_lines(&t.path().join(&name), &lines);
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "edit not detected: {out}");
    assert!(
        out.contains(&format!("FAULT at seq {seq} ({name} line 3): edited")),
        "{out}"
    );

    // Deleted: one event.
    let t = copy_log(&state);
    let (name, mut lines) = pick(&segs, 2);
    let seq = json(&lines[2])["seq"].as_u64().unwrap();
    lines.remove(2);
    write_lines(&t.path().join(&name), &lines);
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "deletion not detected: {out}");
    assert!(
        out.contains("deleted") && out.contains(&format!("seq {seq} before it was deleted")),
        "{out}"
    );

    // Inserted: a forged event that takes the next seq and links to the line before it.
    let t = copy_log(&state);
    let (name, mut lines) = pick(&segs, 2);
    let before = json(&lines[1]);
    let forged = format!(
        "{{\"seq\":{},\"time\":\"{}\",\"action\":\"auth.success\",\"user\":\"mallory\",\"prev\":\"{}\"}}",
        before["seq"].as_u64().unwrap() + 1,
        before["time"].as_str().unwrap(),
        hex::encode(sha256(lines[1].as_bytes()))
    );
    lines.insert(2, forged);
    write_lines(&t.path().join(&name), &lines);
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "insertion not detected: {out}");
    assert!(out.contains(&format!("({name} line 3): inserted")), "{out}");

    // Reordered: two events swapped.
    let t = copy_log(&state);
    let (name, mut lines) = pick(&segs, 2);
    lines.swap(1, 2);
    write_lines(&t.path().join(&name), &lines);
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "reordering not detected: {out}");
    assert!(out.contains("reordered"), "{out}");

    // Truncated after a checkpoint: an interval checkpoint, and everything after it.
    let t = copy_log(&state);
    let (ci, (name, lines)) = segs
        .iter()
        .enumerate()
        .find(|(_, (_, l))| {
            l.iter()
                .take(l.len().saturating_sub(1))
                .any(|x| is_checkpoint(x) && json(x)["segment_end"].is_null())
        })
        .unwrap_or_else(|| panic!("no interval checkpoint: {segs:?}"));
    let cut = lines
        .iter()
        .position(|x| is_checkpoint(x) && json(x)["segment_end"].is_null())
        .unwrap();
    let seq = json(&lines[cut])["seq"].as_u64().unwrap();
    write_lines(&t.path().join(name), &lines[..=cut]);
    for (later, _) in &segs[ci + 1..] {
        std::fs::remove_file(t.path().join(later)).unwrap();
    }
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "truncation not detected: {out}");
    assert!(
        out.contains(&format!("FAULT at seq {seq}")) && out.contains("truncated"),
        "{out}"
    );
    // Cut exactly at a segment's closing checkpoint, only the store's copy can tell.
    let t = copy_log(&state);
    let last = &segs.last().unwrap().0;
    std::fs::remove_file(t.path().join(last)).unwrap();
    let (code, out) = verify(t.path(), &signer, Some(&store));
    assert_ne!(code, 0, "a removed last segment not detected: {out}");
    assert!(
        out.contains("truncated") && out.contains("its tail was cut"),
        "{out}"
    );

    // A checkpoint whose signature is corrupted.
    let t = copy_log(&state);
    let (name, mut lines) = segs[0].clone();
    let at = lines.iter().position(|l| is_checkpoint(l)).unwrap();
    let seq = json(&lines[at])["seq"].as_u64().unwrap();
    let sig_at = lines[at].rfind("\"sig\":\"").unwrap() + 7;
    let c = if &lines[at][sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    lines[at].replace_range(sig_at..sig_at + 1, c);
    write_lines(&t.path().join(&name), &lines);
    let (code, out) = verify(t.path(), &signer, None);
    assert_ne!(code, 0, "bad signature not detected: {out}");
    assert!(
        out.contains(&format!("FAULT at seq {seq}")) && out.contains("bad signature"),
        "{out}"
    );

    // A log re-chained and re-signed by someone else's key is refused with the pinned key.
    let other = demo::write_ssh_key(&b.env.path("other_key"), "other").unwrap();
    let (code, out) = verify(&state, other.trim(), None);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not a trusted signer"), "{out}");
}

/// A `vigil serve` child, killed if the test fails before it stops it.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// vigil serve with an S3 store: segments and checkpoints reach the store while it runs; while
/// the store is down events are still written, and they reach it when it is back.
#[test]
fn segments_reach_s3_while_running_and_survive_an_outage() {
    let env = Env::new();
    let mut s3 = S3Server::start();
    let alice = demo::write_ssh_key(&env.path("alice"), "alice").unwrap();
    let port = crate::harness::free_port();
    let config = env.config(
        &s3.url(),
        &format!(
            "{AUDIT}[listen]\nssh = \"127.0.0.1:{port}\"\n[[user]]\nname = \"alice\"\nssh_keys = [\"{}\"]\n",
            alice.trim()
        ),
    );
    let mut cmd = vigil();
    s3.env(&mut cmd);
    let mut child = Serve(
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("vigil listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let ssh = |key: &str| {
        let mut c = std::process::Command::new("ssh");
        c.arg("-i")
            .arg(env.path(key))
            .args(["-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                env.path("known_hosts").display()
            ))
            .args(["-p", &port.to_string(), "alice@127.0.0.1", "whoami"]);
        run(&mut c)
    };
    let signer = std::fs::read_to_string(env.path("state/host_ed25519.pub")).unwrap();
    let key_id = vigil::audit::files::key_id(signer.trim()).unwrap();
    let s3_dir: PathBuf = s3
        .root
        .path()
        .join(S3_BUCKET)
        .join("vigil/audit")
        .join(&key_id);
    let stored = |kind: &str| -> Vec<String> {
        let dir = &s3_dir;
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(kind))
            .collect();
        v.sort();
        v
    };
    demo::write_ssh_key(&env.path("stranger"), "stranger").unwrap();
    for _ in 0..8 {
        let (code, out, err) = ssh("alice");
        assert_eq!(code, 0, "{out}{err}");
        assert_ne!(ssh("stranger").0, 0);
    }
    wait_until("segments reach S3", Duration::from_secs(15), || {
        !stored("segment-").is_empty() && !stored("checkpoint-").is_empty()
    });

    // The store goes away: events are still written locally, vigil keeps serving.
    s3.stop();
    let before = stored("segment-").len();
    for _ in 0..12 {
        assert_eq!(ssh("alice").0, 0);
        assert_ne!(ssh("stranger").0, 0);
    }
    let local = std::fs::read_dir(env.path("state"))
        .unwrap()
        .flatten()
        .filter(|e| is_segment(&e.file_name().to_string_lossy()))
        .count();
    assert!(
        local > before,
        "segments closed during the outage: {local} vs {before}"
    );
    s3.restart();
    wait_until("the backlog reaches S3", Duration::from_secs(20), || {
        stored("segment-").len() >= local
    });

    // A graceful stop closes the log and ships it; the store's copy matches the local one.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut cmd = vigil();
    s3.env(&mut cmd);
    let (code, out, err) = run(cmd.args(["audit", "verify", "--config"]).arg(&config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": ok:") && !out.contains("not yet covered"),
        "{out}"
    );
    let mut cmd = vigil();
    s3.env(&mut cmd);
    let (code, out, err) = run(cmd.args(["audit", "--json", "--config"]).arg(&config));
    assert_eq!(code, 0, "{err}");
    let failures = out
        .lines()
        .filter(|l| l.contains("\"auth.failure\""))
        .count();
    let successes = out
        .lines()
        .filter(|l| l.contains("\"auth.success\""))
        .count();
    assert!(failures >= 20, "{failures} auth.failure events: {out}");
    assert_eq!(successes, 20, "{out}");
    let _ = std::io::stdout().flush();
}

#[test]
fn postgres_events_carry_identity_source_target_and_session() {
    let b = crate::pg::PgBastion::start();
    let alice = crate::pg::ALICE_PW;
    let (code, out, err) = b.psql("alice", alice, "select 41 + 1");
    assert_eq!((code, out.trim()), (0, "42"), "{err}");
    assert_ne!(b.psql("alice", "wrong", "select 1").0, 0);
    assert_ne!(b.psql("alice", alice, "drop table orders").0, 0);
    let log = b.env.path("state/audit.log");
    wait_until("both sessions ended", Duration::from_secs(10), || {
        let ended = events(&log);
        ended
            .iter()
            .filter(|e| e["action"] == "session.end")
            .count()
            == 2
    });
    let events = events(&log);
    let find = |action: &str, pred: &dyn Fn(&Value) -> bool| find(&events, action, pred);
    let ok = find("auth.success", &|e| e["user"] == "alice");
    assert_eq!(
        (ok["protocol"].as_str(), ok["target"].as_str()),
        (Some("postgres"), Some("appdb"))
    );
    assert!(
        ok["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    find("auth.failure", &|e| e["user"] == "alice");
    let allow = find("command.allow", &|e| e["command"] == "select 41 + 1");
    let deny = find("command.deny", &|e| e["command"] == "drop table orders");
    assert_eq!(deny["rule"], "no-destructive-sql");
    for e in [&allow, &deny] {
        let session = e["session"].as_str().unwrap();
        find("session.start", &|s| s["session"] == session);
        find("session.end", &|s| s["session"] == session);
    }
    // The running bastion's log verifies; its newest lines wait for the next checkpoint.
    let signer = std::fs::read_to_string(b.env.path("state/host_ed25519.pub")).unwrap();
    let (code, out) = verify(&b.env.path("state"), signer.trim(), None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_sessions_allow_and_deny_lines_and_recorded_statements_keep_their_order() {
    // Allow lines and recording events are written after the I/O they describe; a deny, and
    // the session's end, still come after everything the session did before them.
    let b = crate::pg::PgBastion::start();
    let mut c = std::process::Command::new("psql");
    c.env("PGPASSWORD", crate::pg::ALICE_PW).args([
        &b.conninfo("alice"),
        "-At",
        "-c",
        "select 'first'",
        "-c",
        "drop table orders",
        "-c",
        "select 'third'",
    ]);
    let (_, out, err) = run(&mut c);
    assert!(out.contains("first") && out.contains("third"), "{out}{err}");
    let log = b.env.path("state/audit.log");
    wait_until("the session ended", Duration::from_secs(10), || {
        events(&log).iter().any(|e| e["action"] == "session.end")
    });
    let events = events(&log);
    let first = find(&events, "command.allow", &|e| {
        e["command"] == "select 'first'"
    });
    let session = first["session"].as_str().unwrap().to_string();
    let mine: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["session"] == session.as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["command"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("session.start", ""),
        ("command.allow", "select 'first'"),
        ("command.deny", "drop table orders"),
        ("command.allow", "select 'third'"),
        ("session.end", ""),
    ]
    .iter()
    .map(|(a, c)| (a.to_string(), c.to_string()))
    .collect();
    assert_eq!(mine, expected);
    // The recording holds the three statements in the order they were sent.
    let (code, text, err) = b.vigil(&["export", &session, "--format", "text"]);
    assert_eq!(code, 0, "{err}");
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s} is not in the recording: {text}"))
    };
    assert!(
        at("select 'first'") < at("drop table orders")
            && at("drop table orders") < at("select 'third'"),
        "{text}"
    );
}

#[test]
fn an_allow_line_is_written_while_its_session_is_still_open() {
    // Allow lines wait in memory for at most about two GROUP_WINDOWs (the daemon's flusher),
    // not for the next other line or the session's end.
    let b = crate::pg::PgBastion::start();
    let mut child = std::process::Command::new("psql")
        .env("PGPASSWORD", crate::pg::ALICE_PW)
        .args([&b.conninfo("alice"), "-At", "-c", "select 7, pg_sleep(30)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql (postgresql-client) is installed");
    let log = b.env.path("state/audit.log");
    // Looked for while psql still waits for its answer (up to 20 s on a slow machine).
    let mut seen = false;
    let mut still_running = true;
    let start = std::time::Instant::now();
    while !seen && still_running && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
        seen = std::fs::read_to_string(&log).is_ok_and(|t| t.contains("select 7, pg_sleep(30)"));
        still_running = child.try_wait().unwrap().is_none();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen,
        "the allow line was not written while the statement ran"
    );
    assert!(
        still_running,
        "psql ended before the check: the test proves nothing"
    );
}
