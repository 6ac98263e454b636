//! Rebuilding one partition's detector from its changelog partition: read_committed, from
//! the beginning to the high watermark as of the start, every value decoded by the
//! changelog codec (through [`Detector::restore_person`] and [`Detector::restore_clock`]).

use super::ServiceError;
use super::metrics::Metrics;
use crate::detector::Detector;
use common::codec::changelog::CLOCK_KEY;
use common::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Longest a partition restore may take before the instance gives up (and is restarted).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

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
