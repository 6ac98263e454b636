-- 0002 person_status: the latest state of every person, for "how many are silent right now".
--
-- Maintained by a materialized view over person_events. ReplacingMergeTree(version) keeps, per
-- person_id, the row with the highest `version` = event time in ms * 8 + a rank of the kind (so
-- two events in the same millisecond resolve deterministically). Re-delivered events produce
-- identical rows, which collapse too.
--
--   status        from kind
--   registered    registered, address_changed, resumed
--   silent        silence_notice
--   deregistered  deregistered
--   unregistered  unregistered_contact (pings from someone not registered)
--
-- Query with FINAL (or argMax) for exact answers:
--   SELECT status, count() FROM lastseen.person_status FINAL GROUP BY status;

CREATE TABLE IF NOT EXISTS person_status
(
    person_id String,
    status String,
    kind String,
    since DateTime,
    since_ms Int64,
    last_contact_at DateTime,
    address Nullable(String),
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY person_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS person_status_mv TO person_status AS
SELECT
    person_id,
    transform(kind,
        ['registered', 'address_changed', 'resumed', 'silence_notice', 'deregistered', 'unregistered_contact'],
        ['registered', 'registered', 'registered', 'silent', 'deregistered', 'unregistered'],
        'unknown') AS status,
    kind,
    at AS since,
    at_ms AS since_ms,
    last_contact_at,
    address,
    event_id,
    toUInt64(at_ms) * 8 + transform(kind,
        ['registered', 'address_changed', 'resumed', 'silence_notice', 'deregistered', 'unregistered_contact'],
        [1, 2, 3, 4, 5, 6],
        0) AS version
FROM person_events;
