//! One batch being filled or written: the rows per table, the offsets it covers, and the
//! limits that say when it is due.

use crate::rows::{EventRow, PingBlock, RegistrationRow, Source};
use bytes::Bytes;
use common::config::SinkConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    pub(crate) fn note(&mut self, source: Source, partition: i32, offset: i64, bytes: usize) {
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
    pub(crate) fn reset(&mut self) {
        self.pings.clear();
        self.ping_chunks.clear();
        self.registrations.clear();
        self.events.clear();
        self.offsets.clear();
        self.records = 0;
        self.bytes = 0;
        self.started = None;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub(crate) fn full(&self, limits: &Limits) -> bool {
        self.records >= limits.rows() || self.bytes >= limits.bytes()
    }

    pub(crate) fn due(&self, limits: &Limits, max_delay: Duration) -> bool {
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

pub(crate) fn source_tag(s: Source) -> u8 {
    match s {
        Source::Contacts => 0,
        Source::Events => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Config;

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
