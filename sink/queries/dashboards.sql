-- Dashboard queries over the lastseen tables. Each runs on ClickHouse 18.16 and on current
-- ClickHouse (tests/chdb/run executes them after the migrations). Run in database `lastseen`.

-- Pings per minute, last 3 hours (exact: distinct pings, immune to re-delivery).
SELECT minute, uniqExactMerge(pings) AS pings, uniqMerge(persons) AS persons
FROM pings_per_minute
WHERE minute >= now() - 3 * 3600
GROUP BY minute
ORDER BY minute;

-- Events per hour by kind, last 7 days.
SELECT hour, kind, uniqExactMerge(events) AS events
FROM events_per_hour
WHERE hour >= now() - 7 * 86400
GROUP BY hour, kind
ORDER BY hour, kind;

-- How many people are in each state right now ("how many are silent").
SELECT status, count() AS persons
FROM person_status FINAL
GROUP BY status
ORDER BY status;

-- Silent for longest: people whose latest state is silent, oldest first.
SELECT person_id, since, last_contact_at, address
FROM person_status FINAL
WHERE status = 'silent'
ORDER BY last_contact_at
LIMIT 100;

-- Address changes per day (as decided by the processor), and the raw declarations behind them.
SELECT toDate(at) AS day, count() AS address_changes
FROM person_events FINAL
WHERE kind = 'address_changed'
GROUP BY day
ORDER BY day;

SELECT toDate(received_at) AS day, count() AS declarations, uniqExact(person_id) AS persons
FROM registrations FINAL
GROUP BY day
ORDER BY day;

-- Exact ping count of the last 24 hours by receive time (FINAL collapses re-delivered rows).
SELECT count() AS pings
FROM pings FINAL
WHERE received_at >= now() - 86400;

-- Deregistrations in the last 30 days with the evidence a person needs to contest them.
SELECT event_id, person_id, at, last_contact_at, deregister_after_ms, excluded_outage_ms, address
FROM person_events FINAL
WHERE kind = 'deregistered' AND at >= now() - 30 * 86400
ORDER BY at DESC
LIMIT 1000;
