//! Prometheus metrics of the sink. Labels are tables, topics, results and reasons: never
//! person or device ids.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// All metrics of one sink instance, registered in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub rows_written: IntCounterVec,
    pub batches: IntCounterVec,
    pub insert_duration: HistogramVec,
    pub insert_errors: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub insert_rejected: IntCounterVec,
    pub rows_dead_lettered: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub clickhouse_up: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let rows_written = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_rows_written_total",
                "Rows confirmed by ClickHouse",
            ),
            &["table"],
        )
        .expect("metric");
        let batches = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_batches_total",
                "Insert attempts by table and result",
            ),
            &["table", "result"],
        )
        .expect("metric");
        let insert_duration = HistogramVec::new(
            HistogramOpts::new(
                "lastseen_sink_insert_duration_seconds",
                "Duration of one successful INSERT",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["table"],
        )
        .expect("metric");
        let insert_errors = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_insert_errors_total",
                "Failed INSERT attempts",
            ),
            &["table"],
        )
        .expect("metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_dead_letters_total",
                "Records parked on the dead-letter topic",
            ),
            &["reason"],
        )
        .expect("metric");
        let insert_rejected = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_insert_rejected_total",
                "INSERT attempts ClickHouse rejected for good, by class: systemic (the request \
                 cannot work for any row: retried, an operator must act) or data (rows refused: \
                 the batch is split)",
            ),
            &["table", "class"],
        )
        .expect("metric");
        let rows_dead_lettered = IntCounterVec::new(
            Opts::new(
                "lastseen_sink_rows_dead_lettered_total",
                "Rows ClickHouse refused for their data, parked on the dead-letter topic, by \
                 ClickHouse error name",
            ),
            &["table", "reason"],
        )
        .expect("metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "lastseen_sink_consumer_lag_records",
                "Records not yet committed, summed over the assigned partitions",
            ),
            &["topic"],
        )
        .expect("metric");
        let clickhouse_up = Gauge::new(
            "lastseen_sink_clickhouse_up",
            "1 while ClickHouse accepts our requests",
        )
        .expect("metric");
        for c in [
            &rows_written,
            &batches,
            &insert_errors,
            &dead_letters,
            &insert_rejected,
            &rows_dead_lettered,
        ] {
            registry.register(Box::new(c.clone())).expect("register");
        }
        registry
            .register(Box::new(insert_duration.clone()))
            .expect("register");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("register");
        registry
            .register(Box::new(clickhouse_up.clone()))
            .expect("register");
        Metrics {
            registry,
            rows_written,
            batches,
            insert_duration,
            insert_errors,
            dead_letters,
            insert_rejected,
            rows_dead_lettered,
            consumer_lag,
            clickhouse_up,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
