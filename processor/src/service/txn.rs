//! The transaction: the instance's transactional producer, sending into the open
//! transaction, waiting for deliveries, classifying librdkafka's transactional errors, and
//! closing a transaction (commit with the changelog and offsets, or abort).

use super::ServiceError;
use super::core::{Core, Ctx};
use common::codec::changelog::CLOCK_KEY;
use common::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Timeout of one transactional call; librdkafka retries internally within it.
pub(super) const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The instance's transactional producer, with transactions initialised (which fences a
/// predecessor with the same `transactional.id` and aborts what it left open).
pub(super) fn transactional_producer(cfg: &Config) -> Result<BaseProducer, ServiceError> {
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
    Ok(producer)
}

impl Core {
    /// Begins a transaction unless one is open.
    pub(super) fn ensure_txn(&mut self) -> Result<(), ServiceError> {
        if !self.in_txn {
            self.producer.begin_transaction().map_err(txn_error)?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Writes the changelog and the offsets into the open transaction and commits it.
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
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
    pub(super) fn abort(&mut self, why: &str) {
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
}

/// Produces one record, waiting for queue space instead of failing.
pub(super) fn send<K, P>(
    producer: &BaseProducer,
    record: BaseRecord<'_, K, P>,
) -> Result<(), ServiceError>
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
pub(super) fn wait_delivered(
    producer: &BaseProducer,
    timeout: Duration,
) -> Result<(), ServiceError> {
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
