//! Names no other test (or run) uses, and the one topic scheme all harnesses share.
//!
//! A harness topic is `e2e.<test>_<pid>_<nanos>.<kind>`: the pid of the creating process lets
//! the pruner tell a crashed test's topics from a running one's.

/// The prefix of every harness topic (the historic one of the end-to-end harness, which
/// `tests/run`'s pruner has always known).
pub const TOPIC_PREFIX: &str = "e2e.";

/// `<prefix>_<pid>_<nanos>`: unique to this process and moment, safe for topics, ClickHouse
/// databases, consumer groups and transactional ids.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// The harness topic `kind` of the test namespace `name` (a [`unique`] name).
pub fn topic(name: &str, kind: &str) -> String {
    format!("{TOPIC_PREFIX}{name}.{kind}")
}

/// A fresh harness topic for a test that needs just one.
pub fn unique_topic(test: &str) -> String {
    topic(&unique(test), "contacts")
}

/// The pid of the test process that created `topic`, if it is a harness topic
/// (`e2e.<test>_<pid>_<nanos>.<kind>`).
pub fn test_topic_pid(topic: &str) -> Option<u32> {
    let (name, _kind) = topic.strip_prefix(TOPIC_PREFIX)?.rsplit_once('.')?;
    let mut parts = name.rsplit('_');
    let nanos = parts.next()?;
    let pid = parts.next()?;
    parts.next()?; // the test's name (may itself contain `_`)
    nanos.parse::<u64>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_topic_pid_reads_the_harness_names_only() {
        let name = unique("proc_crash");
        let pid = std::process::id();
        for kind in ["contacts", "events", "state", "dead-letter"] {
            assert_eq!(test_topic_pid(&topic(&name, kind)), Some(pid));
        }
        // Every harness names its topics this one way.
        assert_eq!(test_topic_pid(&unique_topic("pings")), Some(pid));
        assert_eq!(
            test_topic_pid("e2e.chaos_18984_157487756.events"),
            Some(18984)
        );
        for other in [
            "lastseen.contacts",
            "lastseen-promcheck.events",
            "test.ingest.schemathesis",
            "sink_chrestart_26774_968043997.contacts",
            "e2e.chaos.events",
            "e2e.chaos_x_1.events",
            "e2e.18984_157487756.events",
            "e2e.chaos_18984_157487756",
            "bench.contacts.123.456",
        ] {
            assert_eq!(test_topic_pid(other), None, "{other}");
        }
    }
}
