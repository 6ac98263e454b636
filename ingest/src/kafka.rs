//! The Kafka side: an idempotent `acks=all` producer whose every record of a request is
//! tracked to its acknowledgement, broker health, and the tick writer.
//!
//! A request's records are enqueued with one librdkafka call ([`native`]); the request's
//! [`Batch`] owns their bytes until the last delivery report. They all share one key (the
//! person), so their partition is chosen once per request, by librdkafka's default
//! partitioner's function ([`partition`]) over the partition count the first probe saw.
//!
//! That count is pinned: changelog partition `i` holds the processor's state of contacts
//! partition `i`, and a new count moves persons to other partitions without their state. So
//! when a later probe sees another count, ingest does not follow it (librdkafka's own
//! partitioner would): every request answers 503 ([`ProduceError::PartitionsChanged`]), ticks
//! stop (so the refusal is an outage for the detector, not silence), readiness is false and
//! `lastseen_ingest_partition_mismatch` is 1 until ingest is restarted after the procedure in
//! docs/OPERATIONS.md ("Repartitioning the contacts topic safely").

#[allow(unsafe_code)]
pub mod native;
pub mod partition;

use crate::metrics::Metrics;
use common::Config;
use common::record::Tick;
use native::{BatchProducer, EventPump, NotEnqueued, RecordsOwner};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Why records could not be made durable. Every variant is retryable by the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProduceError {
    /// The broker is known to be unreachable; nothing was sent.
    #[error("kafka unreachable")]
    Unreachable,
    /// The local producer queue is full (Kafka is slower than the incoming load).
    #[error("producer queue full")]
    QueueFull,
    /// Kafka did not acknowledge every record within `ingest.produce_timeout`.
    #[error("produce timed out")]
    Timeout,
    /// Kafka rejected or failed a record.
    #[error("kafka error: {0}")]
    Kafka(String),
    /// The contacts topic's partition count is no longer the one ingest started with;
    /// nothing was sent (see the module docs).
    #[error("contacts partition count changed")]
    PartitionsChanged,
}

impl ProduceError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProduceError::Unreachable => "unreachable",
            ProduceError::QueueFull => "queue_full",
            ProduceError::Timeout => "timeout",
            ProduceError::Kafka(_) => "kafka",
            ProduceError::PartitionsChanged => "partitions_changed",
        }
    }
    /// All produce failures are transient from the client's point of view.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Completion of one request's records: counts acknowledgements, keeps the first failure,
/// and owns the records' bytes (librdkafka points at them until each delivery report).
#[derive(Debug)]
pub struct Batch {
    remaining: AtomicUsize,
    failed: Mutex<Option<KafkaError>>,
    done: AtomicBool,
    notify: Notify,
    records: Records,
}

impl RecordsOwner for Batch {
    fn records(&self) -> &Records {
        &self.records
    }
}

impl Batch {
    /// A batch of `n` records sent with `send` (they are copied; nothing to own).
    fn new(n: usize) -> Arc<Batch> {
        Batch::owning(n, Records::default())
    }

    /// A batch of `records`, which it owns until every delivery report dropped its clone.
    fn of(records: Records) -> Arc<Batch> {
        Batch::owning(records.len(), records)
    }

    fn owning(n: usize, records: Records) -> Arc<Batch> {
        Arc::new(Batch {
            remaining: AtomicUsize::new(n),
            failed: Mutex::new(None),
            done: AtomicBool::new(n == 0),
            notify: Notify::new(),
            records,
        })
    }

    fn complete(&self, n: usize, err: Option<KafkaError>) {
        if let Some(e) = err {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert(e);
        }
        if self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            self.done.store(true, Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// Whether every record has been acknowledged or failed.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The first failure, if any.
    pub fn error(&self) -> Option<KafkaError> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn wait(&self) {
        while !self.is_done() {
            self.notify.notified().await;
        }
    }
}

/// Whether the broker is reachable, as last observed.
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }
}

/// librdkafka callbacks: delivery reports complete batches; broker-down errors flip health.
#[derive(Debug)]
pub struct Ctx {
    health: Arc<Health>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health.set(false);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Arc<Batch>;
    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        batch.complete(1, result.as_ref().err().map(|(e, _)| e.clone()));
    }
}

/// The producer settings ingest uses (also used by the benchmark's bare producer).
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut c = config.kafka_client_config("ingest");
    let timeout_ms = config
        .ingest
        .produce_timeout
        .as_millis()
        .clamp(1000, 300_000);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", timeout_ms.to_string())
        .set("request.timeout.ms", timeout_ms.min(30_000).to_string())
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    c
}

/// Records of one request serialized into one buffer: `(key range, payload range)` per record.
#[derive(Debug, Default)]
pub struct Records {
    pub buf: Vec<u8>,
    pub spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Records {
    pub fn with_capacity(records: usize) -> Records {
        Records {
            buf: Vec::with_capacity(records * 200),
            spans: Vec::with_capacity(records),
        }
    }
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }
    /// Appends one record keyed by `key`.
    pub fn push(&mut self, key: &str, value: &common::Contact) {
        self.push_raw(key.as_bytes(), |buf| {
            common::codec::contact::encode(value, buf)
        });
    }
    /// Appends one record keyed by `key` whose payload `write` appends to the buffer.
    pub fn push_raw(&mut self, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let k0 = self.buf.len();
        self.buf.extend_from_slice(key);
        let k1 = self.buf.len();
        write(&mut self.buf);
        self.spans.push((k0..k1, k1..self.buf.len()));
    }
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    pub fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let (k, p) = &self.spans[i];
        (&self.buf[k.clone()], &self.buf[p.clone()])
    }
    /// The key of every record, when there is at least one record and all have the same key.
    pub fn shared_key(&self) -> Option<&[u8]> {
        let (first, rest) = self.spans.split_first()?;
        let key = &self.buf[first.0.clone()];
        rest.iter()
            .all(|(k, _)| &self.buf[k.clone()] == key)
            .then_some(key)
    }
}

/// The partition for all of `records`: the one librdkafka's default partitioner picks for
/// their shared key among `partitions`, or [`partition::UNASSIGNED`] (librdkafka's partitioner
/// picks per record) when they do not share one non-empty key or the count is unknown (0).
pub fn partition_for(records: &Records, partitions: i32) -> i32 {
    if partitions <= 0 {
        return partition::UNASSIGNED;
    }
    match records.shared_key() {
        Some(key) => partition::consistent(key, partitions),
        None => partition::UNASSIGNED,
    }
}

/// Whether librdkafka settings keep the partitioner that [`partition::consistent`] computes
/// for non-empty keys (`consistent_random`, the default, or `consistent`).
pub fn computes_partitioner(client: &ClientConfig) -> bool {
    matches!(
        client.get("partitioner"),
        None | Some("consistent_random") | Some("consistent")
    )
}

/// The ingest producer.
pub struct Kafka {
    producer: Arc<BatchProducer<Ctx, BaseProducer<Ctx>>>,
    /// Stops the task (or, outside a runtime, the thread) serving the producer's events.
    events: tokio_util::sync::CancellationToken,
    health: Arc<Health>,
    topic: String,
    produce_timeout: Duration,
    /// The contacts topic's partition count from the first successful [`Kafka::probe`], never
    /// changed after; 0 while unknown (then librdkafka partitions each record itself).
    partitions: AtomicI32,
    /// The different count a later probe saw (0: none): requests are refused from then on.
    changed_to: AtomicI32,
    /// Whether the configured partitioner is the one [`partition::consistent`] computes; when
    /// not, requests always leave partitioning to librdkafka.
    computes_partition: bool,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("topic", &self.topic)
            .field("up", &self.health.is_up())
            .field("partitions", &self.partitions())
            .finish()
    }
}

impl Kafka {
    pub fn new(config: &Config) -> Result<Kafka, KafkaError> {
        Kafka::with_client_config(config, producer_config(config))
    }

    /// Like [`Kafka::new`] with other librdkafka settings (tests use a tiny queue).
    pub fn with_client_config(config: &Config, client: ClientConfig) -> Result<Kafka, KafkaError> {
        let health = Arc::new(Health::default());
        let computes_partition = computes_partitioner(&client);
        let producer: BaseProducer<Ctx> = client.create_with_context(Ctx {
            health: health.clone(),
        })?;
        let producer = Arc::new(
            BatchProducer::new(producer, &config.kafka.contacts_topic)
                .map_err(|e| KafkaError::ClientCreation(e.to_string()))?,
        );
        let events = tokio_util::sync::CancellationToken::new();
        serve_events(&producer, events.clone());
        Ok(Kafka {
            producer,
            events,
            health,
            topic: config.kafka.contacts_topic.clone(),
            produce_timeout: config.ingest.produce_timeout,
            partitions: AtomicI32::new(0),
            changed_to: AtomicI32::new(0),
            computes_partition,
        })
    }

    /// The contacts topic's partition count that requests are partitioned over: the one the
    /// first probe saw (0: not yet known).
    pub fn partitions(&self) -> i32 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// `Some((pinned, seen))` once a probe saw a count other than the pinned one.
    pub fn partition_change(&self) -> Option<(i32, i32)> {
        match self.changed_to.load(Ordering::Acquire) {
            0 => None,
            seen => Some((self.partitions(), seen)),
        }
    }

    /// Sets the partition count requests are partitioned over, as if the first probe had seen
    /// `partitions` (0: unknown). For tests.
    #[doc(hidden)]
    pub fn assume_partitions(&self, partitions: i32) {
        self.partitions.store(partitions, Ordering::Relaxed);
    }

    /// The partition `send_all` gives `records` (for a request: the partition librdkafka's
    /// default partitioner picks for its person among the probed partitions), or
    /// [`partition::UNASSIGNED`] when librdkafka is to choose per record.
    pub fn partition_for(&self, records: &Records) -> i32 {
        if !self.computes_partition {
            return partition::UNASSIGNED;
        }
        partition_for(records, self.partitions())
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Enqueues every record and waits until Kafka acknowledged all of them.
    /// `Ok` means every record is durable; any error means the client must retry (some
    /// records may have been written: duplicates are fine, downstream deduplicates).
    pub async fn send_all(&self, records: Records) -> Result<(), ProduceError> {
        if self.partition_change().is_some() {
            return Err(ProduceError::PartitionsChanged);
        }
        if !self.health.is_up() {
            return Err(ProduceError::Unreachable);
        }
        let partition = self.partition_for(&records);
        let batch = Batch::of(records);
        if let Err(NotEnqueued {
            failed,
            code,
            first,
            ..
        }) = self.producer.enqueue_to(&batch, 0, partition)
        {
            // Records not enqueued will never be reported; the client retries all.
            batch.complete(failed, None);
            return Err(match code {
                RDKafkaErrorCode::QueueFull => ProduceError::QueueFull,
                // The pinned partition does not exist (the topic was recreated with fewer
                // partitions): a count change; nothing was enqueued, and the next probe
                // records it. Never left to librdkafka's partitioner, which would follow it.
                RDKafkaErrorCode::UnknownPartition
                    if first == 0 && partition != partition::UNASSIGNED =>
                {
                    ProduceError::PartitionsChanged
                }
                c => ProduceError::Kafka(c.to_string()),
            });
        }
        let result = match tokio::time::timeout(self.produce_timeout, batch.wait()).await {
            Err(_) => Err(ProduceError::Timeout),
            Ok(()) => match batch.error() {
                None => Ok(()),
                Some(e) => Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => ProduceError::Timeout,
                    Some(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull,
                    _ => ProduceError::Kafka(e.to_string()),
                }),
            },
        };
        result.inspect_err(|e| {
            if !matches!(e, ProduceError::QueueFull) {
                // A failed acknowledgement pauses ticks until a clean probe.
                self.health.set(false);
            }
        })
    }

    /// Number of partitions of the contacts topic; an error when the broker is unreachable or
    /// the topic is missing. Blocking: call from `spawn_blocking`.
    pub fn probe(&self, timeout: Duration) -> Result<i32, String> {
        let md = self
            .producer
            .producer()
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| format!("metadata: {e}"))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| "contacts topic missing".to_string())?;
        if let Some(e) = t.error() {
            return Err(format!("contacts topic: {:?}", RDKafkaErrorCode::from(e)));
        }
        let n = t.partitions().len() as i32;
        if n == 0 {
            return Err("contacts topic has no partitions".into());
        }
        // The first count is pinned; another one later is recorded and refuses requests (see
        // the module docs). Between the change and this probe (at most a tick interval)
        // requests still go to the partition the pinned count picks, which exists: a topic's
        // partitions are only ever added.
        if let Err(pinned) =
            self.partitions
                .compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed)
        {
            if pinned != n {
                self.changed_to.store(n, Ordering::Release);
            }
        }
        Ok(self.partitions())
    }

    /// Enqueues one tick into each of `partitions` partitions; the returned batch completes
    /// when all are acknowledged.
    pub fn send_ticks(&self, partitions: i32, tick: &Tick) -> Result<Arc<Batch>, ProduceError> {
        let payload = common::codec::contact::to_vec(&common::Contact::Tick(tick.clone()));
        let n = partitions.max(0) as usize;
        let batch = Batch::new(n);
        for p in 0..partitions {
            let rec = BaseRecord::<[u8], [u8], _>::with_opaque_to(&self.topic, batch.clone())
                .partition(p)
                .payload(&payload[..]);
            if let Err((e, _)) = self.producer.producer().send(rec) {
                batch.complete(n - p as usize, None);
                return Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull,
                    _ => ProduceError::Kafka(e.to_string()),
                });
            }
        }
        Ok(batch)
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.producer().flush(timeout)
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.events.cancel();
    }
}

/// Serves the producer's events (delivery reports complete requests' batches) until `stop`:
/// on the current async runtime with an [`EventPump`], or, outside one, on a thread polling
/// every 100 ms like rust-rdkafka's `ThreadedProducer`.
fn serve_events(
    producer: &Arc<BatchProducer<Ctx, BaseProducer<Ctx>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let pump = EventPump::new(producer.clone());
            rt.spawn(pump.run(stop));
        }
        Err(_) => {
            let producer = producer.clone();
            std::thread::Builder::new()
                .name("ingest-kafka-events".into())
                .spawn(move || {
                    while !stop.is_cancelled() {
                        producer.producer().poll(Duration::from_millis(100));
                    }
                })
                .expect("spawn the producer's event thread");
        }
    }
}

/// Probes the broker every `clock.tick_interval`, keeps health and readiness current, and
/// writes a tick into every partition while the producer is healthy: the broker answers
/// metadata, the previous round of ticks was acknowledged, and no produce failed since.
pub async fn tick_loop(
    kafka: Arc<Kafka>,
    interval: Duration,
    source: String,
    ready: common::telemetry::Readiness,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(2));
    let mut last: Option<Arc<Batch>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = timer.tick() => {}
        }
        let was_up = kafka.health.is_up();
        let k = kafka.clone();
        let probe = tokio::task::spawn_blocking(move || k.probe(probe_timeout))
            .await
            .unwrap_or_else(|e| Err(format!("probe panicked: {e}")));
        let partitions = match probe {
            Ok(_) if kafka.partition_change().is_some() => {
                let (pinned, seen) = kafka.partition_change().unwrap_or_default();
                if metrics.partition_mismatch.get() == 0 {
                    tracing::error!(
                        pinned,
                        seen,
                        "REFUSING REQUESTS: the contacts topic had {pinned} partitions at start-up \
                         and now has {seen}; ingest does not follow a new count (persons would \
                         move away from their state). Ticks stopped; requests get 503. See \
                         docs/OPERATIONS.md#repartitioning-the-contacts-topic-safely"
                    );
                }
                metrics.partition_mismatch.set(1);
                ready.set(false);
                last = None;
                continue;
            }
            Ok(n) => n,
            Err(reason) => {
                if kafka.health.is_up() || ready.get() {
                    tracing::warn!(%reason, "kafka not ready; ticks paused, requests get 503");
                }
                kafka.health.set(false);
                ready.set(false);
                metrics.kafka_up.set(0);
                continue;
            }
        };
        // The previous ticks must have been acknowledged before claiming more time.
        if let Some(prev) = &last {
            if !prev.is_done() {
                metrics.ticks_skipped.inc();
                continue;
            }
            if let Some(e) = prev.error() {
                tracing::warn!(error = %e, "ticks failed; producer unhealthy");
                metrics.produce_errors.with_label_values(&["tick"]).inc();
                last = None;
                kafka.health.set(false);
                ready.set(false);
                metrics.kafka_up.set(0);
                continue;
            }
        }
        kafka.health.set(true);
        ready.set(true);
        metrics.kafka_up.set(1);
        if !was_up {
            // One clean probe restores requests; ticks resume from the next round, if
            // nothing failed in between.
            tracing::info!(partitions, "kafka reachable");
            continue;
        }
        let tick = Tick {
            received_at: common::record::now_millis(),
            source: source.clone(),
        };
        match kafka.send_ticks(partitions, &tick) {
            Ok(b) => {
                metrics.ticks.inc_by(partitions as u64);
                last = Some(b);
            }
            Err(e) => {
                metrics
                    .produce_errors
                    .with_label_values(&[e.reason()])
                    .inc();
                last = None;
            }
        }
    }
}
