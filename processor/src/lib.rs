//! The lastseen processor: notices per-person silence in the contacts stream and emits events.
//!
//! Layout:
//! - [`detector`] — the pure, synchronous per-person state machine (no I/O, no wall clock, no
//!   randomness): records of one partition in, [`common::record::PersonEvent`]s out, with
//!   snapshots for a compacted changelog. Inside: `person` (40-byte state + one id/address
//!   block, in a chunked slab), `index` (insert-only id → slab table whose slots can be
//!   prefetched before lookup, for `apply_batch`), `wheel` (deadlines in virtual time).
//! - `service` — the Kafka shell around it (consume, run one detector per partition, produce
//!   events and changelog exactly once).

pub mod detector;
pub mod service;
