//! Audit log benchmark: the cost of `Audit::record` on the path of every allowed statement
//! (format, SHA-256, one `write`), with checkpoints and rotation as configured by default.
//!
//! Run: `cargo bench --bench audit` (VIGIL_BENCH_EVENTS sets the count, default 200000).

use std::{sync::Arc, time::Instant};

use vigil::{
    audit::{Audit, AuditEvent, AuditSettings},
    recording::keys::Signer,
};

fn main() {
    let n: u64 = std::env::var("VIGIL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = Arc::new(Signer::from_seed(&[5; 32]).expect("signer"));
    let audit =
        Audit::open(AuditSettings::new(dir.path().join("audit.log")), signer).expect("audit log");
    // A statement decision as the Postgres session writes it.
    let base = AuditEvent {
        user: Some("alice".into()),
        target: Some("appdb".into()),
        source: Some("127.0.0.1:53422".into()),
        session: Some("20261123T022948Z-1a2b3c4d5e6f".into()),
        protocol: Some("postgres".into()),
        ..AuditEvent::new("command.allow")
    };
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let start = Instant::now();
    for i in 0..n {
        audit.record(AuditEvent {
            command: Some(sql.into()),
            ..base.clone()
        });
        if i % 50_000 == 0 {
            audit.tick();
        }
    }
    let took = start.elapsed();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "audit record: {n} events in {took:.2?}: {:.2} us/event, {:.0} events/s, {:.0} bytes/event",
        took.as_secs_f64() * 1e6 / n as f64,
        n as f64 / took.as_secs_f64(),
        bytes as f64 / n as f64
    );
}
