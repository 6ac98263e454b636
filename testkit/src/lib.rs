//! The one test kit of lastseen: what every crate's integration tests, the examples and the
//! benchmarks use to talk to the real Kafka and ClickHouse (started by `deploy/local/up`) and
//! to run the services.
//!
//! # Layout
//! - [`names`] — unique names; every harness topic is `e2e.<test>_<pid>_<nanos>.<kind>`, so
//!   one pruner ([`kafka::stale_test_topics`], `prune_topics`) finds what any crashed test
//!   left behind, and never a running test's topics or `lastseen.*`.
//! - [`namespace`] — one test's topics, database, groups and transactional ids, and the
//!   configuration (in-process) or `LASTSEEN_*` environment (child processes) that uses them.
//! - [`kafka`] — the broker address, one admin with one retry policy (create and delete
//!   topics), producers, committed readers, waiting for a group to catch up.
//! - [`db`] — ClickHouse through the sink's own client ([`sink::ch::Ch`]): numbers, rows,
//!   waiting for a count, dropping the database.
//! - [`fixtures`] — pings, registrations, ticks and events to produce, and [`fixtures::Env`]
//!   (a namespace with a sink configuration, for in-process tests).
//! - [`http`] — GET/POST through `reqwest`, waiting for `/readyz`.
//! - [`inproc`] — ingest, processor and sink in this process, through their
//!   `run(config, listeners, shutdown)`, on loopback ports the kernel picks.
//! - [`procstat`] — CPU time and peak memory of processes, for the benchmarks.
//! - [`stack`] — the services as child processes from `target/debug` (so tests can `kill -9`
//!   them), [`stack::free_port`], and [`stack::local`] (the shared servers' control scripts).
//! - [`SECRET`] and [`token`] — the HS256 secret every harness configures, and tokens.
//!
//! A crate's own unit tests (`#[cfg(test)]` in its `src`) do not use this kit: it depends on
//! the services, and a dev-dependency cycle would link two copies of the crate under test.

pub mod db;
pub mod fixtures;
pub mod http;
pub mod inproc;
pub mod kafka;
pub mod names;
pub mod namespace;
pub mod procstat;
pub mod stack;

pub use db::Db;
pub use kafka::{Msg, Record, brokers};
pub use names::unique;
pub use namespace::Namespace;
pub use stack::{Service, Stack, free_port};

/// The HS256 secret every harness configures (in-process and child processes) and signs with.
pub const SECRET: &str = "lastseen-test-secret";

/// An HS256 token for `person` on `device`, signed with [`SECRET`], valid for an hour.
pub fn token(person: &str, device: &str) -> String {
    token_with(SECRET, person, device)
}

/// [`token`] signed with another secret (a forged token, or a deployment's secret).
pub fn token_with(secret: &str, person: &str, device: &str) -> String {
    ingest::auth::testing::hs256_for(secret, person, device)
}
