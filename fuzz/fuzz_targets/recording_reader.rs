//! Fuzzes everything that parses recording bytes: headers, trailers, chunk frames, sealed
//! chunks under a fixed key, and event batches. Property: an error, never a panic; and a
//! batch that decodes round-trips through encode.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vigil::recording::{event, format, keys::DataKey};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(h) = format::Header::decode(bytes.clone()) {
        let _ = format::Trailer::decode(bytes.clone(), &h);
    }
    let _ = format::check_chunk_frame(0, data);
    let key = DataKey::from_bytes([7; 32]);
    if let Ok(aead) = key.aead() {
        if let Ok(c) = format::open_chunk(&aead, &[0; 32], 0, data) {
            let _ = event::decode(&c.batch);
        }
    }
    if let Ok(events) = event::decode(&bytes) {
        let again = event::decode(&Bytes::from(event::encode(&events)));
        assert_eq!(again.ok(), Some(events), "decoded events round-trip");
    }
});
