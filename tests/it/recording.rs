//! The recorder and reader against a real file store: round trips, streaming while the session
//! runs, and every tamper case detected with the error that names it.

use std::time::Duration;

use bytes::Bytes;
use vigil::{
    recording::{
        event::{Approval, Command, Decision, ErrorEvent, Event, Exit, Offset, Query, Rows, Timed},
        format::FormatError,
        keys::{KeyError, RecipientSecret},
        reader::{self, ReadError, Trust},
        Recordings, SessionMeta,
    },
    store::{layout, Store},
};

use crate::harness::{wait_until, Env};

fn meta(user: &str) -> SessionMeta {
    SessionMeta {
        protocol: "ssh".into(),
        user: user.into(),
        target: "web1".into(),
        client: Some("127.0.0.1:1".into()),
    }
}

fn every_event() -> Vec<Timed> {
    let t = |ms: u64, event| Timed {
        at: Offset(ms * 1000),
        event,
    };
    vec![
        t(0, Event::Resize { cols: 80, rows: 24 }),
        t(
            1,
            Event::Output(Bytes::from_static(b"\x1b[1mhello\x1b[0m\r\n")),
        ),
        t(2, Event::Input(Bytes::from_static(b"ls\r"))),
        t(
            3,
            Event::Command(Command {
                kind: "exec".into(),
                text: "ls".into(),
                decision: Decision::Allow,
                rule: None,
                message: None,
            }),
        ),
        t(
            4,
            Event::Query(Query {
                sql: "select 1".into(),
                params: vec![None],
                decision: Decision::Deny,
                rule: Some("r".into()),
                duration_us: None,
                rows: None,
            }),
        ),
        t(
            5,
            Event::Rows(Rows {
                columns: vec!["a".into()],
                rows: vec![vec![Some("x".into())]],
                truncated: false,
            }),
        ),
        t(
            6,
            Event::Error(ErrorEvent {
                message: "e".into(),
                code: None,
            }),
        ),
        t(
            7,
            Event::Approval(Approval {
                id: 1,
                state: "approved".into(),
                by: Some("bob".into()),
                rule: None,
                reason: None,
            }),
        ),
        t(8, Event::Marker("m".into())),
        t(
            9,
            Event::Exit(Exit {
                status: Some(3),
                signal: None,
                reason: None,
            }),
        ),
    ]
}

/// Records `events` into a closed recording and returns its id.
async fn record(recs: &Recordings, events: Vec<Timed>) -> String {
    let rec = recs.begin(meta("alice")).await.unwrap();
    let id = rec.session_id().to_string();
    for e in events {
        rec.record_at(e).await.unwrap();
    }
    let summary = rec.close("done").await.unwrap();
    assert!(summary.uploaded);
    id
}

fn store(env: &Env) -> Store {
    Store::open(&env.store_url(), &Default::default()).unwrap()
}

async fn load(env: &Env, id: &str) -> Result<reader::Loaded, ReadError> {
    reader::load(&store(env), id, Some(&env.secret), &Trust::default(), false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_round_trips_through_the_store() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let id = record(&recs, every_event()).await;
    let loaded = load(&env, &id).await.unwrap();
    assert_eq!(loaded.events().unwrap(), every_event());
    let t = loaded.trailer.unwrap().info;
    assert_eq!(
        (t.events, t.commands, t.queries, t.blocked, t.approved),
        (10, 1, 1, 1, 1)
    );
    assert_eq!(loaded.header.info.user, "alice");
    // Nothing left behind in the spool once the store has it all.
    assert!(
        env.files("state/spool").iter().all(|f| f == ".lock"),
        "{:?}",
        env.files("state/spool")
    );
    // The store holds only sealed bytes: no plaintext of the session anywhere in it.
    for f in env.files("store") {
        let bytes = std::fs::read(env.path("store").join(&f)).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"hello"), "plaintext in {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_reach_the_store_while_the_session_runs() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let rec = recs.begin(meta("alice")).await.unwrap();
    let id = rec.session_id().to_string();
    rec.record(Event::Output(Bytes::from_static(b"first\r\n")))
        .await
        .unwrap();
    let chunk0 = env.path("store").join(layout::chunk(&id, 0));
    wait_until("chunk 0 is in the store", Duration::from_secs(5), || {
        chunk0.exists()
    });
    assert!(!env.path("store").join(layout::trailer(&id)).exists());
    // Readable while still open, as an open recording.
    let open = reader::load(
        &store(&env),
        &id,
        Some(&env.secret),
        &Trust::default(),
        true,
    )
    .await
    .unwrap();
    assert!(open.trailer.is_none());
    assert_eq!(open.events().unwrap().len(), 1);
    assert!(matches!(
        load(&env, &id).await,
        Err(ReadError::NoTrailer { last: 0 })
    ));
    rec.record(Event::Output(Bytes::from_static(b"second\r\n")))
        .await
        .unwrap();
    rec.close("done").await.unwrap();
    assert_eq!(load(&env, &id).await.unwrap().events().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sessions_span_many_chunks_and_compress() {
    let env = Env::new();
    let mut settings = env.settings();
    settings.chunk_bytes = 64 << 10;
    let recs = Recordings::start(settings, env.signer()).await.unwrap();
    let mut events = Vec::new();
    for i in 0..20_000u64 {
        let line = format!(
            "-rw-r--r-- 1 root root {:>8} Nov 23 02:29 file-{i}.txt\r\n",
            i * 37
        );
        events.push(Timed {
            at: Offset(i),
            event: Event::Output(Bytes::from(line.into_bytes())),
        });
    }
    let id = record(&recs, events.clone()).await;
    let loaded = load(&env, &id).await.unwrap();
    assert!(loaded.chunk_count > 10, "{} chunks", loaded.chunk_count);
    assert_eq!(loaded.events().unwrap(), events);
    let t = loaded.trailer.unwrap().info;
    assert!(
        t.plaintext_bytes > 5 * t.stored_bytes,
        "compressed {} -> {}",
        t.plaintext_bytes,
        t.stored_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_recipient_cannot_open_it() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let id = record(&recs, every_event()).await;
    let outsider = RecipientSecret::generate().unwrap();
    let r = reader::load(&store(&env), &id, Some(&outsider), &Trust::default(), false).await;
    assert!(
        matches!(r, Err(ReadError::Key(KeyError::NotARecipient(..)))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_pinning_refuses_a_recording_signed_by_another_key() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let id = record(&recs, every_event()).await;
    let ours = Trust {
        signers: vec![env.signer().public_openssh().to_string()],
    };
    assert!(
        reader::load(&store(&env), &id, Some(&env.secret), &ours, false)
            .await
            .unwrap()
            .signer_pinned
    );
    let other = vigil::recording::keys::Signer::from_seed(&[3; 32]).unwrap();
    let theirs = Trust {
        signers: vec![other.public_openssh().to_string()],
    };
    let r = reader::load(&store(&env), &id, Some(&env.secret), &theirs, false).await;
    assert!(matches!(r, Err(ReadError::UntrustedSigner(_))), "{r:?}");
}

/// A recording with several chunks, and a second one to swap chunks in from.
async fn two_recordings(env: &Env) -> (String, String) {
    let mut settings = env.settings();
    settings.chunk_bytes = 64 << 10;
    let recs = Recordings::start(settings, env.signer()).await.unwrap();
    let many = |tag: &str| {
        (0..20_000u64)
            .map(|i| Timed {
                at: Offset(i),
                event: Event::Output(Bytes::from(format!("{tag} {i} {}\r\n", i * i * 7919))),
            })
            .collect::<Vec<_>>()
    };
    let a = record(&recs, many("a")).await;
    let b = record(&recs, many("b")).await;
    assert!(load(env, &a).await.unwrap().chunk_count >= 4);
    (a, b)
}

fn obj(env: &Env, key: &str) -> std::path::PathBuf {
    env.path("store").join(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_case_is_detected_and_named() {
    type Case = (&'static str, fn(&Env, &str, &str), fn(&ReadError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "a flipped byte in a chunk",
            |env, a, _| {
                let p = obj(env, &layout::chunk(a, 1));
                let mut b = std::fs::read(&p).unwrap();
                let n = b.len();
                b[n - 20] ^= 1;
                std::fs::write(&p, b).unwrap();
            },
            |e| matches!(e, ReadError::Format(FormatError::Seal(1))),
        ),
        (
            "two chunks swapped",
            |env, a, _| {
                let (p1, p2) = (
                    obj(env, &layout::chunk(a, 1)),
                    obj(env, &layout::chunk(a, 2)),
                );
                let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
                std::fs::write(&p1, b2).unwrap();
                std::fs::write(&p2, b1).unwrap();
            },
            |e| {
                matches!(
                    e,
                    ReadError::Format(FormatError::OutOfPlace {
                        expected: 1,
                        found: 2
                    })
                )
            },
        ),
        (
            "a chunk dropped",
            |env, a, _| std::fs::remove_file(obj(env, &layout::chunk(a, 2))).unwrap(),
            |e| matches!(e, ReadError::MissingChunk(2)),
        ),
        (
            "a chunk duplicated over the next",
            |env, a, _| {
                std::fs::copy(
                    obj(env, &layout::chunk(a, 1)),
                    obj(env, &layout::chunk(a, 2)),
                )
                .map(|_| ())
                .unwrap()
            },
            |e| {
                matches!(
                    e,
                    ReadError::Format(FormatError::OutOfPlace {
                        expected: 2,
                        found: 1
                    })
                )
            },
        ),
        (
            "a chunk swapped in from another recording",
            |env, a, b| {
                std::fs::copy(
                    obj(env, &layout::chunk(b, 1)),
                    obj(env, &layout::chunk(a, 1)),
                )
                .map(|_| ())
                .unwrap()
            },
            |e| matches!(e, ReadError::Format(FormatError::Seal(1))),
        ),
        (
            "the tail cut off (last chunk and trailer gone)",
            |env, a, _| {
                let chunks = std::fs::read_dir(obj(env, &layout::session_dir(a)))
                    .unwrap()
                    .count() as u64
                    - 2;
                std::fs::remove_file(obj(env, &layout::chunk(a, chunks - 1))).unwrap();
                std::fs::remove_file(obj(env, &layout::trailer(a))).unwrap();
            },
            |e| matches!(e, ReadError::NoTrailer { .. }),
        ),
        (
            "the last chunk removed under a valid trailer",
            |env, a, _| {
                let chunks = std::fs::read_dir(obj(env, &layout::session_dir(a)))
                    .unwrap()
                    .count() as u64
                    - 2;
                std::fs::remove_file(obj(env, &layout::chunk(a, chunks - 1))).unwrap();
            },
            |e| matches!(e, ReadError::MissingChunk(_)),
        ),
        (
            "a chunk object truncated",
            |env, a, _| {
                let p = obj(env, &layout::chunk(a, 0));
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            },
            |e| matches!(e, ReadError::Format(FormatError::Length { index: 0, .. })),
        ),
        (
            "a chunk appended after the end",
            |env, a, _| {
                let chunks = std::fs::read_dir(obj(env, &layout::session_dir(a)))
                    .unwrap()
                    .count() as u64
                    - 2;
                std::fs::copy(
                    obj(env, &layout::chunk(a, 0)),
                    obj(env, &layout::chunk(a, chunks)),
                )
                .unwrap();
            },
            |e| matches!(e, ReadError::UnexpectedChunk { .. }),
        ),
        (
            "the trailer edited",
            |env, a, _| {
                let p = obj(env, &layout::trailer(a));
                let mut b = std::fs::read(&p).unwrap();
                let at = b.windows(10).position(|w| w == b"\"blocked\":").unwrap();
                b[at + 10] = b'7';
                std::fs::write(&p, b).unwrap();
            },
            |e| matches!(e, ReadError::Format(FormatError::BadSignature("trailer"))),
        ),
        (
            "the header edited (user renamed)",
            |env, a, _| {
                let p = obj(env, &layout::header(a));
                let mut b = std::fs::read(&p).unwrap();
                let at = b.windows(7).position(|w| w == b"\"alice\"").unwrap();
                b[at + 1] = b'A';
                std::fs::write(&p, b).unwrap();
            },
            |e| matches!(e, ReadError::Format(FormatError::BadSignature("header"))),
        ),
        (
            "the trailer of another recording",
            |env, a, b| {
                std::fs::copy(obj(env, &layout::trailer(b)), obj(env, &layout::trailer(a)))
                    .map(|_| ())
                    .unwrap()
            },
            |e| matches!(e, ReadError::Format(FormatError::BadSignature("trailer"))),
        ),
    ];
    for (name, tamper, expect) in cases {
        let env = Env::new();
        let (a, b) = two_recordings(&env).await;
        load(&env, &a).await.unwrap();
        tamper(&env, &a, &b);
        match load(&env, &a).await {
            Ok(_) => panic!("{name}: not detected"),
            Err(e) => assert!(expect(&e), "{name}: wrong error: {e}"),
        }
        // Structure and signatures alone (no key) catch it too, except a seal that only the
        // key can check.
        let keyless = reader::load(&store(&env), &a, None, &Trust::default(), false).await;
        assert!(
            keyless.is_err() || name.contains("flipped") || name.contains("another recording"),
            "{name}: keyless load passed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bytes_are_errors_never_panics() {
    // A deterministic mutation sweep over every object of a small recording.
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let id = record(&recs, every_event()).await;
    let files = env.files("store");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..150 {
        let f = &files[round % files.len()];
        let p = env.path("store").join(f);
        let orig = std::fs::read(&p).unwrap();
        let mut b = orig.clone();
        match next() % 4 {
            0 => {
                let i = (next() as usize) % b.len();
                b[i] ^= 1 << (next() % 8);
            }
            1 => b.truncate((next() as usize) % b.len()),
            2 => b.extend_from_slice(&next().to_le_bytes()),
            _ => {
                let i = (next() as usize) % b.len();
                b[i] = (next() & 0xff) as u8;
            }
        }
        if b == orig {
            continue;
        }
        std::fs::write(&p, &b).unwrap();
        assert!(
            load(&env, &id).await.is_err(),
            "round {round}: mutation of {f} not detected"
        );
        std::fs::write(&p, &orig).unwrap();
    }
    load(&env, &id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_recorder_still_closes_its_recording() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let rec = recs.begin(meta("alice")).await.unwrap();
    let id = rec.session_id().to_string();
    rec.record(Event::Marker("before the drop".into()))
        .await
        .unwrap();
    drop(rec);
    let trailer = env.path("store").join(layout::trailer(&id));
    wait_until("the trailer is written", Duration::from_secs(5), || {
        trailer.exists()
    });
    let loaded = load(&env, &id).await.unwrap();
    assert!(loaded
        .trailer
        .unwrap()
        .info
        .reason
        .contains("without closing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_seals_and_uploads_open_sessions_then_returns() {
    let env = Env::new();
    let recs = Recordings::start(env.settings(), env.signer())
        .await
        .unwrap();
    let rec = recs.begin(meta("alice")).await.unwrap();
    let id = rec.session_id().to_string();
    rec.record(Event::Marker("open at shutdown".into()))
        .await
        .unwrap();
    let closing = tokio::spawn(async move { rec.close("bastion shutting down").await });
    recs.shutdown(Duration::from_secs(10)).await;
    closing.await.unwrap().unwrap();
    assert!(load(&env, &id).await.is_ok());
}
