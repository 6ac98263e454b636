//! Property tests: the real detector against a naive reference model written for clarity
//! (real time, per-person accumulated outage, a scan of every person per step), and the
//! snapshot/restore equivalence.

use common::config::{ClockConfig, PolicyConfig};
use common::record::{Contact, EventKind, Millis, PersonEvent, Ping, Registration, Tick, event_id};
use processor::detector::{Detector, StateCounts};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Cfg {
    notice: i64,
    dereg: i64,
    tick: i64,
    outage: i64,
}

impl Cfg {
    fn detector(&self) -> Detector {
        let ms = |m: i64| Duration::from_millis(m as u64);
        Detector::new(
            PolicyConfig {
                notice_after: ms(self.notice),
                deregister_after: ms(self.dereg),
            },
            ClockConfig {
                tick_interval: ms(self.tick),
                outage_after: ms(self.outage),
            },
        )
        .expect("valid config")
    }
}

#[derive(Debug, Default)]
struct ModelPerson {
    registered: bool,
    noticed: bool,
    deregistered: bool,
    unreg_sent: bool,
    address: String,
    last_contact: Millis,
    /// Outage excluded since the last contact.
    excluded_since: i64,
    seq: u64,
}

/// The reference: real time only. A step from stream time `s` to `r` counts all of the gap
/// toward silence, unless it is an outage (gap > outage_after), in which case only its last
/// tick interval counts. Crossings happen inside the counted (final) part of the step.
#[derive(Debug)]
struct Model {
    cfg: Cfg,
    stream: Option<Millis>,
    persons: BTreeMap<String, ModelPerson>,
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Model {
            cfg,
            stream: None,
            persons: BTreeMap::new(),
        }
    }

    fn event(&self, id: &str, kind: EventKind, at: Millis, lc: Millis, excl: i64) -> PersonEvent {
        let p = &self.persons[id];
        let with_address = !matches!(kind, EventKind::UnregisteredContact);
        PersonEvent {
            event_id: event_id(id, kind, at, p.seq),
            person_id: id.to_string(),
            kind,
            at,
            last_contact_at: lc,
            notice_after_ms: self.cfg.notice,
            deregister_after_ms: self.cfg.dereg,
            excluded_outage_ms: excl,
            address: with_address.then(|| p.address.clone()),
            seq: Some(u32::try_from(p.seq).expect("few transitions in a model run")),
        }
    }

    fn push(
        &mut self,
        out: &mut Vec<PersonEvent>,
        id: &str,
        kind: EventKind,
        at: Millis,
        lc: Millis,
        excl: i64,
    ) {
        out.push(self.event(id, kind, at, lc, excl));
        self.persons.get_mut(id).unwrap().seq = (self.persons[id].seq + 1) & 0xff_ffff;
    }

    fn apply(&mut self, c: &Contact) -> Vec<PersonEvent> {
        let Cfg {
            notice,
            dereg,
            tick,
            outage,
        } = self.cfg;
        let r = c.received_at();
        let mut out = Vec::new();
        match self.stream {
            None => self.stream = Some(r),
            Some(s) if r > s => {
                let gap = r - s;
                let (excl, counted) = if gap > outage {
                    (gap - tick, tick)
                } else {
                    (0, gap)
                };
                let mut due = Vec::new();
                for (id, p) in self.persons.iter_mut() {
                    if p.registered {
                        let before = s - p.last_contact - p.excluded_since;
                        let after = before + counted;
                        if !p.noticed && after >= notice {
                            due.push((r - (after - notice), id.clone(), 0));
                        }
                        if after > dereg {
                            due.push((r - (after - (dereg + 1)), id.clone(), 1));
                        }
                    }
                    p.excluded_since += excl;
                }
                due.sort();
                for (at, id, kind) in due {
                    let (lc, ex) = (
                        self.persons[&id].last_contact,
                        self.persons[&id].excluded_since,
                    );
                    if kind == 0 {
                        self.push(&mut out, &id, EventKind::SilenceNotice, at, lc, ex);
                        self.persons.get_mut(&id).unwrap().noticed = true;
                    } else {
                        self.push(&mut out, &id, EventKind::Deregistered, at, lc, ex);
                        let p = self.persons.get_mut(&id).unwrap();
                        p.registered = false;
                        p.noticed = false;
                        p.deregistered = true;
                        p.address.clear();
                    }
                }
                self.stream = Some(r);
            }
            Some(_) => {}
        }
        let t = self.stream.unwrap();
        let (id, reg) = match c {
            Contact::Tick(_) => return out,
            Contact::Ping(p) => (p.person_id.clone(), None),
            Contact::Registration(r) => (r.person_id.clone(), Some(r.address.clone())),
        };
        let known = self.persons.contains_key(&id);
        let p = self.persons.entry(id.clone()).or_default();
        let (prev_lc, prev_excl) = if known {
            (p.last_contact, p.excluded_since)
        } else {
            (t, 0)
        };
        p.last_contact = t;
        p.excluded_since = 0;
        if p.registered && p.noticed {
            p.noticed = false;
            self.push(&mut out, &id, EventKind::Resumed, t, prev_lc, prev_excl);
        }
        let p = self.persons.get_mut(&id).unwrap();
        match reg {
            None => {
                if !p.registered && !p.unreg_sent {
                    p.unreg_sent = true;
                    self.push(
                        &mut out,
                        &id,
                        EventKind::UnregisteredContact,
                        t,
                        prev_lc,
                        prev_excl,
                    );
                }
            }
            Some(a) if !p.registered => {
                p.registered = true;
                p.deregistered = false;
                p.unreg_sent = false;
                p.address = a;
                self.push(&mut out, &id, EventKind::Registered, t, prev_lc, prev_excl);
            }
            Some(a) => {
                if p.address != a {
                    p.address = a;
                    self.push(
                        &mut out,
                        &id,
                        EventKind::AddressChanged,
                        t,
                        prev_lc,
                        prev_excl,
                    );
                }
            }
        }
        out
    }

    fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for p in self.persons.values() {
            // The status of the person's latest event: a ping after a deregistration sends
            // `unregistered_contact`, and the person counts as unregistered from then on.
            match (p.registered, p.noticed, p.deregistered && !p.unreg_sent) {
                (true, false, _) => c.registered += 1,
                (true, true, _) => c.silent_noticed += 1,
                (false, _, true) => c.deregistered += 1,
                (false, _, false) => c.unregistered_contact += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone)]
enum Op {
    Reg(u8, u8),
    Ping(u8),
    Tick,
}

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    (1i64..40, 1i64..40, 1i64..5, 1i64..20).prop_map(|(n, d, tick, o)| Cfg {
        notice: n,
        dereg: n + d,
        tick,
        outage: tick + o,
    })
}

/// (operation, clock advance, lag behind the clock for out-of-order records)
fn ops_strategy(max_gap: i64) -> impl Strategy<Value = Vec<(Op, i64, i64)>> {
    let op = prop_oneof![
        2 => (0u8..5, 0u8..3).prop_map(|(p, a)| Op::Reg(p, a)),
        5 => (0u8..5).prop_map(Op::Ping),
        3 => Just(Op::Tick),
    ];
    let advance = prop_oneof![
        6 => 0i64..4,
        3 => 0i64..25,
        1 => 20i64..max_gap,
    ];
    let lag = prop_oneof![8 => Just(0i64), 1 => 1i64..60];
    proptest::collection::vec((op, advance, lag), 1..250)
}

fn contacts(ops: &[(Op, i64, i64)]) -> Vec<Contact> {
    let mut clock: Millis = 1_700_000_000_000;
    ops.iter()
        .map(|(op, adv, lag)| {
            clock += adv;
            let received_at = clock - lag;
            match op {
                Op::Reg(p, a) => Contact::Registration(Registration {
                    person_id: format!("person-{p}"),
                    device_id: "d".into(),
                    address: format!("address {a}"),
                    lat: None,
                    lon: None,
                    received_at,
                }),
                Op::Ping(p) => Contact::Ping(Ping {
                    person_id: format!("person-{p}"),
                    device_id: "d".into(),
                    // Deliberately wild: must not matter.
                    device_ts: received_at * 3 - 77,
                    lat: 55.75,
                    lon: 37.61,
                    accuracy_m: None,
                    received_at,
                }),
                Op::Tick => Contact::Tick(Tick {
                    received_at,
                    source: "i".into(),
                }),
            }
        })
        .collect()
}

fn run_all(det: &mut Detector, cs: &[Contact]) -> Vec<PersonEvent> {
    let mut out = Vec::new();
    for c in cs {
        det.apply(c, &mut out);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn detector_matches_reference_model(cfg in cfg_strategy(), ops in ops_strategy(120)) {
        let cs = contacts(&ops);
        let mut det = cfg.detector();
        let mut model = Model::new(cfg);
        for (i, c) in cs.iter().enumerate() {
            let mut got = Vec::new();
            det.apply(c, &mut got);
            let want = model.apply(c);
            prop_assert_eq!(&got, &want, "record {} = {:?}", i, c);
            prop_assert_eq!(det.stream_time(), model.stream);
        }
        prop_assert_eq!(det.counts(), model.counts());
        prop_assert_eq!(det.persons(), model.persons.len() as u64);
    }

    #[test]
    fn snapshot_restore_continues_exactly(
        cfg in cfg_strategy(),
        ops in ops_strategy(120),
        splits in proptest::collection::btree_set(0usize..250, 0..6),
        reverse in any::<bool>(),
    ) {
        let cs = contacts(&ops);
        let golden = run_all(&mut cfg.detector(), &cs);

        let mut det = cfg.detector();
        let mut changelog: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut got = Vec::new();
        for (i, c) in cs.iter().enumerate() {
            if splits.contains(&i) {
                for (id, bytes) in det.take_dirty() {
                    changelog.insert(id, bytes.expect("never removed"));
                }
                let clock = det.clock_snapshot();
                det = cfg.detector();
                // Order of restore must not matter; clock before or after persons either.
                let entries: Vec<_> = if reverse {
                    changelog.iter().rev().collect()
                } else {
                    changelog.iter().collect()
                };
                if reverse {
                    det.restore_clock(&clock).unwrap();
                }
                for (id, bytes) in entries {
                    det.restore_person(id, bytes).unwrap();
                }
                if !reverse {
                    det.restore_clock(&clock).unwrap();
                }
            }
            det.apply(c, &mut got);
        }
        prop_assert_eq!(got, golden);
    }

    #[test]
    fn batch_apply_equals_one_by_one(
        cfg in cfg_strategy(),
        ops in ops_strategy(120),
        chunk in 1usize..40,
    ) {
        let cs = contacts(&ops);
        let mut one = cfg.detector();
        let golden = run_all(&mut one, &cs);
        let mut det = cfg.detector();
        let mut got = Vec::new();
        let inputs: Vec<_> = cs.iter().map(common::Contact::as_ref).collect();
        for group in inputs.chunks(chunk) {
            det.apply_batch(group, &mut got);
        }
        prop_assert_eq!(got, golden);
        prop_assert_eq!(det.counts(), one.counts());
        prop_assert_eq!(det.persons(), one.persons());
        let mut a = det.take_dirty();
        let mut b = one.take_dirty();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn replay_is_byte_identical(cfg in cfg_strategy(), ops in ops_strategy(120)) {
        let cs = contacts(&ops);
        let a = serde_json::to_vec(&run_all(&mut cfg.detector(), &cs)).unwrap();
        let b = serde_json::to_vec(&run_all(&mut cfg.detector(), &cs)).unwrap();
        prop_assert_eq!(a, b);
    }
}

/// A long run with realistic (default) thresholds in scaled time, many persons, and a
/// policy with notice ≤ deregistration/2 so `resumed` moves deadlines earlier.
#[test]
fn larger_fixed_runs_match_model() {
    for (seed, cfg) in [
        (
            1u64,
            Cfg {
                notice: 48,
                dereg: 72,
                tick: 1,
                outage: 30,
            },
        ),
        (
            2,
            Cfg {
                notice: 10,
                dereg: 100,
                tick: 2,
                outage: 9,
            },
        ),
        (
            3,
            Cfg {
                notice: 500,
                dereg: 501,
                tick: 5,
                outage: 50,
            },
        ),
    ] {
        let mut x = seed;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let ops: Vec<(Op, i64, i64)> = (0..20_000)
            .map(|_| {
                let op = match rnd(10) {
                    0 => Op::Reg(rnd(200) as u8, rnd(3) as u8),
                    1..=6 => Op::Ping(rnd(200) as u8),
                    _ => Op::Tick,
                };
                let adv = if rnd(500) == 0 { 1000 } else { rnd(3) as i64 };
                let lag = if rnd(20) == 0 { rnd(40) as i64 } else { 0 };
                (op, adv, lag)
            })
            .collect();
        let cs = contacts(&ops);
        let mut det = cfg.detector();
        let mut model = Model::new(cfg);
        let mut n = 0;
        for c in &cs {
            let mut got = Vec::new();
            det.apply(c, &mut got);
            assert_eq!(got, model.apply(c), "seed {seed}");
            n += got.len();
        }
        assert_eq!(det.counts(), model.counts());
        assert!(n > 500, "seed {seed}: only {n} events");
    }
}
