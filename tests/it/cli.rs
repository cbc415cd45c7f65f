//! The forensics CLI as an operator runs it: keygen, check, sessions, play, export, search,
//! verify; exit codes and one-line errors.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
};

use crate::harness::{run, vigil, Env};

/// Records `input` through `vigil record` and returns the session id.
fn record(env: &Env, user: &str, input: &[u8]) -> String {
    let config = env.config(&env.store_url(), "");
    let mut child = vigil()
        .args(["record", "--config"])
        .arg(&config)
        .args(["--user", user, "--target", "web1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn with_store<'a>(cmd: &'a mut Command, env: &Env) -> &'a mut Command {
    cmd.args(["--store", &env.store_url(), "--key"])
        .arg(env.key_path())
}

#[test]
fn keygen_writes_a_private_secret_and_prints_the_public_key() {
    let env = Env::new();
    let out = env.path("k");
    let (code, stdout, err) = run(vigil().args(["keygen", "--out"]).arg(&out));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.starts_with("vigil-pub-1:"));
    assert_eq!(std::fs::read_to_string(env.path("k.pub")).unwrap(), stdout);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = vigil::recording::keys::RecipientSecret::read_file(&out).unwrap();
    assert_eq!(secret.public().to_string(), stdout.trim());
    let (code, _, err) = run(vigil().args(["keygen", "--out"]).arg(&out));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn check_accepts_the_examples_and_names_each_problem_of_a_bad_config() {
    for example in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let p = example.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = run(vigil().arg("check").arg("--config").arg(&p));
            assert_eq!(code, 0, "{}: {out}{err}", p.display());
        }
    }
    let bad = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/configs/bad.toml");
    let (code, out, err) = run(vigil().args(["check", "--config", bad]));
    assert_ne!(code, 0);
    for path in [
        "recording.recipients[0]",
        "recording.flush_interval",
        "target[0].protocol",
        "role[0].targets[1]",
    ] {
        assert!(out.contains(path), "{path} not reported: {out}");
    }
    assert!(err.contains("problem"), "{err}");
    let (code, out, _) = run(vigil().args([
        "check",
        "--config",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/configs/unknown-key.toml"
        ),
    ]));
    assert_ne!(code, 0);
    assert!(
        out.contains("recording") && out.contains("flush_intervall"),
        "{out}"
    );
}

#[test]
fn sessions_play_export_and_verify_a_recording() {
    let env = Env::new();
    let id = record(
        &env,
        "alice",
        b"hello from the target\r\n\x1b[31mred\x1b[0m text\r\n",
    );
    let (code, out, err) = run(vigil().args(["sessions", "--store", &env.store_url()]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("alice") && out.contains("closed"),
        "{out}"
    );
    let (_, out, _) =
        run(vigil().args(["sessions", "--store", &env.store_url(), "--user", "nobody"]));
    assert!(!out.contains(&id), "filter ignored: {out}");

    // Without a tty, play prints what the user saw.
    let (code, out, err) = run(with_store(vigil().args(["play", &id]), &env));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hello from the target") && out.contains("\x1b[31mred"),
        "{out:?}"
    );
    // A unique prefix of the id is enough.
    let (code, _, err) = run(with_store(vigil().args(["play", &id[..22]]), &env));
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run(with_store(
        vigil().args(["export", &id, "--format", "json"]),
        &env,
    ));
    assert_eq!(code, 0, "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            first["id"].as_str(),
            first["user"].as_str(),
            first["protocol"].as_str()
        ),
        (Some(id.as_str()), Some("alice"), Some("ssh"))
    );
    assert!(first["start"].is_string());

    let (code, out, err) = run(with_store(vigil().args(["verify", &id]), &env));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok") && out.contains("every seal opened"),
        "{out}"
    );
    let (code, out, _) = run(with_store(vigil().args(["verify", "--all"]), &env));
    assert_eq!(code, 0, "{out}");

    // Content commands need the key; errors are one line.
    let (code, _, err) = run(vigil().args(["play", &id, "--store", &env.store_url()]));
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--key"), "{err}");
    let (code, _, err) = run(with_store(
        vigil().args(["play", "20990101T000000Z-000000000000"]),
        &env,
    ));
    assert_ne!(code, 0);
    assert!(err.contains("no recording"), "{err}");
}

#[test]
fn verify_names_the_fault_and_the_chunk_and_exits_non_zero() {
    let env = Env::new();
    let id = record(&env, "alice", b"some output\r\n");
    let chunk = env
        .path("store")
        .join(format!("sessions/{id}/chunk-0000000000"));
    let mut b = std::fs::read(&chunk).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x80;
    std::fs::write(&chunk, b).unwrap();
    let (code, out, err) = run(with_store(vigil().args(["verify", &id]), &env));
    assert_eq!(code, 1);
    assert!(
        out.contains("FAULT at chunk 0") && out.contains("seal does not open"),
        "{out}"
    );
    assert!(err.contains("1 of 1"), "{err}");
    // Play refuses a tampered recording rather than showing altered content.
    let (code, _, err) = run(with_store(vigil().args(["play", &id]), &env));
    assert_ne!(code, 0);
    assert!(err.contains("chunk 0"), "{err}");
}

#[test]
fn search_finds_output_as_the_screen_showed_it() {
    let env = Env::new();
    let a = record(
        &env,
        "alice",
        b"building...\r\nerror: \x1b[1;31mdisk\x1b[0m full on /dev/sda1\r\nok\r\n",
    );
    let b = record(&env, "bob", b"nothing to see\r\nDisk Full is a band\r\n");
    let (code, out, err) = run(with_store(vigil().args(["search", "disk full"]), &env));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains(&a)
            && lines[0].contains("alice@web1")
            && lines[0].contains("error: disk full on /dev/sda1"),
        "{out}"
    );
    assert!(lines[0].contains("+00:00."), "no offset: {out}");

    let (_, out, _) = run(with_store(
        vigil().args(["search", "-i", "disk full"]),
        &env,
    ));
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    let (_, out, _) = run(with_store(
        vigil().args(["search", "--regex", "/dev/sd[a-z][0-9]", "--json"]),
        &env,
    ));
    let hit: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(hit["id"], a.as_str());
    assert_eq!(hit["kind"], "output");
    assert!(hit["offset_s"].is_number());
    let (_, out, _) = run(with_store(
        vigil().args(["search", "-i", "disk full", "--user", "bob"]),
        &env,
    ));
    assert!(!out.contains(&a) && out.contains(&b), "{out}");
    let (code, out, _) = run(with_store(
        vigil().args(["search", "no such text anywhere"]),
        &env,
    ));
    assert_eq!((code, out.as_str()), (1, ""));
}

/// `vigil demo` as a newcomer runs it: the printed `ssh` and `psql` lines work, the policy and
/// the masks hold, and Ctrl-C (SIGTERM here) stops it cleanly with the recordings sealed.
#[test]
fn vigil_demo_runs_and_its_printed_commands_work() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let ssh_port = crate::harness::free_port();
    let mut child = vigil()
        .args(["demo", "--port", &ssh_port.to_string(), "--dir"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child = Kill(child);
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C stops the demo");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    let ssh_line = printed
        .iter()
        .find(|l| l.trim_start().starts_with("ssh ") && l.contains("demo+local@"))
        .unwrap_or_else(|| panic!("no ssh line (apt-get install openssh-server):\n{text}"));
    let psql_line = printed
        .iter()
        .find(|l| l.contains("psql \""))
        .unwrap_or_else(|| panic!("no psql line (apt-get install postgresql-15):\n{text}"));
    // The ssh line, with an exec command.
    let mut ssh: Vec<String> = ssh_line.split_whitespace().map(String::from).collect();
    ssh.extend([
        "-o".into(),
        "BatchMode=yes".into(),
        "echo demo-$((6*7))".into(),
    ]);
    let (code, out, err) = run(Command::new(&ssh[0]).args(&ssh[1..]));
    assert_eq!((code, out.trim()), (0, "demo-42"), "{err}");
    // The psql line: masked columns and a refused DROP.
    let conninfo = psql_line.split('"').nth(1).unwrap().to_string();
    let psql = |sql: &str| {
        run(Command::new("psql")
            .env("PGPASSWORD", vigil::demo::DEMO_PASSWORD)
            .args([&conninfo, "-At", "-c", sql]))
    };
    let (code, out, err) = psql("select name, email, card from customers order by id");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Ada|"), "{out}");
    assert!(
        !out.contains("ada@example.com") && !out.contains("4111"),
        "{out}"
    );
    let (code, _, err) = psql("drop table customers");
    assert_ne!(code, 0);
    assert!(err.contains("destructive statements are blocked"), "{err}");
    // SIGTERM: a clean stop, every recording sealed.
    let pid = child.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let (code, out, err) = run(vigil()
        .args(["verify", "--all", "--store"])
        .arg(dir.path().join("demo/recordings"))
        .arg("--key")
        .arg(dir.path().join("demo/auditor.key")));
    assert_eq!(code, 0, "{out}{err}");
}
