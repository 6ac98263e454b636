//! The ground-truth file the simulator writes and the verifier reads.

use super::model::{self, Contact, Expected, Faults, Horizon, Policy};
use common::record::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the run was configured (for the record and for the verifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub ingest_url: String,
    pub persons: usize,
    pub duration_ms: i64,
    pub seed: u64,
    pub policy: Policy,
    pub margin_ms: i64,
    pub ping_interval_ms: i64,
    pub max_batch: usize,
    pub invalid_share: f64,
    pub duplicate_share: f64,
    pub max_requests: u64,
    pub id_prefix: String,
}

/// Everything one person did that the server acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonTruth {
    /// Acknowledged contacts (ping batches and registrations) in acknowledgement order.
    pub contacts: Vec<Contact>,
    /// Acknowledged pings: device id → device times (ms), each once.
    pub pings: BTreeMap<String, Vec<Millis>>,
    /// Pings sent but never acknowledged (the run ended while retrying): they may or may not
    /// be stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unacked: BTreeMap<String, Vec<Millis>>,
    /// The expected events as of the end of the run (the verifier recomputes them for the moment
    /// it looks).
    pub expected: Expected,
    /// What the simulator planned for this person (for reading failures).
    pub plan: String,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub acknowledged_requests: u64,
    pub acknowledged_pings: u64,
    pub duplicate_requests: u64,
    pub retried_attempts: u64,
    pub invalid_sent: u64,
    pub invalid_rejected: u64,
    /// Invalid requests that got 2xx: a defect.
    pub invalid_accepted: u64,
    /// Invalid requests that got neither 4xx nor 2xx (platform down at that moment).
    pub invalid_unanswered: u64,
    pub by_status: BTreeMap<String, u64>,
}

/// The file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub config: RunConfig,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub faults: Faults,
    pub stats: Stats,
    pub persons: BTreeMap<String, PersonTruth>,
}

impl Truth {
    /// Expected events of every person for a verifier looking at `horizon`.
    pub fn expected_at(&self, horizon: Horizon) -> BTreeMap<&str, Expected> {
        self.persons
            .iter()
            .map(|(id, p)| {
                (
                    id.as_str(),
                    model::expect(
                        &p.contacts,
                        &self.faults,
                        &self.config.policy,
                        Some(horizon),
                    ),
                )
            })
            .collect()
    }

    pub fn acknowledged_pings(&self) -> u64 {
        self.persons
            .values()
            .map(|p| p.pings.values().map(|v| v.len() as u64).sum::<u64>())
            .sum()
    }

    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let f = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer(f, self)?;
        Ok(())
    }

    pub fn read(path: &std::path::Path) -> anyhow::Result<Truth> {
        let f = std::io::BufReader::new(std::fs::File::open(path)?);
        Ok(serde_json::from_reader(f)?)
    }
}
