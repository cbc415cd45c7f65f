//! Off-host storage against a real S3-compatible server that checks signatures: recording
//! to S3, a wrong secret refused, a store outage absorbed by the spool with nothing lost, and a
//! bastion killed with -9 whose recording is finished by the next start.

use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
    time::Duration,
};

use bytes::Bytes;
use vigil::{
    recording::{
        event::{Event, Offset, Timed},
        reader::{self, Trust},
        writer::RecordError,
        OnStoreFailure, Recordings, SessionMeta,
    },
    store::{layout, Store},
};

use crate::harness::{run, vigil, wait_until, Env, S3Server, S3_SECRET_KEY};

fn meta() -> SessionMeta {
    SessionMeta {
        protocol: "ssh".into(),
        user: "alice".into(),
        target: "web1".into(),
        client: None,
    }
}

fn output(i: u64) -> Timed {
    Timed {
        at: Offset(i * 1000),
        event: Event::Output(Bytes::from(format!("output line {i}\r\n"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_stream_to_s3_and_read_back() {
    let env = Env::new();
    let s3 = S3Server::start();
    let mut settings = env.settings();
    settings.store = s3.url();
    settings.s3 = s3.settings(S3_SECRET_KEY);
    let recs = Recordings::start(settings.clone(), env.signer())
        .await
        .unwrap();
    let rec = recs.begin(meta()).await.unwrap();
    let id = rec.session_id().to_string();
    for i in 0..100 {
        rec.record_at(output(i)).await.unwrap();
    }
    // The first chunk is in the bucket while the session still runs.
    let chunk0 = s3
        .root
        .path()
        .join("recordings/vigil")
        .join(layout::chunk(&id, 0));
    wait_until("chunk 0 is in the bucket", Duration::from_secs(10), || {
        chunk0.exists()
    });
    assert!(rec.close("done").await.unwrap().uploaded);

    let store = Store::open(&settings.store, &settings.s3).unwrap();
    let loaded = reader::load(&store, &id, Some(&env.secret), &Trust::default(), false)
        .await
        .unwrap();
    assert_eq!(
        loaded.events().unwrap(),
        (0..100).map(output).collect::<Vec<_>>()
    );

    // The CLI reads the same bucket from the standard AWS_* environment.
    let mut cmd = vigil();
    s3.env(&mut cmd);
    let (code, out, err) = run(cmd.args(["sessions", "--json", "--store", &s3.url()]));
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["user"], "alice");
    assert_eq!(row["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_s3_secret_is_refused() {
    let env = Env::new();
    let s3 = S3Server::start();
    let store = Store::open(&s3.url(), &s3.settings("not-the-secret")).unwrap();
    let err = store
        .put("probe", Bytes::from_static(b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403") || err.contains("Signature") || err.contains("Forbidden"),
        "{err}"
    );

    let mut settings = env.settings();
    settings.store = s3.url();
    settings.s3 = s3.settings("not-the-secret");
    let recs = Recordings::start(settings, env.signer()).await.unwrap();
    assert!(!recs.store_healthy());
    let refused = recs.begin(meta()).await.err().unwrap();
    assert!(
        matches!(refused, RecordError::StoreUnavailable(_)),
        "{refused}"
    );

    let mut cmd = vigil();
    s3.env(&mut cmd);
    cmd.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let (code, _, err) = run(cmd.args(["sessions", "--store", &s3.url()]));
    assert_ne!(code, 0);
    assert!(err.starts_with("vigil: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_loses_nothing() {
    let env = Env::new();
    let mut s3 = S3Server::start();
    let mut settings = env.settings();
    settings.store = s3.url();
    settings.s3 = s3.settings(S3_SECRET_KEY);
    settings.on_store_failure = OnStoreFailure::Continue;
    let recs = Recordings::start(settings.clone(), env.signer())
        .await
        .unwrap();
    let rec = recs.begin(meta()).await.unwrap();
    let id = rec.session_id().to_string();
    let mut i = 0;
    for _ in 0..20 {
        rec.record_at(output(i)).await.unwrap();
        i += 1;
    }
    wait_until("a chunk is uploaded", Duration::from_secs(10), || {
        s3.root
            .path()
            .join("recordings/vigil")
            .join(layout::chunk(&id, 0))
            .exists()
    });

    s3.stop();
    for _ in 0..5 {
        for _ in 0..20 {
            rec.record_at(output(i)).await.unwrap();
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until("the outage is noticed", Duration::from_secs(30), || {
        !recs.store_healthy()
    });
    let spooled = env.files(&format!("state/spool/{id}"));
    assert!(
        spooled.iter().any(|f| f.starts_with("chunk-")),
        "nothing spooled: {spooled:?}"
    );
    // Sealed bytes only in the spool.
    for f in &spooled {
        let b = std::fs::read(env.path(&format!("state/spool/{id}/{f}"))).unwrap();
        assert!(
            !b.windows(11).any(|w| w == b"output line"),
            "plaintext in spool file {f}"
        );
    }
    // "continue": new sessions are still accepted while the store is down.
    let second = recs.begin(meta()).await.unwrap();
    second.record_at(output(0)).await.unwrap();

    s3.restart();
    for _ in 0..20 {
        rec.record_at(output(i)).await.unwrap();
        i += 1;
    }
    rec.close("done").await.unwrap();
    second.close("done").await.unwrap();
    wait_until("the spool drains", Duration::from_secs(30), || {
        env.files("state/spool").iter().all(|f| f == ".lock")
    });

    let store = Store::open(&settings.store, &settings.s3).unwrap();
    let loaded = reader::load(&store, &id, Some(&env.secret), &Trust::default(), false)
        .await
        .unwrap();
    assert_eq!(
        loaded.events().unwrap(),
        (0..i).map(output).collect::<Vec<_>>(),
        "events lost in the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_refuses_new_sessions_while_the_store_is_down() {
    let env = Env::new();
    let mut s3 = S3Server::start();
    let mut settings = env.settings();
    settings.store = s3.url();
    settings.s3 = s3.settings(S3_SECRET_KEY);
    s3.stop();
    let recs = Recordings::start(settings, env.signer()).await.unwrap();
    assert!(matches!(
        recs.begin(meta()).await,
        Err(RecordError::StoreUnavailable(_))
    ));
    s3.restart();
    wait_until("the store is seen again", Duration::from_secs(30), || {
        recs.store_healthy()
    });
    recs.begin(meta())
        .await
        .unwrap()
        .close("done")
        .await
        .unwrap();
}

#[test]
fn kill_9_then_restart_finishes_the_recording_up_to_the_last_flush() {
    let env = Env::new();
    let config = env.config(&env.store_url(), "");
    let mut child = vigil()
        .args(["record", "--config"])
        .arg(&config)
        .args(["--user", "alice", "--target", "web1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut id = String::new();
    stdout.read_line(&mut id).unwrap();
    let id = id.trim().to_string();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..5 {
        // One write per line: the recording holds each read as one event.
        stdin
            .write_all(format!("flushed line {i}\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past flush_interval (200ms): the lines above are sealed and shipped.
    let chunk = env.path("store").join(layout::chunk(&id, 0));
    wait_until("a chunk is in the store", Duration::from_secs(10), || {
        chunk.exists()
    });
    // Every line is sealed in a chunk in the store (the recording is still open).
    let store = Store::open(&env.store_url(), &Default::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_until(
        "the last line is in the store",
        Duration::from_secs(10),
        || {
            rt.block_on(reader::load(
                &store,
                &id,
                Some(&env.secret),
                &Trust::default(),
                true,
            ))
            .ok()
            .and_then(|l| l.events().ok())
            .is_some_and(|e| format!("{e:?}").contains("flushed line 4"))
        },
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!env.path("store").join(layout::trailer(&id)).exists());

    let (code, _, err) = run(vigil().args(["verify", &id, "--store", &env.store_url()]));
    assert_ne!(code, 0, "an unterminated recording must not verify: {err}");

    // The next start of vigil closes it, as "ended abnormally at chunk N".
    let (code, _, err) = run(vigil()
        .args(["record", "--config"])
        .arg(&config)
        .args(["--user", "bob", "--target", "web1"]));
    assert_eq!(code, 0, "{err}");
    let key = env.key_path();
    let (code, out, err) = run(vigil()
        .args(["verify", &id, "--store", &env.store_url(), "--key"])
        .arg(&key));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ended abnormally at chunk"), "{out}");
    let (code, out, err) = run(vigil()
        .args([
            "export",
            &id,
            "--format",
            "text",
            "--store",
            &env.store_url(),
            "--key",
        ])
        .arg(&key));
    assert_eq!(code, 0, "{err}");
    for i in 0..5 {
        assert!(
            out.contains(&format!("flushed line {i}")),
            "line {i} lost: {out}"
        );
    }
    let (_, out, _) = run(vigil().args(["sessions", "--json", "--store", &env.store_url()]));
    let state: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["id"] == id.as_str())
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(state, vec!["abnormal".to_string()]);
}
