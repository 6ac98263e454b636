//! The verifier's self-test, without services: a small ground truth and the events a correct
//! processor emits for it PASS; a wrong time, a wrong address, a missing event (and other
//! wrong fields) each FAIL with the reason. A property test feeds the real detector random
//! contacts, ticks and outages and requires PASS for every person: the tolerance never fails a
//! correct run (as far as the fleet's view of the platform holds).

use EventKind::*;
use common::record::{EventKind, Millis, PersonEvent};
use e2e::fleet::model::{Contact, Failure, Faults, Horizon, Policy};
use e2e::fleet::truth::{PersonTruth, RunConfig, Stats, Truth};
use e2e::fleet::verify::{PersonVerdict, check_person};
use std::collections::BTreeMap;

const P: Policy = Policy {
    notice_ms: 6000,
    deregister_ms: 12_000,
    outage_after_ms: 2000,
    tick_ms: 250,
};

/// The one place this test builds a [`PersonEvent`] (the struct gains fields now and then).
fn event(
    kind: EventKind,
    at: Millis,
    last_contact_at: Millis,
    excluded_outage_ms: i64,
    address: Option<&str>,
) -> PersonEvent {
    PersonEvent {
        event_id: format!("{kind:?}-{at}"),
        person_id: PERSON.into(),
        kind,
        at,
        last_contact_at,
        notice_after_ms: P.notice_ms,
        deregister_after_ms: P.deregister_ms,
        excluded_outage_ms,
        address: address.map(str::to_string),
        seq: None,
    }
}

const PERSON: &str = "selftest-7";

fn truth_of(persons: BTreeMap<String, PersonTruth>, faults: Faults) -> Truth {
    Truth {
        config: RunConfig {
            ingest_url: String::new(),
            persons: persons.len(),
            duration_ms: 0,
            seed: 0,
            policy: P,
            margin_ms: 0,
            ping_interval_ms: 0,
            max_batch: 1,
            invalid_share: 0.0,
            duplicate_share: 0.0,
            max_requests: 0,
            id_prefix: "selftest".into(),
        },
        started_at: 0,
        ended_at: 0,
        faults,
        stats: Stats::default(),
        persons,
    }
}

fn one(contacts: Vec<Contact>, faults: Faults) -> Truth {
    let p = PersonTruth {
        contacts,
        ..PersonTruth::default()
    };
    truth_of(BTreeMap::from([(PERSON.to_string(), p)]), faults)
}

/// A request sent at `t`, answered 10 ms later.
fn ping(t: Millis) -> Contact {
    Contact {
        lo: t,
        hi: t + 10,
        address: None,
    }
}
fn reg(t: Millis, a: &str) -> Contact {
    Contact {
        address: Some(a.into()),
        ..ping(t)
    }
}

const END: Horizon = Horizon {
    must: 40_000,
    may: 40_000,
};

/// Registers with A, pings, is silent 9 s (notice, resumed), changes to B, then says nothing
/// until the end (notice, deregistration). Stamps 5 ms into each request.
fn scenario() -> (Truth, Vec<PersonEvent>) {
    let truth = one(
        vec![reg(1000, "A"), ping(3000), ping(12_000), reg(14_000, "B")],
        Faults::default(),
    );
    let events = vec![
        event(Registered, 1005, 1005, 0, Some("A")),
        event(SilenceNotice, 9005, 3005, 0, Some("A")),
        event(Resumed, 12_005, 3005, 0, Some("A")),
        event(AddressChanged, 14_005, 12_005, 0, Some("B")),
        event(SilenceNotice, 20_005, 14_005, 0, Some("B")),
        event(Deregistered, 26_006, 14_005, 0, Some("B")),
    ];
    (truth, events)
}

fn verdict(truth: &Truth, events: &[PersonEvent]) -> PersonVerdict {
    check_person(truth, PERSON, Some(END), events)
}

/// FAIL whose lines mention every one of `words`.
#[track_caller]
fn assert_fails(v: PersonVerdict, words: &[&str]) {
    let PersonVerdict::Wrong(lines) = &v else {
        panic!("expected FAIL, got {v:?}");
    };
    let text = lines.join("\n");
    for w in words {
        assert!(text.contains(w), "reason should mention {w:?}:\n{text}");
    }
    assert!(text.contains("person #7"), "names the person:\n{text}");
}

#[test]
fn correct_events_pass_in_any_order() {
    let (truth, mut events) = scenario();
    assert_eq!(verdict(&truth, &events), PersonVerdict::Ok { undecided: 0 });
    events.reverse();
    assert_eq!(verdict(&truth, &events), PersonVerdict::Ok { undecided: 0 });
}

#[test]
fn a_wrong_time_fails() {
    let (truth, mut events) = scenario();
    // `resumed` 500 ms after its contact was acknowledged (the window is 10 ms wide).
    events[2].at += 495;
    assert_fails(
        verdict(&truth, &events),
        &[
            "event 2 (resumed",
            "at: expected [t+12000ms, t+12010ms], got t+12500ms",
        ],
    );
    // A deadline event off its own figures.
    let (truth, mut events) = scenario();
    events[4].at += 1;
    assert_fails(
        verdict(&truth, &events),
        &[
            "event 4 (silence_notice",
            "last_contact_at + 6000 + excluded_outage_ms",
        ],
    );
}

#[test]
fn a_wrong_address_fails() {
    let (truth, mut events) = scenario();
    events[3].address = Some("A".into());
    assert_fails(
        verdict(&truth, &events),
        &[
            "event 3 (address_changed",
            "address: expected address #2, got address #1",
        ],
    );
    let (truth, mut events) = scenario();
    events[5].address = Some("Elsewhere".into());
    assert_fails(
        verdict(&truth, &events),
        &["address: expected address #2, got an address this person never registered"],
    );
    // The address is never printed.
    let PersonVerdict::Wrong(lines) = verdict(&truth, &events) else {
        unreachable!()
    };
    assert!(!lines.join("\n").contains("Elsewhere"));
}

#[test]
fn a_missing_event_fails() {
    let (truth, mut events) = scenario();
    events.remove(2);
    assert_fails(
        verdict(&truth, &events),
        &[
            "events [registered, silence_notice, address_changed, silence_notice, deregistered] but expected [registered, silence_notice, resumed, address_changed, silence_notice, deregistered]",
        ],
    );
}

#[test]
fn other_wrong_fields_fail() {
    let (truth, events) = scenario();
    let mutate = |f: &dyn Fn(&mut Vec<PersonEvent>)| {
        let mut e = events.clone();
        f(&mut e);
        verdict(&truth, &e)
    };
    assert_fails(
        mutate(&|e| e[2].last_contact_at = 2000),
        &["last_contact_at: expected [t+3000ms, t+3010ms], got t+2000ms"],
    );
    assert_fails(
        mutate(&|e| e[5].deregister_after_ms = 11_000),
        &["deregister_after_ms: expected 12000, got 11000"],
    );
    // An outage the fleet never saw, excluded anyway (at kept consistent with it).
    assert_fails(
        mutate(&|e| {
            e[5].excluded_outage_ms = 3000;
            e[5].at += 3000;
        }),
        &["excluded_outage_ms: expected [0, 0] ms, got 3000"],
    );
    // An extra event, and the same event twice.
    assert_fails(
        mutate(&|e| e.push(event(UnregisteredContact, 30_000, 14_005, 0, None))),
        &["but expected"],
    );
    assert_fails(mutate(&|e| e.push(e[0].clone())), &["but expected"]);
    // The first contact's event must describe no earlier contact.
    assert_fails(
        mutate(&|e| e[0].last_contact_at = 1000),
        &["= at (t+1005ms), the first contact"],
    );
}

#[test]
fn deadlines_past_the_horizon_are_optional_but_exact() {
    let (truth, events) = scenario();
    // Looking at 21 s: the notice (due at ~20 s) must be there, the deregistration may not.
    let early = Horizon {
        must: 21_000,
        may: 21_000,
    };
    assert_eq!(
        check_person(&truth, PERSON, Some(early), &events[..5]),
        PersonVerdict::Ok { undecided: 0 }
    );
    assert!(matches!(
        check_person(&truth, PERSON, Some(early), &events[..4]),
        PersonVerdict::Wrong(_)
    ));
    let maybe = Horizon {
        must: 25_000,
        may: 27_000,
    };
    for n in [5, 6] {
        assert_eq!(
            check_person(&truth, PERSON, Some(maybe), &events[..n]),
            PersonVerdict::Ok { undecided: 0 }
        );
    }
}

/// Requests refused at once every 100 ms from `from` to `to` (the platform was down), and one
/// request in flight when it went down, failing slowly.
fn outage(from: Millis, to: Millis) -> Vec<Failure> {
    let mut f = vec![Failure {
        sent: from - 300,
        failed: from + 1000,
        immediate: false,
    }];
    f.extend((from..=to).step_by(100).map(|t| Failure {
        sent: t,
        failed: t + 1,
        immediate: true,
    }));
    f
}

#[test]
fn an_outage_is_checked_within_its_bounds() {
    // Down 4 s..14 s; the person pinged at 3 s and says nothing until 20 s: 17 s of silence of
    // which 9.75 s are excluded (the stamps around the gap: 4000 and 14000, minus one tick),
    // so 7.25 s count: notice at 3005 + 6000 + 9750, then resumed.
    let faults = Faults::from_failures(&outage(4000, 14_000), 1000, 250);
    let truth = one(vec![reg(1000, "A"), ping(3000), ping(20_000)], faults);
    let events = vec![
        event(Registered, 1005, 1005, 0, Some("A")),
        event(SilenceNotice, 18_755, 3005, 9750, Some("A")),
        event(Resumed, 20_005, 3005, 9750, Some("A")),
    ];
    let h = Some(Horizon {
        must: 21_000,
        may: 21_000,
    });
    assert_eq!(
        check_person(&truth, PERSON, h, &events),
        PersonVerdict::Ok { undecided: 0 }
    );
    // The outage not excluded at all: the fleet knows it was (a certain span).
    let mut wrong = events.clone();
    wrong[1].excluded_outage_ms = 0;
    wrong[1].at = 9005;
    wrong[2].excluded_outage_ms = 0;
    let v = check_person(&truth, PERSON, h, &wrong);
    let PersonVerdict::Wrong(lines) = &v else {
        panic!("{v:?}")
    };
    assert!(lines.join("\n").contains("excluded_outage_ms"), "{lines:?}");
}

#[test]
fn an_undecided_silence_allows_each_outcome_and_checks_it() {
    // The second request took 2 s (5 s..7 s): its stamp may be before or after the notice.
    let truth = one(
        vec![
            reg(0, "A"),
            Contact {
                lo: 5000,
                hi: 7000,
                address: None,
            },
        ],
        Faults::default(),
    );
    let h = Some(Horizon {
        must: 8000,
        may: 8000,
    });
    let reg = event(Registered, 5, 5, 0, Some("A"));
    // Stamped at 5500: no notice.
    assert_eq!(
        check_person(&truth, PERSON, h, std::slice::from_ref(&reg)),
        PersonVerdict::Ok { undecided: 1 }
    );
    // Stamped at 6500: notice at 6005, resumed.
    let noticed = vec![
        reg.clone(),
        event(SilenceNotice, 6005, 5, 0, Some("A")),
        event(Resumed, 6500, 5, 0, Some("A")),
    ];
    assert_eq!(
        check_person(&truth, PERSON, h, &noticed),
        PersonVerdict::Ok { undecided: 1 }
    );
    // A `resumed` whose own figures show a silence below the notice threshold.
    let mut wrong = noticed.clone();
    wrong[2].excluded_outage_ms = 1000;
    let v = check_person(&truth, PERSON, h, &wrong);
    let PersonVerdict::Wrong(lines) = &v else {
        panic!("{v:?}")
    };
    assert!(
        lines.join("\n").contains("silence (at - last_contact_at"),
        "{lines:?}"
    );
}

#[test]
fn unacknowledged_pings_make_a_person_ambiguous() {
    let (mut truth, events) = scenario();
    truth
        .persons
        .get_mut(PERSON)
        .unwrap()
        .unacked
        .insert("phone".into(), vec![30_000]);
    assert!(matches!(
        verdict(&truth, &events),
        PersonVerdict::Ambiguous(_)
    ));
}

mod with_the_detector {
    //! The real detector's events for random persons, outages and request windows must PASS.
    use super::*;
    use common::config::{ClockConfig, PolicyConfig};
    use common::record::{Contact as Record, Ping, Registration, Tick};
    use processor::detector::Detector;
    use proptest::prelude::*;
    use std::time::Duration;

    /// One person's actions: gaps (ms) before each contact, and whether it is a registration
    /// (with address number) or a ping; plus the request windows around each stamp.
    type Plan = Vec<(i64, Option<u8>, i64, i64)>;

    fn plan() -> impl Strategy<Value = Plan> {
        proptest::collection::vec(
            (
                prop_oneof![500i64..3000, 3000i64..20_000, 20_000i64..30_000],
                prop_oneof![3 => Just(None), 1 => (0u8..3).prop_map(Some)],
                prop_oneof![3 => 0i64..50, 1 => 0i64..1500],
                prop_oneof![3 => 0i64..50, 1 => 0i64..1500],
            ),
            1..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_detectors_events_pass(
            plans in proptest::collection::vec(plan(), 1..5),
            outages in proptest::collection::vec((5_000i64..150_000, 2_500i64..20_000), 0..3),
        ) {
            // Disjoint outages at least 3 s apart; nothing is stamped inside one.
            let mut spans: Vec<(i64, i64)> = Vec::new();
            let mut sorted = outages.clone();
            sorted.sort();
            for (a, len) in sorted {
                if spans.last().is_none_or(|&(_, b)| a > b + 3000) {
                    spans.push((a, a + len));
                }
            }
            let inside = |t: i64| spans.iter().find(|&&(a, b)| t > a && t < b).copied();
            let mut failures = Vec::new();
            for &(a, b) in &spans {
                failures.extend(outage(a, b));
            }
            // The persons' stamps (moved past an outage they fall in) and request windows.
            let mut records: Vec<(i64, Record)> = Vec::new();
            let mut persons = BTreeMap::new();
            for (n, plan) in plans.iter().enumerate() {
                let id = format!("prop-{n}");
                let mut t = 1000 + n as i64 * 37;
                let mut truth = PersonTruth::default();
                let mut prev_hi = 0;
                for &(gap, reg, before, after) in plan {
                    t += gap;
                    if let Some((_, b)) = inside(t) {
                        t = b + 1;
                    }
                    // The window: from the first attempt that may have landed to the answer.
                    // A window straddling an outage is a request retried through it.
                    let lo = (t - before).max(prev_hi);
                    let hi = t + after;
                    prev_hi = hi;
                    t = t.max(hi); // one request at a time: the next is sent after the answer
                    let stamp = lo + (hi - lo) / 2;
                    let stamp = match inside(stamp) {
                        Some((_, b)) if b <= hi => b,
                        Some((a, _)) => a.max(lo),
                        None => stamp,
                    };
                    let address = reg.map(|r| format!("street {r}"));
                    truth.contacts.push(Contact { lo, hi, address: address.clone() });
                    let rec = match address {
                        Some(address) => Record::Registration(Registration {
                            person_id: id.clone(),
                            device_id: "d".into(),
                            address,
                            lat: None,
                            lon: None,
                            received_at: stamp,
                        }),
                        None => Record::Ping(Ping {
                            person_id: id.clone(),
                            device_id: "d".into(),
                            device_ts: stamp,
                            lat: 55.7,
                            lon: 37.6,
                            accuracy_m: None,
                            received_at: stamp,
                        }),
                    };
                    records.push((stamp, rec));
                }
                persons.insert(id, truth);
            }
            let end = records.iter().map(|r| r.0).max().unwrap_or(0) + 40_000;
            let end = inside(end).map_or(end, |(_, b)| b + 1000);
            for t in (0..=end).step_by(P.tick_ms as usize) {
                if inside(t).is_none() {
                    records.push((t, Record::Tick(Tick { received_at: t, source: "t".into() })));
                }
            }
            // Stable: a contact and a tick of the same millisecond keep the contact first.
            records.sort_by_key(|r| r.0);
            let ms = |m: i64| Duration::from_millis(m as u64);
            let mut d = Detector::new(
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
            let mut out = Vec::new();
            for (_, r) in &records {
                d.apply(r, &mut out);
            }
            let truth = truth_of(persons, Faults::from_failures(&failures, 1000, 250));
            // Deadlines up to one tick before the last tick have surely fired.
            let h = Horizon { must: end - 2 * P.tick_ms, may: end };
            for id in truth.persons.keys() {
                let mine: Vec<PersonEvent> =
                    out.iter().filter(|e| &e.person_id == id).cloned().collect();
                let v = check_person(&truth, id, Some(h), &mine);
                prop_assert!(
                    matches!(v, PersonVerdict::Ok { .. }),
                    "{id}: {v:?}\ncontacts {:?}\nevents {mine:#?}\nfaults {:?}",
                    truth.persons[id].contacts,
                    truth.faults
                );
            }
        }
    }
}
