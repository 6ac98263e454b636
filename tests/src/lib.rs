//! End-to-end tests, the fleet simulator and verifier, and the whole-stack benchmark, against
//! the real service binaries and the real Kafka and ClickHouse started by `deploy/local/up`.
//!
//! # Layout
//! - [`fleet`] — the simulated fleet of phones, its ground truth, the verifier that compares
//!   ClickHouse with it, and process statistics.
//! - `tests/` — the end-to-end tests; `src/bin/` — fleet tools (`fleet`, `verify`), the
//!   topic pruner (`prune_topics`) and `e2e_bench`.
//!
//! The harness itself (the [`testkit::Stack`] of child processes, topics, tokens, ClickHouse
//! access) is the workspace's one test kit, `testkit`. The binaries are taken from
//! `target/debug` (or `LASTSEEN_BIN_DIR`); `./tests/run` builds them first.

pub mod fleet;
