//! The processor's dead-letter path and re-published records, against the real broker
//! (`deploy/local/up` first; `LASTSEEN_TEST_KAFKA` overrides `127.0.0.1:9092`).
//!
//! - One partition with registrations and pings of several persons and undecodable records
//!   interleaved (invalid JSON, a schema mismatch, a value out of range). A first processor
//!   runs with a commit interval it never reaches and is fenced by a producer with its
//!   transactional id, which aborts its transaction: read_committed then shows neither its
//!   dead letters nor its events (they were in one transaction). A second processor redoes
//!   the work; read_committed shows each bad record dead-lettered exactly once (stage
//!   `processor`, its reason, its topic, partition and offset), the events are those of a
//!   pure [`Detector`] over the good records alone, and the group's offset is at the end.
//! - A contact re-published with [`REPLAY_HEADER`] after a silence notice emits no `resumed`
//!   and changes no state: the events are those of the stream without it (the same record
//!   without the header would have emitted a `resumed` and pushed the deregistration back).
//!
//! Each test's topics are a test kit [`Namespace`].

use common::config::Config;
use common::record::{
    Contact, DeadLetter, EventKind, PersonEvent, Ping, REPLAY_HEADER, Registration, Tick,
};
use processor::detector::Detector;
use processor::service::CLOCK_KEY;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::kafka::{client_config, read_committed, tx_producer, wait_group_caught_up};
use testkit::{Namespace, inproc};

const T0: i64 = 1_750_000_000_000;
const PERSONS: usize = 5;

/// Values that appear in the bad records' payloads and must never appear in a reason.
const SECRETS: [&str; 6] = [
    "Arbat",
    "55.7512",
    "37.6184",
    "secret-person",
    "1e20",
    "1e+20",
];

/// The bad records: (what is wrong, payload).
fn bad_records() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "invalid JSON",
            br#"{"type":"ping","person_id":"secret-person-1","lat":55.7512,"lon":37.61"#.to_vec(),
        ),
        (
            "invalid JSON",
            b"Arbat 1, 55.7512 37.6184 secret-person-2".to_vec(),
        ),
        (
            "schema mismatch",
            br#"{"type":"registration","person_id":"secret-person-3","device_id":"d","address":"Arbat 1","lat":"55.7512","lon":37.6184,"received_at":1750000000000}"#.to_vec(),
        ),
        (
            "value out of range",
            br#"{"type":"ping","person_id":"secret-person-4","device_id":"d","device_ts":1,"lat":55.7512,"lon":37.6184,"received_at":99999999999999999999}"#.to_vec(),
        ),
        (
            "value out of range",
            br#"{"type":"ping","person_id":"secret-person-5","device_id":"d","device_ts":1,"lat":1e999,"lon":37.6184,"received_at":1750000000000}"#.to_vec(),
        ),
    ]
}

fn id(k: usize) -> String {
    format!("person-{k}")
}

fn registration(k: usize, at: i64) -> Vec<u8> {
    serde_json::to_vec(&Contact::Registration(Registration {
        person_id: id(k),
        device_id: "d".into(),
        address: format!("Address {k}"),
        lat: None,
        lon: None,
        received_at: at,
    }))
    .unwrap()
}

fn ping(k: usize, at: i64) -> Vec<u8> {
    serde_json::to_vec(&Contact::Ping(Ping {
        person_id: id(k),
        device_id: "d".into(),
        device_ts: at,
        lat: 55.75,
        lon: 37.62,
        accuracy_m: None,
        received_at: at,
    }))
    .unwrap()
}

fn tick(at: i64) -> Vec<u8> {
    serde_json::to_vec(&Contact::Tick(Tick {
        received_at: at,
        source: "test".into(),
    }))
    .unwrap()
}

fn config(ns: &Namespace) -> Config {
    let mut c = ns.config();
    c.processor.instance_id = "p0".into();
    c.policy.notice_after = Duration::from_secs(20);
    c.policy.deregister_after = Duration::from_secs(40);
    c.clock.tick_interval = Duration::from_secs(1);
    c
}

/// Each person's events, in order.
type ByPerson = BTreeMap<String, Vec<PersonEvent>>;

/// What a pure detector gives for `records` (payloads of one partition, in order), the
/// undecodable ones left out.
fn reference(cfg: &Config, records: &[Vec<u8>]) -> ByPerson {
    let mut d = Detector::new(cfg.policy, cfg.clock).unwrap();
    let mut events = ByPerson::new();
    for payload in records {
        if let Ok(c) = serde_json::from_slice::<Contact>(payload) {
            let mut out = Vec::new();
            d.apply(&c, &mut out);
            for e in out {
                events.entry(e.person_id.clone()).or_default().push(e);
            }
        }
    }
    events
}

fn by_person(msgs: &[testkit::kafka::Msg]) -> ByPerson {
    let mut got = ByPerson::new();
    for m in msgs {
        let e: PersonEvent = m.json();
        got.entry(e.person_id.clone()).or_default().push(e);
    }
    got
}

/// Produces `records` to partition 0 of `topic` in order; `replay` marks record indices to
/// carry the replay header.
async fn produce(topic: &str, records: &[Vec<u8>], replay: &[usize]) {
    let producer: FutureProducer = client_config()
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (i, payload) in records.iter().enumerate() {
        let mut r = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(payload);
        if replay.contains(&i) {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: REPLAY_HEADER,
                value: Some("1"),
            }));
        }
        producer
            .send(r, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// How many records of `topic` a read_uncommitted reader sees (open transactions included).
fn count_uncommitted(topic: &str) -> i64 {
    let c: BaseConsumer = client_config()
        .set("group.id", testkit::names::unique("uncommitted"))
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            hi - lo
        })
        .sum()
}

fn committed_offset(cfg: &Config) -> Option<i64> {
    let c: BaseConsumer = client_config()
        .set("group.id", &cfg.processor.group_id)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&cfg.kafka.contacts_topic, 0);
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    match got
        .find_partition(&cfg.kafka.contacts_topic, 0)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

/// The bad records of a stream: `(offset, payload)`.
type BadAt = Vec<(i64, Vec<u8>)>;

/// What the dead-letter scenario leaves: its namespace and config, the bad records, and the
/// committed dead letters.
struct Scenario {
    ns: Namespace,
    cfg: Config,
    bad_at: BadAt,
    dead: Vec<DeadLetter>,
}

/// The stream of the dead-letter test: registrations, pings and ticks of [`PERSONS`]
/// persons with the bad records interleaved; `(payloads, offsets of the bad records)`.
fn dead_letter_stream() -> (Vec<Vec<u8>>, BadAt) {
    let bad = bad_records();
    let mut out = Vec::new();
    let mut bad_at = Vec::new();
    for k in 0..PERSONS {
        out.push(registration(k, T0));
    }
    for i in 0..300usize {
        let at = T0 + 200 * i as i64; // 60 s of server time
        if i % 50 == 7 {
            let (_, b) = &bad[(i / 50) % bad.len()];
            bad_at.push((out.len() as i64, b.clone()));
            out.push(b.clone());
        }
        if i % 5 == 0 {
            out.push(tick(at));
            continue;
        }
        let k = i % PERSONS;
        // Person 0 goes silent after 10 s (noticed, then deregistered); person 1 is silent
        // from 10 s to 35 s (noticed, then resumes).
        if (k == 0 && i > 50) || (k == 1 && (50..175).contains(&i)) {
            continue;
        }
        out.push(ping(k, at));
    }
    // One of every kind at the very end too.
    for (_, b) in &bad {
        bad_at.push((out.len() as i64, b.clone()));
        out.push(b.clone());
    }
    (out, bad_at)
}

/// Runs the dead-letter scenario (see the module docs).
async fn dead_letter_scenario() -> Scenario {
    inproc::init_logging("warn");
    let ns = Namespace::new("proc_dead_letters", 1);
    let cfg = config(&ns);
    ns.create_topics().await.expect("create topics");
    let (records, bad_at) = dead_letter_stream();
    let want = reference(&cfg, &records);
    assert!(
        want.values()
            .flatten()
            .any(|e| e.kind == EventKind::Resumed)
            && want
                .values()
                .flatten()
                .any(|e| e.kind == EventKind::Deregistered),
        "the stream exercises notices, resumes and deregistrations: {want:?}"
    );
    let want_events: i64 = want.values().map(|v| v.len() as i64).sum();
    produce(&cfg.kafka.contacts_topic, &records, &[]).await;

    // 1. A processor whose transaction stays open, then fenced: everything it wrote aborted.
    let mut slow = cfg.clone();
    slow.processor.commit_interval = Duration::from_secs(3600);
    let first = inproc::processor(slow).await;
    let (dl_topic, ev_topic) = (
        cfg.kafka.dead_letter_topic.clone(),
        cfg.kafka.events_topic.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (d, e) = (dl_topic.clone(), ev_topic.clone());
        let (dl, ev) =
            tokio::task::spawn_blocking(move || (count_uncommitted(&d), count_uncommitted(&e)))
                .await
                .unwrap();
        if dl == bad_at.len() as i64 && ev == want_events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first processor wrote {dl} dead letters, {ev} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let txn_id = format!(
        "{}-{}",
        cfg.processor.transactional_id_prefix, cfg.processor.instance_id
    );
    let fence = tokio::task::spawn_blocking(move || tx_producer(&txn_id))
        .await
        .unwrap();
    assert!(
        read_committed(&dl_topic).await.unwrap().is_empty(),
        "an aborted transaction's dead letters are not visible"
    );
    assert!(
        read_committed(&ev_topic).await.unwrap().is_empty(),
        "nor its events"
    );
    assert_eq!(committed_offset(&cfg), None, "nor its offsets");
    drop(fence);
    // Fenced: its last commit fails (or it stops on the fatal error first).
    let _ = first.stop().await;

    // 2. A processor that commits.
    let second = inproc::processor(cfg.clone()).await;
    wait_group_caught_up(
        &cfg.processor.group_id,
        &cfg.kafka.contacts_topic,
        Duration::from_secs(60),
    )
    .await
    .expect("caught up");
    second.stop().await.expect("second processor");
    assert_eq!(
        committed_offset(&cfg),
        Some(records.len() as i64),
        "the partition moved past its end"
    );

    let events = read_committed(&ev_topic).await.unwrap();
    assert_eq!(
        by_person(&events),
        want,
        "the events are those of the stream without the bad records"
    );
    let dead: Vec<DeadLetter> = read_committed(&dl_topic)
        .await
        .unwrap()
        .iter()
        .map(|m| m.json())
        .collect();
    Scenario {
        ns,
        cfg,
        bad_at,
        dead,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_contacts_are_dead_lettered_once_in_the_same_transaction() {
    let Scenario {
        ns,
        cfg,
        bad_at,
        dead,
    } = dead_letter_scenario().await;
    let mut got: Vec<(i64, String)> = Vec::new();
    for d in &dead {
        assert_eq!(d.stage, "processor");
        assert_eq!(d.topic, cfg.kafka.contacts_topic);
        assert_eq!(d.partition, 0);
        let (_, original) = bad_at
            .iter()
            .find(|(o, _)| *o == d.offset)
            .unwrap_or_else(|| panic!("dead letter at offset {} is not a bad record", d.offset));
        assert_eq!(d.payload, String::from_utf8_lossy(original));
        // The reason: the fixed prefix and the codec's fixed label, which say what is wrong
        // without any value of the record.
        let label = d
            .reason
            .strip_prefix("undecodable contact: ")
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("reason {:?}", d.reason));
        assert!(
            [
                "invalid_json",
                "truncated_json",
                "schema_mismatch",
                "invalid_value"
            ]
            .contains(&label),
            "{}",
            d.reason
        );
        got.push((d.offset, label.to_string()));
    }
    got.sort();
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    let want: Vec<i64> = bad_at.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, want, "each bad record exactly once");
    // Each kind of fault has its own label.
    let labels: std::collections::BTreeSet<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    assert!(labels.len() >= 3, "{labels:?}");
    ns.cleanup().await.expect("cleanup");
}

// "Dead-letter reasons and WARN logs never echo record values" (issue 15): the reason ends
// with `common::codec::DecodeError.detail`, which keeps only serde's category and position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_reasons_carry_no_value_of_the_record() {
    let Scenario { ns, dead, .. } = dead_letter_scenario().await;
    let leaks: Vec<&str> = dead
        .iter()
        .map(|d| d.reason.as_str())
        .filter(|r| SECRETS.iter().any(|s| r.contains(s)))
        .collect();
    assert!(leaks.is_empty(), "reasons echo values: {leaks:#?}");
    ns.cleanup().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_contact_after_a_notice_emits_no_resumed_and_changes_no_state() {
    inproc::init_logging("warn");
    let ns = Namespace::new("proc_replay", 1);
    let cfg = config(&ns);
    ns.create_topics().await.expect("create topics");
    // Person 0 registers, pings for 5 s and goes silent: noticed at 25 s, deregistered at 45 s.
    // At 30 s, after the notice, an operator re-publishes a repaired ping of 3 s.
    let mut records = vec![registration(0, T0), registration(1, T0)];
    let mut replayed_at = None;
    for s in 0..60i64 {
        let at = T0 + s * 1000;
        records.push(tick(at));
        records.push(ping(1, at));
        if s < 5 {
            records.push(ping(0, at));
        }
        if s == 30 {
            replayed_at = Some(records.len());
            records.push(ping(0, T0 + 3000));
        }
    }
    let replayed_at = replayed_at.unwrap();
    let without: Vec<Vec<u8>> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != replayed_at)
        .map(|(_, r)| r.clone())
        .collect();
    let want = reference(&cfg, &without);
    let kinds = |e: &ByPerson| -> Vec<EventKind> {
        e.get(&id(0))
            .into_iter()
            .flatten()
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(
        kinds(&want),
        [
            EventKind::Registered,
            EventKind::SilenceNotice,
            EventKind::Deregistered
        ]
    );
    // Applied as a contact, the same record would be a false `resumed`, and would push the
    // deregistration back: what the header prevents.
    let applied = reference(&cfg, &records);
    assert!(kinds(&applied).contains(&EventKind::Resumed), "{applied:?}");
    assert_ne!(applied, want);

    produce(&cfg.kafka.contacts_topic, &records, &[replayed_at]).await;
    let p = inproc::processor(cfg.clone()).await;
    wait_group_caught_up(
        &cfg.processor.group_id,
        &cfg.kafka.contacts_topic,
        Duration::from_secs(60),
    )
    .await
    .expect("caught up");
    let skipped = testkit::http::metric(&p.url, "lastseen_processor_replays_skipped_total").await;
    p.stop().await.expect("processor");
    assert_eq!(skipped, 1.0, "the re-published record is counted");
    assert_eq!(committed_offset(&cfg), Some(records.len() as i64));
    let events = read_committed(&cfg.kafka.events_topic).await.unwrap();
    assert_eq!(
        by_person(&events),
        want,
        "no resumed, and the deregistration where it would be without the record"
    );
    // The state is that of the stream without the record: the changelog's last value of
    // every key (each person, and the clock) equals the reference detector's.
    let mut d = Detector::new(cfg.policy, cfg.clock).unwrap();
    let mut out = Vec::new();
    for r in &without {
        d.apply(&serde_json::from_slice::<Contact>(r).unwrap(), &mut out);
    }
    let mut want_state: BTreeMap<Vec<u8>, Option<Vec<u8>>> = d
        .take_dirty()
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v))
        .collect();
    want_state.insert(CLOCK_KEY.to_vec(), Some(d.clock_snapshot().to_vec()));
    let mut got_state = BTreeMap::new();
    for m in read_committed(&cfg.kafka.changelog_topic).await.unwrap() {
        let v = (!m.payload.is_empty()).then(|| m.payload.clone());
        got_state.insert(m.key.clone().unwrap_or_default(), v);
    }
    assert_eq!(
        got_state, want_state,
        "the changelog holds the state without the record"
    );
    let dl = read_committed(&cfg.kafka.dead_letter_topic).await.unwrap();
    assert!(dl.is_empty(), "a re-published record is not a dead letter");
    ns.cleanup().await.expect("cleanup");
}
