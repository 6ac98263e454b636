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
//!   (`send_offsets_to_transaction`).
//! - On assignment a partition's detector is rebuilt from the changelog (read_committed)
//!   before any of its records is processed. Because the detector is deterministic, re-reading
//!   the contacts after the last committed offset produces the same events with the same ids.
//! - Revoked → commit what is open, then drop the partitions. Lost → abort, drop them.
//!   Abortable transaction error → abort, rebuild every partition from the changelog and seek
//!   back to the committed offsets. Fatal → stop with an error (the supervisor restarts us).
//!
//! The loop itself is synchronous on one blocking thread: librdkafka's transactional calls
//! block, and the rebalance callbacks run inside `poll`, on the same thread.

pub mod metrics;

use crate::detector::{Detector, DetectorError, Input};
use common::config::Config;
use common::lifecycle::{Listeners, Shutdown};
use common::record::{ContactRef, DeadLetter, PersonEvent, now_millis};
use common::telemetry::Readiness;
use metrics::Metrics;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Changelog key of a partition's clock. Person ids never start with a NUL byte (ingest only
/// accepts printable ids).
pub const CLOCK_KEY: &[u8] = b"\0clock";

/// Timeout of one transactional call; librdkafka retries internally within it.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a partition restore may take before the instance gives up (and is restarted).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

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
    // The loop polls a flag; the flag mirrors the shutdown handle.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let watch = shutdown.clone();
    let mirror = tokio::spawn(async move {
        watch.cancelled().await;
        stop2.store(true, Ordering::SeqCst);
    });
    let result = tokio::task::spawn_blocking(move || run_loop(config, metrics, ready, stop))
        .await
        .unwrap_or_else(|e| {
            Err(ServiceError::Fatal(format!(
                "processing thread panicked: {e}"
            )))
        });
    mirror.abort();
    admin_stop.trigger();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    result
}

/// One assigned partition.
#[derive(Debug)]
struct Partition {
    detector: Detector,
    /// Offset to commit: one past the last processed record.
    next_offset: Option<i64>,
}

/// Everything the loop and the rebalance callbacks share (both on the loop's thread).
struct Core {
    cfg: Config,
    producer: BaseProducer,
    partitions: BTreeMap<i32, Partition>,
    in_txn: bool,
    events: Vec<PersonEvent>,
    metrics: Metrics,
    /// Per-record counters resolved once (a labelled lookup per record costs a hash and a lock).
    counters: metrics::HotCounters,
    ready: Readiness,
    /// An error raised inside a rebalance callback, surfaced by the loop.
    failed: Option<ServiceError>,
    /// Records processed and empty polls since the last commit (for the debug log).
    processed: u64,
    idle_polls: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

struct Ctx {
    core: Arc<Mutex<Core>>,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding the lock ends the process anyway; keep going with the data.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut core = lock(&self.core);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = tpl.count(), lost, "partitions revoked");
                core.ready.set(false);
                if lost {
                    core.abort("assignment lost");
                } else if let Err(e) = core.commit(consumer) {
                    tracing::warn!(error = %e, "commit on revoke failed; aborting");
                    core.abort("commit on revoke failed");
                    if let ServiceError::Fatal(_) = e {
                        core.failed = Some(e);
                    }
                }
                for el in tpl.elements() {
                    core.partitions.remove(&el.partition());
                }
                core.update_gauges();
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut core = lock(&self.core);
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(
                partitions = tpl.count(),
                "partitions assigned; restoring state"
            );
            core.ready.set(false);
            for el in tpl.elements() {
                let p = el.partition();
                match restore(&core.cfg, p, &core.metrics) {
                    Ok(detector) => {
                        core.partitions.insert(
                            p,
                            Partition {
                                detector,
                                next_offset: None,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "restore failed");
                        core.failed = Some(e);
                        return;
                    }
                }
            }
            core.update_gauges();
            core.ready.set(true);
        }
    }
}

impl Core {
    fn ensure_txn(&mut self) -> Result<(), ServiceError> {
        if !self.in_txn {
            self.producer.begin_transaction().map_err(txn_error)?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), ServiceError> {
        let p = msg.partition();
        if !self.partitions.contains_key(&p) {
            // Fetched before a revoke took it away; its new owner will process it.
            return Ok(());
        }
        self.ensure_txn()?;
        let payload = msg.payload().unwrap_or_default();
        // Borrowed decode: a ping's strings are not copied out of the message.
        match ContactRef::decode(payload) {
            Ok(contact) => {
                let (counter, input) = match &contact {
                    ContactRef::Ping {
                        person_id,
                        received_at,
                        ..
                    } => (
                        &self.counters.records[0],
                        Input::Ping {
                            person_id,
                            received_at: *received_at,
                        },
                    ),
                    ContactRef::Registration {
                        person_id,
                        address,
                        received_at,
                        ..
                    } => (
                        &self.counters.records[1],
                        Input::Registration {
                            person_id,
                            address,
                            received_at: *received_at,
                        },
                    ),
                    ContactRef::Tick { received_at, .. } => (
                        &self.counters.records[2],
                        Input::Tick {
                            received_at: *received_at,
                        },
                    ),
                };
                counter.inc();
                let part = self.partitions.get_mut(&p).expect("checked above");
                part.detector.apply_input(input, &mut self.events);
            }
            Err(e) => {
                let reason = format!("undecodable contact: {e}");
                self.dead_letter(msg, "undecodable", &reason)?;
            }
        }
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            let mut json = Vec::with_capacity(256);
            for e in &events {
                self.counters.event(e.kind).inc();
                json.clear();
                common::codec::event::encode(e, &mut json);
                send(
                    &self.producer,
                    BaseRecord::to(&self.cfg.kafka.events_topic)
                        .key(&e.person_id)
                        .payload(&json),
                )?;
            }
            // Keep the buffer's capacity for the next record.
            self.events = events;
            self.events.clear();
        }
        if let Some(part) = self.partitions.get_mut(&p) {
            part.next_offset = Some(msg.offset() + 1);
        }
        self.processed += 1;
        Ok(())
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        label: &str,
        reason: &str,
    ) -> Result<(), ServiceError> {
        self.metrics.dead_letters.with_label_values(&[label]).inc();
        tracing::warn!(
            partition = msg.partition(),
            offset = msg.offset(),
            reason,
            "dead letter"
        );
        let dl = DeadLetter {
            stage: "processor".into(),
            reason: reason.into(),
            topic: msg.topic().into(),
            partition: msg.partition(),
            offset: msg.offset(),
            payload: String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned(),
            at: now_millis(),
        };
        let json = common::codec::dead_letter::to_vec(&dl);
        let key = format!("{}-{}", msg.partition(), msg.offset());
        send(
            &self.producer,
            BaseRecord::to(&self.cfg.kafka.dead_letter_topic)
                .key(&key)
                .payload(&json),
        )
    }

    /// Writes the changelog and the offsets into the open transaction and commits it.
    fn commit(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        if !self.in_txn {
            return Ok(());
        }
        let started = Instant::now();
        let changelog = self.cfg.kafka.changelog_topic.clone();
        let contacts = self.cfg.kafka.contacts_topic.clone();
        let mut offsets = TopicPartitionList::new();
        let mut written = 0u64;
        let mut send_err = None;
        for (&p, part) in self.partitions.iter_mut() {
            let producer = &self.producer;
            part.detector.drain_dirty(|id, snapshot| {
                if send_err.is_some() {
                    return;
                }
                let mut rec = BaseRecord::<[u8], [u8]>::to(&changelog)
                    .partition(p)
                    .key(id);
                if let Some(s) = snapshot {
                    rec = rec.payload(s);
                }
                match send(producer, rec) {
                    Ok(()) => written += 1,
                    Err(e) => send_err = Some(e),
                }
            });
            if let Some(e) = send_err.take() {
                return Err(e);
            }
            let clock = part.detector.clock_snapshot();
            send(
                producer,
                BaseRecord::to(&changelog)
                    .partition(p)
                    .key(CLOCK_KEY)
                    .payload(&clock),
            )?;
            if let Some(o) = part.next_offset {
                offsets.add_partition_offset(&contacts, p, Offset::Offset(o))?;
            }
        }
        let produced = started.elapsed();
        if offsets.count() > 0 {
            let meta = consumer
                .group_metadata()
                .ok_or_else(|| ServiceError::Abortable("no consumer group metadata yet".into()))?;
            retry_txn(|| {
                self.producer
                    .send_offsets_to_transaction(&offsets, &meta, TXN_TIMEOUT)
            })?;
        }
        let offsets_sent = started.elapsed();
        wait_delivered(&self.producer, TXN_TIMEOUT)?;
        retry_txn(|| self.producer.commit_transaction(TXN_TIMEOUT))?;
        tracing::debug!(
            records = std::mem::take(&mut self.processed),
            idle_polls = std::mem::take(&mut self.idle_polls),
            changelog_records = written,
            produce_ms = produced.as_millis() as u64,
            offsets_ms = (offsets_sent - produced).as_millis() as u64,
            commit_ms = (started.elapsed() - offsets_sent).as_millis() as u64,
            "transaction committed"
        );
        self.in_txn = false;
        self.metrics.changelog_writes.inc_by(written);
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Aborts the open transaction (if any). Local state may now be ahead of what Kafka
    /// holds; callers drop or rebuild it.
    fn abort(&mut self, why: &str) {
        if self.in_txn {
            tracing::warn!(why, "aborting transaction");
            if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
                tracing::error!(error = %e, "abort failed");
                self.failed = Some(ServiceError::Fatal(format!("abort failed: {e}")));
            }
            self.in_txn = false;
            self.metrics
                .transactions
                .with_label_values(&["aborted"])
                .inc();
        }
    }

    /// After an abort: rebuild every owned partition from the changelog and seek the
    /// consumer back to the committed offsets, so the aborted work is redone identically.
    fn rewind(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        let contacts = self.cfg.kafka.contacts_topic.clone();
        let mut tpl = TopicPartitionList::new();
        for &p in self.partitions.keys() {
            tpl.add_partition(&contacts, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            let detector = restore(&self.cfg, p, &self.metrics)?;
            self.partitions.insert(
                p,
                Partition {
                    detector,
                    next_offset: None,
                },
            );
            let offset = committed
                .find_partition(&contacts, p)
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                .unwrap_or(Offset::Beginning);
            consumer.seek(&contacts, p, offset, Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.partitions_owned.set(self.partitions.len() as i64);
        let mut totals = [0u64; 4];
        let now = now_millis();
        m.stream_time_lag.reset();
        m.excluded_outage.reset();
        for (p, part) in &self.partitions {
            let c = part.detector.counts();
            totals[0] += c.registered;
            totals[1] += c.silent_noticed;
            totals[2] += c.deregistered;
            totals[3] += c.unregistered_contact;
            let label = p.to_string();
            if let Some(st) = part.detector.stream_time() {
                m.stream_time_lag
                    .with_label_values(&[&label])
                    .set((now - st) as f64 / 1000.0);
            }
            m.excluded_outage
                .with_label_values(&[&label])
                .set(part.detector.excluded_outage_ms() as f64 / 1000.0);
        }
        for (state, n) in ["registered", "silent", "deregistered", "unregistered"]
            .iter()
            .zip(totals)
        {
            m.persons.with_label_values(&[state]).set(n as i64);
        }
    }
}

/// Produces one record, waiting for queue space instead of failing.
fn send<K, P>(producer: &BaseProducer, record: BaseRecord<'_, K, P>) -> Result<(), ServiceError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, _)) => return Err(txn_error(e)),
        }
    }
}

/// Waits until every produced record is acknowledged, serving delivery reports every
/// millisecond. `commit_transaction` flushes too, but rust-rdkafka's flush sleeps in 100 ms
/// polls, which cost ~100 ms on every commit (measured); after this its flush returns at once.
fn wait_delivered(producer: &BaseProducer, timeout: Duration) -> Result<(), ServiceError> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err(ServiceError::Abortable(format!(
                "{} records not acknowledged within {timeout:?}",
                producer.in_flight_count()
            )));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Classifies a transactional error as librdkafka's docs say: fatal, abortable, or other.
fn txn_error(e: KafkaError) -> ServiceError {
    if let KafkaError::Transaction(ref t) = e {
        if t.is_fatal() {
            return ServiceError::Fatal(e.to_string());
        }
        if t.txn_requires_abort() {
            return ServiceError::Abortable(e.to_string());
        }
    }
    ServiceError::Abortable(e.to_string())
}

/// Retries a transactional call while librdkafka says it is retriable.
fn retry_txn(mut f: impl FnMut() -> Result<(), KafkaError>) -> Result<(), ServiceError> {
    let mut attempts = 0;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(t)) if t.is_retriable() && attempts < 10 => {
                attempts += 1;
                tracing::warn!(error = %t, attempts, "retriable transaction error; retrying");
                std::thread::sleep(Duration::from_millis(100 * attempts));
            }
            Err(e) => return Err(txn_error(e)),
        }
    }
}

/// Rebuilds partition `p`'s detector from the changelog (read_committed, to its end).
pub fn restore(cfg: &Config, p: i32, metrics: &Metrics) -> Result<Detector, ServiceError> {
    let started = Instant::now();
    let err = |reason: String| ServiceError::Restore {
        partition: p,
        reason,
    };
    let mut detector = Detector::new(cfg.policy, cfg.clock)?;
    let topic = &cfg.kafka.changelog_topic;
    let consumer: BaseConsumer = cfg
        .kafka_client_config("processor-restore")
        .set("group.id", format!("{}-restore", cfg.processor.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "52428800")
        .create()?;
    // The high watermark as of now: everything before it was committed or aborted by an
    // earlier owner (a fenced one's open transaction blocks read_committed until it ends).
    // Retried until the restore deadline: right after a topic is created or a broker
    // restarts, the leader may not be known for a moment, and exiting on that would only
    // restart the processor into the same wait.
    let (low, high) = loop {
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
            Ok(w) => break w,
            Err(e) if started.elapsed() < RESTORE_TIMEOUT => {
                tracing::warn!(partition = p, error = %e, "changelog watermarks not available yet; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(err(format!("watermarks: {e}"))),
        }
    };
    let mut records = 0u64;
    let mut clock: Option<Vec<u8>> = None;
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        loop {
            if started.elapsed() > RESTORE_TIMEOUT {
                return Err(err(format!(
                    "not at the end ({high}) after {RESTORE_TIMEOUT:?}"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    records += 1;
                    let key = m.key().unwrap_or_default();
                    if key == CLOCK_KEY {
                        clock = m.payload().map(<[u8]>::to_vec);
                    } else if let Some(v) = m.payload() {
                        let id = std::str::from_utf8(key)
                            .map_err(|_| err(format!("non-UTF-8 key at offset {}", m.offset())))?;
                        detector
                            .restore_person(id, v)
                            .map_err(|e| err(format!("offset {}: {e}", m.offset())))?;
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // Aborted records and transaction markers are skipped without a message:
                    // the position tells whether we are past the end.
                    let pos = consumer.position()?;
                    if let Some(Offset::Offset(o)) =
                        pos.find_partition(topic, p).map(|e| e.offset())
                    {
                        if o >= high {
                            break;
                        }
                    }
                }
                // librdkafka reports transient conditions (a broker connection lost, a leader
                // moving) as consumer errors and recovers by itself; the deadline above bounds
                // how long we wait for it.
                Some(Err(e)) => {
                    tracing::warn!(partition = p, error = %e, "changelog consumer error during restore; continuing");
                }
            }
        }
    }
    if let Some(c) = clock {
        detector
            .restore_clock(&c)
            .map_err(|e| err(format!("clock: {e}")))?;
    }
    metrics.restored_records.inc_by(records);
    metrics
        .restore_duration
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        partition = p,
        records,
        persons = detector.persons(),
        ms = started.elapsed().as_millis() as u64,
        "partition restored"
    );
    Ok(detector)
}

fn run_loop(
    cfg: Config,
    metrics: Metrics,
    ready: Readiness,
    stop: Arc<AtomicBool>,
) -> Result<(), ServiceError> {
    let txn_id = format!(
        "{}-{}",
        cfg.processor.transactional_id_prefix, cfg.processor.instance_id
    );
    let producer: BaseProducer = cfg
        .kafka_client_config("processor")
        .set("transactional.id", &txn_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Bounds how long a crashed instance's open transaction blocks read_committed readers
        // (its restart with the same id aborts it at once).
        .set("transaction.timeout.ms", "15000")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        // A delivery report per record costs an op, a queue hop and a callback for each of
        // the ~2 records (changelog + events) produced per consumed record. Failures are
        // still reported, `commit_transaction` fails if any record was not delivered, and
        // `wait_delivered` counts what is in flight either way.
        .set("delivery.report.only.error", "true")
        .create()?;
    retry_txn(|| producer.init_transactions(TXN_TIMEOUT))?;
    tracing::info!(transactional_id = %txn_id, "transactions initialised");

    let core = Arc::new(Mutex::new(Core {
        cfg: cfg.clone(),
        producer,
        partitions: BTreeMap::new(),
        in_txn: false,
        events: Vec::new(),
        counters: metrics::HotCounters::new(&metrics),
        metrics,
        ready: ready.clone(),
        failed: None,
        processed: 0,
        idle_polls: 0,
    }));
    let consumer: BaseConsumer<Ctx> =
        consumer_config(&cfg).create_with_context(Ctx { core: core.clone() })?;
    consumer.subscribe(&[&cfg.kafka.contacts_topic])?;

    let interval = cfg.processor.commit_interval;
    let mut last_commit = Instant::now();
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let polled = consumer.poll(Duration::from_millis(20));
        let mut c = lock(&core);
        if let Some(e) = c.failed.take() {
            break Err(e);
        }
        let step = match polled {
            Some(Ok(m)) => c.process(&m),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                Ok(())
            }
            None => {
                c.idle_polls += 1;
                Ok(())
            }
        };
        let step = step.and_then(|()| {
            if last_commit.elapsed() >= interval {
                last_commit = Instant::now();
                let r = c.commit(&consumer);
                c.update_gauges();
                r
            } else {
                Ok(())
            }
        });
        match step {
            Ok(()) => {}
            Err(ServiceError::Abortable(why)) => {
                c.abort(&why);
                c.rewind(&consumer)?;
            }
            Err(e) => break Err(e),
        }
    };
    ready.set(false);
    if result.is_ok() {
        let mut c = lock(&core);
        c.commit(&consumer)?;
        tracing::info!("final transaction committed; leaving the group");
    }
    drop(consumer);
    result
}

fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut c = cfg.kafka_client_config("processor");
    c.set("group.id", &cfg.processor.group_id)
        // Static membership: a restarted instance takes its partitions back without a
        // rebalance round; a vanished one is replaced after the session timeout.
        .set("group.instance.id", &cfg.processor.instance_id)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range")
        // Large fetches, as the raw-consume floor in processor_bench uses: fewer fetch
        // round trips per record at high rates.
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    c
}
