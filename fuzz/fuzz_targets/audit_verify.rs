//! Fuzzes audit log verification. The input is read as a log file (active and closed), then
//! used to change a valid closed segment. Properties: verification never panics; any change to
//! the bytes of a closed segment is a fault.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::{
    audit::{
        chain::{self, Segment, Trust},
        AuditEvent,
    },
    recording::keys::Signer,
};

fn valid(signer: &Signer) -> Vec<u8> {
    let mut prev = chain::GENESIS;
    let mut out = Vec::new();
    for seq in 0..6u64 {
        let line = if seq == 5 {
            chain::encode_checkpoint(seq, "2026-11-23T10:00:00Z", "shutdown", &prev, true, signer)
        } else if seq == 2 {
            chain::encode_checkpoint(
                seq,
                "2026-11-23T10:00:00Z",
                "interval",
                &prev,
                false,
                signer,
            )
        } else {
            let ev = AuditEvent {
                user: Some("alice".into()),
                ..AuditEvent::new("auth.success")
            };
            chain::encode(seq, "2026-11-23T10:00:00Z", &ev, &prev)
        };
        prev = chain::hash(&line);
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

fuzz_target!(|data: &[u8]| {
    for closed in [false, true] {
        let seg = Segment {
            name: "fuzz".into(),
            bytes: data.to_vec(),
            closed,
            first_seq: closed.then_some(0),
        };
        let _ = chain::verify(&[seg], &Trust::default());
    }
    let Ok(signer) = Signer::from_seed(&[7; 32]) else {
        return;
    };
    let good = valid(&signer);
    // The input says where to write what: pairs of (offset, byte).
    let mut bytes = good.clone();
    for pair in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
        bytes[at] = pair[2];
    }
    let seg = Segment {
        name: "fuzz".into(),
        bytes: bytes.clone(),
        closed: true,
        first_seq: Some(0),
    };
    let trust = Trust {
        signers: vec![signer.public_openssh().to_string()],
    };
    let report = chain::verify(&[seg], &trust);
    assert_eq!(
        report.fault.is_none(),
        bytes == good,
        "changed={} fault={:?}",
        bytes != good,
        report.fault
    );
});
