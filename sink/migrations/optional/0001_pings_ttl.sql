-- requires: 19.6
-- Second safety for ping retention on servers that have TTL (19.6+). The sink's partition
-- drops remain the primary mechanism (they work on every version). Applied at every start-up
-- with {retention_days} = sink.pings_retention in whole days (rounded up); idempotent.
ALTER TABLE pings MODIFY TTL device_ts + INTERVAL {retention_days} DAY;
