//! The verifier: ClickHouse against the ground truth.
//!
//! - Pings: every acknowledged `(person, device, device_ts)` exactly once in `pings FINAL`; no
//!   other ping (a ping that was sent but never acknowledged may be there). The raw view (without
//!   FINAL) is reported too: duplicates there share the dedup key by construction and collapse.
//! - Events: per person, the kinds in `person_events FINAL` ordered by time must be what the
//!   model expects for the moment of the query (see [`super::model`]); the raw view must hold no
//!   event id twice beyond what FINAL collapses (reported).
//! - Persons that appear in ClickHouse but not in the truth are extra (e.g. an invalid request
//!   that was accepted).

use super::model::Horizon;
use super::truth::Truth;
use anyhow::{Context, Result};
use common::record::{EventKind, Millis, now_millis};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use testkit::Db as ClickHouse;

/// How to verify.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events whose deadline is older than this must be visible in ClickHouse.
    pub lag_ms: i64,
    /// Keep re-checking (pipeline still draining) up to this long before giving the verdict.
    pub wait: Duration,
    /// Differences printed at most.
    pub max_lines: usize,
    /// Progress on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lag_ms: 5000,
            wait: Duration::from_secs(120),
            max_lines: 40,
            progress: true,
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub pass: bool,
    pub persons: usize,
    pub acknowledged_pings: u64,
    pub stored_pings_final: u64,
    pub stored_pings_raw: u64,
    pub raw_duplicate_pings: u64,
    pub missing_pings: u64,
    pub extra_pings: u64,
    pub unacked_but_stored: u64,
    pub events_final: u64,
    pub events_raw: u64,
    pub events_expected_min: u64,
    pub persons_events_ok: usize,
    pub persons_events_wrong: usize,
    pub persons_ambiguous: usize,
    pub extra_persons: usize,
    pub events_by_kind: BTreeMap<String, u64>,
    pub invalid_accepted: u64,
    pub valid_refused: u64,
    pub differences: Vec<String>,
}

impl Report {
    pub fn verdict(&self) -> String {
        format!(
            "VERDICT {}: pings acknowledged {} / stored {} (FINAL; raw {}, {} raw duplicates collapsed by key), missing {}, extra {}, unacked-but-stored {}; \
             events {} (raw {}): persons ok {}, wrong {}, ambiguous {}, extra persons {}; invalid accepted {}, valid refused {}",
            if self.pass { "PASS" } else { "FAIL" },
            self.acknowledged_pings,
            self.stored_pings_final,
            self.stored_pings_raw,
            self.raw_duplicate_pings,
            self.missing_pings,
            self.extra_pings,
            self.unacked_but_stored,
            self.events_final,
            self.events_raw,
            self.persons_events_ok,
            self.persons_events_wrong,
            self.persons_ambiguous,
            self.extra_persons,
            self.invalid_accepted,
            self.valid_refused,
        )
    }
}

fn rank(k: EventKind) -> u8 {
    match k {
        EventKind::SilenceNotice => 0,
        EventKind::Deregistered => 1,
        EventKind::Resumed => 2,
        EventKind::Registered | EventKind::UnregisteredContact => 3,
        EventKind::AddressChanged => 4,
    }
}

fn parse_kind(s: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.as_str() == s)
}

type PingKey = (String, String, Millis);

async fn tsv(ch: &ClickHouse, sql: &str) -> Result<Vec<Vec<String>>> {
    ch.rows(sql).await
}

/// One comparison at the current moment.
async fn check(truth: &Truth, ch: &ClickHouse, opts: &Options) -> Result<Report> {
    let t0 = now_millis();
    let mut r = Report {
        persons: truth.persons.len(),
        acknowledged_pings: truth.acknowledged_pings(),
        invalid_accepted: truth.stats.invalid_accepted,
        valid_refused: truth
            .stats
            .by_status
            .iter()
            .filter(|(k, _)| k.starts_with("valid_rejected"))
            .map(|(_, v)| v)
            .sum(),
        ..Report::default()
    };
    // Pings, raw view grouped by the dedup key, and the FINAL view.
    let raw = tsv(ch, "SELECT person_id, device_id, device_ts_ms, count() FROM pings GROUP BY person_id, device_id, device_ts_ms").await?;
    let fin = tsv(
        ch,
        "SELECT person_id, device_id, device_ts_ms FROM pings FINAL",
    )
    .await?;
    r.stored_pings_final = fin.len() as u64;
    for row in &raw {
        let n: u64 = row
            .get(3)
            .and_then(|s| s.parse().ok())
            .context("pings raw row")?;
        r.stored_pings_raw += n;
        r.raw_duplicate_pings += n - 1;
    }
    let mut stored: BTreeMap<PingKey, u64> = BTreeMap::new();
    for row in &fin {
        let ts: Millis = row
            .get(2)
            .and_then(|s| s.parse().ok())
            .context("pings row")?;
        *stored
            .entry((row[0].clone(), row[1].clone(), ts))
            .or_insert(0) += 1;
    }
    let mut diffs = Vec::new();
    let mut acked: BTreeSet<PingKey> = BTreeSet::new();
    let mut unacked: BTreeSet<PingKey> = BTreeSet::new();
    for (person, p) in &truth.persons {
        for (dev, ts) in &p.pings {
            acked.extend(ts.iter().map(|t| (person.clone(), dev.clone(), *t)));
        }
        for (dev, ts) in &p.unacked {
            unacked.extend(ts.iter().map(|t| (person.clone(), dev.clone(), *t)));
        }
    }
    let mut ping_diff: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for k in &acked {
        match stored.get(k) {
            Some(1) => {}
            None => {
                r.missing_pings += 1;
                ping_diff.entry(&k.0).or_default().0 += 1;
            }
            Some(n) => {
                r.extra_pings += n - 1;
                ping_diff.entry(&k.0).or_default().2 += n - 1;
            }
        }
    }
    for (k, n) in &stored {
        if !acked.contains(k) {
            if unacked.contains(k) {
                r.unacked_but_stored += 1;
            } else {
                r.extra_pings += n;
                ping_diff.entry(&k.0).or_default().1 += n;
            }
        }
    }
    for (person, (missing, extra, twice)) in &ping_diff {
        diffs.push(format!(
            "{person}: pings missing {missing}, not acknowledged {extra}, twice in FINAL {twice}"
        ));
    }

    // Events.
    let ev = tsv(
        ch,
        "SELECT person_id, kind, at_ms, event_id FROM person_events FINAL",
    )
    .await?;
    let raw_ev = tsv(ch, "SELECT count(), uniqExact(event_id) FROM person_events").await?;
    let t1 = now_millis();
    r.events_final = ev.len() as u64;
    r.events_raw = raw_ev
        .first()
        .and_then(|x| x.first())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut got: BTreeMap<String, Vec<(Millis, u8, EventKind, String)>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for row in &ev {
        let kind =
            parse_kind(row.get(1).map(String::as_str).unwrap_or("")).context("event kind")?;
        let at: Millis = row
            .get(2)
            .and_then(|s| s.parse().ok())
            .context("event at")?;
        *r.events_by_kind
            .entry(kind.as_str().to_string())
            .or_insert(0) += 1;
        if !ids.insert(row[3].clone()) {
            diffs.push(format!("{}: event id {} twice in FINAL", row[0], row[3]));
        }
        got.entry(row[0].clone())
            .or_default()
            .push((at, rank(kind), kind, row[3].clone()));
    }
    let horizon = Horizon {
        must: t0 - opts.lag_ms,
        may: t1,
    };
    let expected = truth.expected_at(horizon);
    for (person, exp) in &expected {
        let mut g = got.remove(*person).unwrap_or_default();
        g.sort();
        let kinds: Vec<EventKind> = g.iter().map(|x| x.2).collect();
        r.events_expected_min += exp.must.len() as u64;
        if exp.ambiguous.is_some() {
            r.persons_ambiguous += 1;
            continue;
        }
        if exp.accepts(&kinds) {
            r.persons_events_ok += 1;
        } else {
            r.persons_events_wrong += 1;
            diffs.push(format!(
                "{person}: events {} but expected {}{} (plan: {})",
                fmt_kinds(&kinds),
                fmt_kinds(&exp.must),
                if exp.may.is_empty() {
                    String::new()
                } else {
                    format!(" + optionally {}", fmt_kinds(&exp.may))
                },
                truth.persons[*person].plan
            ));
        }
    }
    for (person, g) in &got {
        r.extra_persons += 1;
        let kinds: Vec<EventKind> = g.iter().map(|x| x.2).collect();
        diffs.push(format!(
            "{person}: not in the truth, yet has events {}",
            fmt_kinds(&kinds)
        ));
    }
    let extra_ping_persons: BTreeSet<&str> = stored
        .keys()
        .map(|k| k.0.as_str())
        .filter(|p| !truth.persons.contains_key(*p))
        .collect();
    r.extra_persons += extra_ping_persons
        .iter()
        .filter(|p| !got.contains_key(**p))
        .count();
    r.pass = r.missing_pings == 0
        && r.extra_pings == 0
        && r.persons_events_wrong == 0
        && r.extra_persons == 0
        && r.invalid_accepted == 0
        && r.valid_refused == 0
        && diffs.is_empty();
    r.differences = diffs;
    Ok(r)
}

fn fmt_kinds(k: &[EventKind]) -> String {
    format!(
        "[{}]",
        k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    )
}

/// Verifies, re-checking while the pipeline may still be draining (up to `opts.wait`).
pub async fn verify(truth: &Truth, ch: &ClickHouse, opts: &Options) -> Result<Report> {
    let deadline = Instant::now() + opts.wait;
    let want = truth.acknowledged_pings();
    loop {
        let n = ch
            .count("SELECT count() FROM pings FINAL")
            .await
            .unwrap_or(0);
        if n >= want || Instant::now() > deadline {
            break;
        }
        if opts.progress {
            eprintln!("verify: waiting for pings: {n} of {want} stored");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    loop {
        let r = check(truth, ch, opts).await?;
        if r.pass || Instant::now() > deadline {
            return Ok(r);
        }
        if opts.progress {
            eprintln!("verify: not yet: {}", r.verdict());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Prints the differences (capped) and the verdict line.
pub fn print(r: &Report, max_lines: usize) {
    for d in r.differences.iter().take(max_lines) {
        println!("  {d}");
    }
    if r.differences.len() > max_lines {
        println!(
            "  ... and {} more differences",
            r.differences.len() - max_lines
        );
    }
    let kinds: Vec<String> = r
        .events_by_kind
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("events by kind: {}", kinds.join(" "));
    println!("{}", r.verdict());
}
