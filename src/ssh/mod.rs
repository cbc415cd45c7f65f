//! The SSH front end: the russh server (authentication against vigil's user directory), one
//! task per session channel that checks commands and relays to the target, the upstream client
//! with pinned host keys, vigil's own control commands, and the interactive line tracker.

pub mod channel;
pub mod control;
pub mod forward;
pub mod server;
pub mod sftp;
pub mod terminal;
pub mod upstream;
