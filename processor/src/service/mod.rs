//! The Kafka shell around the [`Detector`]: consume contacts in a consumer group, run one
//! detector per assigned partition, and write events, state and offsets exactly once.
//!
//! # How exactly-once works here
//! - One transactional producer per instance (`transactional.id` =
//!   `<processor.transactional_id_prefix>-<processor.instance_id>`, stable across restarts, so
//!   a restarted instance fences its predecessor and aborts whatever it left open).
//! - Every `processor.commit_interval` the open transaction is closed with, in one atomic
//!   unit: the events produced since the last commit, the changed per-person state (compacted
//!   changelog, keyed by person id, written to the changelog partition that mirrors the
//!   contacts partition), each partition's clock (key [`CLOCK_KEY`]), and the consumer offsets
//!   (`send_offsets_to_transaction`). The changelog values are the records of
//!   [`common::codec::changelog`].
//! - On assignment a partition's detector is rebuilt from the changelog (read_committed)
//!   before any of its records is processed. Because the detector is deterministic, re-reading
//!   the contacts after the last committed offset produces the same events with the same ids.
//! - Revoked → commit what is open, then drop the partitions. Lost → abort, drop them.
//!   Abortable transaction error → abort, rebuild every partition from the changelog and seek
//!   back to the committed offsets. Fatal → stop with an error (the supervisor restarts us).
//!
//! The loop itself is synchronous on one blocking thread: librdkafka's transactional calls
//! block, and the rebalance callbacks run inside `poll`, on the same thread.
//!
//! # Layout
//! - this file — [`run`] (admin endpoint, shutdown, the loop's thread) and [`ServiceError`];
//! - `core` — the loop: its shared state, rebalance handling, and the records of each poll
//!   decoded and fed to [`Detector::apply_batch`] (the entry point `detector_bench` measures);
//! - `txn` — the transaction: the producer, sending, waiting for deliveries, classifying
//!   transactional errors, commit and abort;
//! - `restore` — rebuilding a partition's detector from its changelog;
//! - [`metrics`] — what `/metrics` exports.

mod core;
pub mod guard;
pub mod metrics;
mod restore;
mod txn;

use self::core::run_loop;
use crate::detector::{Detector, DetectorError};
use common::config::Config;
use common::lifecycle::{Listeners, Shutdown};
use common::telemetry::Readiness;
use metrics::Metrics;
use rdkafka::error::KafkaError;

pub use common::codec::changelog::CLOCK_KEY;
pub use restore::restore;

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid configuration: {0}")]
    Config(#[from] DetectorError),
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("transaction must be aborted: {0}")]
    Abortable(String),
    #[error("fatal: {0}")]
    Fatal(String),
    #[error("restoring partition {partition}: {reason}")]
    Restore { partition: i32, reason: String },
    #[error("admin endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl ServiceError {
    /// Whether restarting the process is expected to help (all but configuration errors).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ServiceError::Config(_))
    }
}

/// Runs the processor until `shutdown` is triggered: the admin endpoint on `listeners.admin`
/// (if any), the consume–detect–produce loop on a blocking thread. Returns after the last
/// transaction is committed and the group is left.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    // Fail on a bad policy before touching Kafka.
    Detector::new(config.policy, config.clock)?;
    let metrics = Metrics::new();
    let ready = Readiness::default();
    // The admin endpoint outlives the loop (it reports not-ready while the last transaction
    // commits), so it stops on its own handle once the loop has returned.
    let admin_stop = Shutdown::new();
    let admin_task = listeners.admin.map(|admin| {
        tokio::spawn(common::telemetry::serve_admin(
            admin,
            metrics.registry.clone(),
            ready.clone(),
            admin_stop.clone(),
        ))
    });
    let result = tokio::task::spawn_blocking(move || run_loop(config, metrics, ready, shutdown))
        .await
        .unwrap_or_else(|e| {
            Err(ServiceError::Fatal(format!(
                "processing thread panicked: {e}"
            )))
        });
    admin_stop.trigger();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    result
}
