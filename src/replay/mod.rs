//! Replay of opened recordings, pure and synchronous: output cleaned into screen lines, search,
//! asciicast and JSON/text export, and terminal playback (the only module that touches a tty).
//!
//! Invariant: nothing here decrypts, fetches or verifies; callers hand over a checked header and
//! decoded events, and every function here is total over them.

pub mod asciicast;
pub mod export;
pub mod play;
pub mod render;
pub mod search;
pub mod strip;

#[cfg(test)]
mod testing {
    use bytes::Bytes;

    use crate::recording::format::HeaderInfo;
    use crate::recording::{Event, Offset, Timed};

    pub fn header(protocol: &str) -> HeaderInfo {
        HeaderInfo {
            version: 1,
            session_id: "20261123T022948Z-1a2b3c4d5e6f".into(),
            protocol: protocol.into(),
            user: "alice".into(),
            target: "app".into(),
            start: "2026-11-23T02:29:48.000000Z".into(),
            start_unix_us: 1_795_401_788_000_000,
            signer: String::new(),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            recipients: Vec::new(),
            client: None,
        }
    }

    pub fn at(us: u64, event: Event) -> Timed {
        Timed {
            at: Offset(us),
            event,
        }
    }

    pub fn out(us: u64, bytes: &[u8]) -> Timed {
        at(us, Event::Output(Bytes::copy_from_slice(bytes)))
    }
}
