//! The golden v1 recordings in testdata/ decode forever, and their asciicast export plays
//! byte for byte in the real asciinema player.

use std::path::PathBuf;

use vigil::{
    recording::{
        event::Event,
        keys::RecipientSecret,
        reader::{self, Trust},
    },
    replay,
    store::Store,
};

#[path = "../../testdata/recordings/v1/events.rs"]
mod events;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

struct Golden {
    store: Store,
    key: RecipientSecret,
    trust: Trust,
}

fn golden() -> Golden {
    let signer = std::fs::read_to_string(testdata("keys/golden_host_ed25519.pub")).unwrap();
    Golden {
        store: Store::open(
            &testdata("recordings/v1/store").display().to_string(),
            &Default::default(),
        )
        .unwrap(),
        key: RecipientSecret::read_file(&testdata("keys/golden-auditor.key")).unwrap(),
        trust: Trust {
            signers: vec![signer],
        },
    }
}

async fn session(g: &Golden, protocol: &str) -> reader::Loaded {
    let all = reader::list(&g.store, &Default::default(), &g.trust)
        .await
        .unwrap();
    let l = all
        .iter()
        .find(|l| l.header.as_ref().unwrap().protocol == protocol)
        .unwrap();
    reader::load(&g.store, &l.id, Some(&g.key), &g.trust, false)
        .await
        .unwrap()
}

#[tokio::test]
async fn golden_v1_recordings_decode_to_their_events() {
    let g = golden();
    let ssh = session(&g, "ssh").await;
    assert!(ssh.signer_pinned);
    assert!(ssh.chunk_count > 1, "the golden ssh session spans chunks");
    assert_eq!(ssh.events().unwrap(), events::ssh_events());
    assert_eq!(
        (
            ssh.header.info.user.as_str(),
            ssh.header.info.target.as_str()
        ),
        ("alice", "web1")
    );
    let t = ssh.trailer.unwrap().info;
    assert_eq!((t.blocked, t.approved, t.commands), (1, 1, 2));

    let pg = session(&g, "postgres").await;
    assert_eq!(pg.events().unwrap(), events::pg_events());
}

#[tokio::test]
async fn asciicast_export_plays_byte_for_byte_in_asciinema() {
    let g = golden();
    let ssh = session(&g, "ssh").await;
    let events = ssh.events().unwrap();
    let cast = replay::asciicast::encode(&ssh.header.info, &events);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.cast");
    std::fs::write(&path, &cast).unwrap();
    let out = std::process::Command::new("asciinema")
        .arg("cat")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run asciinema ({e}): install the player with `pip install asciinema==2.4.0`"));
    assert!(
        out.status.success(),
        "asciinema cat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<u8> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Output(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(
        out.stdout == expected,
        "asciinema cat differs from the recorded output"
    );
    // The header carries the first terminal size, later resizes are "r" events.
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            header["version"].as_u64(),
            header["width"].as_u64(),
            header["height"].as_u64()
        ),
        (Some(2), Some(100), Some(30))
    );
    assert!(cast
        .lines()
        .any(|l| l.contains("\"r\"") && l.contains("120x40")));
}

/// The golden v1 audit log (two closed segments and an active one, signed by the golden host
/// key) verifies forever, and reads back as the events it was written with.
#[test]
fn golden_v1_audit_log_verifies() {
    use vigil::audit::{chain, files};
    let signer = std::fs::read_to_string(testdata("keys/golden_host_ed25519.pub")).unwrap();
    let segments = files::read_segments(&testdata("audit/v1/audit.log")).unwrap();
    assert_eq!(segments.len(), 3);
    let report = chain::verify(
        &segments,
        &chain::Trust {
            signers: vec![signer.trim().to_string()],
        },
    );
    assert_eq!(report.fault, None);
    assert_eq!(
        (report.lines, report.checkpoints, report.last_checkpoint),
        (28, 4, Some(27))
    );
    let deny = segments[0]
        .bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| chain::Entry::parse(l).ok())
        .find(|e| e.event.action == "command.deny")
        .unwrap();
    assert_eq!(
        (
            deny.seq,
            deny.event.user.as_deref(),
            deny.event.command.as_deref(),
            deny.event.rule.as_deref()
        ),
        (
            6,
            Some("alice"),
            Some("rm -rf /"),
            Some("shell-destructive")
        )
    );
}
