//! vigil's integration tests: one binary, real servers and real clients.

mod approvals;
mod audit;
mod cli;
mod golden;
mod harness;
mod pg;
mod pg_upstream;
mod pgserver;
mod pty;
mod recording;
mod ssh;
mod store;
