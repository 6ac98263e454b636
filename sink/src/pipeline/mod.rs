//! The delivery loop: Kafka → batches → ClickHouse → offset commit.
//!
//! - [`batch`] — the batch being filled: rows per table, offsets, the limits that make it due;
//! - [`writer`] — a batch's inserts: retried while the failure is transient or systemic,
//!   split when ClickHouse refuses rows for their data ([`split`], the bisection as pure
//!   logic), the refused rows parked on the dead-letter topic;
//! - [`kafka`] — consumer/producer settings and context, offset commits, dead letters;
//! - this module — the loop itself and the decoding of each record into the batch.
//!
//! Invariants:
//! - An offset is committed only after every row of every record before it (in its partition)
//!   was confirmed by ClickHouse, or the record was a tick, or its dead letter was acknowledged
//!   (a record that does not decode, or a row ClickHouse refused for its data).
//! - At most one batch is being written while the next one fills. Commits happen in batch order.
//! - A record is dead-lettered only for itself: because it does not decode, or because
//!   ClickHouse refused its row alone (a single-row insert failed with a *data* error,
//!   `crate::error::ErrorClass`). A rejection that is not about the rows (*systemic*), or
//!   that refuses more than `writer::MAX_REJECTED_ROWS` rows of one table of a batch, parks
//!   nothing. Reasons and logs carry codes and names, never record values.
//! - Batch limits grow (doubling, up to `sink.catch_up_factor`) while the sink is behind and
//!   return to the configured ones once a batch is cut by `max_delay` (`Limits`).
//! - An insert that fails with a *transient* or *systemic* error is retried (same rows, same
//!   dedup token) with exponential backoff, for ever; meanwhile the next batch fills up to its
//!   limits, then the partitions are paused (the consumer keeps polling so it stays in the
//!   group) until the write succeeds. On the healthy path a full next batch just waits for the
//!   write in flight.
//! - An insert that fails with a *data* error is split (halves, recursively; each sub-insert
//!   retried as above with its own deterministic dedup token: batch token + table + row
//!   range) until the refused rows are single; those are dead-lettered and every other row
//!   is written once. The healthy path builds nothing for this.
//! - Rebalance: only partitions still assigned are committed. Rows of revoked partitions may
//!   still be written; the new owner re-reads from the last commit and the deduplicating keys
//!   make the overlap harmless (a refused row in that overlap is parked by both owners: the
//!   dead-letter topic is at least once).

mod batch;
mod kafka;
mod split;
mod writer;

pub(crate) use kafka::{consumer_config, producer_config};
pub(crate) use writer::Writer;

use crate::error::SinkError;
use crate::rows::{Decoded, Source, decode};
use batch::{Batch, Limits};
use common::config::Config;
use common::lifecycle::Shutdown;
use common::record::{DeadLetter, now_millis};
use futures::FutureExt;
use kafka::{DeadLetters, SinkContext, commit, set_paused};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Most records taken from librdkafka's queue per turn of the delivery loop.
const DRAIN: usize = 1024;

/// The pings insert body goes out in chunks of this size.
const CHUNK: usize = 1 << 20;

/// While catching up, a batch is written once no record has arrived for this long: the
/// backlog is read, and waiting out `sink.max_delay` would only delay the last rows.
const CAUGHT_UP_IDLE: Duration = Duration::from_millis(30);

/// The consume → batch → write → commit loop. Returns when `shutdown` flips to true (after a
/// last flush attempt) or on a fatal Kafka error.
pub(crate) async fn deliver(
    config: &Config,
    writer: Writer,
    shutdown: Shutdown,
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
    let dlq = Arc::new(DeadLetters {
        producer,
        topic: config.kafka.dead_letter_topic.clone(),
        sources: topics.clone(),
        cfg: cfg.clone(),
    });
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
    let mut stopping = shutdown.is_triggered();

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
            let dlq = dlq.clone();
            let mut b = b;
            b.ping_chunks = b.pings.native_body(CHUNK);
            inflight = Some(tokio::spawn(async move {
                let ok = w.write(&b, &dlq, rx).await;
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
            () = shutdown.cancelled(), if !stopping => {
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
                            if !accept(&m, &mut batch, &topics, &dlq, config, &writer,
                                       &shutdown).await {
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

/// Decodes one record into `batch` (or dead-letters it) and notes its offset. Returns false
/// only if shutdown came before a dead letter was acknowledged (the offset is then not noted).
async fn accept(
    m: &BorrowedMessage<'_>,
    batch: &mut Batch,
    topics: &[String; 2],
    dlq: &DeadLetters,
    config: &Config,
    writer: &Writer,
    shutdown: &Shutdown,
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
            if !dlq.send(key, &letter, shutdown).await {
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
