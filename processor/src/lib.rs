//! The lastseen processor: notices per-person silence in the contacts stream and emits events.
//!
//! Layout:
//! - [`detector`] — the pure, synchronous per-person state machine (no I/O, no wall clock, no
//!   randomness): records of one partition in, [`common::record::PersonEvent`]s out, with
//!   snapshots for a compacted changelog. Inside: `person` (40-byte state + one id/address
//!   block, in a chunked slab), `index` (insert-only id → slab table whose slots can be
//!   prefetched before lookup, for `apply_batch`), `wheel` (deadlines in virtual time).
//!   Records enter through `apply_batch` only, as borrowed [`common::record::ContactRef`]s;
//!   snapshots are the records of [`common::codec::changelog`].
//! - `service` — the Kafka shell around it (consume, run one detector per partition, produce
//!   events and changelog exactly once): `core` (the loop, rebalances, records of a poll fed
//!   to `apply_batch`), `txn` (the transaction), `restore` (a partition from its changelog),
//!   `guard` (the partition-count check).
//! - [`rekey`] — rebuilding the changelog for a new contacts partition count (the
//!   `changelog_rekey` binary, step 5 of the repartitioning procedure in docs/OPERATIONS.md).

pub mod detector;
pub mod rekey;
pub mod service;
