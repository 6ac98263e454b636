//! The delivery loop: Kafka → batches → ClickHouse → offset commit.
//!
//! Invariants:
//! - An offset is committed only after every row of every record before it (in its partition)
//!   was confirmed by ClickHouse, or the record was a tick, or its dead letter was acknowledged.
//! - At most one batch is being written while the next one fills. Commits happen in batch order.
//! - Batch limits grow (doubling, up to `sink.catch_up_factor`) while the sink is behind and
//!   return to the configured ones once a batch is cut by `max_delay` (`Limits`).
//! - A failed insert is retried (same rows, same dedup token) with exponential backoff, for
//!   ever; meanwhile the next batch fills up to its limits, then the partitions are paused
//!   (the consumer keeps polling so it stays in the group) until the write succeeds. On the
//!   healthy path a full next batch just waits for the write in flight.
//! - Rebalance: only partitions still assigned are committed. Rows of revoked partitions may
//!   still be written; the new owner re-reads from the last commit and the deduplicating keys
//!   make the overlap harmless.

use crate::ch::Ch;
use crate::error::SinkError;
use crate::metrics::Metrics;
use crate::rows::{Decoded, EventRow, PingBlock, RegistrationRow, Source, decode};
use bytes::Bytes;
use common::config::{Config, SinkConfig};
use common::record::{DeadLetter, now_millis};
use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Most records taken from librdkafka's queue per turn of the delivery loop.
const DRAIN: usize = 1024;

/// The pings insert body goes out in chunks of this size.
const CHUNK: usize = 1 << 20;

/// While catching up, a batch is written once no record has arrived for this long: the
/// backlog is read, and waiting out `sink.max_delay` would only delay the last rows.
const CAUGHT_UP_IDLE: Duration = Duration::from_millis(30);

/// Consumer context: pauses newly assigned partitions while the sink is back-pressured, and
/// turns librdkafka statistics into the lag gauge.
pub(crate) struct SinkContext {
    paused: Arc<AtomicBool>,
    metrics: Metrics,
    topics: [String; 2],
}

impl ClientContext for SinkContext {
    fn stats(&self, stats: Statistics) {
        for topic in &self.topics {
            let lag: i64 = stats
                .topics
                .get(topic)
                .map(|t| {
                    t.partitions
                        .values()
                        .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                        .map(|p| p.consumer_lag)
                        .sum()
                })
                .unwrap_or(0);
            self.metrics
                .consumer_lag
                .with_label_values(&[topic])
                .set(lag);
        }
    }
}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                if self.paused.load(Ordering::SeqCst) {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                    }
                }
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            // Not a loss: the records will be re-read and collapse on their keys.
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

/// One batch: rows per table and, per partition, the offset range it covers.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Pings, encoded column by column as they are decoded.
    pub pings: PingBlock,
    /// The pings insert body, built when the batch is handed to the writer.
    pub ping_chunks: Vec<Bytes>,
    pub registrations: Vec<RegistrationRow>,
    pub events: Vec<EventRow>,
    /// (source, partition) → (first offset, last offset).
    pub offsets: BTreeMap<(u8, i32), (i64, i64)>,
    pub records: usize,
    pub bytes: usize,
    pub started: Option<Instant>,
}

impl Batch {
    fn note(&mut self, source: Source, partition: i32, offset: i64, bytes: usize) {
        let key = (source_tag(source), partition);
        let e = self.offsets.entry(key).or_insert((offset, offset));
        e.0 = e.0.min(offset);
        e.1 = e.1.max(offset);
        self.records += 1;
        self.bytes += bytes;
        self.started.get_or_insert_with(Instant::now);
    }

    /// Empties the batch for reuse, keeping the row buffers' capacity (a new batch of 100k
    /// rows would otherwise grow its vectors and fault their pages in again).
    fn reset(&mut self) {
        self.pings.clear();
        self.ping_chunks.clear();
        self.registrations.clear();
        self.events.clear();
        self.offsets.clear();
        self.records = 0;
        self.bytes = 0;
        self.started = None;
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn full(&self, limits: &Limits) -> bool {
        self.records >= limits.rows() || self.bytes >= limits.bytes()
    }

    fn due(&self, limits: &Limits, max_delay: Duration) -> bool {
        self.full(limits) || self.started.is_some_and(|s| s.elapsed() >= max_delay)
    }

    /// Insert deduplication token for `table`: derived from the topic/partition/offset ranges,
    /// so a retry of the same batch carries the same token.
    pub fn token(&self, table: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |x: i64| {
            for b in x.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for ((src, p), (a, b)) in &self.offsets {
            feed(i64::from(*src));
            feed(i64::from(*p));
            feed(*a);
            feed(*b);
        }
        format!("lastseen-sink-{table}-{h:016x}")
    }
}

/// The limits of the batch being filled: `sink.max_rows` and `sink.max_bytes` times a scale
/// that doubles with each batch that reached its limits (records were waiting: the sink is
/// behind), up to `sink.catch_up_factor`, and returns to 1 with the first batch written
/// because of `sink.max_delay` (caught up). After a backlog (a restart, a ClickHouse outage,
/// a burst) the sink so writes fewer, larger inserts, and ClickHouse merges fewer parts;
/// while it keeps up, batches stay as configured.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    max_rows: usize,
    max_bytes: usize,
    factor: usize,
    scale: usize,
}

impl Limits {
    pub fn new(cfg: &SinkConfig) -> Limits {
        Limits {
            max_rows: cfg.max_rows,
            max_bytes: cfg.max_bytes,
            factor: cfg.catch_up_factor.max(1),
            scale: 1,
        }
    }

    pub fn rows(&self) -> usize {
        self.max_rows.saturating_mul(self.scale)
    }

    pub fn bytes(&self) -> usize {
        self.max_bytes.saturating_mul(self.scale)
    }

    /// Whether the limits are raised (the last batch written had reached its limits).
    pub fn catching_up(&self) -> bool {
        self.scale > 1
    }

    /// Called as a batch goes to the writer: `reached` = it had reached its limits.
    pub fn written(&mut self, reached: bool) {
        self.scale = if reached {
            (self.scale * 2).min(self.factor)
        } else {
            1
        };
    }
}

fn source_tag(s: Source) -> u8 {
    match s {
        Source::Contacts => 0,
        Source::Events => 1,
    }
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            next: min,
            min,
            max: max.max(min),
        }
    }
    /// The delay to wait now; doubles the next one up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = self.min;
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
    pub async fn write(&self, batch: &Batch, mut shutdown: watch::Receiver<bool>) -> bool {
        self.write_pings(batch, &mut shutdown).await
            && self
                .write_table("registrations", &batch.registrations, batch, &mut shutdown)
                .await
            && self
                .write_table("person_events", &batch.events, batch, &mut shutdown)
                .await
    }

    async fn write_pings(&self, batch: &Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
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
        shutdown: &mut watch::Receiver<bool>,
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
    async fn retry<F, Fut>(
        &self,
        table: &str,
        rows: usize,
        shutdown: &mut watch::Receiver<bool>,
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
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let t0 = Instant::now();
            match insert().await {
                Ok(()) => {
                    self.insert_ok(table, rows, t0, attempt);
                    return true;
                }
                Err(e) => {
                    self.metrics
                        .batches
                        .with_label_values(&[table, "error"])
                        .inc();
                    self.metrics.insert_errors.with_label_values(&[table]).inc();
                    self.set_up(false);
                    let delay = backoff.next_delay();
                    if e.is_retryable() {
                        tracing::warn!(table, attempt, error = %e, ?delay, "insert failed, retrying the same batch");
                    } else {
                        tracing::error!(table, attempt, error = %e, ?delay,
                            "insert rejected; retrying the same batch (operator action needed)");
                    }
                    if *shutdown.borrow() {
                        return false;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return false,
                    }
                }
            }
        }
    }
}

/// Kafka consumer settings of the sink.
pub(crate) fn consumer_config(config: &Config) -> rdkafka::ClientConfig {
    let mut c = config.kafka_client_config("sink");
    c.set("group.id", &config.sink.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "5000")
        .set("fetch.max.bytes", "104857600")
        // `max.partition.fetch.bytes` stays at librdkafka's 1 MiB: with 16 MiB the sink spent
        // 0.3-1.1 CPU-s more per 2M rows (fresh 16 MiB buffers faulted in per fetch) and its
        // first rows landed ~0.4 s later (docs/BENCHMARKS.md, sink, 17:16 runs).
        .set("queued.max.messages.kbytes", "65536")
        // A fetch for partitions that have nothing waits at most this long on the broker. The
        // default (500 ms) also delays the first data after every assignment: the first fetch
        // often carries only an empty partition and holds the others back for the full wait.
        .set("fetch.wait.max.ms", "100")
        // When the local queue is full (the sink waits for ClickHouse), fetching resumes this
        // soon after it drains instead of after the default 1 s.
        .set("fetch.queue.backoff.ms", "20");
    if !config.sink.instance_id.is_empty() {
        c.set("group.instance.id", &config.sink.instance_id);
    }
    c
}

pub(crate) fn producer_config(config: &Config) -> rdkafka::ClientConfig {
    let mut c = config.kafka_client_config("sink-dlq");
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000");
    c
}

/// The consume → batch → write → commit loop. Returns when `shutdown` flips to true (after a
/// last flush attempt) or on a fatal Kafka error.
pub(crate) async fn deliver(
    config: &Config,
    writer: Writer,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let cfg = config.sink.clone();
    let topics = [
        config.kafka.contacts_topic.clone(),
        config.kafka.events_topic.clone(),
    ];
    let paused = Arc::new(AtomicBool::new(false));
    let ctx = SinkContext {
        paused: paused.clone(),
        metrics: writer.metrics.clone(),
        topics: topics.clone(),
    };
    let consumer: StreamConsumer<SinkContext> = consumer_config(config).create_with_context(ctx)?;
    let producer: FutureProducer = producer_config(config).create()?;
    consumer.subscribe(&[topics[0].as_str(), topics[1].as_str()])?;
    tracing::info!(contacts = %topics[0], events = %topics[1], group = %cfg.group_id, "sink consuming");

    let mut batch = Batch::default();
    let mut limits = Limits::new(&cfg);
    let mut inflight: Option<JoinHandle<(Batch, bool)>> = None;
    let mut spare: Option<Batch> = None;
    let mut committed: HashMap<(u8, i32), i64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_health = Instant::now();
    let mut last_record = Instant::now();
    let mut stopping = *shutdown.borrow();

    loop {
        // Start a write when the current batch is due and nothing is in flight.
        let backlog_read = limits.catching_up() && last_record.elapsed() >= CAUGHT_UP_IDLE;
        if inflight.is_none()
            && (batch.due(&limits, cfg.max_delay)
                || (!batch.is_empty() && (stopping || backlog_read)))
        {
            let b = std::mem::replace(&mut batch, spare.take().unwrap_or_default());
            tracing::debug!(
                records = b.records,
                bytes = b.bytes,
                age_ms = b.started.map(|s| s.elapsed().as_millis()),
                limit_rows = limits.rows(),
                "writing batch"
            );
            limits.written(b.full(&limits));
            let w = writer.clone();
            let rx = shutdown.clone();
            let mut b = b;
            b.ping_chunks = b.pings.native_body(CHUNK);
            inflight = Some(tokio::spawn(async move {
                let ok = w.write(&b, rx).await;
                (b, ok)
            }));
        }
        // Back-pressure: the next batch is full while one is still being written. While
        // ClickHouse is healthy we simply stop reading until the write returns (bounded by the
        // insert timeout); once a write has failed we pause the partitions and keep polling,
        // so the consumer stays in its group however long ClickHouse is down. (Pausing purges
        // librdkafka's prefetched messages, so it is not used on the fast path.)
        let blocked = inflight.is_some() && batch.full(&limits);
        let failing = writer.failing.load(Ordering::SeqCst);
        let want_pause = blocked && failing;
        if want_pause != paused.load(Ordering::SeqCst) {
            set_paused(&consumer, &paused, want_pause);
        }
        let read = !stopping && (!blocked || failing);
        if stopping && inflight.is_none() && batch.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                tracing::info!("sink stopping: flushing what is buffered");
            }
            res = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                match res {
                    Ok((mut done, true)) => {
                        tracing::debug!(records = done.records, "batch confirmed, committing");
                        commit(&consumer, &topics, &done, &mut committed);
                        done.reset();
                        spare = Some(done);
                    }
                    Ok((_, false)) => {
                        tracing::warn!("shutdown before ClickHouse confirmed the last batch; \
                                        its records will be re-read");
                        break;
                    }
                    Err(e) => return Err(SinkError::Config(format!("writer task failed: {e}"))),
                }
            }
            msg = consumer.recv(), if read => {
                // Take what librdkafka has already queued without going back through the
                // select (bounded, so a finished write is noticed soon).
                let mut next = Some(msg);
                let mut taken = 0;
                while let Some(msg) = next.take() {
                    match msg {
                        Ok(m) => {
                            if !accept(&m, &mut batch, &topics, &producer, config, &writer,
                                       &mut shutdown).await {
                                // Shutdown before a dead letter was acknowledged: that offset
                                // is not counted; it will be read again.
                                stopping = true;
                                break;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
                    }
                    taken += 1;
                    if taken < DRAIN && !batch.full(&limits) {
                        next = consumer.recv().now_or_never();
                    }
                }
                last_record = Instant::now();
                if taken == DRAIN {
                    // librdkafka's queue never makes this task wait while it has records, so
                    // give the worker to the others: the write task just spawned sits in this
                    // worker's LIFO slot, which other workers cannot steal, and would otherwise
                    // start only when the next batch is full.
                    tokio::task::yield_now().await;
                }
            }
            _ = tick.tick() => {
                if inflight.is_none() && batch.is_empty() && last_health.elapsed() >= Duration::from_secs(2) {
                    last_health = Instant::now();
                    writer.set_up(writer.ch.ping().await.is_ok());
                }
            }
        }
    }
    if !batch.is_empty() {
        tracing::info!(
            records = batch.records,
            "unconfirmed records left; they will be re-read"
        );
    }
    // Make the last commits durable before leaving the group.
    if let Ok(tpl) = consumer.committed(Duration::from_secs(1)) {
        tracing::debug!(partitions = tpl.count(), "final committed offsets");
    }
    consumer.unsubscribe();
    Ok(())
}

fn set_paused(consumer: &StreamConsumer<SinkContext>, flag: &AtomicBool, pause: bool) {
    flag.store(pause, Ordering::SeqCst);
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let r = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match r {
        Ok(()) => tracing::debug!(pause, "partitions paused/resumed"),
        Err(e) => tracing::warn!(error = %e, pause, "cannot pause/resume partitions"),
    }
}

/// Decodes one record into `batch` (or dead-letters it) and notes its offset. Returns false
/// only if shutdown came before a dead letter was acknowledged (the offset is then not noted).
async fn accept(
    m: &BorrowedMessage<'_>,
    batch: &mut Batch,
    topics: &[String; 2],
    producer: &FutureProducer,
    config: &Config,
    writer: &Writer,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let source = if m.topic() == topics[0] {
        Source::Contacts
    } else {
        Source::Events
    };
    let (partition, offset) = (m.partition(), m.offset());
    let payload = m.payload();
    let bytes = payload.map_or(0, <[u8]>::len);
    let decimals = config.sink.coordinate_decimals;
    // A ping goes straight from the record's bytes into the encoded block.
    match decode(source, payload, partition, offset, decimals) {
        Ok(Decoded::Ping(r)) => batch.pings.push(&r),
        Ok(Decoded::Registration(r)) => batch.registrations.push(r),
        Ok(Decoded::Event(r)) => batch.events.push(r),
        Ok(Decoded::Skip) => {}
        Err(e) => {
            let letter = DeadLetter {
                stage: "sink".into(),
                reason: format!("{}: {}", e.reason, e.detail),
                topic: m.topic().to_string(),
                partition,
                offset,
                payload: String::from_utf8_lossy(payload.unwrap_or_default()).into_owned(),
                at: now_millis(),
            };
            let key = m.key().map(<[u8]>::to_vec);
            if !dead_letter(
                producer,
                &config.kafka.dead_letter_topic,
                key,
                &letter,
                &config.sink,
                shutdown,
            )
            .await
            {
                return false;
            }
            writer
                .metrics
                .dead_letters
                .with_label_values(&[e.reason])
                .inc();
        }
    }
    batch.note(source, partition, offset, bytes);
    true
}

/// Commits `done`'s offsets (last + 1) for partitions still assigned to us, only forward.
fn commit(
    consumer: &StreamConsumer<SinkContext>,
    topics: &[String; 2],
    done: &Batch,
    committed: &mut HashMap<(u8, i32), i64>,
) {
    let assignment = consumer.assignment().unwrap_or_default();
    let owned: std::collections::HashSet<(String, i32)> = assignment
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for (&(src, p), &(_, last)) in &done.offsets {
        let topic = &topics[usize::from(src)];
        if !owned.contains(&(topic.clone(), p)) {
            continue;
        }
        let next = last + 1;
        if committed.get(&(src, p)).is_some_and(|&c| c >= next) {
            continue;
        }
        if tpl
            .add_partition_offset(topic, p, Offset::Offset(next))
            .is_ok()
        {
            committed.insert((src, p), next);
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; records will be re-read");
        }
    }
}

/// Produces a dead letter and waits for the broker's acknowledgement, retrying with backoff.
/// Returns false if shutdown came first.
async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<Vec<u8>>,
    letter: &DeadLetter,
    cfg: &SinkConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let body = common::codec::dead_letter::to_vec(letter);
    let mut backoff = Backoff::new(cfg.min_backoff, cfg.max_backoff);
    loop {
        let mut rec = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&body);
        if let Some(k) = &key {
            rec = rec.key(k);
        }
        match producer.send(rec, Duration::from_secs(30)).await {
            Ok(_) => {
                tracing::warn!(topic = %letter.topic, partition = letter.partition,
                    offset = letter.offset, reason = %letter.reason, "record dead-lettered");
                return true;
            }
            Err((e, _)) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, ?delay, "dead-letter produce failed, retrying");
                if *shutdown.borrow() {
                    return false;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return false,
                }
            }
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

    #[test]
    fn limits_double_while_behind_and_reset_when_caught_up() {
        let cfg = SinkConfig {
            max_rows: 100,
            max_bytes: 1000,
            catch_up_factor: 8,
            ..Config::defaults().sink
        };
        let mut l = Limits::new(&cfg);
        let mut seen = vec![(l.rows(), l.bytes())];
        for _ in 0..5 {
            l.written(true);
            seen.push((l.rows(), l.bytes()));
        }
        assert_eq!(
            seen,
            [
                (100, 1000),
                (200, 2000),
                (400, 4000),
                (800, 8000),
                (800, 8000),
                (800, 8000)
            ]
        );
        l.written(false);
        assert_eq!((l.rows(), l.bytes()), (100, 1000));

        // A batch is full at the current limits, not the configured ones.
        let mut b = Batch::default();
        for o in 0..150 {
            b.note(Source::Contacts, 0, o, 1);
        }
        assert!(b.full(&Limits::new(&cfg)));
        l.written(true);
        assert!(!b.full(&l));

        // A factor of 1 keeps the configured limits.
        let mut fixed = Limits::new(&SinkConfig {
            catch_up_factor: 1,
            ..cfg
        });
        fixed.written(true);
        assert_eq!((fixed.rows(), fixed.bytes()), (100, 1000));
    }

    #[test]
    fn token_depends_on_ranges_only() {
        let mut a = Batch::default();
        a.note(Source::Contacts, 1, 10, 5);
        a.note(Source::Contacts, 1, 12, 5);
        let mut b = Batch::default();
        b.note(Source::Contacts, 1, 12, 1);
        b.note(Source::Contacts, 1, 10, 1);
        assert_eq!(a.token("pings"), b.token("pings"));
        assert_ne!(a.token("pings"), a.token("person_events"));
        b.note(Source::Events, 1, 13, 1);
        assert_ne!(a.token("pings"), b.token("pings"));
        assert_eq!(a.offsets[&(0, 1)], (10, 12));
    }
}
