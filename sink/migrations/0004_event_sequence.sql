-- 0004 event sequence: person_status keeps each person's latest event by its sequence number.
--
-- Every event carries `seq`, the person's transition counter at that event (the number its
-- event_id is built from): 0 for the first event, +1 for each next one. Along a person's
-- events `at` never decreases and `seq` counts up, so (at_ms, seq) orders them, also when
-- several share a millisecond (a contact exactly at the notice threshold gives silence_notice
-- then resumed; a registration after a notice gives resumed then address_changed; a ping
-- just past the deadline gives deregistered then unregistered_contact). Migration 0002 broke
-- such ties with a rank of the kind, which kept the wrong row for the first two; the ranks go.
--
-- person_status.version = at_ms * 2^22 + tie-breaker, with tie-breaker = 2^21 + seq mod 2^21
-- for events that carry seq, and for older events (seq = -1: written before this migration)
-- the only order in which the processor can emit them within one millisecond: deadline
-- events first (silence_notice 1, deregistered 2), then the contact's: resumed 3,
-- unregistered_contact 4 (a ping), registered 5 (a registration right after it),
-- address_changed 6 (after a resume or a registration). Only several address changes of one
-- person in one millisecond stay ambiguous among old events (docs/CLICKHOUSE.md). Every
-- version here is far above those of 0002 (at_ms * 8 + rank), so the backfill below
-- re-derives every person's row and it replaces the old one. at_ms * 2^22 fits UInt64 until
-- the year 2109; wrapping seq mod 2^21 only matters past two million events of one person in
-- one millisecond.
--
-- last_contact_at in person_status is now the last contact as of the person's latest event:
-- the contact itself for contact events (registered, address_changed, resumed,
-- unregistered_contact), the event's last_contact_at for deadline events (silence_notice,
-- deregistered). Plain pings that change no status are not events: for the latest contact at
-- any moment, read pings and registrations (docs/CLICKHOUSE.md).
--
-- Idempotent, also on 18.16 (which has no ADD COLUMN IF NOT EXISTS): the migration runner
-- skips an `ALTER TABLE t ADD COLUMN c` whose column exists (sink/src/migrate.rs), the new view
-- is created before the old one is dropped (no insert is missed in between), and the backfill
-- inserts rows identical to what the view writes, which collapse in the ReplacingMergeTree.

ALTER TABLE person_events ADD COLUMN seq Int64 DEFAULT -1;

ALTER TABLE person_status ADD COLUMN seq Int64 DEFAULT -1;

ALTER TABLE person_status ADD COLUMN last_contact_at_ms Int64 DEFAULT 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS person_status_seq_mv TO person_status AS
SELECT
    person_id,
    transform(kind,
        ['registered', 'address_changed', 'resumed', 'silence_notice', 'deregistered', 'unregistered_contact'],
        ['registered', 'registered', 'registered', 'silent', 'deregistered', 'unregistered'],
        'unknown') AS status,
    kind,
    at AS since,
    at_ms AS since_ms,
    if(kind IN ('silence_notice', 'deregistered'), last_contact_at, at) AS last_contact_at,
    if(kind IN ('silence_notice', 'deregistered'), last_contact_at_ms, at_ms) AS last_contact_at_ms,
    address,
    event_id,
    seq,
    toUInt64(at_ms) * 4194304 + if(seq >= 0, 2097152 + toUInt64(seq) % 2097152,
        transform(kind,
            ['silence_notice', 'deregistered', 'resumed', 'unregistered_contact', 'registered', 'address_changed'],
            [1, 2, 3, 4, 5, 6],
            0)) AS version
FROM person_events;

DROP TABLE IF EXISTS person_status_mv;

INSERT INTO person_status (person_id, status, kind, since, since_ms, last_contact_at, last_contact_at_ms, address, event_id, seq, version)
SELECT
    person_id,
    transform(kind,
        ['registered', 'address_changed', 'resumed', 'silence_notice', 'deregistered', 'unregistered_contact'],
        ['registered', 'registered', 'registered', 'silent', 'deregistered', 'unregistered'],
        'unknown') AS status,
    kind,
    at AS since,
    at_ms AS since_ms,
    if(kind IN ('silence_notice', 'deregistered'), last_contact_at, at) AS last_contact_at,
    if(kind IN ('silence_notice', 'deregistered'), last_contact_at_ms, at_ms) AS last_contact_at_ms,
    address,
    event_id,
    seq,
    toUInt64(at_ms) * 4194304 + if(seq >= 0, 2097152 + toUInt64(seq) % 2097152,
        transform(kind,
            ['silence_notice', 'deregistered', 'resumed', 'unregistered_contact', 'registered', 'address_changed'],
            [1, 2, 3, 4, 5, 6],
            0)) AS version
FROM person_events;
