//! The Kafka side of the delivery loop: consumer and producer settings, the consumer context
//! (pausing, lag), offset commits and dead letters.

use super::batch::Batch;
use crate::metrics::Metrics;
use crate::rows::Source;
use common::config::{Config, SinkConfig};
use common::lifecycle::{Backoff, Retryable, Shutdown, retry_with};
use common::record::DeadLetter;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Consumer context: pauses newly assigned partitions while the sink is back-pressured, and
/// turns librdkafka statistics into the lag gauge.
pub(crate) struct SinkContext {
    pub(crate) paused: Arc<AtomicBool>,
    pub(crate) metrics: Metrics,
    pub(crate) topics: [String; 2],
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

pub(crate) fn set_paused(consumer: &StreamConsumer<SinkContext>, flag: &AtomicBool, pause: bool) {
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

/// Commits `done`'s offsets (last + 1) for partitions still assigned to us, only forward.
pub(crate) fn commit(
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

/// Where dead letters go and how: what the decoding of records and the writer share.
pub(crate) struct DeadLetters {
    pub(crate) producer: FutureProducer,
    /// `kafka.dead_letter_topic`.
    pub(crate) topic: String,
    /// The contacts and events topics (a dead letter names the record's topic).
    pub(crate) sources: [String; 2],
    pub(crate) cfg: SinkConfig,
}

impl DeadLetters {
    /// The topic records of `source` are read from.
    pub(crate) fn topic_of(&self, source: Source) -> &str {
        &self.sources[usize::from(super::batch::source_tag(source))]
    }

    /// [`dead_letter`] to this topic.
    pub(crate) async fn send(
        &self,
        key: Option<Vec<u8>>,
        letter: &DeadLetter,
        shutdown: &Shutdown,
    ) -> bool {
        dead_letter(
            &self.producer,
            &self.topic,
            key,
            letter,
            &self.cfg,
            shutdown,
        )
        .await
    }
}

/// Produces a dead letter and waits for the broker's acknowledgement, retrying with backoff.
/// Returns false if shutdown came first.
pub(crate) async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<Vec<u8>>,
    letter: &DeadLetter,
    cfg: &SinkConfig,
    shutdown: &Shutdown,
) -> bool {
    let body = common::codec::dead_letter::to_vec(letter);
    let mut backoff = Backoff::new(cfg.min_backoff, cfg.max_backoff);
    let sent = retry_with(
        shutdown,
        &mut backoff,
        || {
            let mut rec = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&body);
            if let Some(k) = &key {
                rec = rec.key(k);
            }
            async move {
                producer
                    .send(rec, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| ProduceFailed(e))
            }
        },
        |ProduceFailed(e), _, delay| {
            tracing::warn!(error = %e, ?delay, "dead-letter produce failed, retrying");
        },
    )
    .await;
    if sent.is_ok() {
        tracing::warn!(topic = %letter.topic, partition = letter.partition,
            offset = letter.offset, reason = %letter.reason, "record dead-lettered");
    }
    sent.is_ok()
}

/// A dead letter the broker did not take: retried until shutdown (the record's offset is not
/// committed before its dead letter is acknowledged).
struct ProduceFailed(rdkafka::error::KafkaError);

impl Retryable for ProduceFailed {
    fn is_retryable(&self) -> bool {
        true
    }
}
