//! The partition-count guard. Changelog partition `i` holds the state of the persons of
//! contacts partition `i`, and a person's contacts partition is `crc32(id) % count`. When the
//! contacts topic gains partitions, persons move to other partitions while their state stays
//! in the old one; that stale state would later deregister a person who is still pinging. So
//! the processor refuses to process when the two counts differ or when either differs from
//! the count this process first saw, and stays refusing until it is restarted after the
//! repartitioning procedure (docs/OPERATIONS.md, "Repartitioning the contacts topic safely").
//!
//! [`check`] is the decision, over counts only; [`Guard`] fetches the counts.

use common::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// Where the operator finds what to do.
pub const RUNBOOK: &str = "docs/OPERATIONS.md#repartitioning-the-contacts-topic-safely";

/// Why processing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The contacts and changelog topics have different partition counts.
    #[error(
        "the contacts topic has {contacts} partitions but the changelog has {changelog}: \
         changelog partition i must hold the state of contacts partition i; processing stopped, \
         see {RUNBOOK}"
    )]
    Differ { contacts: i32, changelog: i32 },
    /// A count changed while this process ran.
    #[error(
        "partition counts changed while running: first {first} for both topics, now contacts \
         {contacts} and changelog {changelog}; persons moved to other partitions and their \
         state did not; processing stopped, see {RUNBOOK}"
    )]
    Changed {
        first: i32,
        contacts: i32,
        changelog: i32,
    },
}

/// The decision: `Ok(count)` when both topics have the same count and it is the one first
/// seen (`first`, `None` before the first check).
pub fn check(first: Option<i32>, contacts: i32, changelog: i32) -> Result<i32, Mismatch> {
    match first {
        Some(first) if contacts != first || changelog != first => Err(Mismatch::Changed {
            first,
            contacts,
            changelog,
        }),
        _ if contacts != changelog => Err(Mismatch::Differ {
            contacts,
            changelog,
        }),
        _ => Ok(contacts),
    }
}

/// Fetches the two counts from the broker and remembers the first agreed count.
pub struct Guard {
    client: BaseConsumer,
    contacts: String,
    changelog: String,
    first: Option<i32>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("first", &self.first).finish()
    }
}

/// The counts could not be fetched (broker unreachable, topic missing): not a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition counts unavailable: {0}")]
pub struct Unavailable(pub String);

impl Guard {
    pub fn new(cfg: &Config) -> Result<Guard, rdkafka::error::KafkaError> {
        Ok(Guard {
            client: cfg.kafka_client_config("processor-guard").create()?,
            contacts: cfg.kafka.contacts_topic.clone(),
            changelog: cfg.kafka.changelog_topic.clone(),
            first: None,
        })
    }

    /// The count this process first saw agreed on, if any.
    pub fn first(&self) -> Option<i32> {
        self.first
    }

    /// Partition count of `topic` (blocking, up to `timeout`).
    fn count(&self, topic: &str, timeout: Duration) -> Result<i32, Unavailable> {
        let md = self
            .client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Unavailable(format!("metadata of {topic}: {e}")))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| Unavailable(format!("{topic} missing")))?;
        if let Some(e) = t.error() {
            return Err(Unavailable(format!(
                "{topic}: {:?}",
                rdkafka::types::RDKafkaErrorCode::from(e)
            )));
        }
        match t.partitions().len() {
            0 => Err(Unavailable(format!("{topic} has no partitions"))),
            n => Ok(n as i32),
        }
    }

    /// Fetches both counts and checks them: `Ok(Ok(count))` fine, `Ok(Err(_))` refuse,
    /// `Err(_)` no verdict (try again later).
    pub fn verify(&mut self, timeout: Duration) -> Result<Result<i32, Mismatch>, Unavailable> {
        let contacts = self.count(&self.contacts, timeout)?;
        let changelog = self.count(&self.changelog, timeout)?;
        let verdict = check(self.first, contacts, changelog);
        if let Ok(n) = verdict {
            self.first.get_or_insert(n);
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_counts_pass_and_become_the_first_count() {
        assert_eq!(check(None, 6, 6), Ok(6));
        assert_eq!(check(Some(6), 6, 6), Ok(6));
        assert_eq!(check(Some(1), 1, 1), Ok(1));
    }

    #[test]
    fn counts_that_differ_are_refused_at_start_up() {
        assert_eq!(
            check(None, 12, 6),
            Err(Mismatch::Differ {
                contacts: 12,
                changelog: 6
            })
        );
        assert_eq!(
            check(None, 6, 12),
            Err(Mismatch::Differ {
                contacts: 6,
                changelog: 12
            })
        );
    }

    #[test]
    fn any_change_from_the_first_count_is_refused_even_when_both_changed_together() {
        for (c, l) in [(12, 6), (6, 12), (12, 12), (3, 3)] {
            assert_eq!(
                check(Some(6), c, l),
                Err(Mismatch::Changed {
                    first: 6,
                    contacts: c,
                    changelog: l
                }),
                "{c} {l}"
            );
        }
    }

    #[test]
    fn the_message_names_both_counts_and_the_runbook() {
        let m = check(Some(6), 12, 6).unwrap_err().to_string();
        assert!(m.contains("first 6") && m.contains("contacts 12") && m.contains("changelog 6"));
        assert!(m.contains(RUNBOOK), "{m}");
        let m = check(None, 12, 6).unwrap_err().to_string();
        assert!(m.contains("12 partitions") && m.contains("has 6") && m.contains(RUNBOOK));
    }
}
