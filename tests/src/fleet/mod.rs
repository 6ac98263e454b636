//! The fleet: a simulator of phones ([`sim`]), the ground truth it writes ([`truth`], computed
//! by [`model`]), and the verifier that compares ClickHouse with it
//! ([`verify`]). Process accounting for the benchmarks is `testkit::procstat`.

pub mod model;
pub mod sim;
pub mod truth;
pub mod verify;
