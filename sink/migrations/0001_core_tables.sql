-- 0001 core tables: raw pings, registrations and person events.
--
-- Written by the sink (`sink run`), read by analysts. Portable SQL: runs on ClickHouse 18.16
-- (the Debian package) and on current ClickHouse (checked with chDB by tests/chdb/run).
--
-- Exactly once, as seen through FINAL. The sink delivers at least once (a crash between the
-- ClickHouse insert and the Kafka offset commit re-delivers a batch); every table is a
-- ReplacingMergeTree whose ORDER BY is the identity of the fact, so re-delivered rows collapse.
-- Until a background merge has run, duplicates can be visible: query with FINAL (or GROUP BY
-- the key) when exact counts matter, e.g. `SELECT count() FROM lastseen.pings FINAL`.
--
-- Times. Every time exists twice: `<name>` is a DateTime (seconds, UTC) for natural analyst
-- queries (`toStartOfHour(received_at)`, `received_at >= now() - 3600`), and `<name>_ms` is the
-- exact Int64 epoch milliseconds from the wire (no DateTime64 on 18.16).
--
-- Retention. `pings` is partitioned by the DAY of `device_ts`: the sink drops whole day
-- partitions older than `sink.pings_retention` (ALTER TABLE ... DROP PARTITION works on every
-- version). The device day (not the receive day) is used so that a retried identical ping,
-- received again after midnight, still lands in the same partition and collapses; ingest only
-- accepts device times within [received - ingest.max_age, received + ingest.max_future_skew].
--
-- Coordinates. When `sink.coordinate_decimals` >= 0, lat/lon are rounded by the sink before
-- they are written (this table is the analytics copy; the raw value stays in Kafka only).
--
-- Every statement is idempotent (IF NOT EXISTS): migrations may run twice, and two sinks may
-- start at once.

-- One row per location ping. Key = the ping's identity: person, device, the device's clock.
CREATE TABLE IF NOT EXISTS pings
(
    person_id String,
    device_id String,
    device_ts DateTime,
    device_ts_ms Int64,
    received_at DateTime,
    received_at_ms Int64,
    lat Float64,
    lon Float64,
    accuracy_m Nullable(Float32),
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(device_ts)
ORDER BY (person_id, device_id, device_ts_ms);

-- One row per registration or declared address change, as received by ingest.
CREATE TABLE IF NOT EXISTS registrations
(
    person_id String,
    device_id String,
    address String,
    lat Nullable(Float64),
    lon Nullable(Float64),
    received_at DateTime,
    received_at_ms Int64,
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (person_id, received_at_ms, device_id);

-- One row per person event emitted by the processor (read with read_committed, so aborted
-- transactions never land). `event_id` is deterministic, so replays collapse on it; `at` is a
-- function of the event, so duplicates always share a partition.
CREATE TABLE IF NOT EXISTS person_events
(
    event_id String,
    person_id String,
    kind String,
    at DateTime,
    at_ms Int64,
    last_contact_at DateTime,
    last_contact_at_ms Int64,
    notice_after_ms Int64,
    deregister_after_ms Int64,
    excluded_outage_ms Int64,
    address Nullable(String),
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (person_id, event_id);
