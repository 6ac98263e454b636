//! The verifier: ClickHouse against the ground truth.
//!
//! - Pings: every acknowledged `(person, device, device_ts)` exactly once in `pings FINAL`; no
//!   other ping (a ping that was sent but never acknowledged may be there). The raw view (without
//!   FINAL) is reported too: duplicates there share the dedup key by construction and collapse.
//! - Events: per person, the events in `person_events FINAL` ordered by time must be one of the
//!   histories the model allows for the moment of the query ([`super::model::alternatives`]):
//!   the kinds in order, and every field of every event within what the fleet knows
//!   ([`check_person`]). The raw view must hold no event id twice beyond what FINAL collapses
//!   (reported).
//! - Persons that appear in ClickHouse but not in the truth are extra (e.g. an invalid request
//!   that was accepted).
//!
//! # Tolerance: what the fleet knows
//! The fleet never sees the server's clock. It knows, for every acknowledged contact, the
//! window `[lo, hi]` from sending its first attempt that may have landed to reading the
//! acknowledgement: the server stamped it inside (its *effective* time too, which never
//! exceeds the moment its record was produced), and of outages, the spans in which the
//! platform surely received nothing and those in which it may have failed or stalled
//! ([`super::model::Faults`]). From that, per event (tolerance = the width of each bound):
//!
//! | field | contact event (`registered`, `address_changed`, `resumed`, `unregistered_contact`) | deadline event (`silence_notice`, `deregistered`) |
//! |---|---|---|
//! | `at` | the contact's window | `last_contact_at + threshold (+1 ms) + excluded_outage_ms`, exactly; and within the windows plus the exclusion bounds |
//! | `last_contact_at` | the previous contact's window (`= at` for the first) | the window of the contact that began the silence |
//! | `excluded_outage_ms` | [`super::model::Faults::excluded_between`] | [`super::model::Faults::excluded_until_deadline`] |
//! | thresholds | exactly the policy | exactly the policy |
//! | address | the registration's (`resumed`: the address before the contact) | the current one |
//!
//! The tick interval enters through the outages: each excluded gap keeps its last tick, so a
//! certain span counts its length minus one tick at least. A deadline's `at` is computed by the
//! processor (not the moment of the tick that fired it), so it needs no tick of slack; only
//! *whether* it is visible yet depends on the horizon (`lag_ms`).
//!
//! Exact relations between a person's events come on top (both sides are the processor's own
//! figures): events of one silence share `last_contact_at`, `resumed` and `address_changed`
//! of one contact share every figure, and the contact that ended a silence carries the silence
//! the processor measured (`at - last_contact_at - excluded_outage_ms`), which must agree with
//! the outcome it chose (no notice below `notice_after`, `resumed` up to `deregister_after`,
//! deregistration above it).
//!
//! # Ambiguity
//! A silence that ended too close to a threshold for the fleet to tell the outcome (a fault
//! inside it) is *undecided*: each possible outcome is a history, and the person passes if its
//! events match one of them in every field (counted as `undecided`, still checked). A person is
//! *ambiguous* (events not compared; its pings still are) only when pings were sent but never
//! acknowledged (the run ended while retrying: they may have been stored, a contact the fleet
//! cannot place), or when undecided silences leave more than
//! [`super::model::MAX_ALTERNATIVES`] histories.

use super::model::{self, EventSpec, Horizon, Relation};
use super::truth::Truth;
use anyhow::{Context, Result};
use common::record::{EventKind, Millis, PersonEvent, now_millis};
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
    /// Persons whose events were not compared (see the module docs).
    pub persons_ambiguous: usize,
    /// Persons with a silence whose outcome the fleet could not tell: every possible history
    /// was checked (counted in `persons_events_ok` when one matched).
    pub persons_undecided: usize,
    pub extra_persons: usize,
    pub events_by_kind: BTreeMap<String, u64>,
    pub invalid_accepted: u64,
    pub valid_refused: u64,
    pub differences: Vec<String>,
}

impl Report {
    /// Share of the persons whose events were not compared.
    pub fn ambiguous_share(&self) -> f64 {
        if self.persons == 0 {
            0.0
        } else {
            self.persons_ambiguous as f64 / self.persons as f64
        }
    }

    pub fn verdict(&self) -> String {
        format!(
            "VERDICT {}: pings acknowledged {} / stored {} (FINAL; raw {}, {} raw duplicates collapsed by key), missing {}, extra {}, unacked-but-stored {}; \
             events {} (raw {}): persons ok {}, wrong {}, ambiguous {} ({:.1} %, not compared), undecided outcomes checked both ways {}, extra persons {}; invalid accepted {}, valid refused {}",
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
            self.ambiguous_share() * 100.0,
            self.persons_undecided,
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
        // A ping's unregistered_contact, then a registration in the same millisecond (the
        // legacy order of sink/migrations/0004_event_sequence.sql).
        EventKind::UnregisteredContact => 3,
        EventKind::Registered => 4,
        EventKind::AddressChanged => 5,
    }
}

fn parse_kind(s: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// The one place that builds a [`PersonEvent`] from its parts (a row of `person_events`).
#[allow(clippy::too_many_arguments)]
fn person_event(
    event_id: String,
    person_id: String,
    kind: EventKind,
    at: Millis,
    last_contact_at: Millis,
    notice_after_ms: i64,
    deregister_after_ms: i64,
    excluded_outage_ms: i64,
    address: Option<String>,
    seq: Option<u32>,
) -> PersonEvent {
    PersonEvent {
        event_id,
        person_id,
        kind,
        at,
        last_contact_at,
        notice_after_ms,
        deregister_after_ms,
        excluded_outage_ms,
        address,
        seq,
    }
}

/// A row of the events query in [`check`].
fn event_from_row(row: &[String]) -> Result<PersonEvent> {
    let field = |i: usize| row.get(i).map(String::as_str).context("short event row");
    let num = |i: usize| -> Result<i64> {
        field(i)?
            .parse()
            .with_context(|| format!("event row field {i}"))
    };
    Ok(person_event(
        field(0)?.to_string(),
        field(1)?.to_string(),
        parse_kind(field(2)?).context("event kind")?,
        num(3)?,
        num(4)?,
        num(5)?,
        num(6)?,
        num(7)?,
        (field(8)? == "0").then(|| field(9).unwrap_or_default().to_string()),
        u32::try_from(num(10)?).ok(),
    ))
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
        "SELECT event_id, person_id, kind, at_ms, last_contact_at_ms, notice_after_ms, \
         deregister_after_ms, excluded_outage_ms, isNull(address), ifNull(address, ''), seq \
         FROM person_events FINAL",
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
    let mut got: BTreeMap<String, Vec<PersonEvent>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for row in &ev {
        let e = event_from_row(row)?;
        *r.events_by_kind
            .entry(e.kind.as_str().to_string())
            .or_insert(0) += 1;
        if !ids.insert(e.event_id.clone()) {
            diffs.push(format!(
                "person {}: event id {} twice in FINAL",
                person_index(&e.person_id),
                e.event_id
            ));
        }
        got.entry(e.person_id.clone()).or_default().push(e);
    }
    let horizon = Horizon {
        must: t0 - opts.lag_ms,
        may: t1,
    };
    let expected = truth.expected_at(horizon);
    for (person, exp) in &expected {
        r.events_expected_min += exp.must.len() as u64;
        let g = got.remove(*person).unwrap_or_default();
        match check_person(truth, person, Some(horizon), &g) {
            PersonVerdict::Ok { undecided } => {
                r.persons_events_ok += 1;
                if undecided > 0 {
                    r.persons_undecided += 1;
                }
            }
            PersonVerdict::Ambiguous(_) => r.persons_ambiguous += 1,
            PersonVerdict::Wrong(d) => {
                r.persons_events_wrong += 1;
                diffs.extend(d);
            }
        }
    }
    for (person, g) in &got {
        r.extra_persons += 1;
        let kinds: Vec<EventKind> = g.iter().map(|e| e.kind).collect();
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

/// A person's number in the fleet (the suffix of its synthetic id), for difference lines.
pub fn person_index(id: &str) -> String {
    match id.rsplit_once('-') {
        Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("#{n}"),
        _ => id.to_string(),
    }
}

/// How one person's events compare with the truth.
#[derive(Debug, Clone, PartialEq)]
pub enum PersonVerdict {
    /// The events are one of the allowed histories, field by field. `undecided`: silences whose
    /// outcome the fleet could not tell (each possible outcome was allowed, and checked).
    Ok { undecided: usize },
    /// Not compared (see the module docs), with the reason.
    Ambiguous(String),
    /// The differences, one line each: person, event, field, expected, got.
    Wrong(Vec<String>),
}

/// Orders a person's events as the processor emitted them: by `at`, then by `seq` (the
/// order `person_status` uses); events without one (hand-built in tests, or written before
/// `seq` existed) by the order the processor emits kinds in within one millisecond:
/// deadlines before the contact that follows them and `resumed` before `address_changed`.
pub fn sort_events(events: &mut [PersonEvent]) {
    events.sort_by(|a, b| {
        (a.at, a.seq, rank(a.kind), a.kind, &a.event_id).cmp(&(
            b.at,
            b.seq,
            rank(b.kind),
            b.kind,
            &b.event_id,
        ))
    });
}

/// Compares one person's events (in any order) with every history the truth allows at
/// `horizon` (see the module docs).
pub fn check_person(
    truth: &Truth,
    person: &str,
    horizon: Option<Horizon>,
    events: &[PersonEvent],
) -> PersonVerdict {
    let who = person_index(person);
    let Some(p) = truth.persons.get(person) else {
        return PersonVerdict::Wrong(vec![format!("person {who}: not in the truth")]);
    };
    if !p.unacked.is_empty() {
        // Sent while the run ended and never acknowledged: maybe stored, maybe not, at a time
        // the fleet cannot place; any event after its last acknowledged contact could differ.
        return PersonVerdict::Ambiguous("pings sent but never acknowledged".into());
    }
    let policy = &truth.config.policy;
    let alts = model::alternatives(&p.contacts, &truth.faults, policy, horizon);
    if let Some(why) = alts.ambiguous {
        return PersonVerdict::Ambiguous(why);
    }
    let mut got = events.to_vec();
    sort_events(&mut got);
    let kinds: Vec<EventKind> = got.iter().map(|e| e.kind).collect();
    let mut addresses: Vec<&str> = Vec::new();
    for a in p.contacts.iter().filter_map(|c| c.address.as_deref()) {
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    let ctx = Ctx {
        t0: truth.started_at,
        policy,
        addresses: &addresses,
    };
    let mut best: Option<Vec<String>> = None;
    for alt in &alts.alternatives {
        let n = got.len();
        if n < alt.must.len() || n - alt.must.len() > alt.may.len() {
            continue;
        }
        let specs: Vec<&EventSpec> = alt.must.iter().chain(&alt.may).take(n).collect();
        if specs.iter().zip(&kinds).any(|(s, k)| s.kind != *k) {
            continue;
        }
        let m = compare(&specs, &got, &ctx);
        if m.is_empty() {
            return PersonVerdict::Ok {
                undecided: alts.undecided,
            };
        }
        let mut lines: Vec<String> = m
            .into_iter()
            .map(|d| format!("person {who} ({person}): {d}"))
            .collect();
        if !alt.choices.is_empty() {
            lines.push(format!(
                "person {who}: (that history assumed: {})",
                alt.choices.join("; ")
            ));
        }
        if best.as_ref().is_none_or(|b| lines.len() < b.len()) {
            best = Some(lines);
        }
    }
    if let Some(lines) = best {
        return PersonVerdict::Wrong(lines);
    }
    let expected: Vec<String> = alts
        .alternatives
        .iter()
        .take(4)
        .map(|a| {
            let must: Vec<EventKind> = a.must.iter().map(|s| s.kind).collect();
            let may: Vec<EventKind> = a.may.iter().map(|s| s.kind).collect();
            format!(
                "{}{}",
                fmt_kinds(&must),
                if may.is_empty() {
                    String::new()
                } else {
                    format!(" + optionally {}", fmt_kinds(&may))
                }
            )
        })
        .collect();
    PersonVerdict::Wrong(vec![format!(
        "person {who} ({person}): events {} but expected {}{} (plan: {})",
        fmt_kinds(&kinds),
        if expected.len() > 1 { "one of " } else { "" },
        expected.join(" or "),
        p.plan
    )])
}

/// What [`compare`] needs to check and describe fields.
struct Ctx<'a> {
    /// Times are printed relative to the start of the run.
    t0: Millis,
    policy: &'a model::Policy,
    /// The person's addresses in the order it registered them (printed as `#n`, never as text).
    addresses: &'a [&'a str],
}

impl Ctx<'_> {
    fn time(&self, t: Millis) -> String {
        format!("t{:+}ms", t - self.t0)
    }
    fn times(&self, r: model::Range) -> String {
        format!("[{}, {}]", self.time(r.lo), self.time(r.hi))
    }
    fn address(&self, a: Option<&str>) -> String {
        match a {
            None => "none".into(),
            Some(a) => match self.addresses.iter().position(|x| *x == a) {
                Some(i) => format!("address #{}", i + 1),
                None => "an address this person never registered".into(),
            },
        }
    }
}

fn span(r: model::Range) -> String {
    if r.hi == i64::MAX {
        format!("[{}, ∞) ms", r.lo)
    } else {
        format!("[{}, {}] ms", r.lo, r.hi)
    }
}

/// Field-by-field differences between events and specs of the same kinds.
fn compare(specs: &[&EventSpec], got: &[PersonEvent], ctx: &Ctx<'_>) -> Vec<String> {
    let mut d = Vec::new();
    let p = ctx.policy;
    for (i, (s, e)) in specs.iter().zip(got).enumerate() {
        let mut bad = |field: &str, expected: String, got: String| {
            d.push(format!(
                "event {i} ({}, after contact {}): {field}: expected {expected}, got {got}",
                e.kind.as_str(),
                s.contact
            ));
        };
        if e.notice_after_ms != p.notice_ms {
            bad(
                "notice_after_ms",
                p.notice_ms.to_string(),
                e.notice_after_ms.to_string(),
            );
        }
        if e.deregister_after_ms != p.deregister_ms {
            bad(
                "deregister_after_ms",
                p.deregister_ms.to_string(),
                e.deregister_after_ms.to_string(),
            );
        }
        if !s.at.contains(e.at) {
            bad("at", ctx.times(s.at), ctx.time(e.at));
        }
        if s.relation == Relation::First {
            if e.last_contact_at != e.at {
                bad(
                    "last_contact_at",
                    format!("= at ({}), the first contact", ctx.time(e.at)),
                    ctx.time(e.last_contact_at),
                );
            }
        } else if !s.last_contact_at.contains(e.last_contact_at) {
            bad(
                "last_contact_at",
                ctx.times(s.last_contact_at),
                ctx.time(e.last_contact_at),
            );
        }
        if !s.excluded.contains(e.excluded_outage_ms) {
            bad(
                "excluded_outage_ms",
                span(s.excluded),
                e.excluded_outage_ms.to_string(),
            );
        }
        if let Some(offset) = s.offset {
            let want = e.last_contact_at + offset + e.excluded_outage_ms;
            if e.at != want {
                bad(
                    "at",
                    format!(
                        "last_contact_at + {offset} + excluded_outage_ms = {}",
                        ctx.time(want)
                    ),
                    ctx.time(e.at),
                );
            }
        }
        if let Some(range) = s.silence {
            let measured = e.at - e.last_contact_at - e.excluded_outage_ms;
            if !range.contains(measured) {
                bad(
                    "silence (at - last_contact_at - excluded_outage_ms)",
                    span(range),
                    format!("{measured} ms"),
                );
            }
        }
        if e.address.as_deref() != s.address.as_deref() {
            bad(
                "address",
                ctx.address(s.address.as_deref()),
                ctx.address(e.address.as_deref()),
            );
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &got[j]) {
            match s.relation {
                Relation::SameSilence => {
                    if e.last_contact_at != prev.last_contact_at {
                        bad(
                            "last_contact_at",
                            format!(
                                "that of the event before ({})",
                                ctx.time(prev.last_contact_at)
                            ),
                            ctx.time(e.last_contact_at),
                        );
                    }
                    if e.at < prev.at || e.excluded_outage_ms < prev.excluded_outage_ms {
                        bad(
                            "at / excluded_outage_ms",
                            format!(
                                "no less than the event before ({}, {} ms)",
                                ctx.time(prev.at),
                                prev.excluded_outage_ms
                            ),
                            format!("{}, {} ms", ctx.time(e.at), e.excluded_outage_ms),
                        );
                    }
                }
                Relation::SameContact => {
                    if (e.at, e.last_contact_at, e.excluded_outage_ms)
                        != (prev.at, prev.last_contact_at, prev.excluded_outage_ms)
                    {
                        bad(
                            "at / last_contact_at / excluded_outage_ms",
                            format!(
                                "those of the event before ({}, {}, {} ms)",
                                ctx.time(prev.at),
                                ctx.time(prev.last_contact_at),
                                prev.excluded_outage_ms
                            ),
                            format!(
                                "{}, {}, {} ms",
                                ctx.time(e.at),
                                ctx.time(e.last_contact_at),
                                e.excluded_outage_ms
                            ),
                        );
                    }
                }
                Relation::None | Relation::First => {}
            }
        }
    }
    d
}
