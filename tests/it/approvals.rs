//! Just-in-time approval end to end: commands held by review rules over the real `ssh` client
//! to a real sshd, approved or denied through `ssh approver@bastion approvals ...` (the
//! approver authenticated by key), with the separation-of-duties matrix.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    harness::{run, wait_until},
    pg::{PgBastion, ALICE_PW},
    pgserver::{DATABASE, PASSWORD, USER},
    pty::Pty,
    ssh::Bastion,
};

/// alice (engineer) asks; bob (contractor) and dave (tunneler) approve; carol has no role.
const RULES: &str = r#"
[[rule]]
name = "touch-needs-review"
targets = ["web1"]
shell = ["touch"]
action = "review"
approvers = ["contractor", "tunneler"]
timeout = "30s"

[[rule]]
name = "mkdir-times-out"
targets = ["web1"]
shell = ["mkdir"]
action = "review"
approvers = ["contractor"]
timeout = "2s"

[[rule]]
name = "chown-expires"
targets = ["web1"]
shell = ["chown"]
action = "review"
approvers = ["contractor"]
timeout = "8s"

[[rule]]
name = "chmod-needs-two"
targets = ["web1"]
shell = ["chmod"]
action = "review"
approvers = ["contractor", "tunneler"]
min_approvals = 2

[[rule]]
name = "ln-time-box"
targets = ["web1"]
shell = ["ln"]
action = "review"
approvers = ["contractor", "tunneler"]
grant = "10m"
"#;

/// `who` runs `approvals ARGS` on the bastion itself: (exit code, stdout, stderr).
fn approvals(b: &Bastion, who: &str, args: &str) -> (i32, String, String) {
    run(b.ssh(who, who).arg(format!("approvals {args}")))
}

/// `ssh` as `who` to web1 running `command`, with a justification, in the background.
fn held(b: &Bastion, who: &str, command: &str, reason: &str) -> Child {
    Command::new("ssh")
        .args(b.ssh_options(who))
        .args(["-o", &format!("SetEnv=VIGIL_REASON=\"{reason}\"")])
        .args(["-p", &b.port.to_string(), &format!("{who}+web1@127.0.0.1")])
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until request #`id` is listed as pending.
fn until_pending(b: &Bastion, id: u64, client: &mut Child) {
    pending(&|| approvals(b, "bob", "list").1, id, Some(client));
}

/// Waits until `list()` shows request #`id` pending; fails at once, with the client's output,
/// when the client that should be waiting exits.
fn pending(list: &dyn Fn() -> String, id: u64, mut client: Option<&mut Child>) {
    let start = std::time::Instant::now();
    while !list().contains(&format!("#{id} pending")) {
        if let Some(c) = client.as_deref_mut() {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                panic!("the client exited ({status}) instead of waiting for #{id}: {err}");
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "request #{id} is not pending after 60s: {}",
            list()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finish(c: Child) -> (i32, String, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_waits_for_an_approver_and_separation_of_duties_holds() {
    let b = Bastion::start_with(RULES);
    let dir = b.env.path("victim");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ran");
    let cmd = format!("touch {}", file.display());

    // Held: nothing reaches the target before approval.
    let mut child = held(&b, "alice", &cmd, "INC-7 restart");
    until_pending(&b, 1, &mut child);
    let (_, list, _) = approvals(&b, "bob", "list");
    for want in [
        "requester: alice",
        "target:    web1",
        "touch-needs-review",
        &cmd,
        "INC-7 restart",
    ] {
        assert!(list.contains(want), "`{want}` missing from {list}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!file.exists(), "the held command ran before approval");
    // Only the requester and the approvers see a request (it shows the exact command).
    let (code, out, _) = approvals(&b, "carol", "list");
    assert_eq!(code, 0);
    assert!(out.contains("no approval requests for you"), "{out}");
    assert_eq!(approvals(&b, "carol", "show 1").0, 1);
    assert!(approvals(&b, "alice", "show 1").1.contains("#1 pending"));

    // The requester never approves their own request.
    let (code, _, err) = approvals(&b, "alice", "approve 1");
    assert_eq!(code, 1);
    assert!(
        err.contains("can never approve or deny their own request"),
        "{err}"
    );
    // A user without an approver role cannot approve.
    let (code, _, err) = approvals(&b, "carol", "approve 1");
    assert_eq!(code, 1);
    assert!(err.contains("may not decide on #1"), "{err}");
    // A denial needs a reason.
    let (code, _, err) = approvals(&b, "bob", "deny 1");
    assert_eq!(code, 1);
    assert!(err.contains("needs a reason"), "{err}");
    assert!(!file.exists());

    let (code, out, err) = approvals(&b, "bob", "approve 1 --reason looks right");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("#1 approved by bob; now approved"), "{out}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("waiting for approval #1 (rule touch-needs-review"),
        "{err}"
    );
    assert!(err.contains("granted by bob"), "{err}");
    assert!(file.exists(), "the approved command did not run");

    // The used approval cannot be approved again or replayed: the same command asks anew.
    let (code, _, err) = approvals(&b, "dave", "approve 1");
    assert_eq!(code, 1);
    assert!(err.contains("#1 is used, no longer pending"), "{err}");
    std::fs::remove_file(&file).unwrap();
    let mut child = held(&b, "alice", &cmd, "again");
    until_pending(&b, 2, &mut child);
    // A denial by any approver ends it, with the reason.
    let (code, _, err) = approvals(&b, "dave", "deny 2 --reason not during the freeze");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 126, "{err}");
    assert!(
        err.contains("denied by dave: not during the freeze"),
        "{err}"
    );
    assert!(!file.exists(), "a denied command ran");
    let (code, _, _) = approvals(&b, "bob", "approve 2");
    assert_eq!(code, 1, "a denied request was approved afterwards");

    // min_approvals = 2 needs two distinct approvers; the same approver twice does not count.
    let target = dir.join("two");
    std::fs::write(&target, "").unwrap();
    let mut child = held(
        &b,
        "alice",
        &format!("chmod 600 {}", target.display()),
        "audit fix",
    );
    until_pending(&b, 3, &mut child);
    assert_eq!(approvals(&b, "bob", "approve 3").0, 0);
    let (code, _, err) = approvals(&b, "bob", "approve 3");
    assert_eq!(code, 1);
    assert!(err.contains("already decided on #3"), "{err}");
    std::thread::sleep(Duration::from_millis(700));
    assert!(approvals(&b, "bob", "show 3")
        .1
        .contains("#3 pending, 1 approval(s) of 2"));
    let (code, out, _) = approvals(&b, "dave", "approve 3");
    assert_eq!(code, 0);
    assert!(out.contains("now approved"), "{out}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A request that timed out exits non-zero and cannot be approved afterwards.
    let late = dir.join("late");
    let child = held(&b, "alice", &format!("mkdir {}", late.display()), "x");
    let (code, _, err) = finish(child);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("approval #4 timed out"), "{err}");
    let (code, _, err) = approvals(&b, "bob", "approve 4");
    assert_eq!(code, 1);
    assert!(err.contains("#4 is expired"), "{err}");
    assert!(!late.exists());

    // A time box: one approval covers alice's commands of that rule until it ends.
    let mut child = held(
        &b,
        "alice",
        &format!("ln -s /etc/hostname {}", dir.join("l1").display()),
        "",
    );
    until_pending(&b, 5, &mut child);
    assert_eq!(approvals(&b, "bob", "approve 5").0, 0);
    assert_eq!(finish(child).0, 0);
    let (code, _, err) = run(b
        .ssh("alice", "alice+web1")
        .arg(format!("ln -s /etc/hostname {}", dir.join("l2").display())));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("covered by approval #5"), "{err}");
    assert!(dir.join("l2").exists());
    // ... for alice only: bob's own command of that rule asks anew.
    let mut child = held(
        &b,
        "bob",
        &format!("ln -s /etc/hostname {}", dir.join("l3").display()),
        "",
    );
    until_pending(&b, 6, &mut child);
    // bob holds an approver role and still cannot approve his own request.
    let (code, _, err) = approvals(&b, "bob", "approve 6");
    assert_eq!(code, 1);
    assert!(err.contains("can never approve"), "{err}");
    assert_eq!(approvals(&b, "dave", "deny 6 --reason no").0, 0);
    assert_eq!(finish(child).0, 126);

    let audit = b.audit();
    for action in [
        "approval.request",
        "approval.refused",
        "approval.approve",
        "approval.granted",
        "grant.use",
        "approval.deny",
        "approval.expire",
    ] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "no {action} in {audit}"
        );
    }
}

#[test]
fn an_interactive_line_waits_and_ctrl_c_cancels_it() {
    let b = Bastion::start_with(RULES);
    let dir = b.env.path("victim");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new("ssh");
    cmd.args(b.ssh_options("alice"))
        .args(["-o", "SetEnv=VIGIL_REASON=INC-9"])
        .args(["-tt", "-p", &b.port.to_string(), "alice+web1@127.0.0.1"])
        .env("TERM", "xterm");
    let mut t = Pty::spawn(cmd, 100, 30);
    t.expect("\x1b[?2004h");
    t.send("export PS1='appr''-test$ '\r");
    t.expect("appr-test$ ");

    // Approved: the held line runs.
    let n = t.len();
    t.send(&format!("touch {}/one\r", dir.display()));
    t.expect_from(
        n,
        "waiting for approval #1 (rule touch-needs-review",
        Duration::from_secs(20),
    );
    assert!(t.output().contains("Ctrl-C cancels"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dir.join("one").exists());
    assert_eq!(approvals(&b, "dave", "approve 1").0, 0);
    t.expect_from(n, "granted by dave", Duration::from_secs(20));
    wait_until("the approved line ran", Duration::from_secs(20), || {
        dir.join("one").exists()
    });

    // Ctrl-C while waiting cancels the request; the session goes on.
    let n = t.len();
    t.send(&format!("touch {}/two\r", dir.display()));
    t.expect_from(n, "waiting for approval #2", Duration::from_secs(20));
    t.send("\x03");
    t.expect_from(
        n,
        "approval #2 cancelled (cancelled by the requester (Ctrl-C))",
        Duration::from_secs(20),
    );
    let (code, _, err) = approvals(&b, "dave", "approve 2");
    assert_eq!(code, 1);
    assert!(err.contains("#2 is cancelled"), "{err}");
    let n = t.len();
    t.send("echo still-here\r");
    t.expect_from(n, "still-here", Duration::from_secs(20));
    assert!(!dir.join("two").exists());

    // Denied: the line is cancelled with the reason.
    let n = t.len();
    t.send(&format!("touch {}/three\r", dir.display()));
    t.expect_from(n, "waiting for approval #3", Duration::from_secs(20));
    assert_eq!(approvals(&b, "bob", "deny 3 --reason wrong host").0, 0);
    t.expect_from(n, "denied by bob: wrong host", Duration::from_secs(20));
    t.send("exit\r");
    t.wait(Duration::from_secs(20));
    assert!(!dir.join("three").exists());
    assert!(b.audit().contains("\"action\":\"approval.cancel\""));
}

/// Writes by alice wait for a reviewer (rita, who acts on the host with `vigil approvals`);
/// inserts time out quickly.
const PG_RULES: &str = r#"
[[user]]
name = "rita"
roles = ["reviewer"]
[[user]]
name = "ravi"
roles = ["reviewer"]
[[role]]
name = "reviewer"
targets = ["appdb"]
[[rule]]
name = "writes-need-review"
targets = ["appdb"]
sql = ["UPDATE"]
action = "review"
approvers = ["reviewer"]
timeout = "30s"
[[rule]]
name = "deletes-need-two"
targets = ["appdb"]
sql = ["DELETE"]
action = "review"
approvers = ["reviewer"]
min_approvals = 2
timeout = "30s"
[[rule]]
name = "inserts-time-out"
targets = ["appdb"]
sql = ["INSERT"]
action = "review"
approvers = ["reviewer"]
timeout = "2s"
"#;

/// `vigil approvals ARGS` on the host, with the bastion's config.
fn host(b: &PgBastion, args: &[&str]) -> (i32, String, String) {
    run(crate::harness::vigil()
        .arg("approvals")
        .arg("--config")
        .arg(b.env.path("vigil.toml"))
        .args(args))
}

fn pg_until_pending(b: &PgBastion, id: u64, client: Option<&mut Child>) {
    pending(&|| host(b, &["list"]).1, id, client);
}

/// psql as alice in the background.
fn psql_held(b: &PgBastion, sql: &str) -> Child {
    Command::new("psql")
        .env("PGPASSWORD", ALICE_PW)
        .args([&b.conninfo("alice"), "-At", "-c", sql])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a value on the target directly, not through vigil.
fn direct(b: &PgBastion, sql: &str) -> String {
    let (code, out, err) = run(Command::new("psql").env("PGPASSWORD", PASSWORD).args([
        &format!(
            "host=127.0.0.1 port={} user={USER} dbname={DATABASE} sslmode=disable",
            b.server.port
        ),
        "-At",
        "-c",
        sql,
    ]));
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

#[test]
fn a_held_statement_pipelined_behind_another_waits_for_its_approval_too() {
    let b = PgBastion::start_full("", PG_RULES);
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    let (client, conn) =
        b.rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls))
            .unwrap();
    b.rt.spawn(conn);
    // Both Query messages are queued before the connection writes: they reach vigil in one
    // write, and the UPDATE is not the first message of that read.
    let both = b.rt.spawn(async move {
        let first = client.simple_query("select 1");
        let second = client.simple_query("UPDATE orders SET total = 13 WHERE id = 10");
        let (first, second) = futures::join!(first, second);
        (first.map(|_| ()), second.map(|_| ()))
    });
    pg_until_pending(&b, 1, None);
    assert_eq!(direct(&b, "select total from orders where id = 10"), "9.5");
    let (code, _, err) = host(&b, &["approve", "1", "--as", "rita"]);
    assert_eq!(code, 0, "{err}");
    let (first, second) = b.rt.block_on(both).unwrap();
    first.unwrap();
    second.unwrap();
    assert_eq!(direct(&b, "select total from orders where id = 10"), "13");
}

#[test]
fn psql_and_tokio_postgres_statements_wait_for_approval() {
    let b = PgBastion::start_full("", PG_RULES);
    let total = || direct(&b, "select total from orders where id = 10");

    // psql: a NoticeResponse names the request; nothing reaches the target before approval.
    let mut child = psql_held(
        &b,
        "/* reason: INC-5 refund */ UPDATE orders SET total = 12 WHERE id = 10",
    );
    pg_until_pending(&b, 1, Some(&mut child));
    let (_, shown, _) = host(&b, &["show", "1"]);
    for want in [
        "requester: alice",
        "appdb (postgres)",
        "writes-need-review",
        "UPDATE orders SET total = 12",
        "INC-5 refund",
    ] {
        assert!(shown.contains(want), "`{want}` missing from {shown}");
    }
    assert_eq!(total(), "9.5");
    // The session index in the state store shows the waiting session.
    let (code, live, err) = run(crate::harness::vigil()
        .args(["sessions", "--live", "--json", "--config"])
        .arg(b.env.path("vigil.toml")));
    assert_eq!(code, 0, "{err}");
    let live: Vec<serde_json::Value> = live
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (live[0]["user"].as_str(), live[0]["protocol"].as_str()),
        (Some("alice"), Some("postgres"))
    );
    assert!(live[0]["start"].is_string());
    // On the host too: no self-approval, and an approver must hold the rule's role.
    let (code, _, err) = host(&b, &["approve", "1", "--as", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("can never approve"), "{err}");
    let (code, _, err) = host(&b, &["approve", "1", "--as", "erin"]);
    assert_eq!(code, 1);
    assert!(err.contains("may not decide on #1"), "{err}");
    let (code, _, err) = host(&b, &["approve", "1", "--as", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("nobody is not a user"), "{err}");
    let (code, out, err) = host(&b, &["approve", "1", "--as", "rita", "--reason", "ok"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now approved"), "{out}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("waiting for approval #1 (rule writes-need-review"),
        "{err}"
    );
    assert_eq!(total(), "12");

    // Denied: an ErrorResponse with the reason; the statement never ran.
    let mut child = psql_held(&b, "UPDATE orders SET total = 99 WHERE id = 10");
    pg_until_pending(&b, 2, Some(&mut child));
    let (code, _, err) = host(
        &b,
        &["deny", "2", "--as", "rita", "--reason", "wrong order"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 1);
    assert!(
        err.contains("approval #2 denied by rita: wrong order"),
        "{err}"
    );
    assert_eq!(total(), "12");

    // Timed out.
    let (code, _, err) = finish(psql_held(&b, "INSERT INTO orders VALUES (11, 2, 1)"));
    assert_eq!(code, 1);
    assert!(err.contains("approval #3 timed out"), "{err}");
    assert_eq!(direct(&b, "select count(*) from orders where id = 11"), "0");
    let (code, _, err) = host(&b, &["approve", "3", "--as", "rita"]);
    assert_eq!(code, 1);
    assert!(err.contains("#3 is expired"), "{err}");

    // tokio-postgres (extended protocol): the approval covers the Parse and one execution; a
    // second execution of the same prepared statement is refused.
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    let (client, conn) =
        b.rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls))
            .unwrap();
    b.rt.spawn(conn);
    let prepare = b.rt.spawn(async move {
        let st = client
            .prepare("UPDATE orders SET total = $1::int WHERE id = 10")
            .await?;
        let first = client.execute(&st, &[&20i32]).await?;
        let second = client.execute(&st, &[&30i32]).await;
        Ok::<_, tokio_postgres::Error>((first, second))
    });
    pg_until_pending(&b, 4, None);
    assert_eq!(host(&b, &["approve", "4", "--as", "rita"]).0, 0);
    let (first, second) = b.rt.block_on(prepare).unwrap().unwrap();
    assert_eq!(first, 1);
    let e = second.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(db.message().contains("one execution"), "{db:?}");
    assert_eq!(total(), "20");
    // The used approval cannot be approved again.
    let (code, _, err) = host(&b, &["deny", "4", "--as", "rita", "--reason", "late"]);
    assert_eq!(code, 1);
    assert!(err.contains("#4 is used"), "{err}");

    // A CancelRequest (psql's Ctrl-C) cancels the request the session waits for.
    let (client, conn) =
        b.rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls))
            .unwrap();
    b.rt.spawn(conn);
    let cancel = client.cancel_token();
    let waiting = b.rt.spawn(async move {
        client
            .simple_query("DELETE FROM orders WHERE id = 10")
            .await
            .map(|_| ())
    });
    pg_until_pending(&b, 5, None);
    b.rt.block_on(cancel.cancel_query(tokio_postgres::NoTls))
        .unwrap();
    let e = b.rt.block_on(waiting).unwrap().unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message()
            .contains("approval #5 cancelled (cancelled by the client"),
        "{db:?}"
    );
    assert!(host(&b, &["show", "5"]).1.contains("#5 cancelled"));
    assert_eq!(direct(&b, "select count(*) from orders where id = 10"), "1");

    // min_approvals = 2: the same approver twice does not count; a second one does.
    let mut child = psql_held(&b, "DELETE FROM orders WHERE id = 10");
    pg_until_pending(&b, 6, Some(&mut child));
    assert_eq!(host(&b, &["approve", "6", "--as", "rita"]).0, 0);
    let (code, _, err) = host(&b, &["approve", "6", "--as", "rita"]);
    assert_eq!(code, 1);
    assert!(err.contains("rita already decided on #6"), "{err}");
    std::thread::sleep(Duration::from_millis(700));
    assert!(host(&b, &["show", "6"])
        .1
        .contains("#6 pending, 1 approval(s) of 2"));
    assert_eq!(direct(&b, "select count(*) from orders where id = 10"), "1");
    let (code, out, err) = host(&b, &["approve", "6", "--as", "ravi"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("now approved"), "{out}");
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    assert_eq!(direct(&b, "select count(*) from orders where id = 10"), "0");

    let (_, all, _) = host(&b, &["list", "--all", "--json"]);
    assert_eq!(all.lines().count(), 6, "{all}");
    // Every session ended: none is live any more.
    wait_until("no live sessions", Duration::from_secs(20), || {
        run(crate::harness::vigil()
            .args(["sessions", "--live", "--config"])
            .arg(b.env.path("vigil.toml")))
        .1
        .is_empty()
    });
    // Host-side decisions reach the bastion's audit log through the store's outbox.
    let audit = || std::fs::read_to_string(b.env.path("state/audit.log")).unwrap();
    wait_until(
        "host decisions are audited",
        Duration::from_secs(20),
        || {
            let log = audit();
            log.contains("\"source\":\"host:uid")
                && log.contains("\"action\":\"approval.refused\"")
                && log.contains("\"action\":\"approval.deny\"")
        },
    );
}

#[test]
fn a_pending_request_survives_a_restart_and_its_approval_runs_the_command_once() {
    let mut b = Bastion::start_with(RULES);
    let dir = b.env.path("victim");
    std::fs::create_dir_all(&dir).unwrap();
    let cmd = format!("touch {}", dir.join("after-restart").display());
    let mut child = held(&b, "alice", &cmd, "INC-11");
    until_pending(&b, 1, &mut child);
    // A second request with a short timeout, whose session the restart ends too.
    let mut short = held(
        &b,
        "alice",
        &format!("chown nobody {}", dir.join("never").display()),
        "",
    );
    until_pending(&b, 2, &mut short);
    b.restart();
    let (code, _, err) = finish(child);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("request #1 stays pending"), "{err}");
    assert_ne!(finish(short).0, 0);
    // Nobody waits for #2 any more; it expires all the same, audited.
    wait_until("#2 expired", Duration::from_secs(20), || {
        approvals(&b, "bob", "show 2").1.contains("#2 expired")
    });
    assert!(b.audit().contains("\"action\":\"approval.expire\""));
    // The restarted bastion still has the request; bob approves it there.
    let (_, list, _) = approvals(&b, "bob", "list");
    assert!(list.contains("#1 pending") && list.contains(&cmd), "{list}");
    assert_eq!(approvals(&b, "bob", "approve 1").0, 0);
    // alice runs the same command again: the approval covers it, once.
    let (code, _, err) = run(b.ssh("alice", "alice+web1").arg(&cmd));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("covered by approval #1"), "{err}");
    assert!(dir.join("after-restart").exists());
    std::fs::remove_file(dir.join("after-restart")).unwrap();
    // A replay asks anew.
    let mut child = held(&b, "alice", &cmd, "again");
    until_pending(&b, 3, &mut child);
    assert_eq!(approvals(&b, "bob", "deny 3 --reason once is enough").0, 0);
    assert_eq!(finish(child).0, 126);
    assert!(!dir.join("after-restart").exists());
}

/// A tiny HTTP receiver: answers 500 to the first request (to exercise retries), then 200;
/// keeps every body.
struct Receiver {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                served += 1;
                let status = if served == 1 {
                    "500 Internal Server Error"
                } else {
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, bodies }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

#[test]
fn two_instances_share_a_postgres_state_store_and_notify_a_webhook() {
    let state = crate::pgserver::PgServer::start(crate::pgserver::Auth::ScramSha256, false);
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
        state.port
    );
    let hook = Receiver::start();
    let server = format!("state = \"{url}\"");
    let rules = format!(
        "{RULES}\n[approvals]\nwebhook = \"http://127.0.0.1:{}/vigil\"\npoll_interval = \"60s\"\n",
        hook.port
    );
    let a = Bastion::start_full(&server, &rules);
    let b = Bastion::start_full(&server, &rules);
    let dir = a.env.path("victim");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("via-b");
    // Raised on instance a ...
    let mut child = held(&a, "alice", &format!("touch {}", file.display()), "INC-3");
    until_pending(&b, 1, &mut child);
    // ... the separation of duties holds on instance b too ...
    let (code, _, err) = approvals(&b, "alice", "approve 1");
    assert_eq!(code, 1);
    assert!(err.contains("can never approve"), "{err}");
    // ... approved through instance b; the held command runs on a, at once: a hears of it
    // through LISTEN/NOTIFY (its poll interval here is a minute).
    let (code, _, err) = approvals(&b, "bob", "approve 1 --reason fine");
    assert_eq!(code, 0, "{err}");
    let approved = std::time::Instant::now();
    let (code, _, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    assert!(
        approved.elapsed() < Duration::from_secs(15),
        "a learned of the approval only after {:?}",
        approved.elapsed()
    );
    assert!(file.exists());
    // Both instances see the used approval; neither takes it again.
    for bastion in [&a, &b] {
        let (code, _, err) = approvals(bastion, "dave", "approve 1");
        assert_eq!(code, 1);
        assert!(err.contains("#1 is used"), "{err}");
    }

    // An operator on a host with only the state store's URL denies as dave; the held command
    // on a ends at once, and an instance records the host's decision in its audit log.
    let cli = a.env.path("cli.toml");
    std::fs::write(
        &cli,
        format!("[server]\n{server}\n[[user]]\nname = \"dave\"\nroles = [\"tunneler\"]\n[[role]]\nname = \"tunneler\"\n"),
    )
    .unwrap();
    let mut child = held(
        &a,
        "alice",
        &format!("touch {}", dir.join("never").display()),
        "",
    );
    until_pending(&b, 2, &mut child);
    let (code, out, err) = run(crate::harness::vigil()
        .args(["approvals", "--config"])
        .arg(&cli)
        .args(["deny", "2", "--as", "dave", "--reason", "from the host"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("#2 denied by dave"), "{out}");
    let denied = std::time::Instant::now();
    let (code, _, err) = finish(child);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("denied by dave: from the host"), "{err}");
    assert!(denied.elapsed() < Duration::from_secs(15));
    wait_until(
        "an instance audited the host's denial",
        Duration::from_secs(20),
        || {
            [&a, &b]
                .iter()
                .any(|x| x.audit().contains("\"source\":\"host:uid"))
        },
    );

    // The webhook got the request and the decisions, despite the receiver's first failure.
    wait_until(
        "the webhook got the request, the vote and the grant of #1",
        Duration::from_secs(30),
        || {
            let events = hook.events();
            ["approval.request", "approval.approve", "approval.granted"]
                .iter()
                .all(|want| {
                    events
                        .iter()
                        .any(|e| e["event"] == *want && e["approval"]["id"] == 1)
                })
        },
    );
    let events = hook.events();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for want in ["approval.request", "approval.approve", "approval.granted"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    // Request #1's: the receiver failed its first delivery, so the retry can land after
    // request #2's (which has no reason).
    let request = events
        .iter()
        .find(|e| e["event"] == "approval.request" && e["approval"]["id"] == 1)
        .unwrap();
    assert_eq!(request["approval"]["requester"], "alice");
    assert_eq!(request["approval"]["reason"], "INC-3");
    assert_eq!(request["approval"]["target"], "web1");
    let vote = events
        .iter()
        .find(|e| e["event"] == "approval.approve" && e["approval"]["id"] == 1)
        .unwrap();
    assert_eq!(vote["actor"], "bob");
    assert_eq!(vote["reason"], "fine");
}
