//! The one codec for the records on the topics: each module owns one topic's byte format,
//! as plain structs with `encode`/`decode` and typed errors.
//!
//! # Layout
//! - [`changelog`] — the processor's compacted state topic: per-person snapshots and the
//!   per-partition clock (binary, version marker first).

pub mod changelog;
