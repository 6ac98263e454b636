//! Unit tests of every transition and edge, with the default policy (48h notice, 72h
//! deregistration, 1s ticks, 30s outage threshold).

use common::config::{ClockConfig, PolicyConfig};
use common::record::{Contact, EventKind, Millis, PersonEvent, Ping, Registration, Tick};
use processor::detector::{Detector, DetectorError, StateCounts};
use std::time::Duration;

const S: i64 = 1000;
const H: i64 = 3600 * S;
const T0: Millis = 1_756_684_800_000; // 2025-09-01T00:00:00Z
use EventKind::*;

fn policy(n: i64, d: i64) -> PolicyConfig {
    PolicyConfig {
        notice_after: Duration::from_millis(n as u64),
        deregister_after: Duration::from_millis(d as u64),
    }
}
fn clock() -> ClockConfig {
    ClockConfig {
        tick_interval: Duration::from_secs(1),
        outage_after: Duration::from_secs(30),
    }
}

struct H {
    d: Detector,
    log: Vec<PersonEvent>,
}

impl H {
    fn new() -> Self {
        H {
            d: Detector::new(policy(48 * H, 72 * H), clock()).unwrap(),
            log: Vec::new(),
        }
    }
    fn apply(&mut self, c: Contact) -> Vec<(EventKind, String, Millis)> {
        let mut out = Vec::new();
        self.d.apply(&c, &mut out);
        self.log.extend(out.iter().cloned());
        out.into_iter()
            .map(|e| (e.kind, e.person_id, e.at))
            .collect()
    }
    fn ping(&mut self, id: &str, t: Millis) -> Vec<(EventKind, String, Millis)> {
        self.apply(Contact::Ping(Ping {
            person_id: id.into(),
            device_id: "dev".into(),
            device_ts: 0,
            lat: 55.7,
            lon: 37.6,
            accuracy_m: None,
            received_at: t,
        }))
    }
    fn reg(&mut self, id: &str, addr: &str, t: Millis) -> Vec<(EventKind, String, Millis)> {
        self.apply(Contact::Registration(Registration {
            person_id: id.into(),
            device_id: "dev".into(),
            address: addr.into(),
            lat: None,
            lon: None,
            received_at: t,
        }))
    }
    fn tick(&mut self, t: Millis) -> Vec<(EventKind, String, Millis)> {
        self.apply(Contact::Tick(Tick {
            received_at: t,
            source: "i1".into(),
        }))
    }
    /// Ticks every second from the current stream time up to and including `t`.
    fn tick_until(&mut self, t: Millis) -> Vec<(EventKind, String, Millis)> {
        let mut all = Vec::new();
        let mut now = self.d.stream_time().unwrap_or(t);
        while now < t {
            now = (now + S).min(t);
            all.extend(self.tick(now));
        }
        all
    }
    fn last(&self) -> &PersonEvent {
        self.log.last().unwrap()
    }
}

fn ev(k: EventKind, id: &str, at: Millis) -> (EventKind, String, Millis) {
    (k, id.to_string(), at)
}

#[test]
fn registration_address_change_and_plain_contacts() {
    let mut h = H::new();
    assert_eq!(h.reg("a", "Tverskaya 1", T0), vec![ev(Registered, "a", T0)]);
    let e = h.last().clone();
    assert_eq!((e.last_contact_at, e.excluded_outage_ms), (T0, 0));
    assert_eq!(e.address.as_deref(), Some("Tverskaya 1"));
    assert_eq!((e.notice_after_ms, e.deregister_after_ms), (48 * H, 72 * H));
    assert!(
        h.reg("a", "Tverskaya 1", T0 + S).is_empty(),
        "same address: contact only"
    );
    assert!(h.ping("a", T0 + 2 * S).is_empty());
    assert_eq!(
        h.reg("a", "Arbat 2", T0 + 3 * S),
        vec![ev(AddressChanged, "a", T0 + 3 * S)]
    );
    assert_eq!(h.last().address.as_deref(), Some("Arbat 2"));
    assert_eq!(
        h.last().last_contact_at,
        T0 + 2 * S,
        "the contact before this one"
    );
    assert_eq!(
        h.d.counts(),
        StateCounts {
            registered: 1,
            ..Default::default()
        }
    );
}

#[test]
fn notice_exactly_at_threshold_not_a_millisecond_before() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    assert!(h.tick_until(T0 + 48 * H - 1).is_empty());
    assert_eq!(
        h.tick(T0 + 48 * H),
        vec![ev(SilenceNotice, "a", T0 + 48 * H)]
    );
    assert_eq!(h.last().last_contact_at, T0);
    assert_eq!(h.last().address.as_deref(), Some("x"));
    assert_eq!(h.d.counts().silent_noticed, 1);
    // Once per silence.
    assert!(
        h.tick_until(T0 + 72 * H).is_empty(),
        "72h exactly: not yet deregistered"
    );
    assert_eq!(
        h.tick(T0 + 72 * H + 1),
        vec![ev(Deregistered, "a", T0 + 72 * H + 1)]
    );
    assert_eq!(
        h.last().address.as_deref(),
        Some("x"),
        "the last address, to contest it"
    );
    assert_eq!(
        h.d.counts(),
        StateCounts {
            deregistered: 1,
            ..Default::default()
        }
    );
    assert!(h.tick_until(T0 + 200 * H).is_empty(), "deregistered once");
}

#[test]
fn deadline_crossed_inside_a_step_reports_the_crossing_time() {
    let mut h = H::new();
    h.reg("a", "x", T0 + 300); // off the tick grid
    h.tick_until(T0 + 48 * H - 1);
    assert_eq!(
        h.tick(T0 + 48 * H + 999),
        vec![ev(SilenceNotice, "a", T0 + 48 * H + 300)]
    );
}

#[test]
fn contact_exactly_at_notice_threshold_is_notice_then_resumed() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.tick_until(T0 + 48 * H - 1);
    assert_eq!(
        h.ping("a", T0 + 48 * H),
        vec![
            ev(SilenceNotice, "a", T0 + 48 * H),
            ev(Resumed, "a", T0 + 48 * H)
        ]
    );
    assert_eq!(
        h.last().last_contact_at,
        T0,
        "resumed describes the silence it ends"
    );
    assert_eq!(h.d.counts().registered, 1);
}

#[test]
fn contact_at_72h_saves_registration_at_72h_plus_1ms_does_not() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.reg("b", "y", T0);
    h.tick_until(T0 + 72 * H - 1);
    assert_eq!(
        h.ping("a", T0 + 72 * H),
        vec![ev(Resumed, "a", T0 + 72 * H)]
    );
    assert_eq!(
        h.ping("b", T0 + 72 * H + 1),
        vec![
            ev(Deregistered, "b", T0 + 72 * H + 1),
            ev(UnregisteredContact, "b", T0 + 72 * H + 1)
        ]
    );
    assert_eq!(h.last().address, None);
    // The status of "b" is that of its latest event, here as in ClickHouse's person_status.
    assert_eq!(
        h.d.person("b").map(|p| p.status),
        Some(UnregisteredContact.status())
    );
    assert_eq!(
        h.d.counts(),
        StateCounts {
            registered: 1,
            unregistered_contact: 1,
            ..Default::default()
        }
    );
    // Same-millisecond events are told apart by their sequence numbers.
    let b: Vec<_> = h.log.iter().filter(|e| e.person_id == "b").collect();
    let seqs: Vec<_> = b.iter().map(|e| (e.kind, e.seq)).collect();
    assert_eq!(
        seqs,
        vec![
            (Registered, Some(0)),
            (SilenceNotice, Some(1)),
            (Deregistered, Some(2)),
            (UnregisteredContact, Some(3))
        ]
    );
}

#[test]
fn deregistered_person_stays_deregistered_until_heard_from() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.tick_until(T0 + 72 * H + 1);
    assert_eq!(
        h.d.person("a").map(|p| p.status),
        Some(Deregistered.status())
    );
    assert_eq!(h.d.counts().deregistered, 1);
    h.ping("a", T0 + 80 * H);
    assert_eq!(
        h.d.counts(),
        StateCounts {
            unregistered_contact: 1,
            ..Default::default()
        }
    );
    h.reg("a", "x", T0 + 81 * H);
    assert_eq!(h.last().kind, Registered);
    assert_eq!(h.d.counts().registered, 1);
}

#[test]
fn two_day_outage_deregisters_nobody() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.tick_until(T0 + H);
    // Ingest is down for two days; the first tick afterwards:
    let back = T0 + H + 48 * H;
    assert!(h.tick(back).is_empty());
    let excluded = 48 * H - S;
    assert_eq!(h.d.excluded_outage_ms(), excluded);
    assert_eq!(h.d.virtual_time(), Some(T0 + H + S));
    assert!(h.tick_until(back + 47 * H - S - 1).is_empty());
    // Notice 48h of *counted* silence after the last contact.
    let at = T0 + 48 * H + excluded;
    assert_eq!(h.tick_until(at), vec![ev(SilenceNotice, "a", at)]);
    assert_eq!(
        (h.last().excluded_outage_ms, h.last().last_contact_at),
        (excluded, T0)
    );
    let at2 = T0 + 72 * H + 1 + excluded;
    assert_eq!(h.tick_until(at2), vec![ev(Deregistered, "a", at2)]);
    assert_eq!(h.last().excluded_outage_ms, excluded);
}

#[test]
fn outage_threshold_is_strict_and_only_the_last_tick_counts() {
    let mut h = H::new();
    h.tick(T0);
    h.tick(T0 + 30 * S);
    assert_eq!(
        h.d.excluded_outage_ms(),
        0,
        "a gap of exactly outage_after is not an outage"
    );
    h.tick(T0 + 60 * S + 1);
    assert_eq!(h.d.excluded_outage_ms(), 30 * S + 1 - S);
    assert_eq!(h.d.virtual_time(), Some(T0 + 31 * S));
    // Out-of-order record after an outage neither moves time back nor adds outage.
    h.ping("p", T0);
    assert_eq!(h.d.stream_time(), Some(T0 + 60 * S + 1));
    assert_eq!(h.last().at, T0 + 60 * S + 1);
}

#[test]
fn outage_straddling_a_deadline() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.reg("b", "y", T0 + 10 * S);
    h.tick_until(T0 + 48 * H - 500);
    // One hour outage: virtual time advances by one tick only, so "a" (due 500 ms later)
    // fires inside the counted last second, "b" (due 10 s later) is pushed out by the hour.
    let back = T0 + 49 * H - 500;
    let excl = H - S;
    assert_eq!(
        h.tick(back),
        vec![ev(SilenceNotice, "a", T0 + 48 * H + excl)]
    );
    let at = h.last().at;
    assert!(
        at > back - S && at <= back,
        "crossing lies in the counted last tick interval"
    );
    assert_eq!(h.last().excluded_outage_ms, excl);
    assert!(h.tick_until(T0 + 48 * H + 10 * S + excl - 1).is_empty());
    assert_eq!(
        h.tick_until(T0 + 48 * H + 10 * S + excl),
        vec![ev(SilenceNotice, "b", T0 + 48 * H + 10 * S + excl)]
    );
}

#[test]
fn registration_during_silence_is_resumed_then_address_changed() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.reg("b", "y", T0);
    h.tick_until(T0 + 50 * H);
    assert_eq!(
        h.reg("a", "x", T0 + 50 * H + 1),
        vec![ev(Resumed, "a", T0 + 50 * H + 1)]
    );
    assert_eq!(
        h.reg("b", "z", T0 + 50 * H + 2),
        vec![
            ev(Resumed, "b", T0 + 50 * H + 2),
            ev(AddressChanged, "b", T0 + 50 * H + 2)
        ]
    );
    // A registration before any notice is a plain contact that restarts the silence.
    h.reg("c", "q", T0 + 50 * H + 3);
    h.tick_until(T0 + 60 * H);
    h.reg("c", "q", T0 + 60 * H);
    assert_eq!(
        h.tick_until(T0 + 108 * H),
        vec![
            ev(SilenceNotice, "a", T0 + 98 * H + 1),
            ev(SilenceNotice, "b", T0 + 98 * H + 2),
            ev(SilenceNotice, "c", T0 + 108 * H),
        ],
        "each after their own silence; c's restarted at its second registration"
    );
}

#[test]
fn ticks_only_move_time_and_emit_nothing() {
    let mut h = H::new();
    assert_eq!(h.d.stream_time(), None);
    assert!(h.tick(T0).is_empty());
    assert!(h.tick_until(T0 + 100 * H).is_empty());
    assert!(h.tick(T0).is_empty(), "late tick");
    assert_eq!(h.d.stream_time(), Some(T0 + 100 * H));
    assert_eq!((h.d.persons(), h.d.counts()), (0, StateCounts::default()));
}

#[test]
fn out_of_order_contact_counts_at_stream_time() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.tick_until(T0 + 10 * H);
    // Another ingest instance with a clock 5 s behind:
    assert!(h.ping("a", T0 + 10 * H - 5 * S).is_empty());
    assert_eq!(h.d.stream_time(), Some(T0 + 10 * H));
    assert!(h.tick_until(T0 + 58 * H - 1).is_empty());
    assert_eq!(
        h.tick(T0 + 58 * H),
        vec![ev(SilenceNotice, "a", T0 + 58 * H)]
    );
    assert_eq!(h.last().last_contact_at, T0 + 10 * H);
    // A late registration while not registered still registers, at stream time.
    assert_eq!(h.reg("n", "x", T0), vec![ev(Registered, "n", T0 + 58 * H)]);
}

#[test]
fn device_time_never_matters() {
    let run = |skew: i64| {
        let mut d = Detector::new(policy(48 * H, 72 * H), clock()).unwrap();
        let mut out = Vec::new();
        for i in 0..200 {
            d.apply(
                &Contact::Tick(Tick {
                    received_at: T0 + i * 30 * S,
                    source: String::new(),
                }),
                &mut out,
            );
            if i % 50 == 0 {
                d.apply(
                    &Contact::Ping(Ping {
                        person_id: "a".into(),
                        device_id: "d".into(),
                        device_ts: T0 + skew * i,
                        lat: 0.0,
                        lon: 0.0,
                        accuracy_m: None,
                        received_at: T0 + i * 30 * S,
                    }),
                    &mut out,
                );
            }
        }
        out
    };
    assert_eq!(run(0), run(-1_000_000_000));
}

#[test]
fn reregistration_after_deregistration_and_unregistered_contact_once() {
    let mut h = H::new();
    assert_eq!(h.ping("a", T0), vec![ev(UnregisteredContact, "a", T0)]);
    assert_eq!(h.last().address, None);
    assert!(h.ping("a", T0 + S).is_empty(), "once");
    assert_eq!(h.d.counts().unregistered_contact, 1);
    assert_eq!(
        h.reg("a", "x", T0 + 2 * S),
        vec![ev(Registered, "a", T0 + 2 * S)]
    );
    h.tick_until(T0 + 2 * S + 72 * H + 1);
    assert_eq!(h.last().kind, Deregistered);
    assert_eq!(
        h.ping("a", T0 + 80 * H),
        vec![ev(UnregisteredContact, "a", T0 + 80 * H)]
    );
    assert!(h.ping("a", T0 + 80 * H + 1).is_empty());
    // Pinging after the deregistration: unregistered (the status of the latest event, as in
    // ClickHouse's person_status), no longer deregistered.
    assert_eq!(
        h.d.counts(),
        StateCounts {
            unregistered_contact: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        h.reg("a", "y", T0 + 81 * H),
        vec![ev(Registered, "a", T0 + 81 * H)]
    );
    assert_eq!(h.last().address.as_deref(), Some("y"));
    assert_eq!(
        h.tick_until(T0 + 129 * H),
        vec![ev(SilenceNotice, "a", T0 + 129 * H)]
    );
}

#[test]
fn event_ids_are_stable_and_distinct() {
    let run = || {
        let mut h = H::new();
        for p in ["a", "b", "c"] {
            h.reg(p, "x", T0);
            h.ping(p, T0 + 1);
            h.reg(p, "y", T0 + 2);
        }
        h.tick_until(T0 + 80 * H);
        h.reg("a", "x", T0 + 80 * H);
        h.tick_until(T0 + 160 * H);
        h.log
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(a.len() >= 12);
    let ids: std::collections::BTreeSet<_> = a.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), a.len(), "every transition has its own id");
}

#[test]
fn simultaneous_deadlines_fire_by_deadline_then_person_id_before_the_record() {
    let mut h = H::new();
    h.reg("zed", "x", T0);
    h.reg("amy", "x", T0);
    h.reg("mid", "x", T0 + 1);
    h.tick_until(T0 + 48 * H - S);
    assert_eq!(
        h.reg("new", "x", T0 + 48 * H + 5),
        vec![
            ev(SilenceNotice, "amy", T0 + 48 * H),
            ev(SilenceNotice, "zed", T0 + 48 * H),
            ev(SilenceNotice, "mid", T0 + 48 * H + 1),
            ev(Registered, "new", T0 + 48 * H + 5),
        ]
    );
}

#[test]
fn invalid_configuration_lists_every_problem() {
    let err = Detector::new(
        policy(72 * H, 48 * H),
        ClockConfig {
            tick_interval: Duration::ZERO,
            outage_after: Duration::ZERO,
        },
    )
    .unwrap_err();
    let DetectorError::InvalidConfig { problems } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(err.to_string().contains("must be shorter"), "{err}");
    assert!(Detector::new(policy(0, 0), clock()).is_err());
    // Sub-millisecond thresholds would silently round to zero.
    let sub = PolicyConfig {
        notice_after: Duration::from_micros(500),
        deregister_after: Duration::from_micros(900),
    };
    assert!(Detector::new(sub, clock()).is_err());
}

#[test]
fn restore_is_only_for_a_fresh_detector_and_checks_its_input() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    // The snapshot as the service gets it: from the changelog drain.
    let mut dirty = h.d.take_dirty();
    assert_eq!(dirty.len(), 1);
    let (id, snap) = dirty.remove(0);
    assert_eq!(id, "a");
    let snap = snap.unwrap();
    let clock_bytes = h.d.clock_snapshot();
    assert_eq!(
        h.d.restore_person("a", &snap),
        Err(DetectorError::RestoreAfterStart)
    );
    assert_eq!(
        h.d.restore_clock(&clock_bytes),
        Err(DetectorError::RestoreAfterStart)
    );

    let mut fresh = Detector::new(policy(48 * H, 72 * H), clock()).unwrap();
    assert!(fresh.restore_clock(&clock_bytes[..5]).is_err());
    let mut bad = clock_bytes;
    bad[0] = 7;
    assert!(fresh.restore_clock(&bad).is_err());
    assert!(fresh.restore_person("a", &snap[..3]).is_err());
    fresh.restore_person("a", &snap).unwrap();
    fresh.restore_person("a", &snap).unwrap(); // a changelog may repeat a key
    fresh.restore_clock(&clock_bytes).unwrap();
    assert_eq!(fresh.persons(), 1);
    assert_eq!(fresh.counts().registered, 1);
    assert_eq!(fresh.stream_time(), Some(T0));
    let mut out = Vec::new();
    fresh.apply(
        &Contact::Tick(Tick {
            received_at: T0 + 48 * H + 1,
            source: String::new(),
        }),
        &mut out,
    );
    // 48h in one jump is an outage: nothing fires.
    assert!(out.is_empty());
}

#[test]
fn take_dirty_reports_each_changed_person_once() {
    let mut h = H::new();
    h.reg("a", "x", T0);
    h.ping("a", T0 + 1);
    h.ping("b", T0 + 2);
    let d = h.d.take_dirty();
    assert_eq!(
        d.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(d.iter().all(|(_, b)| b.as_ref().is_some_and(|b| b[0] == 1)));
    assert!(h.d.take_dirty().is_empty());
    h.tick(T0 + 3);
    assert!(h.d.take_dirty().is_empty(), "ticks change no person");
    h.ping("a", T0 + 4);
    assert_eq!(h.d.dirty_len(), 1);
}

/// The changelog values as the running system writes them (format version 1), captured from
/// the detector before the format moved into `common::codec::changelog`: stored changelogs
/// must keep restoring, so these bytes must not change.
#[test]
fn changelog_values_are_byte_identical_to_version_1() {
    let mut d = Detector::new(policy(10 * S, 20 * S), clock()).unwrap();
    let mut out = Vec::new();
    let ping = |id: &str, t| {
        Contact::Ping(Ping {
            person_id: id.into(),
            device_id: "d".into(),
            device_ts: 0,
            lat: 0.0,
            lon: 0.0,
            accuracy_m: None,
            received_at: t,
        })
    };
    let tick = |t| {
        Contact::Tick(Tick {
            received_at: t,
            source: String::new(),
        })
    };
    d.apply(
        &Contact::Registration(Registration {
            person_id: "p".into(),
            device_id: "d".into(),
            address: "Arbat 1".into(),
            lat: None,
            lon: None,
            received_at: T0,
        }),
        &mut out,
    );
    d.apply(&ping("q", T0 + 1), &mut out);
    for s in 1..=12 {
        d.apply(&tick(T0 + s * S), &mut out);
    }
    d.apply(&tick(T0 + 60 * S), &mut out); // an outage: 47 s excluded
    d.apply(&ping("p", T0 + 60 * S + 500), &mut out);
    assert_eq!(
        out.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [Registered, UnregisteredContact, SilenceNotice, Resumed]
    );
    let mut dirty = d.take_dirty();
    dirty.sort();
    let p: &[u8] = &[
        1, 1, 3, 0, 0, 0, 84, 188, 147, 2, 153, 1, 0, 0, 188, 4, 147, 2, 153, 1, 0, 0, 65, 114, 98,
        97, 116, 32, 49,
    ];
    let q: &[u8] = &[
        1, 8, 1, 0, 0, 0, 1, 208, 146, 2, 153, 1, 0, 0, 1, 208, 146, 2, 153, 1, 0, 0,
    ];
    assert_eq!(
        dirty,
        [
            ("p".to_string(), Some(p.to_vec())),
            ("q".to_string(), Some(q.to_vec()))
        ]
    );
    let clock_bytes: [u8; 18] = [
        1, 1, 84, 188, 147, 2, 153, 1, 0, 0, 152, 183, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(d.clock_snapshot(), clock_bytes);
    // And they restore: a fresh detector continues from them.
    let mut fresh = Detector::new(policy(10 * S, 20 * S), clock()).unwrap();
    fresh.restore_person("p", p).unwrap();
    fresh.restore_person("q", q).unwrap();
    fresh.restore_clock(&clock_bytes).unwrap();
    assert_eq!(fresh.counts(), d.counts());
    assert_eq!(fresh.virtual_time(), d.virtual_time());
}
