//! The ClickHouse side of the delivery loop: a batch's inserts, table by table.
//!
//! What a failed insert leads to depends on its [`ErrorClass`]:
//! - *transient* and *systemic*: the same rows with the same deduplication token, after a
//!   backoff, until ClickHouse confirms them (systemic ones are logged at ERROR and counted
//!   in `lastseen_sink_insert_rejected_total{class="systemic"}`: an operator must act, and
//!   the data is never diverted);
//! - *data*: the table's rows of the batch are split ([`super::split`]) until the refused
//!   rows are found; the others are written, each refused row goes to the dead-letter topic,
//!   and the batch counts as confirmed once every dead letter is acknowledged. Each
//!   sub-insert has its own deterministic token (the batch's, the table's, the row range),
//!   so its retries deduplicate on servers with tokens; on 18.16 the ReplacingMergeTree
//!   keys collapse them.
//!
//! The hot path is unchanged: one insert per table with the batch's prebuilt body; nothing is
//! indexed or kept per row until ClickHouse refuses rows.

use super::CHUNK;
use super::batch::Batch;
use super::kafka::DeadLetters;
use super::split::Split;
use crate::ch::Ch;
use crate::error::{ClickHouseError, ErrorClass, SinkError};
use crate::metrics::Metrics;
use crate::rows::{PingBlock, Source, SourceRow};
use common::lifecycle::{Backoff, RetryError, Retryable, Shutdown, retry_with};
use common::record::{DeadLetter, now_millis};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most rows of one table of one batch that are parked: a rejection of more rows is taken as
/// systemic (the request rather than the rows is wrong, e.g. a column type changed under
/// us, and parking the rows would divert the data). The batch is then retried whole with
/// backoff; an operator decides (see docs/OPERATIONS.md, LastseenSinkStalled).
pub(crate) const MAX_REJECTED_ROWS: usize = 32;

/// An insert error as the retry helper sees it: everything but a data rejection is tried
/// again with the same rows.
struct InsertFailed(SinkError);

impl Retryable for InsertFailed {
    fn is_retryable(&self) -> bool {
        class(&self.0) != ErrorClass::Data
    }
}

/// The class of an insert error (a non-ClickHouse error is treated as transient).
fn class(e: &SinkError) -> ErrorClass {
    e.clickhouse().map_or(ErrorClass::Transient, |c| c.class)
}

/// A split found more refused rows than [`MAX_REJECTED_ROWS`]: retried as systemic.
struct TooManyRefused;

impl Retryable for TooManyRefused {
    fn is_retryable(&self) -> bool {
        true
    }
}

/// How one insert ended once transient and systemic failures were retried.
enum Outcome {
    Written,
    Refused(ClickHouseError),
    Shutdown,
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

    /// Writes every table of `batch`; rows ClickHouse refuses go to `dlq`. Returns true once
    /// every row is confirmed or parked (acknowledged), false only when shutdown came first.
    pub async fn write(&self, batch: &Batch, dlq: &DeadLetters, shutdown: Shutdown) -> bool {
        self.write_pings(batch, dlq, &shutdown).await
            && self
                .write_rows(
                    "registrations",
                    Source::Contacts,
                    &batch.registrations,
                    batch,
                    dlq,
                    &shutdown,
                )
                .await
            && self
                .write_rows(
                    "person_events",
                    Source::Events,
                    &batch.events,
                    batch,
                    dlq,
                    &shutdown,
                )
                .await
    }

    async fn write_pings(&self, batch: &Batch, dlq: &DeadLetters, shutdown: &Shutdown) -> bool {
        let pings = &batch.pings;
        let n = pings.len();
        // Row boundaries of the strings, found only if a sub-range has to be encoded.
        let index = OnceLock::new();
        let rejected = self
            .write_table("pings", n, batch, shutdown, |rows, token| {
                let chunks = if rows.len() == n {
                    Cow::Borrowed(batch.ping_chunks.as_slice())
                } else {
                    let index = index.get_or_init(|| pings.index());
                    Cow::Owned(pings.rows_body(index, rows, CHUNK))
                };
                async move {
                    self.ch
                        .insert_native("pings", PingBlock::COLUMNS, &chunks, token.as_deref())
                        .await
                }
            })
            .await;
        let Some(rejected) = rejected else {
            return false;
        };
        if rejected.is_empty() {
            return true;
        }
        let index = index.get_or_init(|| pings.index());
        let row = |i: usize| {
            let value = serde_json::to_value(pings.row(index, i)).unwrap_or_default();
            (pings.source(i), value)
        };
        self.park("pings", Source::Contacts, rejected, row, dlq, shutdown)
            .await
    }

    async fn write_rows<T>(
        &self,
        table: &'static str,
        source: Source,
        rows: &[T],
        batch: &Batch,
        dlq: &DeadLetters,
        shutdown: &Shutdown,
    ) -> bool
    where
        T: clickhouse::Row
            + clickhouse::RowWrite
            + for<'a> clickhouse::Row<Value<'a> = T>
            + serde::Serialize
            + SourceRow,
    {
        let rejected = self
            .write_table(table, rows.len(), batch, shutdown, |range, token| {
                let rows = &rows[range];
                async move { self.ch.insert(table, rows, token.as_deref()).await }
            })
            .await;
        let Some(rejected) = rejected else {
            return false;
        };
        let row = |i: usize| {
            let r: &T = &rows[i];
            (r.source(), serde_json::to_value(r).unwrap_or_default())
        };
        self.park(table, source, rejected, row, dlq, shutdown).await
    }

    /// Writes rows `0..n` of `table` with `insert(rows, token)`: whole, and split when
    /// ClickHouse refuses rows. Returns the refused rows (each with its error), or `None` if
    /// shutdown came first. A split that finds more than [`MAX_REJECTED_ROWS`] refused rows
    /// parks none: the whole batch is tried again after a backoff, as a systemic rejection.
    async fn write_table<F, Fut>(
        &self,
        table: &'static str,
        n: usize,
        batch: &Batch,
        shutdown: &Shutdown,
        insert: F,
    ) -> Option<Vec<(usize, ClickHouseError)>>
    where
        F: FnMut(Range<usize>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        if n == 0 {
            return Some(Vec::new());
        }
        let token = self.dedup_tokens.then(|| batch.token(table));
        let insert = Mutex::new(insert);
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let result = retry_with(
            shutdown,
            &mut backoff,
            || self.round(table, n, token.as_deref(), shutdown, &insert),
            |_: &TooManyRefused, _, delay| {
                self.metrics
                    .insert_rejected
                    .with_label_values(&[table, ErrorClass::Systemic.as_str()])
                    .inc();
                self.set_up(false);
                tracing::error!(
                    table,
                    rows = n,
                    limit = MAX_REJECTED_ROWS,
                    ?delay,
                    "ClickHouse refuses more rows of the batch than the sink parks; retrying \
                     the whole batch (operator action needed)"
                );
            },
        )
        .await;
        result.ok().flatten()
    }

    /// One try of [`Writer::write_table`]: the whole insert, then the split if ClickHouse
    /// refused rows. `Ok(None)`: shutdown came first.
    async fn round<F, Fut>(
        &self,
        table: &'static str,
        n: usize,
        token: Option<&str>,
        shutdown: &Shutdown,
        insert: &Mutex<F>,
    ) -> Result<Option<Vec<(usize, ClickHouseError)>>, TooManyRefused>
    where
        F: FnMut(Range<usize>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        // Locked only to make the insert's future (nothing awaits under the lock); a mutex
        // rather than a RefCell because the batch's write runs in a spawned (Send) task.
        let run = |rows: Range<usize>, token: Option<String>| {
            let mut insert = insert
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (*insert)(rows, token)
        };
        let whole = || run(0..n, token.map(str::to_string));
        let error = match self.insert(table, n, shutdown, whole).await {
            Outcome::Written => return Ok(Some(Vec::new())),
            Outcome::Shutdown => return Ok(None),
            Outcome::Refused(e) => e,
        };
        tracing::warn!(table, rows = n, error = %error,
            "ClickHouse refused rows of the batch; splitting it to find them");
        let mut split = Split::new(0..n, error, MAX_REJECTED_ROWS);
        while let Some(rows) = split.next() {
            let sub = token.map(|t| sub_token(t, rows.clone()));
            let part = || run(rows.clone(), sub.clone());
            let outcome = self.insert(table, rows.len(), shutdown, part).await;
            match outcome {
                Outcome::Written => {}
                Outcome::Refused(e) => split.refused(rows, e),
                Outcome::Shutdown => return Ok(None),
            }
        }
        if split.over_limit() {
            return Err(TooManyRefused);
        }
        Ok(Some(split.into_rejected()))
    }

    /// Runs one insert of `rows` rows until it is written, refused for its data, or shutdown
    /// comes; transient and systemic failures are retried with backoff, counted and logged.
    async fn insert<F, Fut>(
        &self,
        table: &'static str,
        rows: usize,
        shutdown: &Shutdown,
        mut insert: F,
    ) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
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
                async move { f.await.map_err(InsertFailed) }
            },
            |InsertFailed(e), attempt, delay| {
                self.failed(table);
                self.set_up(false);
                // `e` shows the code and name only (no values: see crate::error).
                if class(e) == ErrorClass::Systemic {
                    self.metrics
                        .insert_rejected
                        .with_label_values(&[table, ErrorClass::Systemic.as_str()])
                        .inc();
                    tracing::error!(table, attempt, rows, error = %e, ?delay,
                        "ClickHouse rejects the insert itself; retrying the same rows \
                         (operator action needed)");
                } else {
                    tracing::warn!(table, attempt, rows, error = %e, ?delay,
                        "insert failed, retrying the same rows");
                }
            },
        )
        .await;
        match result {
            Ok(()) => {
                self.insert_ok(table, rows, t0, attempt);
                Outcome::Written
            }
            Err(RetryError::Failed(InsertFailed(e))) => match e.clickhouse() {
                Some(c) if c.class == ErrorClass::Data => {
                    self.failed(table);
                    self.metrics
                        .insert_rejected
                        .with_label_values(&[table, ErrorClass::Data.as_str()])
                        .inc();
                    tracing::debug!(table, rows, error = %e, "insert refused for its data");
                    Outcome::Refused(c.clone())
                }
                // Not reachable (the backoff has no retry limit): leave the batch unconfirmed.
                _ => {
                    tracing::error!(table, error = %e, "insert given up");
                    Outcome::Shutdown
                }
            },
            Err(RetryError::Shutdown(_)) => Outcome::Shutdown,
        }
    }

    /// Metrics of a failed insert attempt.
    fn failed(&self, table: &str) {
        self.metrics
            .batches
            .with_label_values(&[table, "error"])
            .inc();
        self.metrics.insert_errors.with_label_values(&[table]).inc();
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

    /// Parks each refused row: `row(i)` gives its source (partition, offset) and the row as
    /// JSON (one `JSONEachRow` line for `table`). Returns false if shutdown came before
    /// every dead letter was acknowledged.
    async fn park(
        &self,
        table: &'static str,
        source: Source,
        rejected: Vec<(usize, ClickHouseError)>,
        row: impl Fn(usize) -> ((i32, i64), serde_json::Value),
        dlq: &DeadLetters,
        shutdown: &Shutdown,
    ) -> bool {
        for (i, e) in rejected {
            let ((partition, offset), value) = row(i);
            let columns: Vec<&str> = value
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let letter = DeadLetter {
                stage: "sink".into(),
                reason: rejection_reason(table, &e, e.column_in(&columns)),
                topic: dlq.topic_of(source).to_string(),
                partition,
                offset,
                payload: value.to_string(),
                at: now_millis(),
            };
            if !dlq.send(None, &letter, shutdown).await {
                return false;
            }
            self.metrics
                .rows_dead_lettered
                .with_label_values(&[table, e.name().unwrap_or("unnamed")])
                .inc();
            self.metrics
                .dead_letters
                .with_label_values(&[CLICKHOUSE_REJECTED])
                .inc();
        }
        true
    }
}

/// The `reason` label of `lastseen_sink_dead_letters_total` for rows ClickHouse refused.
pub(crate) const CLICKHOUSE_REJECTED: &str = "clickhouse_rejected";

/// The deduplication token of the sub-insert of `rows` of a batch whose token (for this
/// table) is `token`: the same rows of the same batch always get the same token.
fn sub_token(token: &str, rows: Range<usize>) -> String {
    format!("{token}-rows-{}-{}", rows.start, rows.end)
}

/// A dead letter's reason for a row of `table` that ClickHouse refused with `e`: the code,
/// its name and the column it blamed (one of the table's): never the server's text, which
/// quotes the values.
pub(crate) fn rejection_reason(table: &str, e: &ClickHouseError, column: Option<&str>) -> String {
    let mut r = format!("{CLICKHOUSE_REJECTED}: table {table}, clickhouse {e}");
    if let Some(c) = column {
        r.push_str(", column ");
        r.push_str(c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::codec::contact;

    #[test]
    fn backoff_doubles_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn sub_tokens_are_deterministic_and_distinct() {
        assert_eq!(sub_token("t", 0..5), sub_token("t", 0..5));
        assert_ne!(sub_token("t", 0..5), sub_token("t", 0..6));
        assert_ne!(sub_token("t", 0..5), sub_token("u", 0..5));
    }

    /// The dead-letter reasons of a record that does not decode (an address where a number
    /// belongs) and of a row ClickHouse refused with a text quoting the values contain no
    /// part of the values.
    #[test]
    fn dead_letter_reasons_carry_no_values() {
        let address = "Arbat 1, Moscow";
        let person = "person-4711-secret";
        let payload = format!(
            r#"{{"type":"ping","person_id":"{person}","device_id":"d","device_ts":"{address}","lat":55.7512,"lon":37.6184,"received_at":1}}"#
        );
        let e = contact::decode(payload.as_bytes()).unwrap_err();
        // What `accept` writes for a record that does not decode.
        let decode_reason = format!("{}: {}", e.reason, e.detail);
        let text = format!(
            "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: '{address}\",\"person_id\":\"{person}\",\"lat\":55.7512}}\\n': (while reading the value of key address): (at row 1)\n: While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 23.8.1.1)"
        );
        let refused = ClickHouseError::from_response(&text);
        let columns = ["person_id", "address", "lat"];
        let reject_reason =
            rejection_reason("registrations", &refused, refused.column_in(&columns));
        assert_eq!(
            reject_reason,
            "clickhouse_rejected: table registrations, clickhouse code 27 \
             CANNOT_PARSE_INPUT_ASSERTION_FAILED, column address"
        );
        for reason in [&decode_reason, &reject_reason] {
            for part in ["Arbat", "Moscow", "4711", "secret", "55.75", "37.61"] {
                assert!(!reason.contains(part), "{reason} echoes {part}");
            }
        }
        let throw = ClickHouseError::from_response(
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception",
        );
        assert_eq!(
            rejection_reason("pings", &throw, None),
            "clickhouse_rejected: table pings, clickhouse code 395 \
             FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"
        );
    }
}
