//! vigil: an access gateway for SSH servers and PostgreSQL databases that enforces policy on
//! every command and records every session into sealed, streamed recordings.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod approval;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod forensics;
pub mod pg;
pub mod policy;
pub mod recording;
pub mod replay;
pub mod ssh;
pub mod store;
