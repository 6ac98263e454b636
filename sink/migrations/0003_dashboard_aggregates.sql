-- 0003 dashboard aggregates, maintained by materialized views.
--
-- Both aggregates count DISTINCT facts (uniqExact over the deduplicating key), not inserted
-- rows, so a batch re-delivered by the sink after a crash does not inflate them: they are
-- exact without FINAL. Read them with the -Merge combinators:
--
--   SELECT minute, uniqExactMerge(pings) AS pings, uniqMerge(persons) AS persons
--   FROM lastseen.pings_per_minute GROUP BY minute ORDER BY minute;
--
--   SELECT hour, kind, uniqExactMerge(events) AS events
--   FROM lastseen.events_per_hour GROUP BY hour, kind ORDER BY hour, kind;
--
-- pings_per_minute is by RECEIVE minute (server clock), events_per_hour by event time.
-- Aggregates hold no coordinates; pings_per_minute follows the same retention as pings
-- (the sink drops its day partitions together with those of pings).

CREATE TABLE IF NOT EXISTS pings_per_minute
(
    minute DateTime,
    pings AggregateFunction(uniqExact, UInt64),
    persons AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMMDD(minute)
ORDER BY minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS pings_per_minute_mv TO pings_per_minute AS
SELECT
    toStartOfMinute(received_at) AS minute,
    uniqExactState(cityHash64(person_id, device_id, device_ts_ms)) AS pings,
    uniqState(person_id) AS persons
FROM pings
GROUP BY minute;

CREATE TABLE IF NOT EXISTS events_per_hour
(
    hour DateTime,
    kind String,
    events AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_per_hour_mv TO events_per_hour AS
SELECT
    toStartOfHour(at) AS hour,
    kind,
    uniqExactState(event_id) AS events
FROM person_events
GROUP BY hour, kind;
