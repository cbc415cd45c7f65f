//! Writes the golden v1 recordings in testdata/recordings/v1 (run once per format version:
//! `cargo run --example golden`). The test suite decodes them forever after; never regenerate
//! a committed version, add a new directory for a new format version instead.

use std::{path::Path, time::Duration};

use vigil::recording::{
    keys::{RecipientSecret, Signer},
    RecordingSettings, Recordings, SessionMeta,
};

#[path = "../testdata/recordings/v1/events.rs"]
mod events;
use events::{pg_events, ssh_events};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let store = root.join("recordings/v1/store");
    anyhow::ensure!(
        !store.exists(),
        "{} exists: golden recordings are never regenerated",
        store.display()
    );
    let key_path = root.join("keys/golden-auditor.key");
    let secret = if key_path.exists() {
        RecipientSecret::read_file(&key_path)?
    } else {
        let s = RecipientSecret::generate()?;
        std::fs::write(&key_path, s.to_file_text())?;
        s
    };
    let signer = Signer::load_or_create_file(&root.join("keys/golden_host_ed25519"))?;
    let spool = tempfile_dir()?;
    let mut settings =
        RecordingSettings::new(store.display().to_string(), vec![secret.public()], &spool);
    settings.flush_interval = Duration::from_millis(100);
    settings.chunk_bytes = 64 << 10;
    let recs = Recordings::start(settings, signer).await?;

    let ssh = recs
        .begin(SessionMeta {
            protocol: "ssh".into(),
            user: "alice".into(),
            target: "web1".into(),
            client: Some("127.0.0.1:50000".into()),
        })
        .await?;
    for t in ssh_events() {
        ssh.record_at(t).await?;
    }
    println!("ssh session {}", ssh.session_id());
    ssh.close("client disconnected").await?;

    let pg = recs
        .begin(SessionMeta {
            protocol: "postgres".into(),
            user: "bob".into(),
            target: "appdb".into(),
            client: None,
        })
        .await?;
    for t in pg_events() {
        pg.record_at(t).await?;
    }
    println!("postgres session {}", pg.session_id());
    pg.close("client terminated").await?;
    recs.shutdown(Duration::from_secs(10)).await;
    std::fs::remove_dir_all(&spool)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("vigil-golden-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
