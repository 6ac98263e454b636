//! `person_status FINAL` tells what the detector decided, for every person: random contact
//! sequences go through the detector; its events go through the sink's own decoding into
//! `person_events` on the test ClickHouse (18.16) and on a current ClickHouse (chDB, through
//! `tests/chdb/run --person-status`); each person's row must equal the detector's state as of
//! that person's latest event: status, address, last contact, kind and time of that event.
//!
//! The generator steps time by 0 ms more often than by anything else, and by exactly the
//! thresholds, so that several events share one millisecond: a contact exactly at the notice
//! threshold (silence_notice, resumed), a registration after a notice (resumed,
//! address_changed), a ping just past the deadline (deregistered, unregistered_contact). Events
//! are inserted shuffled, in several blocks, some twice (a re-delivery): the table must not
//! depend on insertion order.
//!
//! Also: a database that an older sink left (migrations 0001-0003, events without `seq`) takes
//! migration 0004 without losing a row, and its person_status is then right for the
//! same-millisecond cases that 0002's kind ranks got wrong.

use common::codec::event;
use common::config::{ClockConfig, PolicyConfig};
use common::record::{Contact, Millis, PersonEvent, PersonStatus, Ping, Registration, Tick};
use processor::detector::Detector;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sink::ServerVersion;
use sink::rows::{Decoded, EventRow, Source, decode};
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::Db;

const NOTICE: i64 = 100;
const DEREG: i64 = 250;
const TICK: i64 = 10;
const OUTAGE: i64 = 1000;
const T0: Millis = 1_700_000_000_000;

fn detector() -> Detector {
    let ms = |m: i64| Duration::from_millis(m as u64);
    Detector::new(
        PolicyConfig {
            notice_after: ms(NOTICE),
            deregister_after: ms(DEREG),
        },
        ClockConfig {
            tick_interval: ms(TICK),
            outage_after: ms(OUTAGE),
        },
    )
    .expect("valid policy")
}

#[derive(Debug, Clone)]
enum Act {
    Ping,
    Register(u8),
    Tick,
}

/// One record: who, what, and how far stream time moves before it (may be negative: a record
/// stamped earlier by another ingest instance).
#[derive(Debug, Clone)]
struct Step {
    person: u8,
    act: Act,
    dt: i64,
}

#[derive(Debug, Clone)]
struct World {
    steps: Vec<Step>,
    /// Shuffles and splits the inserts.
    seed: u64,
}

fn world() -> impl Strategy<Value = World> {
    let act = prop_oneof![
        4 => Just(Act::Ping),
        3 => (0u8..3).prop_map(Act::Register),
        2 => Just(Act::Tick),
    ];
    let dt = prop_oneof![
        8 => Just(0i64),
        1 => Just(1i64),
        3 => Just(TICK),
        1 => Just(NOTICE - 1),
        2 => Just(NOTICE),
        1 => Just(NOTICE + 1),
        1 => Just(DEREG - NOTICE),
        1 => Just(DEREG + 1),
        1 => Just(OUTAGE + 500),
        1 => Just(-3i64),
        1 => 0i64..300,
    ];
    let step = (0u8..5, act, dt).prop_map(|(person, act, dt)| Step { person, act, dt });
    (prop::collection::vec(step, 1..80), any::<u64>())
        .prop_map(|(steps, seed)| World { steps, seed })
}

/// What person_status must say about one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Expected {
    person_id: String,
    status: String,
    kind: String,
    since_ms: i64,
    last_contact_at_ms: i64,
    /// `None` is NULL.
    address: Option<String>,
}

/// Runs `w` through the detector: its events, and the expected row of every person that has
/// one. Persons are `{tag}-p{n}`.
fn run(w: &World, tag: &str) -> (Vec<PersonEvent>, Vec<Expected>) {
    let mut det = detector();
    let mut t = T0;
    let mut all = Vec::new();
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    // The address each person last had while registered (a deregistration carries it).
    let mut registered_at: BTreeMap<String, String> = BTreeMap::new();
    for s in &w.steps {
        t += s.dt;
        let id = format!("{tag}-p{}", s.person);
        let c = match s.act {
            Act::Ping => Contact::Ping(Ping {
                person_id: id.clone(),
                device_id: "d".into(),
                device_ts: t,
                lat: 55.75,
                lon: 37.62,
                accuracy_m: None,
                received_at: t,
            }),
            Act::Register(a) => Contact::Registration(Registration {
                person_id: id.clone(),
                device_id: "d".into(),
                address: format!("Arbat {a}"),
                lat: None,
                lon: None,
                received_at: t,
            }),
            Act::Tick => Contact::Tick(Tick {
                received_at: t,
                source: "i".into(),
            }),
        };
        let mut out = Vec::new();
        det.apply(&c, &mut out);
        for e in &out {
            let st = det
                .person(&e.person_id)
                .expect("a person with an event is known");
            let address = match st.status {
                PersonStatus::Registered | PersonStatus::Silent => Some(st.address.to_string()),
                PersonStatus::Deregistered => registered_at.get(&e.person_id).cloned(),
                PersonStatus::Unregistered => None,
            };
            expected.insert(
                e.person_id.clone(),
                Expected {
                    person_id: e.person_id.clone(),
                    status: st.status.as_str().into(),
                    kind: e.kind.as_str().into(),
                    since_ms: e.at,
                    last_contact_at_ms: st.last_contact_at,
                    address,
                },
            );
        }
        for e in &out {
            let st = det.person(&e.person_id).expect("known");
            if matches!(st.status, PersonStatus::Registered | PersonStatus::Silent) {
                registered_at.insert(e.person_id.clone(), st.address.to_string());
            }
        }
        if let Some(st) = det.person(&id)
            && matches!(st.status, PersonStatus::Registered | PersonStatus::Silent)
        {
            registered_at.insert(id.clone(), st.address.to_string());
        }
        all.extend(out);
    }
    // A status is the status of the latest event: the detector's final state agrees with the
    // rows derived above (persons without events have no row).
    for x in expected.values() {
        let st = det.person(&x.person_id).expect("known");
        assert_eq!(st.status.as_str(), x.status, "{}", x.person_id);
    }
    (all, expected.into_values().collect())
}

/// The sink's rows for `events`, as it decodes them from the events topic.
fn rows(events: &[PersonEvent]) -> Vec<EventRow> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut b = Vec::new();
            event::encode(e, &mut b);
            match decode(Source::Events, Some(&b), 0, i as i64, 3).expect("an event decodes") {
                Decoded::Event(r) => r,
                other => panic!("not an event row: {other:?}"),
            }
        })
        .collect()
}

/// `rows` shuffled, some twice, in one to four blocks.
fn blocks(mut rows: Vec<EventRow>, seed: u64) -> Vec<Vec<EventRow>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let again: Vec<EventRow> = rows
        .iter()
        .filter(|_| rng.random_bool(0.2))
        .cloned()
        .collect();
    rows.extend(again);
    rows.shuffle(&mut rng);
    let n = rng.random_range(1..=4usize).min(rows.len().max(1));
    let size = rows.len().div_ceil(n).max(1);
    rows.chunks(size).map(<[EventRow]>::to_vec).collect()
}

const STATUS_QUERY: &str = "SELECT person_id, status, kind, since_ms, last_contact_at_ms, \
     ifNull(address, '<NULL>') FROM person_status FINAL WHERE person_id LIKE {prefix} \
     ORDER BY person_id";

async fn status_rows(db: &Db, prefix: &str) -> anyhow::Result<Vec<Expected>> {
    let sql = STATUS_QUERY.replace("{prefix}", &sink::ch::quote_str(&format!("{prefix}-%")));
    Ok(db
        .rows(&sql)
        .await?
        .into_iter()
        .map(|r| Expected {
            person_id: r[0].clone(),
            status: r[1].clone(),
            kind: r[2].clone(),
            since_ms: r[3].parse().expect("Int64"),
            last_contact_at_ms: r[4].parse().expect("Int64"),
            address: (r[5] != "<NULL>").then(|| r[5].clone()),
        })
        .collect())
}

/// The cases the issue names, always run first.
fn named_cases() -> Vec<World> {
    let s = |person, act, dt| Step { person, act, dt };
    vec![
        // A notice, then a registration with a new address: resumed then address_changed, in
        // the same millisecond.
        World {
            steps: vec![
                s(0, Act::Register(0), 0),
                s(0, Act::Tick, NOTICE),
                s(0, Act::Register(1), 5),
            ],
            seed: 1,
        },
        // A contact exactly at the notice threshold: silence_notice then resumed.
        World {
            steps: vec![s(0, Act::Register(0), 0), s(0, Act::Ping, NOTICE)],
            seed: 2,
        },
        // A ping just past the deadline: deregistered then unregistered_contact.
        World {
            steps: vec![
                s(0, Act::Register(0), 0),
                s(1, Act::Tick, NOTICE),
                s(0, Act::Ping, DEREG - NOTICE + 1),
            ],
            seed: 3,
        },
        // Two registrations in one millisecond: registered then address_changed.
        World {
            steps: vec![s(0, Act::Register(0), 0), s(0, Act::Register(1), 0)],
            seed: 4,
        },
    ]
}

#[derive(Serialize)]
struct ChdbCase {
    events: Vec<EventRow>,
    expected: Vec<Expected>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_status_equals_the_detector_on_18_16_and_current_clickhouse() -> anyhow::Result<()> {
    let db = Db::new(&testkit::unique("t_person_status"));
    let ch = db.ch().clone();
    let version = ch.version().await?;
    sink::migrate::migrate(&ch, version, 30).await?;

    let mut worlds = named_cases();
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig {
            cases: 48,
            failure_persistence: None,
            ..RunnerConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    for _ in 0..48 {
        worlds.push(world().new_tree(&mut runner).expect("a world").current());
    }

    let mut chdb = Vec::new();
    let mut same_ms_pairs = 0;
    for (i, w) in worlds.iter().enumerate() {
        let tag = format!("c{i}");
        let (events, expected) = run(w, &tag);
        same_ms_pairs += events
            .windows(2)
            .filter(|p| p[0].person_id == p[1].person_id && p[0].at == p[1].at)
            .count();
        // Along each person's events `at` never decreases and `seq` counts up by one: what
        // makes (at, seq) the order of a person's events.
        let mut last: BTreeMap<&str, (Millis, u32)> = BTreeMap::new();
        for e in &events {
            let seq = e.seq.expect("the detector numbers its events");
            if let Some((at, s)) = last.get(e.person_id.as_str()) {
                assert!(
                    e.at >= *at && seq == s + 1,
                    "{tag}: {e:?} after ({at}, {s})"
                );
            }
            last.insert(&e.person_id, (e.at, seq));
        }
        let rows = rows(&events);
        for b in blocks(rows.clone(), w.seed) {
            ch.insert("person_events", &b, None).await?;
        }
        let got = status_rows(&db, &tag).await?;
        assert_eq!(got, expected, "case {i} on ClickHouse {version}: {w:?}");
        chdb.push(ChdbCase {
            events: blocks(rows, w.seed).concat(),
            expected,
        });
    }
    assert!(
        same_ms_pairs >= 20,
        "the generator must put several events of a person in one millisecond ({same_ms_pairs})"
    );

    // The same cases on a current ClickHouse.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cases.jsonl");
    let mut text = String::new();
    for c in &chdb {
        text.push_str(&serde_json::to_string(c)?);
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    chdb_run(&["--person-status", file.to_str().expect("utf-8 path")])?;

    db.drop_database().await;
    Ok(())
}

/// `tests/chdb/run ARGS` (creates its venv with chDB on first use).
fn chdb_run(args: &[&str]) -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/chdb/run");
    let out = std::process::Command::new(script).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    anyhow::ensure!(out.status.success(), "chDB check failed: {text}");
    Ok(())
}

/// Legacy events (no `seq`), as a sink before migration 0004 wrote them: the cases 0002's kind
/// ranks got wrong, plus a plain one.
fn legacy_events(tag: &str) -> Vec<PersonEvent> {
    let mut out = Vec::new();
    for w in named_cases() {
        out.extend(run(&w, &format!("{tag}{}", w.seed)).0);
    }
    events_without_seq(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_database_takes_migration_0004_without_losing_rows() -> anyhow::Result<()> {
    let db = Db::new(&testkit::unique("t_person_status_upgrade"));
    let ch = db.ch().clone();
    let version: ServerVersion = ch.version().await?;
    sink::migrate::apply(&ch, version, 30, &sink::migrate::MIGRATIONS[..3]).await?;

    // As the old sink inserted them: the columns of 0001 only.
    let events = legacy_events("u");
    for e in &events {
        let addr = e
            .address
            .as_deref()
            .map_or("NULL".to_string(), sink::ch::quote_str);
        ch.exec(&format!(
            "INSERT INTO person_events (event_id, person_id, kind, at, at_ms, last_contact_at, \
             last_contact_at_ms, notice_after_ms, deregister_after_ms, excluded_outage_ms, \
             address, kafka_partition, kafka_offset) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, \
             {}, {addr}, 0, 0)",
            sink::ch::quote_str(&e.event_id),
            sink::ch::quote_str(&e.person_id),
            sink::ch::quote_str(e.kind.as_str()),
            e.at / 1000,
            e.at,
            e.last_contact_at / 1000,
            e.last_contact_at,
            e.notice_after_ms,
            e.deregister_after_ms,
            e.excluded_outage_ms,
        ))
        .await?;
    }
    let before = db.count("SELECT count() FROM person_events").await?;
    assert_eq!(before, events.len() as u64);
    // The old ranks: the address change after a notice is lost (resumed ranked higher).
    let old = db
        .query(
            "SELECT status, ifNull(address, '') FROM person_status FINAL WHERE person_id = 'u1-p0'",
        )
        .await?;
    assert_eq!(old, "registered\tArbat 0", "the defect 0004 fixes");

    // Upgrade, twice (idempotent), then check every person of the legacy cases.
    let report = sink::migrate::migrate(&ch, version, 30).await?;
    assert_eq!(report.applied, vec![4]);
    let again = sink::migrate::migrate(&ch, version, 30).await?;
    assert!(again.applied.is_empty());
    assert_eq!(db.count("SELECT count() FROM person_events").await?, before);
    assert_eq!(
        db.count("SELECT countIf(seq = -1) FROM person_events")
            .await?,
        before,
        "old rows read seq = -1"
    );
    for w in named_cases() {
        let tag = format!("u{}", w.seed);
        let (_, expected) = run(&w, &tag);
        let got = status_rows(&db, &tag).await?;
        assert_eq!(got, expected, "legacy case {tag} after migration 0004");
    }

    // New events (with seq) after the upgrade land through the new view.
    let w = &named_cases()[0];
    let (events, expected) = run(w, "n");
    ch.insert("person_events", &rows(&events), None).await?;
    assert_eq!(status_rows(&db, "n").await?, expected);

    // The same upgrade on a current ClickHouse.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("legacy.jsonl");
    let legacy = ChdbCase {
        events: rows(&legacy_events("u")),
        expected: named_cases()
            .iter()
            .flat_map(|w| run(w, &format!("u{}", w.seed)).1)
            .collect(),
    };
    std::fs::write(&file, serde_json::to_string(&legacy)? + "\n")?;
    chdb_run(&["--upgrade", file.to_str().expect("utf-8 path")])?;

    db.drop_database().await;
    Ok(())
}

fn events_without_seq(events: Vec<PersonEvent>) -> Vec<PersonEvent> {
    events
        .into_iter()
        .map(|mut e| {
            e.seq = None;
            e
        })
        .collect()
}
