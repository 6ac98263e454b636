//! The fleet: a simulator of phones ([`sim`]), the ground truth it writes ([`truth`], computed
//! by [`model`]), the verifier that compares ClickHouse with it ([`verify`]), and process
//! accounting for benchmarks ([`procstat`]).

pub mod model;
pub mod procstat;
pub mod sim;
pub mod truth;
pub mod verify;
