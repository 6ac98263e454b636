//! Shared foundation of lastseen: the records on the topics, the one configuration every
//! binary reads, and the telemetry plumbing.
//!
//! # Layout
//! - [`record`] — the record types: contacts (registration, ping, tick; owned [`Contact`] and
//!   borrowed [`ContactRef`]), person events, dead letters; times in epoch milliseconds.
//! - [`codec`] — the one encoder and decoder of every record on every topic (JSON), with the
//!   shared JSON byte cursor of every fast path.
//! - [`config`] — layered configuration (embedded `defaults.toml` → `--config FILE` →
//!   `LASTSEEN_<SECTION>__<KEY>`), every problem reported at once.
//! - [`telemetry`] — logging, the `/metrics` `/healthz` `/readyz` admin server.
//! - [`lifecycle`] — what every service's `run(config, listeners, shutdown)` takes
//!   ([`Listeners`], [`Shutdown`]) and the one retry-until-shutdown helper with its [`Backoff`].
//! - [`cli`] — the command-line arguments every service shares.

pub mod cli;
pub mod codec;
pub mod config;
pub mod lifecycle;
pub mod record;
pub mod telemetry;

pub use config::Config;
pub use lifecycle::{Backoff, Listeners, Retryable, Shutdown};
pub use record::{
    Contact, ContactRef, DeadLetter, EventKind, Millis, PersonEvent, Ping, Registration, Tick,
};
