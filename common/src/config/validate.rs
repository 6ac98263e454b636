//! The start-up report: [`ConfigError`] lists every problem found while loading, and
//! [`Config::validate`] adds the rules no single field's type can express (orderings between
//! durations, numbers in a range, "at least one of"). What a type already rules out (an
//! unknown compression, an address that does not parse) is not checked again here: it never
//! reaches a [`Config`].

use super::schema::{Config, PolicyConfig, fmt_duration};

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem{}):\n  - {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem, each naming its key (and, for a value, where it came from).
    pub problems: Vec<String>,
}

impl Config {
    /// Rules that span fields or restrict a number. Returns every broken rule.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.policy.validate();
        let c = &self.clock;
        if c.tick_interval.is_zero() {
            p.push("clock.tick_interval: must be greater than zero".into());
        }
        if c.outage_after <= c.tick_interval {
            p.push(format!(
                "clock.outage_after ({}) must be longer than clock.tick_interval ({})",
                fmt_duration(c.outage_after),
                fmt_duration(c.tick_interval)
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            p.push("kafka.brokers: must not be empty".into());
        }
        if self.kafka.partitions < 1 {
            p.push("kafka.partitions: must be at least 1".into());
        }
        if self.kafka.replication_factor < 1 {
            p.push("kafka.replication_factor: must be at least 1".into());
        }
        if self.ingest.max_batch == 0 {
            p.push("ingest.max_batch: must be at least 1".into());
        }
        if !(self.ingest.rate_limit_per_device.is_finite()
            && self.ingest.rate_limit_per_device >= 0.0)
        {
            p.push("ingest.rate_limit_per_device: must be a finite number >= 0".into());
        }
        if self.auth.hs256_secret.is_empty() && self.auth.public_key_file.is_empty() {
            p.push(
                "auth: set auth.hs256_secret or auth.public_key_file, or no token can be verified"
                    .into(),
            );
        }
        if self.processor.commit_interval.is_zero() {
            p.push("processor.commit_interval: must be greater than zero".into());
        }
        if self.processor.partition_check_interval.is_zero() {
            p.push("processor.partition_check_interval: must be greater than zero".into());
        }
        if self.sink.catch_up_factor == 0 {
            p.push("sink.catch_up_factor: must be at least 1".into());
        }
        if self.sink.max_rows == 0 {
            p.push("sink.max_rows: must be at least 1".into());
        }
        if !(-1..=8).contains(&self.sink.coordinate_decimals) {
            p.push("sink.coordinate_decimals: must be -1 (keep) or 0..=8".into());
        }
        if self.sink.min_backoff > self.sink.max_backoff {
            p.push("sink.min_backoff must not exceed sink.max_backoff".into());
        }
        p
    }
}

impl PolicyConfig {
    /// Returns every broken policy rule (empty when valid).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.notice_after.is_zero() {
            p.push("policy.notice_after: must be greater than zero".into());
        }
        if self.deregister_after.is_zero() {
            p.push("policy.deregister_after: must be greater than zero".into());
        }
        if self.notice_after >= self.deregister_after {
            p.push(format!(
                "policy.notice_after ({}) must be shorter than policy.deregister_after ({})",
                fmt_duration(self.notice_after),
                fmt_duration(self.deregister_after)
            ));
        }
        p
    }
}
