//! Rebuilding the changelog for a new contacts partition count (the repartitioning procedure
//! in docs/OPERATIONS.md, "Repartitioning the contacts topic safely").
//!
//! Changelog partition `i` holds the state of the persons of contacts partition `i`, and a
//! person's contacts partition is librdkafka's default choice for its id: `crc32(id) % count`
//! (ingest computes the same, `ingest::kafka::partition`). After contacts goes from `N` to `M`
//! partitions, most persons are in another partition; their state must move with them, and
//! nothing may stay behind in the old partition (the restore never forgets a person).
//!
//! So the state is copied into a NEW, empty changelog topic with `M` partitions: each person's
//! last snapshot, unchanged (its transition counter too, so event ids continue), to partition
//! `crc32(id) % M`; every partition gets a clock. A person's silence is measured in its
//! partition's virtual time, so a moved person keeps its silence exactly when the clocks of
//! the old and the new partition agree. [`plan`] therefore refuses when the old partitions'
//! excluded outage differs (their clocks disagree by more than stream time), and gives a new
//! partition the clock of the old partition furthest ahead. What is left is the spread of the
//! old partitions' stream times, at most about one `clock.tick_interval` after a drain with
//! ingest stopped: a moved person's silence may be off by that much.
//!
//! [`plan`] is the pure part (unit-tested); [`run`] reads the old topic and writes the new.

use common::codec::changelog::{CLOCK_KEY, ClockSnapshot, PersonSnapshot};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The last value of every key of one changelog partition (tombstones already applied).
pub type PartitionState = BTreeMap<Vec<u8>, Vec<u8>>;

/// Why the changelog cannot be rebuilt as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RekeyError {
    #[error("the new partition count must be at least 1 (got {0})")]
    BadCount(i32),
    #[error("partition {partition}: a value that is not a changelog snapshot ({reason})")]
    BadValue { partition: i32, reason: String },
    #[error(
        "partition {partition} holds a person that belongs to partition {expected} of {old}: \
         the source is not the changelog of a {old}-partition contacts topic"
    )]
    Misplaced {
        partition: i32,
        expected: i32,
        old: i32,
    },
    #[error(
        "the old partitions excluded different outage time ({min} ms to {max} ms): moved \
         persons would gain or lose that much silence; not rebuilt"
    )]
    ClocksDiffer { min: i64, max: i64 },
    #[error("{0}")]
    Kafka(String),
}

impl From<KafkaError> for RekeyError {
    fn from(e: KafkaError) -> Self {
        RekeyError::Kafka(e.to_string())
    }
}

/// What to write into the new changelog: `(partition, key, value)`, persons then clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub records: Vec<(i32, Vec<u8>, Vec<u8>)>,
    pub persons: usize,
    /// Persons whose partition changed.
    pub moved: usize,
}

/// librdkafka's default partition for a non-empty key (see `ingest::kafka::partition`).
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    (crc32fast::hash(key) % partitions as u32) as i32
}

/// The new changelog for `new` partitions, from the last values of the old partitions
/// (`old[i]` is partition `i`).
pub fn plan(old: &[PartitionState], new: i32) -> Result<Plan, RekeyError> {
    if new < 1 {
        return Err(RekeyError::BadCount(new));
    }
    let n = old.len() as i32;
    let mut clocks: Vec<Option<ClockSnapshot>> = Vec::with_capacity(old.len());
    let mut records = Vec::new();
    let (mut persons, mut moved) = (0, 0);
    for (p, state) in old.iter().enumerate() {
        let p = p as i32;
        let bad = |reason: String| RekeyError::BadValue {
            partition: p,
            reason,
        };
        let mut clock = None;
        for (key, value) in state {
            if key.as_slice() == CLOCK_KEY {
                clock = Some(ClockSnapshot::decode(value).map_err(|e| bad(e.to_string()))?);
                continue;
            }
            PersonSnapshot::decode(value).map_err(|e| bad(e.to_string()))?;
            let expected = partition_of(key, n);
            if expected != p {
                return Err(RekeyError::Misplaced {
                    partition: p,
                    expected,
                    old: n,
                });
            }
            let q = partition_of(key, new);
            persons += 1;
            moved += usize::from(q != p);
            records.push((q, key.clone(), value.clone()));
        }
        clocks.push(clock);
    }
    let present: Vec<ClockSnapshot> = clocks.iter().flatten().copied().collect();
    if let (Some(min), Some(max)) = (
        present.iter().map(|c| c.excluded_outage_ms).min(),
        present.iter().map(|c| c.excluded_outage_ms).max(),
    ) {
        if min != max {
            return Err(RekeyError::ClocksDiffer { min, max });
        }
    }
    let ahead = present
        .iter()
        .filter(|c| c.started)
        .max_by_key(|c| c.stream_time)
        .or(present.first())
        .copied();
    for q in 0..new {
        let own = clocks.get(q as usize).copied().flatten();
        if let Some(c) = own.or(ahead) {
            records.push((q, CLOCK_KEY.to_vec(), c.encode().to_vec()));
        }
    }
    Ok(Plan {
        records,
        persons,
        moved,
    })
}

/// Reads every partition of `topic` (read_committed) to its end as of now.
fn read_all(client: &ClientConfig, topic: &str) -> Result<Vec<PartitionState>, RekeyError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "lastseen-changelog-rekey")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let n = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if n == 0 {
        return Err(RekeyError::Kafka(format!(
            "{topic}: no partitions (missing?)"
        )));
    }
    let mut out = vec![PartitionState::new(); n];
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = |c: &BaseConsumer| -> Result<bool, RekeyError> {
        let pos = c.position()?;
        Ok(ends.iter().all(|(p, high)| {
            *high == 0
                || matches!(pos.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *high)
        }))
    };
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = m.key().unwrap_or_default().to_vec();
                let state = &mut out[m.partition() as usize];
                match m.payload() {
                    Some(v) => state.insert(key, v.to_vec()),
                    None => state.remove(&key),
                };
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                if done(&consumer)? {
                    return Ok(out);
                }
            }
            Some(Err(e)) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Err(RekeyError::Kafka(format!(
                "{topic}: not read to its end in time"
            )));
        }
    }
}

/// Rebuilds changelog `from` into `to` (which must exist, be empty, and have as many
/// partitions as `contacts`). Returns the plan that was written.
pub fn run(
    client: &ClientConfig,
    from: &str,
    to: &str,
    contacts: &str,
) -> Result<Plan, RekeyError> {
    let probe: BaseConsumer = client.create()?;
    let count = |topic: &str| -> Result<i32, RekeyError> {
        let md = probe.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        Ok(md
            .topics()
            .first()
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0))
    };
    let new = count(contacts)?;
    if count(to)? != new {
        return Err(RekeyError::Kafka(format!(
            "{to} has {} partitions, {contacts} has {new}: create {to} with {new}",
            count(to)?
        )));
    }
    for p in 0..new {
        let (low, high) = probe.fetch_watermarks(to, p, Duration::from_secs(30))?;
        if high > low || high > 0 {
            return Err(RekeyError::Kafka(format!(
                "{to} partition {p} is not empty: the target must be a new topic"
            )));
        }
    }
    let old = read_all(client, from)?;
    let plan = plan(&old, new)?;
    let producer: BaseProducer = client
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()?;
    for (p, key, value) in &plan.records {
        let mut rec = BaseRecord::<[u8], [u8]>::to(to)
            .partition(*p)
            .key(key)
            .payload(value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    producer.poll(Duration::from_millis(10));
                    rec = r;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(seq: u32, at: i64) -> Vec<u8> {
        let mut b = Vec::new();
        PersonSnapshot {
            flags: common::codec::changelog::REGISTERED,
            seq,
            last_contact_at: at,
            last_contact_virtual: at - 500,
            address: "Somewhere 1",
        }
        .encode(&mut b);
        b
    }

    fn clock(stream_time: i64, excluded: i64) -> Vec<u8> {
        ClockSnapshot {
            started: true,
            stream_time,
            excluded_outage_ms: excluded,
        }
        .encode()
        .to_vec()
    }

    /// Persons `person-0..n` in their partition of `old`, and a clock in each.
    fn changelog(n: usize, old: i32, clocks: &[(i64, i64)]) -> Vec<PartitionState> {
        let mut parts = vec![PartitionState::new(); old as usize];
        for k in 0..n {
            let id = format!("person-{k}").into_bytes();
            parts[partition_of(&id, old) as usize].insert(id, person(k as u32, 1000 + k as i64));
        }
        for (p, (st, ex)) in clocks.iter().enumerate() {
            parts[p].insert(CLOCK_KEY.to_vec(), clock(*st, *ex));
        }
        parts
    }

    #[test]
    fn every_person_lands_once_in_its_new_partition_unchanged_and_every_partition_has_a_clock() {
        let old = changelog(500, 2, &[(10_000, 300), (10_400, 300)]);
        let plan = plan(&old, 5).unwrap();
        assert_eq!(plan.persons, 500);
        assert!(plan.moved > 0 && plan.moved < 500, "{}", plan.moved);
        let mut seen = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        for (q, key, value) in &plan.records {
            if key.as_slice() == CLOCK_KEY {
                assert!(
                    clocks
                        .insert(*q, ClockSnapshot::decode(value).unwrap())
                        .is_none()
                );
                continue;
            }
            assert_eq!(*q, partition_of(key, 5));
            let from = partition_of(key, 2) as usize;
            assert_eq!(Some(value), old[from].get(key), "the snapshot is unchanged");
            assert!(seen.insert(key.clone(), *q).is_none(), "once");
        }
        assert_eq!(seen.len(), 500);
        // Old partitions keep their own clock; new ones get the one furthest ahead.
        let c = |st, ex| ClockSnapshot {
            started: true,
            stream_time: st,
            excluded_outage_ms: ex,
        };
        assert_eq!(clocks[&0], c(10_000, 300));
        assert_eq!(clocks[&1], c(10_400, 300));
        for q in 2..5 {
            assert_eq!(clocks[&q], c(10_400, 300));
        }
    }

    #[test]
    fn the_same_count_moves_nobody_and_fewer_partitions_work_too() {
        let old = changelog(100, 3, &[(1, 0), (1, 0), (1, 0)]);
        let same = plan(&old, 3).unwrap();
        assert_eq!(same.moved, 0);
        let fewer = plan(&old, 1).unwrap();
        assert_eq!(fewer.persons, 100);
        assert!(fewer.records.iter().all(|(q, _, _)| *q == 0));
    }

    #[test]
    fn clocks_that_excluded_different_outages_are_refused() {
        let old = changelog(10, 2, &[(10_000, 300), (10_000, 900)]);
        assert_eq!(
            plan(&old, 4),
            Err(RekeyError::ClocksDiffer { min: 300, max: 900 })
        );
    }

    #[test]
    fn a_person_in_the_wrong_partition_or_a_bad_value_is_refused() {
        let mut old = changelog(10, 2, &[(1, 0), (1, 0)]);
        let id = b"person-0".to_vec();
        let wrong = 1 - partition_of(&id, 2) as usize;
        old[wrong].insert(id, person(0, 5));
        assert!(matches!(plan(&old, 4), Err(RekeyError::Misplaced { .. })));
        let mut old = changelog(10, 2, &[(1, 0), (1, 0)]);
        old[0].insert(CLOCK_KEY.to_vec(), b"junk".to_vec());
        assert!(matches!(plan(&old, 4), Err(RekeyError::BadValue { .. })));
        assert_eq!(plan(&old, 0), Err(RekeyError::BadCount(0)));
    }
}
