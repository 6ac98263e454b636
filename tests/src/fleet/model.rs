//! The ground-truth model: which events each person must get, from what the server saw.
//!
//! The simulator cannot know the server's `received_at` exactly, only that it lies between
//! sending a request and reading its answer. So every acknowledged contact is an interval
//! `[lo, hi]` (first attempt sent … acknowledgement read: an earlier, failed attempt of the same
//! body may have landed too). Silences are therefore intervals as well, and outages make them
//! shorter by an amount that is known only within bounds:
//!
//! - `certain` fault spans: the platform surely received nothing (connection refused, or an
//!   immediate 503 "Kafka not ready"; ingest pauses its ticks then). A span longer than
//!   `clock.outage_after` is certainly excluded from silences, minus one tick.
//! - `possible` fault spans: some request failed somewhere in there. At most these are excluded.
//!
//! The processor measures a silence on its virtual clock (server time minus excluded outage),
//! which never runs backwards, so a silence is longest between the earliest possible stamp of
//! the first contact and the latest of the second, and shortest between the latest and the
//! earliest. Bounds taken at those ends stay tight when one request straddles an outage
//! (sent just before Kafka stopped, acknowledged after it came back): no stamp can fall inside
//! a certain span, so the whole span lies between the two stamps or not at all.
//!
//! Each silence is classified against the thresholds at both ends of its interval; when both
//! ends agree the outcome is certain. The schedule of the simulator keeps silences far from the
//! thresholds, so outcomes are ambiguous only when a fault lands inside a planned silence; such a
//! person is reported as ambiguous and its events are not compared (its pings still are).
//!
//! The last silence runs until the verifier looks: events whose deadline certainly passed
//! (`horizon.must`) must be there, events whose deadline possibly passed (`horizon.may`) may be.
//! So the expectation is `must` followed by an optional prefix of `may`.

use common::record::{EventKind, Millis};
use serde::{Deserialize, Serialize};

/// The policy and clock the services run with, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub notice_ms: i64,
    pub deregister_ms: i64,
    pub outage_after_ms: i64,
    pub tick_ms: i64,
}

impl Policy {
    pub fn from_config(c: &common::Config) -> Policy {
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        Policy {
            notice_ms: ms(c.policy.notice_after),
            deregister_ms: ms(c.policy.deregister_after),
            outage_after_ms: ms(c.clock.outage_after),
            tick_ms: ms(c.clock.tick_interval),
        }
    }
}

/// One acknowledged contact: the server stamped it somewhere in `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub lo: Millis,
    pub hi: Millis,
    /// `Some(address)` for a registration, `None` for a ping batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A time span `[from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub from: Millis,
    pub to: Millis,
}

impl Span {
    fn overlap(&self, from: Millis, to: Millis) -> i64 {
        (self.to.min(to) - self.from.max(from)).max(0)
    }
}

/// What the simulator observed about platform faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// The platform surely received nothing in these spans (merged, disjoint).
    pub certain: Vec<Span>,
    /// The platform may have been failing (or stalling: answers slower than half of
    /// `outage_after`) in these spans (merged, disjoint).
    pub possible: Vec<Span>,
}

/// A failed request attempt, as the simulator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub sent: Millis,
    pub failed: Millis,
    /// Refused at once (connection refused, immediate 503): the platform was down right then.
    pub immediate: bool,
}

/// Merges sorted-or-not spans that touch or are closer than `join` ms.
pub fn merge(mut spans: Vec<Span>, join: i64) -> Vec<Span> {
    spans.sort_by_key(|s| (s.from, s.to));
    let mut out: Vec<Span> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(l) if s.from <= l.to + join => l.to = l.to.max(s.to),
            _ => out.push(s),
        }
    }
    out
}

impl Faults {
    /// Builds the fault spans from failed attempts. Immediate failures closer than `join` ms
    /// form one certain span (shrunk by `slack` at both ends); every failure widened by `slack`
    /// is a possible span.
    pub fn from_failures(failures: &[Failure], join: i64, slack: i64) -> Faults {
        let instants: Vec<Span> = failures
            .iter()
            .filter(|f| f.immediate)
            .map(|f| Span {
                from: f.failed,
                to: f.failed,
            })
            .collect();
        let certain = merge(instants, join)
            .into_iter()
            .map(|s| Span {
                from: s.from + slack,
                to: s.to - slack,
            })
            .filter(|s| s.to > s.from)
            .collect();
        let possible = merge(
            failures
                .iter()
                .map(|f| Span {
                    from: f.sent - slack,
                    to: f.failed + slack,
                })
                .collect(),
            0,
        );
        Faults { certain, possible }
    }

    /// Least outage time the processor must exclude from a silence between stamps at `from` and
    /// `to`: each certain span inside `[from, to]` lies in one gap of stream time (nothing is
    /// stamped inside it), so the whole span but the gap's last tick is excluded.
    fn excluded_min(&self, from: Millis, to: Millis, p: &Policy) -> i64 {
        self.certain
            .iter()
            .filter(|s| s.to - s.from > p.outage_after_ms && s.from >= from && s.to <= to)
            .map(|s| (s.to - s.from - p.tick_ms).max(0))
            .sum()
    }

    /// Bounds `(lo, hi)` of the silence the processor measures between a contact stamped in
    /// `prev` and one stamped in `next` (both `[lo, hi]` intervals). The virtual clock is
    /// monotonic and no stamp falls inside a certain span, so the longest silence is from
    /// `prev.lo` to `next.hi` less the certain spans between them, and the shortest from
    /// `prev.hi` to `next.lo` less everything that may have failed between them.
    fn silence(&self, prev: (Millis, Millis), next: (Millis, Millis), p: &Policy) -> (i64, i64) {
        let lo = (next.0 - prev.1) - self.excluded_max(prev.1, next.0);
        let hi = (next.1 - prev.0) - self.excluded_min(prev.0, next.1, p);
        (lo.max(0), hi.max(0))
    }

    /// Most outage time the processor may exclude from a silence within `[from, to]`.
    fn excluded_max(&self, from: Millis, to: Millis) -> i64 {
        let all = merge(
            self.certain
                .iter()
                .chain(self.possible.iter())
                .copied()
                .collect(),
            0,
        );
        all.iter().map(|s| s.overlap(from, to)).sum()
    }
}

/// The expected events of one person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Events that must be there, in order.
    pub must: Vec<EventKind>,
    /// Events that may follow `must` (a prefix of these), because their deadline is too close
    /// to the moment the verifier looks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may: Vec<EventKind>,
    /// Why the outcome cannot be told (a fault inside a silence near a threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambiguous: Option<String>,
}

impl Expected {
    /// `got` is `must` followed by a prefix of `may`.
    pub fn accepts(&self, got: &[EventKind]) -> bool {
        got.len() >= self.must.len()
            && got[..self.must.len()] == self.must[..]
            && got.len() - self.must.len() <= self.may.len()
            && got[self.must.len()..] == self.may[..got.len() - self.must.len()]
    }
}

/// The moment the verifier looks: deadlines up to `must` have surely been turned into visible
/// events; deadlines after `may` cannot have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub must: Millis,
    pub may: Millis,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Unknown,
    Registered {
        address: String,
    },
    /// Not registered (deregistered, or never registered); `sent` = unregistered_contact sent.
    Unregistered {
        sent: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Certain(bool),
    Ambiguous,
}

fn crossed(lo: i64, hi: i64, threshold: i64, inclusive: bool) -> Outcome {
    let cross = |x: i64| {
        if inclusive {
            x >= threshold
        } else {
            x > threshold
        }
    };
    match (cross(lo), cross(hi)) {
        (true, true) => Outcome::Certain(true),
        (false, false) => Outcome::Certain(false),
        _ => Outcome::Ambiguous,
    }
}

/// The events a person with these contacts (in acknowledgement order) must get.
pub fn expect(
    contacts: &[Contact],
    faults: &Faults,
    p: &Policy,
    horizon: Option<Horizon>,
) -> Expected {
    let mut state = State::Unknown;
    let mut out = Expected::default();
    let mut prev: Option<&Contact> = None;
    for c in contacts {
        if let (Some(pc), State::Registered { .. }) = (prev, &state) {
            // The silence between pc and c.
            let (eff_lo, eff_hi) = faults.silence((pc.lo, pc.hi), (c.lo, c.hi), p);
            let notice = crossed(eff_lo, eff_hi, p.notice_ms, true);
            let dereg = crossed(eff_lo, eff_hi, p.deregister_ms, false);
            match (notice, dereg) {
                (Outcome::Certain(false), _) => {}
                (Outcome::Certain(true), Outcome::Certain(false)) => {
                    out.must.push(EventKind::SilenceNotice);
                    out.must.push(EventKind::Resumed);
                }
                (Outcome::Certain(true), Outcome::Certain(true)) => {
                    out.must.push(EventKind::SilenceNotice);
                    out.must.push(EventKind::Deregistered);
                    state = State::Unregistered { sent: false };
                }
                _ => {
                    out.ambiguous = Some(format!(
                        "silence of {eff_lo}..{eff_hi} ms (after outage exclusion) ending at {} is \
                         too close to a threshold",
                        c.lo
                    ));
                    return out;
                }
            }
            if let State::Registered { address } = &state {
                // After a notice the contact already yielded `resumed`; now the contact itself.
                if let Some(a) = &c.address {
                    if a != address {
                        out.must.push(EventKind::AddressChanged);
                        state = State::Registered { address: a.clone() };
                    }
                }
                prev = Some(c);
                continue;
            }
        }
        state = match (&state, &c.address) {
            (State::Unknown, Some(a)) | (State::Unregistered { .. }, Some(a)) => {
                out.must.push(EventKind::Registered);
                State::Registered { address: a.clone() }
            }
            (State::Unknown, None) | (State::Unregistered { sent: false }, None) => {
                out.must.push(EventKind::UnregisteredContact);
                State::Unregistered { sent: true }
            }
            (State::Registered { address }, Some(a)) if a != address => {
                out.must.push(EventKind::AddressChanged);
                State::Registered { address: a.clone() }
            }
            (s, _) => s.clone(),
        };
        prev = Some(c);
    }
    // The last silence, up to the horizon.
    if let (Some(h), Some(pc), State::Registered { .. }) = (horizon, prev, &state) {
        let (eff_lo, eff_hi) = faults.silence((pc.lo, pc.hi), (h.must, h.may), p);
        for (threshold, inclusive, kind) in [
            (p.notice_ms, true, EventKind::SilenceNotice),
            (p.deregister_ms, false, EventKind::Deregistered),
        ] {
            match crossed(eff_lo, eff_hi, threshold, inclusive) {
                Outcome::Certain(true) if out.may.is_empty() => out.must.push(kind),
                Outcome::Certain(false) => break,
                _ => out.may.push(kind),
            }
        }
    }
    out
}

// ---- per-event expectations ------------------------------------------------------------

/// Inclusive bounds `[lo, hi]` of a value the fleet knows only within limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

impl Range {
    pub const fn exact(v: i64) -> Range {
        Range { lo: v, hi: v }
    }
    pub fn contains(&self, v: i64) -> bool {
        self.lo <= v && v <= self.hi
    }
    fn intersect(self, o: Range) -> Range {
        Range {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }
}

/// How an expected event's figures relate to the event before it (exact: both come from the
/// same processor state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Nothing beyond its own bounds.
    None,
    /// The person's first contact: `last_contact_at == at` and no outage excluded.
    First,
    /// The same silence as the event before (a deadline after a notice, or the contact that
    /// ended it): the same `last_contact_at`, and neither `at` nor the excluded outage smaller.
    SameSilence,
    /// The same contact as the event before (`address_changed` after `resumed`): `at`,
    /// `last_contact_at` and the excluded outage all equal.
    SameContact,
}

/// What the fleet knows about one event the processor must emit.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub kind: EventKind,
    /// Bounds of `at`.
    pub at: Range,
    /// Bounds of `last_contact_at`.
    pub last_contact_at: Range,
    /// Bounds of `excluded_outage_ms`.
    pub excluded: Range,
    /// The address the event carries (`None`: it carries none).
    pub address: Option<String>,
    /// A deadline event: `at == last_contact_at + offset + excluded_outage_ms` exactly
    /// (`offset` = `notice_after`, or `deregister_after + 1`).
    pub offset: Option<i64>,
    /// A contact event that ends a silence: the silence the processor measured,
    /// `at - last_contact_at - excluded_outage_ms`, lies here (it decided the outcome by it).
    pub silence: Option<Range>,
    pub relation: Relation,
    /// Index of the contact that triggered the event, or that began the silence it reports.
    pub contact: usize,
}

/// One history the processor may have produced: `must`, then a prefix of `may` (deadlines too
/// close to the moment the verifier looks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alternative {
    pub must: Vec<EventSpec>,
    pub may: Vec<EventSpec>,
    /// The outcomes the fleet could not tell that this alternative chose (for reading failures).
    pub choices: Vec<String>,
}

/// The histories a person may have: one unless a silence ended too close to a threshold for
/// the fleet to tell the outcome; then each possible outcome is an alternative, and each is
/// checked field by field, so such a person is still verified (the processor's own figures must
/// justify the outcome it chose: see [`EventSpec::silence`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alternatives {
    pub alternatives: Vec<Alternative>,
    /// Set when the person cannot be checked at all (see [`MAX_ALTERNATIVES`]).
    pub ambiguous: Option<String>,
    /// How many silences had an outcome the fleet could not tell.
    pub undecided: usize,
}

/// More undecided outcomes than this many histories make the person ambiguous (not compared).
/// A person needs 6+ undecided silences for that: never seen.
pub const MAX_ALTERNATIVES: usize = 64;

impl Faults {
    /// Bounds of the outage the processor excludes between a person's contact stamped in
    /// `prev` and the next one stamped in `next`. At least every certain span that lies after
    /// the latest stamp of `prev` and before the earliest of `next` (minus the last tick of its
    /// gap); at most everything that may have failed between the earliest and the latest.
    pub fn excluded_between(&self, prev: &Contact, next: &Contact, p: &Policy) -> Range {
        Range {
            lo: self.excluded_min(prev.hi, next.lo, p),
            hi: self.excluded_max(prev.lo, next.hi),
        }
    }

    /// Bounds of the outage excluded from a silence that began with a contact stamped in
    /// `prev`, up to the moment its deadline `offset` ms of virtual time later is reached.
    ///
    /// - At least: each certain span after `prev.hi` that the deadline surely had not reached
    ///   when it began (the silence up to it, even with only the certain exclusions before it,
    ///   is shorter than `offset`): its whole gap counts, minus the gap's last tick.
    /// - At most: every span that may have failed from `prev.lo` on, as long as it begins
    ///   before the latest moment the deadline can fall on (which each such span pushes out by
    ///   its own length): an excluded gap always begins before the event's `at`.
    pub fn excluded_until_deadline(&self, prev: &Contact, offset: i64, p: &Policy) -> Range {
        let mut lo = 0;
        for s in &self.certain {
            if s.from < prev.hi || s.to - s.from <= p.outage_after_ms {
                continue;
            }
            if (s.from - prev.lo) - lo < offset {
                lo += s.to - s.from - p.tick_ms;
            } else {
                break;
            }
        }
        let all = merge(
            self.certain
                .iter()
                .chain(self.possible.iter())
                .copied()
                .collect(),
            0,
        );
        let (mut hi, mut end) = (0, prev.hi + offset);
        for s in all.iter().filter(|s| s.to > prev.lo) {
            if s.from >= end {
                break;
            }
            let add = s.to - s.from.max(prev.lo);
            hi += add;
            end += add;
        }
        Range { lo: lo.max(0), hi }
    }
}

#[derive(Debug, Clone)]
struct Branch {
    state: State,
    alt: Alternative,
}

/// Every history a person with these contacts (in acknowledgement order) may have, each with
/// the bounds of every field of every event. See the module docs for the reasoning; the
/// per-field bounds are documented on [`Faults::excluded_between`],
/// [`Faults::excluded_until_deadline`] and in [`super::verify`].
pub fn alternatives(
    contacts: &[Contact],
    faults: &Faults,
    p: &Policy,
    horizon: Option<Horizon>,
) -> Alternatives {
    let mut branches = vec![Branch {
        state: State::Unknown,
        alt: Alternative::default(),
    }];
    let mut undecided = 0;
    let deadline = |kind, pc: &Contact, i: usize, address: &str, relation| {
        let offset = match kind {
            EventKind::SilenceNotice => p.notice_ms,
            _ => p.deregister_ms + 1,
        };
        let excluded = faults.excluded_until_deadline(pc, offset, p);
        EventSpec {
            kind,
            at: Range {
                lo: pc.lo + offset + excluded.lo,
                hi: pc.hi + offset + excluded.hi,
            },
            last_contact_at: Range {
                lo: pc.lo,
                hi: pc.hi,
            },
            excluded,
            address: Some(address.to_string()),
            offset: Some(offset),
            silence: None,
            relation,
            contact: i,
        }
    };
    for (i, c) in contacts.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| (j, &contacts[j]));
        let mut next = Vec::with_capacity(branches.len());
        for b in branches {
            // A contact event of `c`: after `pc`, or the person's first.
            let contact_event = |kind, address: Option<&str>, silence, relation| match prev {
                Some((_, pc)) => EventSpec {
                    kind,
                    at: Range { lo: c.lo, hi: c.hi },
                    last_contact_at: Range {
                        lo: pc.lo,
                        hi: pc.hi,
                    },
                    excluded: faults.excluded_between(pc, c, p),
                    address: address.map(str::to_string),
                    offset: None,
                    silence,
                    relation,
                    contact: i,
                },
                None => EventSpec {
                    kind,
                    at: Range { lo: c.lo, hi: c.hi },
                    last_contact_at: Range { lo: c.lo, hi: c.hi },
                    excluded: Range::exact(0),
                    address: address.map(str::to_string),
                    offset: None,
                    silence: None,
                    relation: Relation::First,
                    contact: i,
                },
            };
            if let (Some((j, pc)), State::Registered { address }) = (prev, &b.state) {
                let (eff_lo, eff_hi) = faults.silence((pc.lo, pc.hi), (c.lo, c.hi), p);
                let measured = Range {
                    lo: eff_lo,
                    hi: eff_hi,
                };
                // The outcomes this silence may have had: 0 nothing, 1 notice (then resumed),
                // 2 notice and deregistration.
                let mut outcomes = Vec::new();
                if eff_lo < p.notice_ms {
                    outcomes.push(0);
                }
                if eff_hi >= p.notice_ms && eff_lo <= p.deregister_ms {
                    outcomes.push(1);
                }
                if eff_hi > p.deregister_ms {
                    outcomes.push(2);
                }
                if outcomes.len() > 1 {
                    undecided += 1;
                }
                for &o in &outcomes {
                    let mut nb = b.clone();
                    if outcomes.len() > 1 {
                        nb.alt.choices.push(format!(
                            "silence of {eff_lo}..{eff_hi} ms ending with contact {i}: {}",
                            ["nothing", "notice", "deregistration"][o]
                        ));
                    }
                    let a = address.clone();
                    match o {
                        0 => {
                            if let Some(new) = c.address.as_ref().filter(|n| **n != a) {
                                let silence = measured.intersect(Range {
                                    lo: 0,
                                    hi: p.notice_ms - 1,
                                });
                                nb.alt.must.push(contact_event(
                                    EventKind::AddressChanged,
                                    Some(new),
                                    Some(silence),
                                    Relation::None,
                                ));
                                nb.state = State::Registered {
                                    address: new.clone(),
                                };
                            }
                        }
                        1 => {
                            nb.alt.must.push(deadline(
                                EventKind::SilenceNotice,
                                pc,
                                j,
                                &a,
                                Relation::None,
                            ));
                            let silence = measured.intersect(Range {
                                lo: p.notice_ms,
                                hi: p.deregister_ms,
                            });
                            nb.alt.must.push(contact_event(
                                EventKind::Resumed,
                                Some(&a),
                                Some(silence),
                                Relation::SameSilence,
                            ));
                            if let Some(new) = c.address.as_ref().filter(|n| **n != a) {
                                nb.alt.must.push(contact_event(
                                    EventKind::AddressChanged,
                                    Some(new),
                                    Some(silence),
                                    Relation::SameContact,
                                ));
                                nb.state = State::Registered {
                                    address: new.clone(),
                                };
                            }
                        }
                        _ => {
                            nb.alt.must.push(deadline(
                                EventKind::SilenceNotice,
                                pc,
                                j,
                                &a,
                                Relation::None,
                            ));
                            nb.alt.must.push(deadline(
                                EventKind::Deregistered,
                                pc,
                                j,
                                &a,
                                Relation::SameSilence,
                            ));
                            let silence = measured.intersect(Range {
                                lo: p.deregister_ms + 1,
                                hi: i64::MAX,
                            });
                            // Now not registered: the contact itself, as below.
                            let (kind, address) = match &c.address {
                                Some(new) => (EventKind::Registered, Some(new.as_str())),
                                None => (EventKind::UnregisteredContact, None),
                            };
                            nb.alt.must.push(contact_event(
                                kind,
                                address,
                                Some(silence),
                                Relation::SameSilence,
                            ));
                            nb.state = match &c.address {
                                Some(new) => State::Registered {
                                    address: new.clone(),
                                },
                                None => State::Unregistered { sent: true },
                            };
                        }
                    }
                    next.push(nb);
                }
                continue;
            }
            let mut nb = b;
            nb.state = match (&nb.state, &c.address) {
                (State::Unknown | State::Unregistered { .. }, Some(a)) => {
                    nb.alt.must.push(contact_event(
                        EventKind::Registered,
                        Some(a),
                        None,
                        Relation::None,
                    ));
                    State::Registered { address: a.clone() }
                }
                (State::Unknown | State::Unregistered { sent: false }, None) => {
                    nb.alt.must.push(contact_event(
                        EventKind::UnregisteredContact,
                        None,
                        None,
                        Relation::None,
                    ));
                    State::Unregistered { sent: true }
                }
                (s, _) => s.clone(),
            };
            next.push(nb);
        }
        branches = next;
        if branches.len() > MAX_ALTERNATIVES {
            return Alternatives {
                alternatives: Vec::new(),
                ambiguous: Some(format!(
                    "{undecided} silences too close to a threshold to tell (more than \
                     {MAX_ALTERNATIVES} possible histories)"
                )),
                undecided,
            };
        }
    }
    // The last silence, up to the horizon.
    if let (Some(h), Some(last)) = (horizon, contacts.len().checked_sub(1)) {
        let pc = &contacts[last];
        for b in &mut branches {
            let State::Registered { address } = &b.state else {
                continue;
            };
            let (eff_lo, eff_hi) = faults.silence((pc.lo, pc.hi), (h.must, h.may), p);
            for (threshold, inclusive, kind, relation) in [
                (p.notice_ms, true, EventKind::SilenceNotice, Relation::None),
                (
                    p.deregister_ms,
                    false,
                    EventKind::Deregistered,
                    Relation::SameSilence,
                ),
            ] {
                let spec = deadline(kind, pc, last, address, relation);
                match crossed(eff_lo, eff_hi, threshold, inclusive) {
                    Outcome::Certain(true) if b.alt.may.is_empty() => b.alt.must.push(spec),
                    Outcome::Certain(false) => break,
                    _ => b.alt.may.push(spec),
                }
            }
        }
    }
    Alternatives {
        alternatives: branches.into_iter().map(|b| b.alt).collect(),
        ambiguous: None,
        undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    const P: Policy = Policy {
        notice_ms: 6000,
        deregister_ms: 12000,
        outage_after_ms: 2000,
        tick_ms: 250,
    };

    fn ping(t: i64) -> Contact {
        Contact {
            lo: t,
            hi: t + 20,
            address: None,
        }
    }
    fn reg(t: i64, a: &str) -> Contact {
        Contact {
            lo: t,
            hi: t + 20,
            address: Some(a.into()),
        }
    }
    fn run(cs: &[Contact]) -> Expected {
        expect(cs, &Faults::default(), &P, None)
    }
    /// Requests refused at once every 100 ms from `from` to `to` (the platform was down).
    fn refused(from: i64, to: i64) -> Vec<Failure> {
        (from..=to)
            .step_by(100)
            .map(|t| Failure {
                sent: t,
                failed: t + 1,
                immediate: true,
            })
            .collect()
    }

    #[test]
    fn regular_pinger_gets_only_registered() {
        let mut cs = vec![reg(0, "A")];
        cs.extend((1..30).map(|i| ping(i * 2000)));
        assert_eq!(run(&cs).must, vec![Registered]);
    }

    #[test]
    fn silences_of_each_length() {
        // short: nothing; mid: notice + resumed; long: notice + dereg, then the ping is an
        // unregistered contact; a registration after that registers again.
        let cs = [
            reg(0, "A"),
            ping(3000),
            ping(12_000),
            ping(30_000),
            ping(31_000),
            reg(32_000, "A"),
        ];
        let e = run(&cs);
        assert_eq!(
            e.must,
            vec![
                Registered,
                SilenceNotice,
                Resumed,
                SilenceNotice,
                Deregistered,
                UnregisteredContact,
                Registered
            ]
        );
        assert!(e.ambiguous.is_none());
    }

    #[test]
    fn re_registration_after_deregistration_and_address_changes() {
        let cs = [
            reg(0, "A"),
            reg(1000, "A"),
            reg(2000, "B"),
            reg(20_000, "B"),
            ping(21_000),
            reg(30_000, "C"),
        ];
        // 2000 → 20000 is 18 s: notice + dereg; the registration registers again (no
        // unregistered_contact); 21000 → 30000 is 9 s: notice, resumed, then the new address.
        assert_eq!(
            run(&cs).must,
            vec![
                Registered,
                AddressChanged,
                SilenceNotice,
                Deregistered,
                Registered,
                SilenceNotice,
                Resumed,
                AddressChanged
            ]
        );
    }

    #[test]
    fn unregistered_contact_once_until_registered() {
        let cs = [
            ping(0),
            ping(1000),
            ping(50_000),
            reg(51_000, "A"),
            ping(52_000),
        ];
        assert_eq!(run(&cs).must, vec![UnregisteredContact, Registered]);
    }

    #[test]
    fn silence_near_a_threshold_is_ambiguous() {
        let cs = [
            reg(0, "A"),
            Contact {
                lo: 5000,
                hi: 7000,
                address: None,
            },
        ];
        let e = run(&cs);
        assert!(e.ambiguous.is_some(), "{e:?}");
    }

    #[test]
    fn certain_outage_is_excluded_and_possible_outage_makes_it_ambiguous() {
        // Pinging every 2 s, but the platform was down 10 s..30 s (immediate refusals).
        let cs = [
            reg(0, "A"),
            ping(4000),
            ping(9000),
            ping(31_000),
            ping(33_000),
        ];
        let failures = refused(10_000, 30_000);
        let f = Faults::from_failures(&failures, 1000, 250);
        assert_eq!(f.certain.len(), 1);
        let e = expect(&cs, &f, &P, None);
        assert_eq!(e.must, vec![Registered]);
        assert!(e.ambiguous.is_none(), "{e:?}");
        // Without the outage knowledge the same contacts mean notice + deregistration.
        assert_eq!(
            run(&cs).must,
            vec![Registered, SilenceNotice, Deregistered, UnregisteredContact]
        );
        // With only slow failures (timeouts) nothing is certain: ambiguous.
        let slow: Vec<Failure> = failures
            .iter()
            .map(|x| Failure {
                immediate: false,
                ..*x
            })
            .collect();
        let e = expect(&cs, &Faults::from_failures(&slow, 1000, 250), &P, None);
        assert!(e.ambiguous.is_some());
    }

    #[test]
    fn the_last_silence_depends_on_the_horizon() {
        let cs = [reg(0, "A")];
        let at = |must, may| expect(&cs, &Faults::default(), &P, Some(Horizon { must, may }));
        assert_eq!(
            at(1000, 3000),
            Expected::default().with_must(vec![Registered])
        );
        let e = at(4000, 7000);
        assert_eq!(
            (e.must.clone(), e.may.clone()),
            (vec![Registered], vec![SilenceNotice])
        );
        assert!(e.accepts(&[Registered]) && e.accepts(&[Registered, SilenceNotice]));
        assert!(!e.accepts(&[Registered, SilenceNotice, Deregistered]));
        let e = at(8000, 13_000);
        assert_eq!(
            (e.must.clone(), e.may.clone()),
            (vec![Registered, SilenceNotice], vec![Deregistered])
        );
        let e = at(20_000, 23_000);
        assert_eq!(e.must, vec![Registered, SilenceNotice, Deregistered]);
        assert!(!e.accepts(&[Registered, SilenceNotice]));
        assert!(!e.accepts(&[Registered, SilenceNotice, Deregistered, Deregistered]));
    }

    #[test]
    fn accepts_is_exact() {
        let e = Expected {
            must: vec![Registered],
            may: vec![SilenceNotice, Deregistered],
            ambiguous: None,
        };
        assert!(e.accepts(&[Registered, SilenceNotice, Deregistered]));
        assert!(!e.accepts(&[Registered, Deregistered]));
        assert!(!e.accepts(&[]));
        assert!(!e.accepts(&[Registered, Registered]));
    }

    #[test]
    fn a_request_straddling_a_certain_outage_is_not_ambiguous() {
        // A steady pinger; one upload is sent just before a 15 s outage and acknowledged after
        // it (its stamp may lie on either side). Before the outage: 2 s of silence at most;
        // after it: 2 s plus what the outage leaves (one tick). Neither is near a threshold.
        let failures = refused(10_000, 25_000);
        let f = Faults::from_failures(&failures, 1000, 250);
        let cs = [
            reg(0, "A"),
            ping(2000),
            ping(4000),
            ping(6000),
            ping(8000),
            Contact {
                lo: 9800,
                hi: 25_400,
                address: None,
            },
            ping(27_000),
        ];
        let e = expect(&cs, &f, &P, None);
        assert!(e.ambiguous.is_none(), "{e:?}");
        assert_eq!(e.must, vec![Registered]);
    }

    use proptest::prelude::{Just, Strategy, prop_oneof};

    proptest::proptest! {
        /// The bounds contain the silence the real detector measures, for stamps anywhere in
        /// their intervals around outages the fleet saw as immediate refusals (plus one request
        /// in flight when each outage began, which fails slowly).
        #[test]
        fn silence_bounds_contain_the_detectors_silence(
            outages in proptest::collection::vec((0i64..90_000, 300i64..25_000), 0..3),
            y in 0i64..100_000,
            x_after in 0i64..60_000,
            (y_lo, y_hi) in (prop_oneof![Just(0i64), 0i64..3000], 0i64..3000),
            (x_lo, x_hi) in (0i64..40_000, prop_oneof![Just(0i64), 0i64..3000]),
            first_fail in 0i64..100,
        ) {
            use common::config::{ClockConfig, PolicyConfig};
            use std::time::Duration;
            // Disjoint outages at least 2 s apart, as `(from, to)`: nothing is stamped inside.
            let mut spans: Vec<(i64, i64)> = Vec::new();
            let mut sorted = outages.clone();
            sorted.sort();
            for (a, len) in sorted {
                if spans.last().is_none_or(|&(_, b)| a > b + 2000) {
                    spans.push((a, a + len));
                }
            }
            let outside = |t: i64| {
                spans
                    .iter()
                    .find(|&&(a, b)| t > a && t < b)
                    .map_or(t, |&(_, b)| b + 1)
            };
            let y = outside(y);
            let x = outside(y + x_after);
            let mut failures = Vec::new();
            for &(a, b) in &spans {
                failures.push(Failure {
                    sent: a - 300,
                    failed: a + 1000,
                    immediate: false,
                });
                let mut t = a + first_fail;
                while t < b {
                    failures.push(Failure {
                        sent: t,
                        failed: t + 1,
                        immediate: true,
                    });
                    t += 100;
                }
            }
            let faults = Faults::from_failures(&failures, 1000, 250);
            let ms = |m: i64| Duration::from_millis(m as u64);
            let mut d = processor::detector::Detector::new(
                PolicyConfig {
                    notice_after: ms(P.notice_ms),
                    deregister_after: ms(P.deregister_ms),
                },
                ClockConfig {
                    tick_interval: ms(P.tick_ms),
                    outage_after: ms(P.outage_after_ms),
                },
            )
            .expect("valid config");
            // Ticks every tick outside the outages, and the two stamps, in order.
            let mut stamps: Vec<i64> = (0..(x + 1000) / P.tick_ms)
                .map(|i| i * P.tick_ms)
                .filter(|&t| spans.iter().all(|&(a, b)| t <= a || t >= b))
                .chain([y, x])
                .collect();
            stamps.sort();
            let (mut vy, mut vx, mut out) = (None, None, Vec::new());
            for t in stamps {
                d.apply_tick(t, &mut out);
                if t == y && vy.is_none() {
                    vy = d.virtual_time();
                }
                if t == x {
                    vx = d.virtual_time();
                }
            }
            let truth = vx.unwrap() - vy.unwrap();
            let (lo, hi) = faults.silence((y - y_lo, y + y_hi), (x - x_lo, x + x_hi), &P);
            proptest::prop_assert!(
                lo <= truth && truth <= hi,
                "silence {truth} outside [{lo}, {hi}]; outages {spans:?}, faults {faults:?}"
            );
        }
    }

    proptest::proptest! {
        /// The per-event model and the kinds-only one agree: one history with the same kinds
        /// when the outcome is certain, several when `expect` calls the person ambiguous.
        #[test]
        fn alternatives_agree_with_expect(
            steps in proptest::collection::vec(
                (0i64..30_000, 0i64..2500, prop_oneof![3 => Just(None), 1 => (0u8..3).prop_map(Some)]),
                1..12,
            ),
            outage in proptest::option::of((0i64..100_000, 2500i64..20_000)),
            look in 0i64..40_000,
        ) {
            let mut cs = Vec::new();
            let mut t = 0;
            for (gap, width, a) in steps {
                t += gap;
                cs.push(Contact { lo: t, hi: t + width, address: a.map(|a| format!("A{a}")) });
                t += width;
            }
            let failures = outage.map_or_else(Vec::new, |(a, len)| refused(a, a + len));
            let f = Faults::from_failures(&failures, 1000, 250);
            let h = Horizon { must: t + look, may: t + look + 3000 };
            let old = expect(&cs, &f, &P, Some(h));
            let new = alternatives(&cs, &f, &P, Some(h));
            if let Some(why) = &new.ambiguous {
                // The per-event model gives up only past MAX_ALTERNATIVES possible histories,
                // and then the kinds-only model could not decide either.
                proptest::prop_assert!(why.contains("possible histories"), "{}", why);
                proptest::prop_assert!(old.ambiguous.is_some());
                return Ok(());
            }
            if old.ambiguous.is_none() {
                proptest::prop_assert_eq!(new.alternatives.len(), 1);
                let a = &new.alternatives[0];
                let kinds = |v: &[EventSpec]| v.iter().map(|s| s.kind).collect::<Vec<_>>();
                proptest::prop_assert_eq!((kinds(&a.must), kinds(&a.may)), (old.must, old.may));
                proptest::prop_assert_eq!(new.undecided, 0);
            } else {
                proptest::prop_assert!(new.alternatives.len() > 1 && new.undecided > 0);
            }
        }
    }

    impl Expected {
        fn with_must(mut self, m: Vec<EventKind>) -> Self {
            self.must = m;
            self
        }
    }
}
