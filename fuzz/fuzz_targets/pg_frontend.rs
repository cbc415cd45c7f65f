//! Fuzzes everything that parses bytes a Postgres client sends: the startup packet, regular
//! messages, SASL/password bodies and the SCRAM exchange; and, since the same decoder core reads
//! them, server messages too. Properties: an error or "need more bytes", never a panic; every
//! decoded message's frame is exactly the bytes it consumed; a DataRow's value ranges lie inside
//! its frame; a rebuilt DataRow decodes to the same values.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vigil::pg::{
    scram::{MockKey, ScramServer},
    wire::{
        backend::{self, Backend},
        frontend::{self, Frontend},
        MAX_STARTUP_LEN,
    },
};

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // A connection's first bytes: startup requests until one fails or more bytes are needed.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = frontend::decode_startup(&mut buf, MAX_STARTUP_LEN) {}

    // Regular-phase client messages.
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(m)) = frontend::decode(&mut buf, MAX) {
        let frame = m.frame();
        assert_eq!(&frame[..], &data[consumed..consumed + frame.len()], "frame is the input");
        consumed += frame.len();
        if let Frontend::AuthResponse { body, .. } = &m {
            let _ = frontend::password(body);
            let mut server = ScramServer::new(None, "fuzz", &MockKey::derive(b"fuzz"));
            if let Ok(init) = frontend::sasl_initial_response(body) {
                if let Ok(_first) = server.client_first(init.data.as_deref().unwrap_or_default()) {
                    let _ = server.client_final(body);
                }
            }
        }
    }

    // Server messages.
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(m)) = backend::decode(&mut buf, MAX) {
        let frame = m.frame();
        assert_eq!(&frame[..], &data[consumed..consumed + frame.len()], "frame is the input");
        consumed += frame.len();
        if let Backend::DataRow(row) = &m {
            for r in row.ranges().flatten() {
                assert!(r.end <= frame.len(), "value range inside the frame");
            }
            let values: Vec<_> = row.values().collect();
            assert_eq!(values.len(), row.len());
            let rebuilt = backend::data_row(values.iter().copied()).expect("a decoded row fits");
            assert_eq!(&rebuilt[..], &frame[..], "a row rebuilds to its frame");
        }
    }
});
