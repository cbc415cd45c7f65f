//! The Postgres bastion end to end: real `psql` and tokio-postgres through vigil (in-process on
//! 127.0.0.1:0) to a real PostgreSQL 15 started by the harness.

use std::{process::Command, time::Duration};

use vigil::{config::Config, pg::scram::Verifier};

use crate::{
    harness::{run, Env},
    pgserver::{Auth, PgServer, DATABASE, PASSWORD, USER},
};

pub const ALICE_PW: &str = "alice-pw";
const ERIN_PW: &str = "erin-pw";

pub struct PgBastion {
    pub env: Env,
    pub server: PgServer,
    pub port: u16,
    running: Option<vigil::daemon::Running>,
    pub rt: tokio::runtime::Runtime,
}

impl PgBastion {
    /// Users alice (engineer: masked, DROP and DELETE-without-WHERE denied) and erin (auditor:
    /// exempt from masks) on target `appdb`, a real PostgreSQL with `users` and `orders`.
    pub fn start() -> PgBastion {
        Self::start_with("")
    }

    /// With extra `[server]` keys (TLS, limits). `server_extra` may use `{dir}` for the test's
    /// directory.
    pub fn start_with(server_extra: &str) -> PgBastion {
        Self::start_full(server_extra, "")
    }

    /// With extra `[server]` keys and `extra` TOML at the end (users, roles, rules); the config
    /// is also written to `vigil.toml` in the test's directory, for `vigil approvals`.
    pub fn start_full(server_extra: &str, extra: &str) -> PgBastion {
        let env = Env::new();
        let server_extra = server_extra.replace("{dir}", &env.dir.path().display().to_string());
        let server = PgServer::start(Auth::ScramSha256, false);
        let direct = format!(
            "host=127.0.0.1 port={} user={USER} dbname={DATABASE} sslmode=disable",
            server.port
        );
        let (code, _, err) = run(Command::new("psql")
            .env("PGPASSWORD", PASSWORD)
            .args([&direct, "-v", "ON_ERROR_STOP=1", "-qc"])
            .arg(
                "create table users (id int primary key, name text, email text, ssn text);\
                 insert into users values (1, 'ann', 'ann@example.com', '123-45-6789'), (2, 'bo', 'bo@example.com', '987-65-4321');\
                 create table orders (id int, user_id int, total numeric);\
                 insert into orders values (10, 1, 9.5);\
                 create view v_users as select id, upper(ssn) as s, name from users;",
            ));
        assert_eq!(code, 0, "{err}");
        std::env::set_var("VIGIL_TEST_APPDB_PASSWORD", PASSWORD);
        let extra = extra.replace("{addr}", &server.address());
        let alice = Verifier::generate(ALICE_PW, 4096).unwrap().to_postgres();
        let erin = Verifier::generate(ERIN_PW, 4096).unwrap().to_postgres();
        let text = format!(
            r#"
[listen]
postgres = "127.0.0.1:0"
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
password = "{alice}"
[[user]]
name = "erin"
roles = ["auditor"]
password = "{erin}"
[[target]]
name = "appdb"
protocol = "postgres"
address = "{addr}"
database = "{DATABASE}"
user = "{USER}"
password_env = "VIGIL_TEST_APPDB_PASSWORD"
[[role]]
name = "engineer"
targets = ["appdb"]
[[role]]
name = "auditor"
targets = ["appdb"]
[[rule]]
name = "no-destructive-sql"
targets = ["appdb"]
sql = ["DROP", "TRUNCATE", "DELETE without WHERE", "UPDATE without WHERE"]
action = "deny"
message = "destructive statements are blocked"
[[mask]]
target = "appdb"
columns = ["public.users.email", "public.users.ssn"]
method = "redact"
except_roles = ["auditor"]
{extra}
"#,
            rcpt = env.secret.public(),
            addr = server.address(),
        );
        let config =
            Config::parse(&text, env.dir.path()).unwrap_or_else(|p| panic!("test config: {p:?}"));
        std::fs::write(env.path("vigil.toml"), &text).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = rt.block_on(vigil::daemon::start(config)).unwrap();
        let port = running.postgres.unwrap().port();
        PgBastion {
            env,
            server,
            port,
            running: Some(running),
            rt,
        }
    }

    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=appdb sslmode=disable",
            self.port
        )
    }

    /// psql as `user` with `password`: (exit code, stdout, stderr).
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> (i32, String, String) {
        run(Command::new("psql").env("PGPASSWORD", password).args([
            &self.conninfo(user),
            "-At",
            "-c",
            sql,
        ]))
    }

    pub fn store(&self) -> String {
        self.env.path("store").display().to_string()
    }

    /// Runs a reading command of `vigil` on this bastion's store with the auditor key, once
    /// every recording is closed.
    pub fn vigil(&self, args: &[&str]) -> (i32, String, String) {
        let list = || {
            run(crate::harness::vigil().args(["sessions", "--json", "--store", &self.store()])).1
        };
        crate::harness::wait_until("recordings are closed", Duration::from_secs(20), || {
            list().lines().all(|l| l.contains("\"state\":\"closed\""))
        });
        run(crate::harness::vigil()
            .args(args)
            .args(["--store", &self.store(), "--key"])
            .arg(self.env.key_path()))
    }
}

impl Drop for PgBastion {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown(Duration::from_secs(10)));
        }
        if !std::thread::panicking() {
            let (code, out, err) = run(crate::harness::vigil()
                .args(["verify", "--all", "--store", &self.store(), "--key"])
                .arg(self.env.key_path()));
            assert_eq!(code, 0, "recordings do not verify: {out}{err}");
        }
    }
}

#[test]
fn psql_queries_denylist_and_scram() {
    let b = PgBastion::start();
    let (code, out, err) = b.psql("alice", ALICE_PW, "select id, name from users order by id");
    assert_eq!((code, out.as_str()), (0, "1|ann\n2|bo\n"), "{err}");
    // Wrong password and unknown user: the same refusal.
    let (code, _, err) = b.psql("alice", "nope", "select 1");
    assert_ne!(code, 0);
    assert!(err.contains("password authentication failed"), "{err}");
    let (code, _, err) = b.psql("mallory", "nope", "select 1");
    assert_ne!(code, 0);
    assert!(err.contains("password authentication failed"), "{err}");
    // Denied statements get 42501 with the rule's message; their benign twins run.
    for sql in [
        "drop table orders",
        "DROP TABLE public.orders",
        "delete from orders",
        "delete from orders where true",
        "select 1; drop table orders",
        "with d as (delete from orders returning *) select * from d",
        "truncate orders",
    ] {
        let (code, _, err) = b.psql("alice", ALICE_PW, sql);
        assert_ne!(code, 0, "{sql} was not refused");
        assert!(
            err.contains("destructive statements are blocked"),
            "{sql}: {err}"
        );
    }
    let (code, out, err) = b.psql(
        "alice",
        ALICE_PW,
        "delete from orders where id = 99; select count(*) from orders",
    );
    assert_eq!((code, out.as_str()), (0, "DELETE 0\n1\n"), "{err}");
    // The session stays usable after a refusal.
    let (_, out, err) = b.psql("alice", ALICE_PW, "select 'a'");
    assert_eq!(out.trim(), "a", "{err}");
    let mut c = Command::new("psql");
    c.env("PGPASSWORD", ALICE_PW).args([
        &b.conninfo("alice"),
        "-At",
        "-c",
        "drop table orders",
        "-c",
        "select 'still-here'",
    ]);
    let (_, out, err) = run(&mut c);
    assert!(out.contains("still-here"), "{out}{err}");
    // The recordings: `vigil search` finds SQL and row values, `vigil export` shows the denied
    // statement with its rule and vigil's error (not the target's).
    let (code, out, err) = b.vigil(&["search", "from users order by id"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = b.vigil(&["search", "ann"]);
    assert_eq!(code, 0, "{out}");
    let (_, list, _) = b.vigil(&["sessions", "--json"]);
    let mut seen_denial = false;
    for line in list.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap();
        let (code, text, err) = b.vigil(&["export", id, "--format", "text"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            !text.contains("syntax error"),
            "the target's stand-in error leaked into the recording: {text}"
        );
        if text.contains("drop table orders") && text.contains("destructive statements are blocked")
        {
            seen_denial = true;
        }
        let (code, _, err) = b.vigil(&["play", id, "--speed", "1000"]);
        assert_eq!(code, 0, "{err}");
    }
    assert!(seen_denial, "no recording shows the refused DROP");
}

#[test]
fn masked_columns_never_leave_unmasked() {
    let b = PgBastion::start();
    let leaks =
        |out: &str| out.contains("6789") || out.contains("4321") || out.contains("@example.com");
    for sql in [
        "select ssn from users",
        "select ssn as x from users",
        "select * from users",
        "select u.* from users u",
        "select upper(ssn) from users",
        "select ssn || '' from users",
        "select ssn::varchar from users",
        "select (select ssn from users limit 1)",
        "select x from (select ssn as x from users) s",
        "with c as (select email from users) select * from c",
        "select row_to_json(u) from users u",
        "select s from v_users",
        "select name from users union select ssn from users",
        "select string_agg(ssn, ',') from users",
        "copy users to stdout",
        "copy (select email from users) to stdout",
    ] {
        let (code, out, err) = b.psql("alice", ALICE_PW, sql);
        assert!(!leaks(&out), "{sql} leaked: {out}");
        assert!(!leaks(&err), "{sql} leaked in an error: {err}");
        let _ = code;
    }
    // Benign twins stay as they are.
    let (_, out, _) = b.psql("alice", ALICE_PW, "select count(*), max(id) from users");
    assert_eq!(out.trim(), "2|2");
    let (_, out, _) = b.psql("alice", ALICE_PW, "select name from users order by id");
    assert_eq!(out, "ann\nbo\n");
    let (_, out, _) = b.psql("alice", ALICE_PW, "select ssn from users order by id");
    assert_eq!(out, "****\n****\n");
    // psql's catalog queries work for a masked user.
    let (code, out, err) = b.psql("alice", ALICE_PW, "\\d users");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ssn"), "{out}");
    // The auditor is exempt.
    let (_, out, _) = b.psql("erin", ERIN_PW, "select ssn from users order by id");
    assert_eq!(out, "123-45-6789\n987-65-4321\n");
    // The recordings hold what each client saw: alice's never the values, erin's do.
    let (code, out, _) = b.vigil(&["search", "6789", "--user", "alice"]);
    assert_eq!(code, 1, "a masked value is in alice's recordings: {out}");
    let (code, out, _) = b.vigil(&["search", "6789", "--user", "erin"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = b.vigil(&["search", "****", "--user", "alice"]);
    assert_eq!(code, 0, "{out}");
}

/// A tokio-postgres client, its connection driven on the calling runtime.
async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[test]
fn extended_protocol_binary_and_cancel_with_tokio_postgres() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        // Parameters, binary results: text columns masked type-correctly.
        let rows = client
            .query("select id, name, ssn from users where id = $1", &[&1i32])
            .await
            .unwrap();
        let (id, name, ssn): (i32, String, String) =
            (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!((id, name.as_str(), ssn.as_str()), (1, "ann", "****"));
        // A prepared statement reused.
        let st = client
            .prepare("select email from users where id = $1")
            .await
            .unwrap();
        for i in [1i32, 2] {
            let r = client.query_one(&st, &[&i]).await.unwrap();
            let email: String = r.get(0);
            assert!(!email.contains('@'), "{email}");
        }
        // A refused statement: 42501, and the connection goes on.
        let err = client.execute("drop table orders", &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        let r = client
            .query_one("select count(*) from orders", &[])
            .await
            .unwrap();
        let n: i64 = r.get(0);
        assert_eq!(n, 1);
        // Cancel: vigil's key maps to the target's. The target ignores a cancel that arrives
        // before the query runs, so it is sent again every 300 ms until the query ends (one
        // still on its way then could only meet the next statement if it took that long).
        let token = client.cancel_token();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sleeper = tokio::spawn({
            let done = done.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        return Ok::<(), tokio_postgres::Error>(());
                    }
                    token.cancel_query(tokio_postgres::NoTls).await?;
                }
            }
        });
        let err = client
            .execute("select pg_sleep(30)", &[])
            .await
            .unwrap_err();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{err}"
        );
        sleeper.await.unwrap().unwrap();
        let r = client.query_one("select 1::int4", &[]).await.unwrap();
        let one: i32 = r.get(0);
        assert_eq!(one, 1);
    });
}

/// The error is vigil's refusal (SQLSTATE 42501); returns its message.
fn assert_refused(err: &tokio_postgres::Error) -> String {
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default()
}

/// What SIGHUP does: the running bastion takes `text` as its config.
fn reload(b: &PgBastion, text: &str) {
    let config = Config::parse(text, b.env.dir.path()).unwrap();
    b.running.as_ref().unwrap().gateway.reload(config).unwrap();
}

#[test]
fn a_portal_bound_before_a_reload_is_decided_again_before_it_runs_on() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let mut client = connect(&conninfo).await;
        client
            .batch_execute("insert into orders select g, 1, 1.0 from generate_series(100, 109) g")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        let select = tx
            .prepare("select id from orders where id >= 100 order by id")
            .await
            .unwrap();
        let portal = tx.bind(&select, &[]).await.unwrap();
        // The portal runs under the policy it was bound with: two rows at a time.
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(ids, [100, 101]);
        // SIGHUP's work: reading orders is now denied.
        let text = std::fs::read_to_string(b.env.path("vigil.toml")).unwrap()
            + "[[rule]]\nname = \"orders-closed\"\ntargets = [\"appdb\"]\nsql = [\"SELECT on orders\"]\naction = \"deny\"\nmessage = \"orders are closed\"\n";
        reload(&b, &text);
        // The next fetch from the same portal is refused with the new rule's message, and
        // brings no row.
        let message = assert_refused(&tx.query_portal(&portal, 2).await.unwrap_err());
        assert!(message.contains("orders are closed"), "{message}");
        tx.rollback().await.unwrap();
        // The session goes on: the benign twin runs, the denied statement stays denied.
        let r = client.query_one("select count(*) from users", &[]).await.unwrap();
        assert!(r.get::<_, i64>(0) > 0);
        let err = client
            .query("select id from orders where id >= 100 order by id", &[])
            .await
            .unwrap_err();
        assert_refused(&err);
    });
}

#[test]
fn a_config_reload_applies_to_open_sessions_and_their_prepared_statements() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        let insert = client
            .prepare("insert into orders values (11, 2, 1.0)")
            .await
            .unwrap();
        client.execute(&insert, &[]).await.unwrap();
        let column = |sql: &'static str| {
            let client = &client;
            async move {
                let r = client.query_one(sql, &[]).await.unwrap();
                r.get::<_, Option<String>>(0)
            }
        };
        let name = "select name from users where id = 1";
        assert_eq!(column(name).await.as_deref(), Some("ann"));
        let insert_text = "insert into orders values (12, 2, 1.0)";
        client.execute(insert_text, &[]).await.unwrap();
        client
            .batch_execute("declare c cursor with hold for select upper(name) from users order by id")
            .await
            .unwrap();
        let fetch = || async {
            let rows = client.simple_query("fetch 1 from c").await.unwrap();
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(String::from)),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(fetch().await.as_deref(), Some("ANN"));

        // SIGHUP's work, while the session is inside a transaction: INSERT is now denied, and
        // users.name is masked too.
        let ids = client
            .prepare("select id from users where id = 1")
            .await
            .unwrap();
        client.batch_execute("begin").await.unwrap();
        let text = std::fs::read_to_string(b.env.path("vigil.toml"))
            .unwrap()
            .replace(
                r#"columns = ["public.users.email", "public.users.ssn"]"#,
                r#"columns = ["public.users.email", "public.users.ssn", "public.users.name"]"#,
            )
            + "[[rule]]\nname = \"frozen\"\ntargets = [\"appdb\"]\nsql = [\"INSERT\"]\naction = \"deny\"\nmessage = \"inserts are frozen\"\n";
        reload(&b, &text);
        // The masked columns cannot be read again inside the transaction: until it ends,
        // nothing but transaction control runs.
        assert_refused(&client.query_one(&ids, &[]).await.unwrap_err());
        let message = assert_refused(&client.query_one(name, &[]).await.unwrap_err());
        assert!(message.contains("config reload"), "{message}");
        client.batch_execute("commit").await.unwrap();
        client.simple_query("select 1").await.unwrap();

        // The same session: a text it ran before and the statement it prepared before follow
        // the new rules, the new mask holds, and other columns come back again.
        for err in [
            client.execute(insert_text, &[]).await.unwrap_err(),
            client.execute(&insert, &[]).await.unwrap_err(),
        ] {
            assert_refused(&err);
        }
        assert_ne!(column(name).await.as_deref(), Some("ann"));
        // A statement refused only while the masks were pending runs again.
        let r = client.query_one(&ids, &[]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 1);
        // A cursor analysed with the old masks does not keep them.
        assert_ne!(fetch().await.as_deref(), Some("BO"));
        assert_eq!(
            column("select 'public'::text").await.as_deref(),
            Some("public")
        );
        let r = client
            .query_one("select count(*) from orders", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 3);
    });
    // A new session too.
    let (code, out, err) = b.psql("alice", ALICE_PW, "insert into orders values (13, 2, 1.0)");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("inserts are frozen"), "{err}");
}

#[test]
fn malformed_messages_get_an_error_and_the_bastion_keeps_serving() {
    use std::io::{Read, Write};
    let b = PgBastion::start();
    for junk in [
        &b"\x00\x00\x00\x08\x00\x09\x00\x00"[..], // protocol 9.0
        &b"\x00\x00\x00\x02"[..],                 // length below the minimum
        &b"\x7f\xff\xff\xff\x00\x03\x00\x00"[..], // 2 GiB startup packet
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty() || buf[0] == b'E', "{buf:?}");
    }
    // SSLRequest after SSLRequest: two are answered, then the connection is closed.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&b"\x00\x00\x00\x08\x04\xd2\x16\x2f".repeat(3))
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(buf, b"NN");
    let (code, out, err) = b.psql("alice", ALICE_PW, "select 'alive'");
    assert_eq!((code, out.trim()), (0, "alive"), "{err}");
}

#[test]
fn startup_parameters_are_sets_that_rules_can_deny() {
    let b = PgBastion::start_full(
        "",
        r#"
[[rule]]
name = "fixed-app-name"
targets = ["appdb"]
sql = ["SET APPLICATION_NAME"]
action = "deny"
message = "application_name is fixed here"
"#,
    );
    // psql sends application_name at startup.
    let (code, _, err) = b.psql("alice", ALICE_PW, "select 1");
    assert_ne!(code, 0);
    assert!(err.contains("application_name is fixed here"), "{err}");
    // A client that does not log in.
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        let r = client.query_one("select 1", &[]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 1);
    });
}

#[test]
fn a_target_that_dies_mid_query_gives_the_client_an_error() {
    let mut b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    let (client, conn) =
        b.rt.block_on(tokio_postgres::connect(&conninfo, tokio_postgres::NoTls))
            .unwrap();
    b.rt.spawn(conn);
    let query =
        b.rt.spawn(async move { client.simple_query("select pg_sleep(30)").await });
    std::thread::sleep(Duration::from_millis(700));
    b.server.kill();
    let result = b.rt.block_on(query).unwrap();
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("target") || err.is_closed() || err.code().is_some(),
        "{err}"
    );
    // The bastion itself is still up: a new session gets vigil's clear refusal.
    let (code, _, stderr) = b.psql("alice", ALICE_PW, "select 1");
    assert_ne!(code, 0);
    assert!(stderr.contains("unavailable"), "{stderr}");
}

#[test]
fn vigil_passwd_prints_a_verifier_that_authenticates() {
    use std::io::Write;
    let mut child = crate::harness::vigil()
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("SCRAM-SHA-256$4096:"), "{line}");
    assert!(!line.contains("hunter2"));
    Verifier::parse(line.trim()).unwrap();
}

/// pgbench tables made directly on the target (pgbench -i drops tables, which policy denies).
fn pgbench_init(b: &PgBastion) {
    let (code, _, err) = run(Command::new(format!("{}/pgbench", crate::pgserver::PG_BIN))
        .env("PGPASSWORD", PASSWORD)
        .args(["-i", "-s", "1", "-q", &direct(b)]));
    assert_eq!(code, 0, "pgbench -i: {err}");
}

/// The target's conninfo, as its owner, without vigil.
fn direct(b: &PgBastion) -> String {
    format!(
        "host=127.0.0.1 port={} user={USER} dbname={DATABASE} sslmode=disable",
        b.server.port
    )
}

/// Runs `sql` on the target directly, as its owner.
fn direct_psql(b: &PgBastion, sql: &str) {
    let (code, _, err) = run(Command::new("psql").env("PGPASSWORD", PASSWORD).args([
        &direct(b),
        "-v",
        "ON_ERROR_STOP=1",
        "-qc",
        sql,
    ]));
    assert_eq!(code, 0, "{sql}: {err}");
}

/// Runs `sql` on the target directly, as the superuser (over the Unix socket, trusted).
fn superuser_psql(b: &PgBastion, sql: &str) {
    let conninfo = format!(
        "host={} port={} user=postgres dbname={DATABASE}",
        b.server.dir.path().display(),
        b.server.port
    );
    let (code, _, err) =
        run(Command::new("psql").args([&conninfo, "-v", "ON_ERROR_STOP=1", "-qc", sql]));
    assert_eq!(code, 0, "{sql}: {err}");
}

#[test]
fn pgbench_runs_through_vigil_in_simple_and_prepared_modes() {
    let b = PgBastion::start();
    pgbench_init(&b);
    for mode in ["simple", "extended", "prepared"] {
        for script in [&["-S"][..], &[][..]] {
            let (code, out, err) =
                run(Command::new(format!("{}/pgbench", crate::pgserver::PG_BIN))
                    .env("PGPASSWORD", ALICE_PW)
                    .args(["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode])
                    .args(script)
                    .arg(b.conninfo("alice")));
            assert_eq!(code, 0, "pgbench -M {mode} {script:?}: {out}{err}");
            assert!(
                out.contains("number of transactions actually processed: 200/200"),
                "{out}"
            );
        }
    }
}

#[test]
fn psycopg3_through_vigil() {
    let b = PgBastion::start();
    let script = b.env.path("client.py");
    std::fs::write(&script, PSYCOPG_CLIENT).unwrap();
    let (code, out, err) = run(Command::new("python3").arg(&script).env(
        "CONNINFO",
        format!("{} password={ALICE_PW}", b.conninfo("alice")),
    ));
    assert!(
        !err.contains("No module named 'psycopg'"),
        "psycopg 3 is missing: python3 -m pip install 'psycopg[binary]'"
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "ok", "{out}{err}");
}

const PSYCOPG_CLIENT: &str = r#"
import os, psycopg
conn = psycopg.connect(os.environ["CONNINFO"], autocommit=True)
cur = conn.cursor()
# Server-side parameters, text and binary results.
cur.execute("select id, name, ssn from users where id = %s", (1,))
assert cur.fetchone() == (1, "ann", "****")
cur.execute("select email from users order by id", binary=True)
assert all("@" not in r[0] for r in cur.fetchall())
# A refused statement: 42501, the connection goes on.
try:
    cur.execute("drop table orders")
    raise SystemExit("drop was not refused")
except psycopg.errors.InsufficientPrivilege as e:
    assert "destructive statements are blocked" in str(e), str(e)
cur.execute("select count(*) from orders")
assert cur.fetchone()[0] == 1
# executemany (pipelined), COPY FROM STDIN, COPY TO STDOUT masked.
cur.executemany("insert into orders values (%s, %s, %s)", [(20, 2, 1), (21, 2, 2)])
with cur.copy("copy orders from stdin") as copy:
    copy.write_row((30, 1, 3))
cur.execute("select count(*) from orders")
assert cur.fetchone()[0] == 4
with cur.copy("copy users to stdout") as copy:
    data = b"".join(bytes(c) for c in copy)
assert b"6789" not in data and b"@" not in data, data
# A transaction with a refusal in it is aborted, as the server would abort it.
conn.autocommit = False
with conn.transaction():
    cur.execute("insert into orders values (40, 1, 1)")
try:
    with conn.transaction():
        cur.execute("insert into orders values (41, 1, 1)")
        cur.execute("truncate orders")
except psycopg.errors.InsufficientPrivilege:
    pass
cur.execute("select count(*) from orders where id in (40, 41)")
assert cur.fetchone()[0] == 1
print("ok")
"#;

#[test]
fn pipelined_batches_and_transactions_keep_their_order_around_a_refusal() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // Polled together, tokio-postgres pipelines them: each has its own Sync.
        let (a, d, c) = futures::join!(
            client.query_one("select 1::int4", &[]),
            client.execute("drop table orders", &[]),
            client.query_one("select 3::int4", &[]),
        );
        assert_eq!(a.unwrap().get::<_, i32>(0), 1);
        assert_eq!(
            d.unwrap_err().code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
        );
        assert_eq!(c.unwrap().get::<_, i32>(0), 3);
        // Regression: pipelined executions of the unnamed portal, a clean statement then a
        // masked one; each gets the masks of its own binding (once the second took the first's).
        let (clean, masked, clean2) = futures::join!(
            client.query("select name from users where id = $1", &[&1i32]),
            client.query("select ssn from users where id = $1", &[&1i32]),
            client.query("select name from users where id = $1", &[&2i32]),
        );
        assert_eq!(clean.unwrap()[0].get::<_, String>(0), "ann");
        assert_eq!(masked.unwrap()[0].get::<_, String>(0), "****");
        assert_eq!(clean2.unwrap()[0].get::<_, String>(0), "bo");
        // In a transaction, a refusal aborts it as any error does.
        let tx = client.transaction().await.unwrap();
        tx.execute("insert into orders values (50, 1, 1)", &[])
            .await
            .unwrap();
        assert!(tx.execute("delete from orders", &[]).await.is_err());
        let e = tx.query_one("select 1", &[]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
        );
        tx.rollback().await.unwrap();
        let n: i64 = client
            .query_one("select count(*) from orders where id = 50", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    });
}

#[test]
fn tls_for_clients_and_a_message_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let (code, _, err) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert_eq!(code, 0, "openssl (apt-get install openssl): {err}");
    let b = PgBastion::start_with(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = true\nmax_message_size = \"64KiB\"",
        cert.display(),
        key.display()
    ));
    let tls = |sql: &str| {
        run(Command::new("psql").env("PGPASSWORD", ALICE_PW).args([
            &b.conninfo("alice")
                .replace("sslmode=disable", "sslmode=require"),
            "-At",
            "-c",
            sql,
        ]))
    };
    // System catalogs are not masked (their OIDs are below the first user OID); the target
    // leg is plain here (the target's own setting), the client leg TLS.
    let (code, out, err) = tls("select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert_eq!((code, out.trim()), (0, "f"), "{err}");
    let (code, out, err) = tls("select relname from pg_class where relname = 'users'");
    assert_eq!((code, out.trim()), (0, "users"), "{err}");
    let (code, out, err) = tls("select ssn from users order by id limit 1");
    assert_eq!((code, out.trim()), (0, "****"), "{err}");
    // Without TLS: refused.
    let (code, _, err) = b.psql("alice", ALICE_PW, "select 1");
    assert_ne!(code, 0);
    assert!(err.contains("requires TLS"), "{err}");
    // A message over the limit: a protocol error, the bastion keeps serving.
    let big = format!("select '{}'", "x".repeat(100_000));
    let (code, _, err) = tls(&big);
    assert_ne!(code, 0);
    assert!(err.contains("exceeds the limit"), "{err}");
    let (code, out, _) = tls("select 'alive'");
    assert_eq!((code, out.trim()), (0, "alive"));
}

/// A raw protocol client over a plain socket, SCRAM included, so that a test controls exactly
/// which messages go in one write.
struct RawClient {
    s: std::net::TcpStream,
    rbuf: bytes::BytesMut,
}

impl RawClient {
    fn login(port: u16, user: &str, password: &str) -> RawClient {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::{backend::Message, frontend};
        use std::io::Write;
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = RawClient {
            s,
            rbuf: bytes::BytesMut::new(),
        };
        let mut buf = bytes::BytesMut::new();
        frontend::startup_message([("user", user), ("database", "appdb")], &mut buf).unwrap();
        c.s.write_all(&buf).unwrap();
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        loop {
            buf.clear();
            match c.next() {
                Message::AuthenticationSasl(_) => {
                    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut buf)
                        .unwrap();
                }
                Message::AuthenticationSaslContinue(b) => {
                    scram.update(b.data()).unwrap();
                    frontend::sasl_response(scram.message(), &mut buf).unwrap();
                }
                Message::AuthenticationSaslFinal(b) => scram.finish(b.data()).unwrap(),
                Message::ReadyForQuery(_) => return c,
                Message::ErrorResponse(_) => panic!("login as {user} failed"),
                _ => {}
            }
            if !buf.is_empty() {
                c.s.write_all(&buf).unwrap();
            }
        }
    }

    fn next(&mut self) -> postgres_protocol::message::backend::Message {
        use std::io::Read;
        loop {
            if let Some(m) =
                postgres_protocol::message::backend::Message::parse(&mut self.rbuf).unwrap()
            {
                return m;
            }
            let mut chunk = [0u8; 8192];
            let n = self.s.read(&mut chunk).expect("vigil answers in time");
            assert!(n > 0, "vigil closed the connection");
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `batch` in one write and reads up to the ReadyForQuery: each message's tag (as the
    /// protocol names it), with the SQLSTATE of errors and the text of the first column of rows.
    fn exchange(&mut self, batch: &[u8]) -> Vec<String> {
        use fallible_iterator::FallibleIterator;
        use postgres_protocol::message::backend::Message;
        use std::io::Write;
        self.s.write_all(batch).unwrap();
        let mut seen = Vec::new();
        loop {
            let m = self.next();
            seen.push(match m {
                Message::ParseComplete => "ParseComplete".to_string(),
                Message::BindComplete => "BindComplete".to_string(),
                Message::RowDescription(_) => "RowDescription".to_string(),
                Message::NoData => "NoData".to_string(),
                Message::DataRow(b) => {
                    let first = b.ranges().next().unwrap().flatten();
                    let v = first.map(|r| String::from_utf8_lossy(&b.buffer()[r]).to_string());
                    format!("DataRow {}", v.as_deref().unwrap_or("NULL"))
                }
                Message::CommandComplete(b) => format!("CommandComplete {}", b.tag().unwrap()),
                Message::ErrorResponse(b) => {
                    let code = b
                        .fields()
                        .find(|f| Ok(f.type_() == b'C'))
                        .unwrap()
                        .map(|f| String::from_utf8_lossy(f.value_bytes()).to_string());
                    format!("ErrorResponse {}", code.unwrap_or_default())
                }
                Message::ReadyForQuery(b) => {
                    seen.push(format!("ReadyForQuery {}", b.status() as char));
                    return seen;
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => continue,
                other => format!("other {}", std::any::type_name_of_val(&other)),
            });
        }
    }
}

/// One extended-protocol statement: Parse and Bind of the unnamed statement and portal (result
/// columns in `format`), Describe, Execute.
fn extended(buf: &mut bytes::BytesMut, sql: &str, format: i16) {
    postgres_protocol::message::frontend::parse("", sql, std::iter::empty(), buf).unwrap();
    bind_execute(buf, "", "", format, true);
}

/// Bind of `statement` to `portal` without parameters, result columns in `format`.
fn bind(buf: &mut bytes::BytesMut, statement: &str, portal: &str, format: i16) {
    postgres_protocol::message::frontend::bind(
        portal,
        statement,
        std::iter::empty::<i16>(),
        std::iter::empty::<Option<&[u8]>>(),
        |_: Option<&[u8]>, _| Ok(postgres_protocol::IsNull::Yes),
        [format],
        buf,
    )
    .map_err(|_| "bind")
    .unwrap();
}

/// Bind of `statement` to `portal` without parameters, a Describe of it if `describe`, Execute.
fn bind_execute(
    buf: &mut bytes::BytesMut,
    statement: &str,
    portal: &str,
    format: i16,
    describe: bool,
) {
    use postgres_protocol::message::frontend;
    bind(buf, statement, portal, format);
    if describe {
        frontend::describe(b'P', portal, buf).unwrap();
    }
    frontend::execute(portal, 0, buf).unwrap();
}

/// What one `extended` statement returning one row with `value` gets.
fn one_row(value: &str) -> Vec<String> {
    [
        "ParseComplete".to_string(),
        "BindComplete".into(),
        "RowDescription".into(),
        format!("DataRow {value}"),
        "CommandComplete SELECT 1".into(),
    ]
    .into()
}

#[test]
fn a_refused_statement_in_a_raw_pipeline_skips_to_sync_and_nothing_after_it_runs() {
    use postgres_protocol::message::frontend;
    let b = PgBastion::start();
    direct_psql(&b, "create sequence probe");
    let mut c = RawClient::login(b.port, "alice", ALICE_PW);
    // One write: a clean statement, a refused one, then statements the refusal must skip,
    // one of which (nextval) would leave a trace that no rollback undoes.
    let mut buf = bytes::BytesMut::new();
    extended(&mut buf, "select 1", 0);
    extended(&mut buf, "drop table orders", 0);
    extended(&mut buf, "select nextval('probe')", 0);
    frontend::flush(&mut buf);
    extended(&mut buf, "select ssn from users where id = 1", 0);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    let mut want = one_row("1");
    want.extend(["ErrorResponse 42501".into(), "ReadyForQuery I".into()]);
    assert_eq!(seen, want);
    // The session goes on; the skipped nextval never reached the target; masks hold in text
    // and in binary format, with the client's own Describe before each Execute.
    buf.clear();
    extended(&mut buf, "select is_called::text from probe", 0);
    extended(&mut buf, "select ssn from users where id = 1", 0);
    extended(&mut buf, "select ssn from users where id = 2", 1);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    let mut want = [one_row("false"), one_row("****"), one_row("****")].concat();
    want.push("ReadyForQuery I".into());
    assert_eq!(seen, want);
    // Without a Describe of its own: vigil describes the portal itself, and still masks.
    buf.clear();
    frontend::parse(
        "s1",
        "select email from users where id = 1",
        std::iter::empty(),
        &mut buf,
    )
    .unwrap();
    bind_execute(&mut buf, "s1", "p1", 0, false);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "DataRow ****",
            "CommandComplete SELECT 1",
            "ReadyForQuery I",
        ],
        "{seen:?}"
    );
    // A statement name vigil never saw parsed (SQL PREPARE) cannot be bound: fail closed.
    buf.clear();
    frontend::query("prepare q as select ssn from users", &mut buf).unwrap();
    let seen = c.exchange(&buf);
    assert_eq!(
        seen,
        ["CommandComplete PREPARE", "ReadyForQuery I"],
        "{seen:?}"
    );
    buf.clear();
    bind_execute(&mut buf, "q", "p2", 0, false);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(seen, ["ErrorResponse 42501", "ReadyForQuery I"], "{seen:?}");
}

#[test]
fn a_refused_bind_cannot_be_steered_to_a_statement_the_client_named_after_vigils_stand_in() {
    use postgres_protocol::message::frontend;
    let b = PgBastion::start();
    let mut c = RawClient::login(b.port, "alice", ALICE_PW);
    // Statements under names vigil might use for what it sends in a refusal's place (the
    // name it used to bind a refused portal to, and others of its kind).
    let mut buf = bytes::BytesMut::new();
    for name in ["vigil: refused bind", "vigil: refused", "vigil"] {
        buf.clear();
        frontend::query(
            &format!("prepare \"{name}\" as select upper(ssn) from users where id = 1"),
            &mut buf,
        )
        .unwrap();
        let seen = c.exchange(&buf);
        assert!(seen.iter().all(|m| !m.starts_with("DataRow")), "{seen:?}");
    }
    // A clean statement bound to the unnamed portal, then a Bind vigil refuses (a name it never
    // saw parsed) to the same portal, then Execute: the refusal ends the batch, and nothing
    // the client prepared runs in its place.
    buf.clear();
    frontend::parse("clean", "select 'x'::text", std::iter::empty(), &mut buf).unwrap();
    bind_execute(&mut buf, "clean", "", 0, false);
    bind_execute(&mut buf, "never parsed", "", 0, false);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "DataRow x",
            "CommandComplete SELECT 1",
            "ErrorResponse 42501",
            "ReadyForQuery I",
        ],
        "{seen:?}"
    );
    // The same with the client's Describe between: still only vigil's refusal.
    buf.clear();
    frontend::parse("clean2", "select 'y'::text", std::iter::empty(), &mut buf).unwrap();
    bind(&mut buf, "clean2", "", 0);
    bind_execute(&mut buf, "never parsed", "", 0, true);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "ErrorResponse 42501",
            "ReadyForQuery I",
        ],
        "{seen:?}"
    );
}

#[test]
fn names_postgresql_would_cut_short_are_refused_and_cannot_alias_a_masked_statement() {
    use postgres_protocol::message::frontend;
    let b = PgBastion::start();
    let mut c = RawClient::login(b.port, "alice", ALICE_PW);
    let stem = "s".repeat(63);
    let (clean, masked) = (format!("{stem}1"), format!("{stem}2"));
    let mut buf = bytes::BytesMut::new();
    // The server keeps 63 bytes of a name: to it, `clean` and `masked` are one statement. A
    // client that parses a clean statement under one, closes the other (dropping it on the
    // server), parses a masked read under the other and binds the first would get the masked
    // read planned as the clean one.
    let mut seen = Vec::new();
    for step in 0..4 {
        buf.clear();
        match step {
            0 => frontend::parse(&clean, "select 'x'::text", std::iter::empty(), &mut buf).unwrap(),
            1 => frontend::close(b'S', &masked, &mut buf).unwrap(),
            2 => frontend::parse(
                &masked,
                "select upper(ssn) from users where id = 1",
                std::iter::empty(),
                &mut buf,
            )
            .unwrap(),
            _ => bind_execute(&mut buf, &clean, "", 0, true),
        }
        frontend::sync(&mut buf);
        let got = c.exchange(&buf);
        assert_eq!(
            got,
            ["ErrorResponse 42501", "ReadyForQuery I"],
            "step {step}"
        );
        seen.extend(got);
    }
    assert!(seen.iter().all(|m| !m.contains("6789")), "{seen:?}");
    // The benign twin: a name of 63 bytes works, and the masked read under it is masked.
    buf.clear();
    frontend::parse(
        &stem,
        "select upper(ssn) from users where id = 1",
        std::iter::empty(),
        &mut buf,
    )
    .unwrap();
    bind_execute(&mut buf, &stem, "p", 0, true);
    frontend::sync(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "DataRow ****",
            "CommandComplete SELECT 1",
            "ReadyForQuery I",
        ],
        "{seen:?}"
    );
}

#[test]
fn a_name_the_target_kept_for_something_else_is_not_planned_as_vigil_last_saw_it() {
    use postgres_protocol::message::frontend;
    let b = PgBastion::start();
    let mut c = RawClient::login(b.port, "alice", ALICE_PW);
    let mut buf = bytes::BytesMut::new();
    let mut step = |c: &mut RawClient, fill: &dyn Fn(&mut bytes::BytesMut)| {
        buf.clear();
        fill(&mut buf);
        // A simple Query is its own sync point.
        if buf.first() != Some(&b'Q') {
            frontend::sync(&mut buf);
        }
        let seen = c.exchange(&buf);
        assert!(seen.iter().all(|m| !m.contains("6789")), "{seen:?}");
        seen
    };
    let parse = |buf: &mut bytes::BytesMut, name: &str, sql: &str| {
        frontend::parse(name, sql, std::iter::empty(), buf).unwrap()
    };
    // A Parse of a name that exists fails on the target, which keeps the masked statement:
    // vigil does not take the failed Parse's clean text for what the name holds.
    let seen = step(&mut c, &|b| {
        parse(b, "s", "select upper(ssn) from users where id = 1")
    });
    assert_eq!(seen, ["ParseComplete", "ReadyForQuery I"]);
    let seen = step(&mut c, &|b| parse(b, "s", "select 'x'::text"));
    assert_eq!(seen, ["ErrorResponse 42P05", "ReadyForQuery I"]);
    let seen = step(&mut c, &|b| bind_execute(b, "s", "", 0, true));
    assert_eq!(seen, ["ErrorResponse 42501", "ReadyForQuery I"]);
    // The same for a portal: in a transaction, a Bind of a portal that exists fails and the
    // target keeps the first one.
    let seen = step(&mut c, &|b| frontend::query("begin", b).unwrap());
    assert_eq!(seen, ["CommandComplete BEGIN", "ReadyForQuery T"]);
    let seen = step(&mut c, &|b| {
        parse(b, "m", "select upper(ssn) from users where id = 1");
        bind(b, "m", "p", 0);
    });
    assert_eq!(seen, ["ParseComplete", "BindComplete", "ReadyForQuery T"]);
    let seen = step(&mut c, &|b| frontend::query("savepoint sp", b).unwrap());
    assert_eq!(seen, ["CommandComplete SAVEPOINT", "ReadyForQuery T"]);
    let seen = step(&mut c, &|b| {
        parse(b, "clean", "select 'x'::text");
        bind(b, "clean", "p", 0);
    });
    assert_eq!(
        seen,
        ["ParseComplete", "ErrorResponse 42P03", "ReadyForQuery E"]
    );
    let seen = step(&mut c, &|b| frontend::query("rollback to sp", b).unwrap());
    assert_eq!(seen, ["CommandComplete ROLLBACK", "ReadyForQuery T"]);
    let seen = step(&mut c, &|b| {
        frontend::describe(b'P', "p", b).unwrap();
        frontend::execute("p", 0, b).unwrap();
    });
    assert_eq!(
        seen,
        [
            "RowDescription",
            "DataRow ****",
            "CommandComplete SELECT 1",
            "ReadyForQuery T"
        ]
    );
    let seen = step(&mut c, &|b| frontend::query("commit", b).unwrap());
    assert_eq!(seen, ["CommandComplete COMMIT", "ReadyForQuery I"]);
    // A SQL cursor's columns do not outlive it: a clean cursor ends with its transaction, a
    // portal of a masked read takes its name, and FETCH from it is masked.
    let seen = step(&mut c, &|b| {
        frontend::query("begin; declare c cursor for select 'x'::text; commit", b).unwrap()
    });
    assert_eq!(seen.last().map(String::as_str), Some("ReadyForQuery I"));
    let seen = step(&mut c, &|b| {
        parse(b, "m2", "select upper(ssn) from users where id = 1");
        bind(b, "m2", "c", 0);
        parse(b, "f", "fetch all from c");
        bind_execute(b, "f", "", 0, true);
    });
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "DataRow ****",
            "CommandComplete FETCH 1",
            "ReadyForQuery I"
        ]
    );
}

/// The values of the rows a simple query answered.
fn simple_values(rows: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect::<Vec<String>>(),
            ),
            _ => None,
        })
        .collect::<Vec<Vec<String>>>()
        .concat()
}

/// An unqualified name that vigil takes for a system catalog (whose columns it leaves alone)
/// must be one: information_schema's names are not on the search path, a quoted name may hold
/// a dot, a temporary view the session makes is searched before pg_catalog, and a search path
/// may put another schema first. Each of these views over the masked column leaked it.
#[test]
fn names_that_look_like_system_catalogs_do_not_escape_the_masks() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        client.simple_query("select 1").await.unwrap();
        let check = |sql: &str, rows: &[tokio_postgres::SimpleQueryMessage]| {
            let values = simple_values(rows);
            assert!(!values.is_empty(), "{sql}: no rows");
            assert!(
                !values.iter().any(|v| v.contains("123-45-6789")),
                "{sql}: {values:?}"
            );
        };
        // Views a DBA makes while alice's session is open, read inside a transaction (where
        // vigil cannot read its catalog again).
        client.batch_execute("begin").await.unwrap();
        direct_psql(
            &b,
            "create view tables as select ssn as table_name from users",
        );
        direct_psql(&b, "create view \"pg_catalog.v\" as select ssn from users");
        direct_psql(
            &b,
            "create view pg_stat_ssl as select ssn as version from users",
        );
        for sql in [
            "select * from tables",
            "select * from \"pg_catalog.v\"",
            "set local search_path = public, pg_catalog; select version from pg_stat_ssl",
        ] {
            let rows = client.simple_query(sql).await.unwrap();
            check(sql, &rows);
        }
        client.batch_execute("commit").await.unwrap();
        // A temporary view the session makes, named as a view of pg_catalog: refused (a view
        // over masked columns is, until vigil read it), and so is its copy of them.
        for sql in [
            "begin; create temp view pg_settings as select ssn as name from users; \
             select name from pg_settings; commit",
            "begin; create temp table pg_settings as select ssn as name from users; \
             select name from pg_settings; commit",
        ] {
            let err = client.simple_query(sql).await.unwrap_err();
            assert_refused(&err);
            client.batch_execute("rollback").await.unwrap();
        }
        // A decision made while an unqualified name was trusted is not reused once the search
        // path changed, and a statement prepared before is decided again (as masked as at
        // Parse: the relation is still not listed).
        // (A new session: nothing it did has made vigil stop trusting such names yet.)
        let fresh = connect(&conninfo).await;
        fresh.batch_execute("begin").await.unwrap();
        let sql = "select principal from pg_stat_gssapi";
        fresh.simple_query(sql).await.unwrap();
        direct_psql(
            &b,
            "create view pg_stat_gssapi as select ssn as principal from users; \
             create view fresh_v as select ssn from users",
        );
        let prepared = fresh
            .prepare("select upper(ssn) from fresh_v")
            .await
            .unwrap();
        fresh
            .batch_execute("set local search_path = public, pg_catalog")
            .await
            .unwrap();
        let rows = fresh.simple_query(sql).await.unwrap();
        check(sql, &rows);
        let rows = fresh.query(&prepared, &[]).await.unwrap();
        let values: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(values.len(), 2);
        assert!(
            !values.iter().flatten().any(|v| v.contains("123-45-6789")),
            "{values:?}"
        );
        fresh.batch_execute("commit").await.unwrap();
        // The system catalogs themselves still read as they are.
        let rows = client
            .simple_query("select relname from pg_catalog.pg_class where relname = 'users'")
            .await
            .unwrap();
        assert_eq!(simple_values(&rows), ["users"]);
    });
    // A new session (the system catalogs' names come from the shared cache) reads them too.
    let (code, out, err) = b.psql(
        "alice",
        ALICE_PW,
        "select relname from pg_class where relname = 'users'",
    );
    assert_eq!((code, out.trim()), (0, "users"), "{err}");
    // A search path the target gives new sessions (here the role's default) that puts another
    // schema first: vigil reads it with the catalog, before its queries set their own. (The
    // pooled target connections are ended, so that the next session logs in with it.)
    superuser_psql(
        &b,
        &format!(
            "alter role {USER} set search_path = public, pg_catalog; \
             select pg_terminate_backend(pid) from pg_stat_activity where usename = '{USER}'"
        ),
    );
    b.rt.block_on(async {
        let session = connect(&conninfo).await;
        session.batch_execute("begin").await.unwrap();
        direct_psql(
            &b,
            "create view pg_stat_wal_receiver as select ssn as status from users",
        );
        let sql = "select upper(status) from pg_stat_wal_receiver";
        let rows = session.simple_query(sql).await.unwrap();
        let values = simple_values(&rows);
        assert_eq!(
            values.len(),
            2,
            "{sql}: the view in public answers: {values:?}"
        );
        assert!(
            !values.iter().any(|v| v.contains("123-45-6789")),
            "{sql}: {values:?}"
        );
        session.batch_execute("commit").await.unwrap();
    });
}

#[test]
fn a_view_made_on_the_target_during_a_session_is_masked_in_it() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        let r = client
            .query_one("select count(*) from users", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 2);
        // A DBA makes a view over the masked column while alice's session is open.
        direct_psql(
            &b,
            "create view late_report as select name, upper(ssn) as code from users",
        );
        // (The catalog is read again at most once a second for a relation it does not list.)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for sql in [
            "select code from late_report where name = 'ann'",
            "select * from late_report where name = 'ann'",
        ] {
            let rows = client.simple_query(sql).await.unwrap();
            let values = simple_values(&rows);
            assert!(
                !values.iter().any(|v| v.contains("123-45-6789")),
                "{sql}: {values:?}"
            );
            assert!(values.iter().any(|v| v == "****"), "{sql}: {values:?}");
        }
        // Inside a transaction vigil cannot read its catalog: a relation it does not list
        // has every column masked, unless this session made it.
        client.batch_execute("begin").await.unwrap();
        direct_psql(
            &b,
            "create view later_still as select name, upper(ssn) as code from users",
        );
        let r = client
            .query_one("select name, code from later_still where name = 'ann'", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(1), "****");
        assert_ne!(
            r.get::<_, String>(0),
            "ann",
            "the unknown view's columns are all masked"
        );
        // A CREATE of that name (which fails: it exists) does not vouch for it.
        client.batch_execute("savepoint s").await.unwrap();
        assert!(client
            .batch_execute("create table later_still (x int)")
            .await
            .is_err());
        client
            .batch_execute("rollback to savepoint s")
            .await
            .unwrap();
        let r = client
            .query_one("select code from later_still where name = 'ann'", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "****");
        // A table the session makes in the transaction is masked there too (vigil cannot read
        // the catalog yet), and read as it is once the transaction ended.
        client
            .batch_execute("create temp table mine as select id, name from users")
            .await
            .unwrap();
        let r = client
            .query_one("select name from mine where id = 1", &[])
            .await
            .unwrap();
        assert_ne!(r.get::<_, String>(0), "ann");
        client.batch_execute("commit").await.unwrap();
        let r = client
            .query_one("select name from mine where id = 1", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "ann");
    });
}

#[test]
fn a_prepared_delete_is_decided_again_with_the_values_bound() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        client
            .batch_execute("insert into orders select g, 1, 1.0 from generate_series(100, 104) g")
            .await
            .unwrap();
        let delete = client
            .prepare("delete from orders where ($1::int is null or id = $1)")
            .await
            .unwrap();
        // NULL makes the condition true for every row: a DELETE without WHERE, denied.
        let err = client.execute(&delete, &[&None::<i32>]).await.unwrap_err();
        let message = assert_refused(&err);
        assert!(message.contains("with the values bound"), "{message}");
        let r = client
            .query_one("select count(*) from orders", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 6, "rows were deleted");
        // The benign twin: a value picks one row.
        let n = client.execute(&delete, &[&Some(100i32)]).await.unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn functions_that_read_masked_columns_where_vigil_cannot_look_are_refused() {
    let b = PgBastion::start();
    // Made on the target by its owner, as a DBA or a migration would.
    direct_psql(
        &b,
        r#"create function std_ssn(int) returns text language sql
             return (select ssn from public.users where id = $1);
           create function atomic_ssn(int) returns text language sql
             begin atomic select ssn from users where id = $1; end;
           create function via_view(int) returns text language sql
             as 'select s from v_users where id = $1';
           create function wrapped(int) returns text language sql as 'select std_ssn($1)';
           create function secret(o orders) returns text language sql
             as 'select ssn from users where id = o.user_id';
           create function escaped(int) returns text language sql
             as $$select ssn from U&"\0075sers" where id = $1$$;
           create function pick(acc text, id int) returns text language sql
             as $$select coalesce(acc, '') || (select ssn from users u where u.id = pick.id)$$;
           create aggregate gather(int) (sfunc = pick, stype = text);
           create function peek(a int, b int) returns text language sql
             as 'select ssn from users where id = a';
           create operator ### (leftarg = int, rightarg = int, function = peek);
           create view v_orders as select id, std_ssn(user_id) as s from orders;
           create function clean(int) returns int language sql return $1 + 1;"#,
    );
    superuser_psql(
        &b,
        "create function alias_of_reader(text, bool, bool, text) returns xml language internal \
           as 'query_to_xml'",
    );
    direct_psql(
        &b,
        "create operator @@@ (rightarg = text, function = pg_catalog.ts_stat)",
    );
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        for sql in [
            // a SQL-standard body (prosrc is empty: the body is in prosqlbody)
            "select std_ssn(1)",
            "select atomic_ssn(1)",
            // a body that reads a view derived from a masked column
            "select via_view(1)",
            // a function that calls one that reads
            "select wrapped(1)",
            // attribute notation calls secret(o)
            "select o.secret from orders o",
            "select (o).secret from orders o",
            // a relation named with a Unicode escape
            "select escaped(1)",
            // an internal function that is a built-in data reader under another name
            "select alias_of_reader('select ssn from users', true, false, '')",
            // an aggregate whose transition function reads
            "select gather(id) from orders",
            // an operator whose function reads
            "select 1 ### 1",
            // an operator a user made on a built-in that runs SQL text
            "select @@@ 'select ssn from users'",
            // a domain whose CHECK could see every value cast to it
            "create domain leaky as text check (set_config('x.y', value, false) is not null)",
            // built-ins that run SQL given as text
            "select ts_rewrite('x'::tsquery, $$select 'x'::tsquery, ssn::tsquery from users$$)",
            // new code vigil has not read
            "create extension if not exists plpgsql",
            "alter function clean(int) security definer",
        ] {
            let err = client.simple_query(sql).await.unwrap_err();
            let message = assert_refused(&err);
            // (ts_rewrite is also dynamic SQL to the deny rule of this config.)
            assert!(
                message.contains("mask") || message.contains("runs a query given as a string"),
                "{sql}: {message}"
            );
        }
        // A view that calls a reading function is masked as a whole.
        let r = client
            .query_one("select s from v_orders", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("****"));
        // The benign twins: a function that reads nothing masked, an operator and an aggregate
        // of the catalog.
        // (An opaque function stays refused next to a masked table: it may store its
        // arguments.)
        let r = client
            .query_one("select clean(1), 2 + 2", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, i32>(0), 2);
        assert_eq!(r.get::<_, i32>(1), 4);
        let r = client
            .query_one("select string_agg(name, ',' order by id) from users", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "ann,bo");
    });
    // erin, to whom the masks do not apply, runs them.
    let conninfo = format!("{} password={ERIN_PW}", b.conninfo("erin"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        let r = client.query_one("select std_ssn(1)", &[]).await.unwrap();
        assert_eq!(r.get::<_, String>(0), "123-45-6789");
    });
}

#[test]
fn the_target_reads_statements_in_utf8_whatever_the_client_asks() {
    let b = PgBastion::start();
    // A client that asks for SJIS (where a character can end in a backslash byte, so the
    // target would read other statements than vigil) gets UTF8, at startup and after it.
    let mut c = Command::new("psql");
    c.env("PGPASSWORD", ALICE_PW)
        .env("PGCLIENTENCODING", "SJIS")
        .args([&b.conninfo("alice"), "-At", "-c", "show client_encoding"]);
    let (code, out, err) = run(&mut c);
    assert_eq!((code, out.trim()), (0, "UTF8"), "{err}");
    direct_psql(
        &b,
        "create function enc() returns text language plpgsql as \
         $$ begin perform set_config('client_encoding', 'SJIS', false); return 'x'; end $$",
    );
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        for sql in [
            "set client_encoding = 'SJIS'",
            "set names 'SJIS'",
            "set local client_encoding to 'BIG5'",
            "reset client_encoding",
            "select set_config('client_encoding', 'SJIS', false)",
            "select set_config(name, 'SJIS', false) from (values ('client_encoding')) v(name)",
            // With standard_conforming_strings off, `'x\' , upper(ssn) from users --'` is one
            // string literal to vigil and a masked read to the target.
            "set standard_conforming_strings = off",
            "reset standard_conforming_strings",
            "select set_config('standard_conforming_strings', 'off', false)",
        ] {
            let message = assert_refused(&client.simple_query(sql).await.unwrap_err());
            assert!(
                message.contains("client_encoding") || message.contains("set_config"),
                "{sql}: {message}"
            );
        }
        // COPY in another encoding: a character can hold the delimiter's byte, so vigil could
        // not split the rows it masks.
        let message = assert_refused(
            &client
                .simple_query(
                    "copy (select 'x', upper(ssn) from users) to stdout (delimiter '|', encoding 'SJIS')",
                )
                .await
                .unwrap_err(),
        );
        assert!(message.contains("SJIS"), "{message}");
        // The benign twins run.
        client
            .batch_execute("set application_name = 'twin'")
            .await
            .unwrap();
        let r = client
            .query_one("select set_config('application_name', 'twin2', false)", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "twin2");
        // A change vigil cannot see in the statement (inside a function) ends the session
        // when the target reports it.
        let err = client.simple_query("select enc()").await.unwrap_err();
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| err.to_string());
        assert!(message.contains("client_encoding"), "{message}");
        assert!(client.simple_query("select 1").await.is_err());
    });
    // The bastion serves the next session; a COPY of clean columns in another encoding runs.
    assert_eq!(
        psql_lines(
            &b,
            "alice",
            ALICE_PW,
            &["copy (select id from users order by id) to stdout (encoding 'SJIS')"]
        ),
        ["1", "2"]
    );
    // A function that turns standard_conforming_strings off ends the session as well.
    direct_psql(
        &b,
        "create function scs() returns text language plpgsql as \
         $$ begin perform set_config('standard_conforming_strings', 'off', false); return 'x'; end $$",
    );
    b.rt.block_on(async {
        let client = connect(&conninfo).await;
        let err = client.simple_query("select scs()").await.unwrap_err();
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| err.to_string());
        assert!(message.contains("standard_conforming_strings"), "{message}");
        assert!(client.simple_query("select 1").await.is_err());
    });
}

#[test]
fn syncs_and_statements_sent_around_copy_input_keep_vigil_in_step() {
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::{backend::Message, frontend};
    use std::io::Write;
    let b = PgBastion::start();
    let mut c = RawClient::login(b.port, "alice", ALICE_PW);
    let mut buf = bytes::BytesMut::new();
    frontend::query("create temp table t (x int)", &mut buf).unwrap();
    c.exchange(&buf);
    // A Sync right behind COPY FROM STDIN: the target ignores it while the copy runs.
    buf.clear();
    frontend::query("copy t from stdin", &mut buf).unwrap();
    frontend::sync(&mut buf);
    c.s.write_all(&buf).unwrap();
    assert!(matches!(c.next(), Message::CopyInResponse(_)));
    buf.clear();
    frontend::CopyData::new(&b"1\n"[..])
        .unwrap()
        .write(&mut buf);
    frontend::copy_done(&mut buf);
    let seen = c.exchange(&buf);
    assert_eq!(seen, ["CommandComplete COPY 1", "ReadyForQuery I"]);
    // The next statements are answered as themselves: the masked read stays masked.
    for (sql, want) in [
        (
            "set application_name = 'x'",
            vec!["CommandComplete SET", "ReadyForQuery I"],
        ),
        (
            "select upper(ssn) from users where id = 1",
            vec![
                "RowDescription",
                "DataRow ****",
                "CommandComplete SELECT 1",
                "ReadyForQuery I",
            ],
        ),
    ] {
        buf.clear();
        frontend::query(sql, &mut buf).unwrap();
        assert_eq!(c.exchange(&buf), want, "{sql}");
    }
    // A statement in the middle of COPY input ends the session (the target would fail the
    // copy and take the statement for its cause).
    buf.clear();
    frontend::query("copy t from stdin", &mut buf).unwrap();
    c.s.write_all(&buf).unwrap();
    assert!(matches!(c.next(), Message::CopyInResponse(_)));
    buf.clear();
    frontend::query("select upper(ssn) from users where id = 1", &mut buf).unwrap();
    c.s.write_all(&buf).unwrap();
    match c.next() {
        Message::ErrorResponse(e) => {
            let code = e
                .fields()
                .find(|f| Ok(f.type_() == b'C'))
                .unwrap()
                .map(|f| String::from_utf8_lossy(f.value_bytes()).to_string());
            assert_eq!(code.as_deref(), Some("08P01"));
        }
        other => panic!("{}", std::any::type_name_of_val(&other)),
    }
}

#[test]
fn listen_notify_reaches_listeners_through_vigil() {
    let b = PgBastion::start();
    let conninfo = format!("{} password={ALICE_PW}", b.conninfo("alice"));
    let erin = format!("{} password={ERIN_PW}", b.conninfo("erin"));
    b.rt.block_on(async {
        let (listener, mut conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = futures::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("listener connection: {e}"),
                }
            }
        });
        listener.batch_execute("listen jobs").await.unwrap();
        // From another session through vigil, and from the same one.
        let (notifier, conn) = tokio_postgres::connect(&erin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        notifier
            .batch_execute("notify jobs, 'from erin'")
            .await
            .unwrap();
        listener
            .execute("select pg_notify('jobs', $1)", &[&"from alice"])
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a notification within 10 s")
                .unwrap();
            got.push(n);
        }
        got.sort();
        assert_eq!(
            got,
            [
                ("jobs".to_string(), "from alice".to_string()),
                ("jobs".to_string(), "from erin".to_string()),
            ]
        );
        // A masked value cannot leave through a notification payload.
        let err = listener
            .batch_execute("select pg_notify('jobs', ssn) from users")
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        listener.batch_execute("unlisten jobs").await.unwrap();
    });
}

/// psql with one `-c` per statement, as `user`: its stdout lines.
fn psql_lines(b: &PgBastion, user: &str, password: &str, statements: &[&str]) -> Vec<String> {
    let mut c = Command::new("psql");
    c.env("PGPASSWORD", password)
        .args([&b.conninfo(user), "-At", "-v", "ON_ERROR_STOP=1"]);
    for s in statements {
        c.args(["-c", s]);
    }
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{statements:?}: {out}{err}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn a_target_connection_is_reused_by_the_next_session_with_nothing_left_of_the_last() {
    let b = PgBastion::start();
    let pool = || b.running.as_ref().unwrap().gateway.pg.pool.len();
    // A session leaves what it can behind: a temporary table, settings (a role among them),
    // a prepared statement, a LISTEN, an advisory lock.
    let first = psql_lines(
        &b,
        "alice",
        ALICE_PW,
        &[
            "select pg_backend_pid()",
            "create temp table left_behind(x int)",
            "set search_path = nowhere",
            "set application_name = 'left-behind'",
            "prepare left_behind as select 1",
            "listen left_behind",
            "select pg_advisory_lock(42)",
        ],
    );
    let pid = first[0].clone();
    crate::harness::wait_until(
        "the connection is back in the pool",
        Duration::from_secs(10),
        || pool() == 1,
    );
    // Another vigil user never gets it: what DISCARD ALL cannot reset stays with its user.
    let other = psql_lines(&b, "erin", ERIN_PW, &["select pg_backend_pid()"]);
    assert_ne!(
        other[0], pid,
        "another user's session reused alice's connection"
    );
    crate::harness::wait_until(
        "both connections are in the pool",
        Duration::from_secs(10),
        || pool() == 2,
    );
    // alice's next session gets the same backend, reset.
    let second = psql_lines(
        &b,
        "alice",
        ALICE_PW,
        &[
            "select pg_backend_pid()",
            "show search_path",
            "show application_name",
            "select count(*) from pg_class where relname = 'left_behind'",
            "select count(*) from pg_prepared_statements",
            "select count(*) from pg_listening_channels()",
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
        ],
    );
    assert_eq!(
        second[0], pid,
        "the second session did not reuse the connection"
    );
    assert_eq!(
        second[1..],
        ["\"$user\", public", "psql", "0", "0", "0", "0"]
    );
    // A session that ends inside a transaction does not give its connection back.
    crate::harness::wait_until(
        "the connection is back in the pool",
        Duration::from_secs(10),
        || pool() == 2,
    );
    let third = psql_lines(&b, "alice", ALICE_PW, &["begin", "select pg_backend_pid()"]);
    assert_eq!(third[1], pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool(), 1, "only erin's connection is left");
    let fourth = psql_lines(&b, "alice", ALICE_PW, &["select pg_backend_pid()"]);
    assert_ne!(
        fourth[0], pid,
        "a connection left inside a transaction was reused"
    );
}

#[test]
fn a_kept_connection_that_does_not_answer_is_replaced_before_the_client_sees_it() {
    let b = PgBastion::start();
    let pool = || b.running.as_ref().unwrap().gateway.pg.pool.len();
    let first = psql_lines(&b, "alice", ALICE_PW, &["select pg_backend_pid()"]);
    let pid: i32 = first[0].parse().unwrap();
    crate::harness::wait_until(
        "the connection is back in the pool",
        Duration::from_secs(10),
        || pool() == 1,
    );
    // The kept backend stops answering, its TCP connection open (as when its host vanishes),
    // until `_hung` is dropped (also when the test fails).
    struct Hung(i32);
    impl Hung {
        fn signal(&self, sig: &str) -> (i32, String, String) {
            run(Command::new("kill").args([sig, &self.0.to_string()]))
        }
    }
    impl Drop for Hung {
        fn drop(&mut self) {
            self.signal("-CONT");
        }
    }
    let hung = Hung(pid);
    let (code, out, err) = hung.signal("-STOP");
    assert_eq!(code, 0, "kill -STOP {pid}: {out}{err}");
    let second = psql_lines(
        &b,
        "alice",
        ALICE_PW,
        &[
            "select pg_backend_pid()",
            "select name, ssn from users order by id limit 1",
        ],
    );
    drop(hung);
    assert_ne!(second[0], pid.to_string(), "the hung connection was used");
    // The new connection read the masks: the session is as any other.
    assert_eq!(second[1], "ann|****");
    // The hung one is not put back.
    std::thread::sleep(Duration::from_millis(300));
    assert!(pool() <= 1);
}

#[test]
fn a_target_with_pool_off_gets_a_new_connection_for_every_session() {
    let nora = Verifier::generate("nora-pw", 4096).unwrap().to_postgres();
    let b = PgBastion::start_full(
        "",
        &format!(
            r#"
[[user]]
name = "nora"
roles = ["solo"]
password = "{nora}"
[[target]]
name = "solodb"
protocol = "postgres"
address = "{{addr}}"
database = "{DATABASE}"
user = "{USER}"
password_env = "VIGIL_TEST_APPDB_PASSWORD"
pool = false
[[role]]
name = "solo"
targets = ["solodb"]
"#
        ),
    );
    let pid = || {
        let mut c = Command::new("psql");
        c.env("PGPASSWORD", "nora-pw").args([
            &format!(
                "host=127.0.0.1 port={} user=nora dbname=solodb sslmode=disable",
                b.port
            ),
            "-At",
            "-c",
            "select pg_backend_pid()",
        ]);
        let (code, out, err) = run(&mut c);
        assert_eq!(code, 0, "{out}{err}");
        out.trim().to_string()
    };
    let first = pid();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        pid(),
        first,
        "a connection of a target with pool = false was reused"
    );
    assert_eq!(b.running.as_ref().unwrap().gateway.pg.pool.len(), 0);
}
