//! The ClickHouse side of the delivery loop: a batch's inserts, each retried with the same
//! rows and the same deduplication token until ClickHouse confirms it.

use super::batch::Batch;
use crate::ch::Ch;
use crate::error::SinkError;
use crate::metrics::Metrics;
use crate::rows::PingBlock;
use common::lifecycle::{Backoff, Retryable, Shutdown, retry_with};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An insert error as the retry helper sees it: always worth another try (see
/// [`Writer::retry`]); the wrapped error still says whether it was transient, for the log.
struct AlwaysRetry(SinkError);

impl Retryable for AlwaysRetry {
    fn is_retryable(&self) -> bool {
        true
    }
}

/// Shared state of the writer.
#[derive(Clone)]
pub(crate) struct Writer {
    pub ch: Ch,
    pub metrics: Metrics,
    pub ready: common::telemetry::Readiness,
    pub dedup_tokens: bool,
    /// Set while ClickHouse writes fail (drives pausing).
    pub failing: Arc<AtomicBool>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Writer {
    pub fn set_up(&self, up: bool) {
        self.failing.store(!up, Ordering::SeqCst);
        self.metrics.clickhouse_up.set(if up { 1.0 } else { 0.0 });
        self.ready.set(up);
    }

    /// Writes every table of `batch`, retrying each failed insert for ever. Returns false only
    /// when shutdown was requested while the batch was not confirmed.
    pub async fn write(&self, batch: &Batch, shutdown: Shutdown) -> bool {
        self.write_pings(batch, &shutdown).await
            && self
                .write_table("registrations", &batch.registrations, batch, &shutdown)
                .await
            && self
                .write_table("person_events", &batch.events, batch, &shutdown)
                .await
    }

    async fn write_pings(&self, batch: &Batch, shutdown: &Shutdown) -> bool {
        let rows = batch.pings.len();
        let token = self.dedup_tokens.then(|| batch.token("pings"));
        self.retry("pings", rows, shutdown, || {
            self.ch.insert_native(
                "pings",
                PingBlock::COLUMNS,
                &batch.ping_chunks,
                token.as_deref(),
            )
        })
        .await
    }

    /// Metrics and health after a confirmed insert.
    fn insert_ok(&self, table: &str, rows: usize, t0: Instant, attempt: u32) {
        let m = &self.metrics;
        m.insert_duration
            .with_label_values(&[table])
            .observe(t0.elapsed().as_secs_f64());
        m.batches.with_label_values(&[table, "ok"]).inc();
        m.rows_written
            .with_label_values(&[table])
            .inc_by(rows as u64);
        self.set_up(true);
        if attempt > 1 {
            tracing::info!(table, attempt, rows, "insert succeeded after retries");
        }
    }

    async fn write_table<T>(
        &self,
        table: &str,
        rows: &[T],
        batch: &Batch,
        shutdown: &Shutdown,
    ) -> bool
    where
        T: clickhouse::Row + clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
    {
        let token = self.dedup_tokens.then(|| batch.token(table));
        self.retry(table, rows.len(), shutdown, || {
            self.ch.insert(table, rows, token.as_deref())
        })
        .await
    }

    /// Runs `insert` until it succeeds (with backoff, metrics and health), or until shutdown.
    /// Every error is retried with the same rows and token: a batch that ClickHouse rejects
    /// for good is retried too, logged as needing an operator (splitting it and parking the
    /// offending rows is planned, not built).
    async fn retry<F, Fut>(
        &self,
        table: &str,
        rows: usize,
        shutdown: &Shutdown,
        mut insert: F,
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        if rows == 0 {
            return true;
        }
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let mut t0 = Instant::now();
        let mut attempt = 0u32;
        let result = retry_with(
            shutdown,
            &mut backoff,
            || {
                t0 = Instant::now();
                attempt += 1;
                let f = insert();
                async move { f.await.map_err(AlwaysRetry) }
            },
            |AlwaysRetry(e), attempt, delay| {
                self.metrics
                    .batches
                    .with_label_values(&[table, "error"])
                    .inc();
                self.metrics.insert_errors.with_label_values(&[table]).inc();
                self.set_up(false);
                if e.is_retryable() {
                    tracing::warn!(table, attempt, error = %e, ?delay, "insert failed, retrying the same batch");
                } else {
                    tracing::error!(table, attempt, error = %e, ?delay,
                        "insert rejected; retrying the same batch (operator action needed)");
                }
            },
        )
        .await;
        match result {
            Ok(()) => {
                self.insert_ok(table, rows, t0, attempt);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
