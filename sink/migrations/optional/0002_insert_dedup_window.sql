-- requires: 22.2
-- On servers with insert_deduplication_token (22.2+), keep a window of recent insert tokens on
-- the non-replicated tables so that a retried batch (same topic/partition/offset range, same
-- token) is dropped by the server itself, not only collapsed later by ReplacingMergeTree.
ALTER TABLE pings MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE registrations MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE person_events MODIFY SETTING non_replicated_deduplication_window = 1000;
