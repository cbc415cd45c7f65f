//! Recording benchmark: records realistic terminal output (tens of MB: `ls -laR /usr` and the
//! text of /usr/share/doc) and reports, measured in the same run:
//!
//! - the raw zstd + AES-256-GCM rate on the same data (one core), and the recorder's
//!   end-to-end throughput through the real writer into a file store (goal >= 0.8x raw);
//! - the compression ratio on terminal output (goal >= 5x);
//! - `vigil search` scan throughput over the recorded sessions (goal >= 1 GB/s of plaintext).
//!
//! Run: `cargo bench --bench recording` (VIGIL_BENCH_MB sets the corpus size, default 64).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use bytes::Bytes;
use vigil::{
    forensics::{self, Reading},
    recording::{
        event::{self, Event, Offset, Timed},
        format,
        keys::{DataKey, RecipientSecret, Signer},
        reader::{Filter, Trust},
        RecordingSettings, Recordings, SessionMeta,
    },
    replay::search::{MatchOptions, Matcher},
    store::Store,
};

const SESSIONS_FOR_SEARCH: usize = 4;

fn corpus(target: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(target + (1 << 20));
    if let Ok(out) = Command::new("ls").args(["-laR", "/usr"]).output() {
        text.extend_from_slice(&out.stdout);
    }
    let mut docs = Vec::new();
    collect_docs(std::path::Path::new("/usr/share/doc"), &mut docs);
    docs.sort();
    for p in docs {
        if text.len() >= target {
            break;
        }
        if let Ok(b) = std::fs::read(&p) {
            if !b.contains(&0) {
                text.extend_from_slice(&b);
            }
        }
    }
    let seed = text.clone();
    while text.len() < target && !seed.is_empty() {
        text.extend_from_slice(&seed[..seed.len().min(target - text.len())]);
    }
    text.truncate(target);
    // A terminal sends CR LF.
    let mut out = Vec::with_capacity(text.len() * 21 / 20);
    for line in text.split(|b| *b == b'\n') {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn collect_docs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_docs(&p, out);
        } else if p.extension().is_none() || p.extension().is_some_and(|x| x == "txt" || x == "md")
        {
            out.push(p);
        }
    }
}

/// Splits output into SSH-channel-sized events (4 to 32 KiB), 1 ms apart.
fn events(data: &[u8]) -> Vec<Timed> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0u64;
    while pos < data.len() {
        let n = (4096 + (i as usize * 7919) % 28672).min(data.len() - pos);
        out.push(Timed {
            at: Offset(i * 1000),
            event: Event::Output(Bytes::copy_from_slice(&data[pos..pos + n])),
        });
        pos += n;
        i += 1;
    }
    out
}

fn rate(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() -> anyhow::Result<()> {
    let mb: usize = std::env::var("VIGIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let data = corpus(mb << 20);
    let evs = events(&data);
    let plain: usize = evs.iter().map(|e| e.event.approx_len()).sum();
    println!(
        "corpus: {:.1} MB of terminal output in {} output events",
        data.len() as f64 / 1e6,
        evs.len()
    );

    // Raw: encode + zstd + AES-256-GCM over the same 1 MiB batches, one core, no I/O.
    let key = DataKey::generate()?;
    let aead = key.aead()?;
    let mut raw = Vec::new();
    for level in [1, 3] {
        let start = Instant::now();
        let mut sealed = 0usize;
        let mut batch = Vec::with_capacity(2 << 20);
        for (i, e) in evs.iter().enumerate() {
            event::encode_into(&mut batch, e);
            if batch.len() >= 1 << 20 || i + 1 == evs.len() {
                sealed +=
                    format::seal_chunk(&aead, &[0; 32], i as u64, false, &batch, 1, (0, 0), level)?
                        .len();
                batch.clear();
            }
        }
        let d = start.elapsed();
        println!(
            "raw zstd-{level} + AES-256-GCM: {:.0} MB/s, ratio {:.1}x",
            rate(data.len(), d),
            data.len() as f64 / sealed as f64
        );
        raw.push((level, rate(data.len(), d)));
    }
    {
        let mut frames = Vec::new();
        for c in data.chunks(1 << 20) {
            frames.push((zstd::bulk::compress(c, 3)?, c.len()));
        }
        let start = Instant::now();
        let mut dctx = zstd::bulk::Decompressor::new()?;
        for (f, n) in &frames {
            let _ = dctx.decompress(f, *n)?;
        }
        println!(
            "zstd-3 decompression alone: {:.0} MB/s",
            rate(data.len(), start.elapsed())
        );
    }
    let aes_only = {
        let mut buf = data.clone();
        let start = Instant::now();
        vigil::recording::keys::seal(&aead, [0; 12], b"", &mut buf)?;
        rate(data.len(), start.elapsed())
    };
    println!("AES-256-GCM alone (aws-lc-rs): {aes_only:.0} MB/s");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let secret = RecipientSecret::generate()?;
    let secret2 = RecipientSecret::from_bytes(&secret.to_bytes())?;
    let signer_path = dir.path().join("host_ed25519");
    let mut settings = RecordingSettings::new(
        dir.path().join("store").display().to_string(),
        vec![secret.public()],
        dir.path().join("spool"),
    );
    settings.flush_interval = Duration::from_secs(2);

    let (recorder_rate, ratio) = rt.block_on(async {
        let recs =
            Recordings::start(settings.clone(), Signer::load_or_create_file(&signer_path)?).await?;
        let mut best = 0f64;
        let mut ratio = 0f64;
        for _ in 0..SESSIONS_FOR_SEARCH {
            let rec = recs
                .begin(SessionMeta {
                    protocol: "ssh".into(),
                    user: "bench".into(),
                    target: "web1".into(),
                    client: None,
                })
                .await?;
            let start = Instant::now();
            for e in &evs {
                rec.record_at(e.clone()).await?;
            }
            let summary = rec.close("done").await?;
            let d = start.elapsed();
            best = best.max(rate(data.len(), d));
            ratio = summary.plaintext_bytes as f64 / summary.stored_bytes as f64;
        }
        recs.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok((best, ratio))
    })?;
    let raw3 = raw
        .iter()
        .find(|(l, _)| *l == 3)
        .map(|(_, r)| *r)
        .unwrap_or(1.0);
    println!(
        "recorder (zstd-3, file store): {recorder_rate:.0} MB/s = {:.2}x raw (goal >= 0.8x)",
        recorder_rate / raw3
    );
    println!("compression ratio on terminal output: {ratio:.1}x (goal >= 5x)");

    let scanned = rt.block_on(async {
        let reading = Reading {
            store: Store::open(&settings.store, &Default::default())?,
            trust: Trust::default(),
            key: Some(secret),
        };
        let matcher = Matcher::new(
            "no such needle in the corpus",
            MatchOptions {
                literal: true,
                ignore_case: false,
            },
        )?;
        let mut best = 0f64;
        for _ in 0..3 {
            let start = Instant::now();
            let (found, failed) =
                forensics::search(&reading, &matcher, &Filter::default(), &|_| {}).await?;
            anyhow::ensure!(
                failed.is_empty(),
                "search failed on {} sessions",
                failed.len()
            );
            let _ = found;
            best = best.max(rate(data.len() * SESSIONS_FOR_SEARCH, start.elapsed()));
        }
        anyhow::Ok(best)
    })?;
    // Where search time goes, one core, one session.
    rt.block_on(async {
        let store = Store::open(&settings.store, &Default::default())?;
        let ids = store.list_dirs("sessions").await?;
        let id = ids.first().cloned().unwrap_or_default();
        let t = Instant::now();
        let loaded = vigil::recording::reader::load(&store, &id, Some(&secret2), &Trust::default(), false).await?;
        let open = t.elapsed();
        let t = Instant::now();
        let evs = loaded.events()?;
        let decode = t.elapsed();
        let matcher = Matcher::new("no such needle in the corpus", MatchOptions { literal: true, ignore_case: false })?;
        let t = Instant::now();
        let hits = vigil::replay::search::search_events(&matcher, evs.iter());
        let scan = t.elapsed();
        println!(
            "search breakdown for one session: fetch+verify+open {:.0} MB/s (2 cores), decode {:.0} MB/s, strip+match {:.0} MB/s ({} hits)",
            rate(data.len(), open),
            rate(data.len(), decode),
            rate(data.len(), scan),
            hits.len()
        );
        anyhow::Ok(())
    })?;
    println!(
        "search scan: {:.0} MB/s of plaintext over {SESSIONS_FOR_SEARCH} sessions on {} cores (goal >= 1000 MB/s)",
        scanned,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let _ = plain;
    Ok(())
}
