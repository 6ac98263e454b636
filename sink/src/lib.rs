//! The lastseen sink: Kafka (`lastseen.contacts`, `lastseen.events`) → ClickHouse, exactly once
//! as seen through the deduplicating keys (`FINAL`).
//!
//! - [`migrate`] — versioned, embedded SQL migrations (`sink/migrations/`).
//! - [`pipeline`] — consume, batch, insert, commit; dead letters; back-pressure.
//! - [`retention`] — ping retention by dropping day partitions.
//! - [`rows`] — records (decoded by the one codec, `common::codec`) → rows; pings go straight
//!   into a `Native` block ([`rows::PingBlock`]) with their strings borrowed from the message.
//! - [`ch`] — the ClickHouse client as it works against 18.16.
//!
//! See `docs/CLICKHOUSE.md` for the tables and how to query them.

pub mod ch;
pub mod error;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod retention;
pub mod rows;
pub mod version;

pub use error::SinkError;
pub use version::ServerVersion;

use common::config::Config;
use common::lifecycle::{Backoff, Listeners, RetryError, Shutdown, retry_with};
use common::telemetry::Readiness;
use std::time::Duration;

/// How often retention is enforced.
const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

/// `sink.pings_retention` in whole days, rounded up (for TTL clauses).
pub fn retention_days(config: &Config) -> u64 {
    config
        .sink
        .pings_retention
        .as_secs()
        .div_ceil(86_400)
        .max(1)
}

/// Connects to ClickHouse, detects its version and applies the migrations, retrying while
/// ClickHouse is unavailable until `shutdown`. `Ok(None)` means shutdown came first.
pub async fn prepare(
    config: &Config,
    ch: &ch::Ch,
    ready: &Readiness,
    metrics: &metrics::Metrics,
    shutdown: &Shutdown,
) -> Result<Option<ServerVersion>, SinkError> {
    let mut backoff = Backoff::new(config.sink.min_backoff, config.sink.max_backoff);
    let attempt = || async {
        let v = ch.version().await?;
        let report = migrate::migrate(ch, v, retention_days(config)).await?;
        Ok::<_, SinkError>((v, report))
    };
    let not_ready = |e: &SinkError, _, delay| {
        metrics.clickhouse_up.set(0.0);
        ready.set(false);
        tracing::warn!(error = %e, ?delay, "clickhouse not ready, retrying");
    };
    match retry_with(shutdown, &mut backoff, attempt, not_ready).await {
        Ok((v, report)) => {
            tracing::info!(version = %v, applied = ?report.applied,
                optional = ?report.optional_applied, "clickhouse ready");
            metrics.clickhouse_up.set(1.0);
            Ok(Some(v))
        }
        Err(RetryError::Shutdown(_)) => Ok(None),
        Err(RetryError::Failed(e)) => Err(e),
    }
}

/// `sink migrate`: apply the migrations once (no retries) and report the server version.
pub async fn migrate_once(
    config: &Config,
) -> Result<(ServerVersion, migrate::MigrationReport), SinkError> {
    let ch = ch::Ch::new(&config.clickhouse);
    let v = ch.version().await?;
    let report = migrate::migrate(&ch, v, retention_days(config)).await?;
    Ok((v, report))
}

/// Runs the sink until `shutdown` is triggered: admin server on `listeners.admin` (if any),
/// migrations, retention, delivery.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    let metrics = metrics::Metrics::new();
    let ready = Readiness::default();
    let admin = listeners.admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "admin endpoints up");
        }
        tokio::spawn(common::telemetry::serve_admin(
            listener,
            metrics.registry.clone(),
            ready.clone(),
            shutdown.clone(),
        ))
    });

    let ch = ch::Ch::new(&config.clickhouse);
    let Some(version) = prepare(&config, &ch, &ready, &metrics, &shutdown).await? else {
        if let Some(a) = admin {
            let _ = a.await;
        }
        return Ok(());
    };
    ready.set(true);

    let retention = {
        let ch = ch.clone();
        let keep = config.sink.pings_retention;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = retention::enforce(&ch, keep, common::record::now_millis()).await {
                    tracing::warn!(error = %e, "retention pass failed; will retry");
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    };

    let writer = pipeline::Writer {
        ch,
        metrics: metrics.clone(),
        ready: ready.clone(),
        dedup_tokens: version.has_insert_dedup_token(),
        failing: Default::default(),
        min_backoff: config.sink.min_backoff,
        max_backoff: config.sink.max_backoff,
    };
    let result = pipeline::deliver(&config, writer, shutdown).await;
    ready.set(false);
    retention.abort();
    if let Some(a) = admin {
        a.abort();
    }
    result
}
