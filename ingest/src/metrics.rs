//! Prometheus metrics of ingest. No person or device ids are ever used as labels.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric ingest exports, registered in one [`Registry`].
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `lastseen_ingest_requests_total{route,status}`
    pub requests: IntCounterVec,
    /// `lastseen_ingest_records_total{type}`: records acknowledged by Kafka.
    pub records: IntCounterVec,
    /// `lastseen_ingest_rejected_total{reason}`
    pub rejected: IntCounterVec,
    /// `lastseen_ingest_request_duration_seconds{route}`
    pub duration: HistogramVec,
    /// `lastseen_ingest_ticks_total`: ticks enqueued (one per partition per round).
    pub ticks: IntCounter,
    /// `lastseen_ingest_ticks_skipped_total`: rounds skipped because the previous ticks were
    /// not acknowledged yet.
    pub ticks_skipped: IntCounter,
    /// `lastseen_ingest_produce_errors_total{reason}`
    pub produce_errors: IntCounterVec,
    /// `lastseen_ingest_kafka_up`: 1 while the broker answers and the topic exists.
    pub kafka_up: IntGauge,
    /// `lastseen_ingest_partition_mismatch`: 1 once the contacts topic's partition count
    /// differs from the one at start-up (requests refused until restart).
    pub partition_mismatch: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "lastseen_ingest_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("metric");
        let records = IntCounterVec::new(
            Opts::new(
                "lastseen_ingest_records_total",
                "Records acknowledged by Kafka, by type",
            ),
            &["type"],
        )
        .expect("metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "lastseen_ingest_rejected_total",
                "Rejected requests by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lastseen_ingest_request_duration_seconds",
                "Request latency, from headers to response",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("metric");
        let ticks =
            IntCounter::new("lastseen_ingest_ticks_total", "Ticks written").expect("metric");
        let ticks_skipped = IntCounter::new(
            "lastseen_ingest_ticks_skipped_total",
            "Tick rounds skipped while previous ticks were unacknowledged",
        )
        .expect("metric");
        let produce_errors = IntCounterVec::new(
            Opts::new(
                "lastseen_ingest_produce_errors_total",
                "Produce failures by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let kafka_up = IntGauge::new("lastseen_ingest_kafka_up", "1 while Kafka is reachable")
            .expect("metric");
        let partition_mismatch = IntGauge::new(
            "lastseen_ingest_partition_mismatch",
            "1 once the contacts topic's partition count differs from the one at start-up; requests get 503",
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(records.clone()),
            Box::new(rejected.clone()),
            Box::new(duration.clone()),
            Box::new(ticks.clone()),
            Box::new(ticks_skipped.clone()),
            Box::new(produce_errors.clone()),
            Box::new(kafka_up.clone()),
            Box::new(partition_mismatch.clone()),
        ] {
            registry.register(c).expect("register metric");
        }
        Metrics {
            registry,
            requests,
            records,
            rejected,
            duration,
            ticks,
            ticks_skipped,
            produce_errors,
            kafka_up,
            partition_mismatch,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
