//! Prometheus metrics of the processor service. No person or device ids as labels; the
//! partition number is a bounded label.

use common::record::EventKind;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the processor exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub records: IntCounterVec,
    pub events: IntCounterVec,
    pub transactions: IntCounterVec,
    pub commit_duration: Histogram,
    pub restore_duration: Histogram,
    pub restored_records: IntCounter,
    pub partitions_owned: IntGauge,
    pub persons: IntGaugeVec,
    pub stream_time_lag: prometheus::GaugeVec,
    pub excluded_outage: prometheus::GaugeVec,
    pub dead_letters: IntCounterVec,
    pub changelog_writes: IntCounter,
    pub partition_mismatch: IntGauge,
    pub replays_skipped: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            records: IntCounterVec::new(
                Opts::new("lastseen_processor_records_total", "Contacts processed, by record type."),
                &["type"],
            )
            .expect("metric"),
            events: IntCounterVec::new(
                Opts::new("lastseen_processor_events_total", "Person events emitted, by kind."),
                &["kind"],
            )
            .expect("metric"),
            transactions: IntCounterVec::new(
                Opts::new(
                    "lastseen_processor_transactions_total",
                    "Kafka transactions, by result (committed, aborted).",
                ),
                &["result"],
            )
            .expect("metric"),
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "lastseen_processor_commit_duration_seconds",
                    "Time to flush and commit one transaction.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )
            .expect("metric"),
            restore_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "lastseen_processor_restore_duration_seconds",
                    "Time to restore one partition's state from the changelog.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            )
            .expect("metric"),
            restored_records: IntCounter::new(
                "lastseen_processor_restored_records_total",
                "Changelog records read while restoring state.",
            )
            .expect("metric"),
            partitions_owned: IntGauge::new(
                "lastseen_processor_partitions_owned",
                "Contacts partitions currently assigned to this instance.",
            )
            .expect("metric"),
            persons: IntGaugeVec::new(
                Opts::new(
                    "lastseen_processor_persons",
                    "Persons known to this instance, by status (registered, silent, deregistered, unregistered: the meanings of person_status in ClickHouse, docs/CLICKHOUSE.md).",
                ),
                &["state"],
            )
            .expect("metric"),
            stream_time_lag: prometheus::GaugeVec::new(
                Opts::new(
                    "lastseen_processor_stream_time_lag_seconds",
                    "Wall clock minus stream time, per owned partition.",
                ),
                &["partition"],
            )
            .expect("metric"),
            excluded_outage: prometheus::GaugeVec::new(
                Opts::new(
                    "lastseen_processor_excluded_outage_seconds",
                    "Platform outage time excluded from silences so far, per owned partition.",
                ),
                &["partition"],
            )
            .expect("metric"),
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "lastseen_processor_dead_letters_total",
                    "Contacts parked on the dead-letter topic, by reason.",
                ),
                &["reason"],
            )
            .expect("metric"),
            changelog_writes: IntCounter::new(
                "lastseen_processor_changelog_records_total",
                "State records written to the changelog.",
            )
            .expect("metric"),
            partition_mismatch: IntGauge::new(
                "lastseen_processor_partition_mismatch",
                "1 while this instance refuses to process because the contacts and changelog partition counts differ or changed (docs/OPERATIONS.md).",
            )
            .expect("metric"),
            replays_skipped: IntCounter::new(
                "lastseen_processor_replays_skipped_total",
                "Re-published contacts (header lastseen-replay) committed without being applied.",
            )
            .expect("metric"),
            registry,
        };
        for c in [
            Box::new(m.records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events.clone()),
            Box::new(m.transactions.clone()),
            Box::new(m.commit_duration.clone()),
            Box::new(m.restore_duration.clone()),
            Box::new(m.restored_records.clone()),
            Box::new(m.partitions_owned.clone()),
            Box::new(m.persons.clone()),
            Box::new(m.stream_time_lag.clone()),
            Box::new(m.excluded_outage.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.changelog_writes.clone()),
            Box::new(m.partition_mismatch.clone()),
            Box::new(m.replays_skipped.clone()),
        ] {
            m.registry.register(c).expect("unique metric names");
        }
        // Export every label value from the start so dashboards and alerts see zeros.
        for t in ["registration", "ping", "tick"] {
            m.records.with_label_values(&[t]);
        }
        for k in common::EventKind::ALL {
            m.events.with_label_values(&[k.as_str()]);
        }
        for r in ["committed", "aborted"] {
            m.transactions.with_label_values(&[r]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The per-record counters of [`Metrics`], with their labels resolved once.
#[derive(Debug, Clone)]
pub struct HotCounters {
    /// Records by type: ping, registration, tick.
    pub records: [IntCounter; 3],
    /// By `EventKind::ALL` order.
    events: [IntCounter; 6],
}

impl HotCounters {
    pub fn new(m: &Metrics) -> HotCounters {
        let r = |t: &str| m.records.with_label_values(&[t]);
        let e = |k: EventKind| m.events.with_label_values(&[k.as_str()]);
        HotCounters {
            records: [r("ping"), r("registration"), r("tick")],
            events: EventKind::ALL.map(e),
        }
    }

    #[inline]
    pub fn event(&self, k: EventKind) -> &IntCounter {
        let i = EventKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
        &self.events[i]
    }
}
