//! The service against the real broker (`deploy/local/up` first; `LASTSEEN_TEST_KAFKA`
//! overrides `127.0.0.1:9092`): a contacts topic filled before the service starts, so its
//! poll bursts are full and mix both partitions, with undecodable records inside runs and at
//! a partition's first and last offset. What it commits must be what one record at a time
//! gives: per person the same events in the same order, each undecodable record
//! dead-lettered once at its own offset, and the committed offsets at the end of the topic.
//!
//! Its topics are a test kit [`Namespace`], so `prune_topics` removes them if a failed run
//! leaves them behind.

use common::config::Config;
use common::record::{Contact, DeadLetter, PersonEvent, Ping, Registration, Tick};
use processor::detector::Detector;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::kafka::read_committed;
use testkit::{Namespace, brokers};

const PARTITIONS: i32 = 2;
const PERSONS: usize = 40;
const RECORDS: usize = 4000;

/// Each person's events, in order.
type ByPerson = BTreeMap<String, Vec<PersonEvent>>;

/// The contacts, in production order: `(partition, payload)`. Every 97th record (and the
/// first and last of partition 0) does not decode, in one of several ways.
fn stream() -> Vec<(i32, Vec<u8>)> {
    const BAD: [&[u8]; 4] = [
        b"not json",
        br#"{"type":"ping","person_id":"x","received_at":1}"#,
        br#"{"type":"tick","received_at":5,"extra":1}"#,
        b"\xff\xfe",
    ];
    let t0 = 1_750_000_000_000i64;
    let id = |k: usize| format!("person-{k}");
    let part = |k: usize| (k % PARTITIONS as usize) as i32;
    let mut out = vec![(0, BAD[0].to_vec())];
    for k in 0..PERSONS {
        let c = Contact::Registration(Registration {
            person_id: id(k),
            device_id: "d".into(),
            address: format!("Address {k}"),
            lat: None,
            lon: None,
            received_at: t0,
        });
        out.push((part(k), serde_json::to_vec(&c).unwrap()));
    }
    for i in 0..RECORDS {
        let at = t0 + 100 * i as i64; // 400 s of server time
        if i % 97 == 0 {
            out.push((
                (i / 97) as i32 % PARTITIONS,
                BAD[i / 97 % BAD.len()].to_vec(),
            ));
            continue;
        }
        if i % 10 == 0 {
            for p in 0..PARTITIONS {
                let t = Contact::Tick(Tick {
                    received_at: at,
                    source: "test".into(),
                });
                out.push((p, serde_json::to_vec(&t).unwrap()));
            }
            continue;
        }
        let k = i % PERSONS;
        // Person k is silent for a stretch that grows with k: some are noticed, resume,
        // or are deregistered; every 13th record re-registers, sometimes elsewhere.
        let silent_from = 300 + k * 60;
        if (silent_from..silent_from + k * 15).contains(&i) {
            continue;
        }
        let c = if i % 13 == 0 {
            Contact::Registration(Registration {
                person_id: id(k),
                device_id: "d".into(),
                address: format!("Address {}", k + i % 2),
                lat: None,
                lon: None,
                received_at: at,
            })
        } else {
            Contact::Ping(Ping {
                person_id: id(k),
                device_id: "d".into(),
                device_ts: at,
                lat: 55.75,
                lon: 37.62,
                accuracy_m: None,
                received_at: at,
            })
        };
        out.push((part(k), serde_json::to_vec(&c).unwrap()));
    }
    out.push((0, BAD[1].to_vec()));
    out
}

fn config(ns: &Namespace) -> Config {
    let mut c = Config::defaults();
    ns.apply(&mut c);
    c.processor.instance_id = "p0".into();
    c.policy.notice_after = Duration::from_secs(20);
    c.policy.deregister_after = Duration::from_secs(40);
    c.clock.tick_interval = Duration::from_secs(1);
    c
}

/// What one record at a time gives: each person's events in order, and the
/// `(partition, offset)` of every record that does not decode.
fn reference(cfg: &Config, records: &[(i32, Vec<u8>)]) -> (ByPerson, Vec<(i32, i64)>) {
    let mut detectors: BTreeMap<i32, Detector> = BTreeMap::new();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut events, mut dead) = (ByPerson::new(), Vec::new());
    for (p, payload) in records {
        let offset = offsets.entry(*p).or_insert(0);
        let d = detectors
            .entry(*p)
            .or_insert_with(|| Detector::new(cfg.policy, cfg.clock).unwrap());
        match serde_json::from_slice::<Contact>(payload) {
            Ok(c) => {
                let mut out = Vec::new();
                d.apply(&c, &mut out);
                for e in out {
                    events.entry(e.person_id.clone()).or_default().push(e);
                }
            }
            Err(_) => dead.push((*p, *offset)),
        }
        *offset += 1;
    }
    dead.sort();
    (events, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_with_undecodable_records_commit_what_one_at_a_time_gives() {
    let ns = Namespace::new("proc_batches", PARTITIONS);
    let cfg = config(&ns);
    ns.create_topics().await.expect("create topics");
    let records = stream();
    let (want_events, want_dead) = reference(&cfg, &records);
    let kinds: BTreeMap<common::EventKind, usize> =
        want_events
            .values()
            .flatten()
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e.kind).or_default() += 1;
                m
            });
    assert!(kinds.len() == 6, "every kind of event occurs: {kinds:?}");

    // All records before the service starts, so its first polls find full bursts.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    for (p, payload) in &records {
        let mut r = BaseRecord::<[u8], [u8]>::to(&cfg.kafka.contacts_topic)
            .partition(*p)
            .payload(payload);
        while let Err((e, back)) = producer.send(r) {
            assert!(
                matches!(e, rdkafka::error::KafkaError::MessageProduction(_)),
                "{e}"
            );
            producer.poll(Duration::from_millis(5));
            r = back;
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = common::lifecycle::Shutdown::new();
    let svc = tokio::spawn(processor::service::run(
        cfg.clone(),
        common::lifecycle::Listeners::admin(listener),
        stop.clone(),
    ));
    let per_partition = |p: i32| records.iter().filter(|(q, _)| *q == p).count() as i64;
    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &cfg.processor.group_id)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "processor did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&cfg.kafka.contacts_topic, p);
        }
        let committed = checker
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed");
        let at_end = (0..PARTITIONS).all(|p| {
            committed
                .find_partition(&cfg.kafka.contacts_topic, p)
                .map(|e| e.offset())
                == Some(Offset::Offset(per_partition(p)))
        });
        if at_end {
            break;
        }
    }
    stop.trigger();
    svc.await.expect("join").expect("service");

    let (events_topic, dead_topic) = (
        cfg.kafka.events_topic.clone(),
        cfg.kafka.dead_letter_topic.clone(),
    );
    // Everything committed up to each topic's end: extras would show too.
    let events = read_committed(&events_topic).await.expect("read events");
    let dead = read_committed(&dead_topic)
        .await
        .expect("read dead letters");
    let mut got_events = ByPerson::new();
    for m in &events {
        let e: PersonEvent = m.json();
        got_events.entry(e.person_id.clone()).or_default().push(e);
    }
    assert_eq!(
        got_events, want_events,
        "per person, the same events in order"
    );

    let mut got_dead: Vec<(i32, i64)> = Vec::new();
    for m in &dead {
        let d: DeadLetter = m.json();
        assert_eq!(d.stage, "processor");
        assert_eq!(d.topic, cfg.kafka.contacts_topic);
        assert!(
            d.reason.starts_with("undecodable contact: "),
            "{}",
            d.reason
        );
        let (_, original) = records
            .iter()
            .filter(|(p, _)| *p == d.partition)
            .nth(d.offset as usize)
            .expect("offset in range");
        assert_eq!(d.payload, String::from_utf8_lossy(original));
        got_dead.push((d.partition, d.offset));
    }
    got_dead.sort();
    assert_eq!(
        got_dead, want_dead,
        "each undecodable record once, at its offset"
    );
    ns.cleanup().await.expect("delete topics");
}
