//! The partition-count guard against the real broker (`deploy/local/up` first;
//! `LASTSEEN_TEST_KAFKA` overrides `127.0.0.1:9092`):
//! - partitions added to the contacts topic while the processor runs: it stops processing
//!   (records produced after the change emit no events, the committed offsets stay), its
//!   `lastseen_processor_partition_mismatch` gauge is 1 and `/readyz` answers 503, while
//!   `/metrics` keeps answering;
//! - contacts and changelog with different counts at start-up: it never processes;
//! - the repartitioning procedure of docs/OPERATIONS.md (drain, add partitions, rebuild the
//!   changelog into a new topic with `processor::rekey`, restart on it): per person, the
//!   events are those of one uninterrupted detector.

use common::config::Config;
use common::record::{Contact, EventKind, PersonEvent, Ping, Registration, Tick};
use processor::detector::Detector;
use processor::rekey::partition_of;
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::kafka::{
    Admin, TopicSpec, client_config, produce_all, read_committed, wait_group_caught_up,
};
use testkit::{Namespace, inproc};

const GAUGE: &str = "lastseen_processor_partition_mismatch";

fn config(ns: &Namespace) -> Config {
    let mut c = ns.config();
    c.processor.instance_id = "p0".into();
    c.processor.partition_check_interval = Duration::from_millis(300);
    c
}

/// Registrations of persons `from..to`, each to partition `k % partitions` (a registration
/// always emits a `registered` event).
fn registrations(from: usize, to: usize, partitions: i32) -> Vec<(i32, Option<String>, Vec<u8>)> {
    (from..to)
        .map(|k| {
            let c = Contact::Registration(Registration {
                person_id: format!("person-{k}"),
                device_id: "d".into(),
                address: format!("Address {k}"),
                lat: None,
                lon: None,
                received_at: common::record::now_millis(),
            });
            (
                (k % partitions as usize) as i32,
                Some(format!("person-{k}")),
                serde_json::to_vec(&c).unwrap(),
            )
        })
        .collect()
}

async fn add_partitions(topic: &str, total: usize) {
    let admin = Admin::test().client().expect("admin");
    for r in admin
        .create_partitions(
            &[NewPartitions::new(topic, total)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create partitions")
    {
        r.expect("partitions added");
    }
}

fn committed(cfg: &Config, partitions: i32) -> BTreeMap<i32, Option<i64>> {
    let c: BaseConsumer = client_config()
        .set("group.id", &cfg.processor.group_id)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&cfg.kafka.contacts_topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    (0..partitions)
        .map(|p| {
            let o = match got
                .find_partition(&cfg.kafka.contacts_topic, p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            (p, o)
        })
        .collect()
}

async fn wait_gauge(url: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while testkit::http::metric(url, GAUGE).await != want {
        assert!(Instant::now() < deadline, "{GAUGE} never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(url: &str) -> u16 {
    testkit::http::get(&format!("{url}/readyz"))
        .await
        .expect("readyz answers")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_running_stop_processing() {
    inproc::init_logging("warn");
    let ns = Namespace::new("proc_guard_running", 2);
    let cfg = config(&ns);
    ns.create_topics().await.expect("create topics");
    produce_all(&cfg.kafka.contacts_topic, &registrations(0, 20, 2))
        .await
        .unwrap();
    let p = inproc::processor(cfg.clone()).await;
    p.wait_ready(Duration::from_secs(60)).await;
    wait_group_caught_up(
        &cfg.processor.group_id,
        &cfg.kafka.contacts_topic,
        Duration::from_secs(60),
    )
    .await
    .expect("caught up");
    assert_eq!(testkit::http::metric(&p.url, GAUGE).await, 0.0);
    let events_before = read_committed(&cfg.kafka.events_topic).await.unwrap().len();
    assert_eq!(events_before, 20);
    let offsets_before = committed(&cfg, 2);

    add_partitions(&cfg.kafka.contacts_topic, 3).await;
    wait_gauge(&p.url, 1.0, Duration::from_secs(30)).await;
    assert_eq!(readyz(&p.url).await, 503, "not ready while refusing");

    // Records after the change: none is processed.
    produce_all(&cfg.kafka.contacts_topic, &registrations(20, 40, 2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        read_committed(&cfg.kafka.events_topic).await.unwrap().len(),
        events_before,
        "no events after the change"
    );
    assert_eq!(committed(&cfg, 2), offsets_before, "offsets stopped");
    assert_eq!(
        testkit::http::metric(&p.url, GAUGE).await,
        1.0,
        "still refusing"
    );
    assert_eq!(readyz(&p.url).await, 503);
    p.stop().await.expect("stops cleanly when asked");
    ns.cleanup().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_that_differ_at_start_up_are_refused() {
    inproc::init_logging("warn");
    let ns = Namespace::new("proc_guard_startup", 2);
    let cfg = config(&ns);
    ns.create_topics().await.expect("create topics");
    add_partitions(&cfg.kafka.contacts_topic, 3).await;
    produce_all(&cfg.kafka.contacts_topic, &registrations(0, 9, 3))
        .await
        .unwrap();
    let p = inproc::processor(cfg.clone()).await;
    wait_gauge(&p.url, 1.0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(readyz(&p.url).await, 503);
    assert!(
        read_committed(&cfg.kafka.events_topic)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        read_committed(&cfg.kafka.changelog_topic)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        committed(&cfg, 3).values().all(Option::is_none),
        "nothing committed"
    );
    p.stop().await.expect("stops cleanly when asked");
    ns.cleanup().await.expect("cleanup");
}

/// One round of the repartitioning test at second `s`: a tick into each of `partitions`
/// partitions, then the pings of the persons that ping at `s`, each to its partition.
fn round(s: i64, partitions: i32, persons: usize) -> Vec<(i32, Option<String>, Vec<u8>)> {
    let at = T0 + s * 1000;
    let mut out: Vec<(i32, Option<String>, Vec<u8>)> = (0..partitions)
        .map(|p| {
            let t = Contact::Tick(Tick {
                received_at: at,
                source: "test".into(),
            });
            (p, None, serde_json::to_vec(&t).unwrap())
        })
        .collect();
    for k in 0..persons {
        // k % 3 == 0: silent from 20 s on (noticed at 40 s, deregistered at 60 s, both after
        // the repartitioning at 40 s); k % 3 == 1: pings throughout; k % 3 == 2: silent from
        // 30 s to 60 s (noticed at 50 s, resumes at 60 s).
        let pings = match k % 3 {
            0 => s < 20,
            1 => true,
            _ => !(30..60).contains(&s),
        };
        if pings {
            let id = format!("person-{k}");
            let c = Contact::Ping(Ping {
                person_id: id.clone(),
                device_id: "d".into(),
                device_ts: at,
                lat: 1.0,
                lon: 2.0,
                accuracy_m: None,
                received_at: at,
            });
            out.push((
                partition_of(id.as_bytes(), partitions),
                Some(id),
                serde_json::to_vec(&c).unwrap(),
            ));
        }
    }
    out
}

const T0: i64 = 1_750_000_000_000;

/// Waits until consumer group `group` has no members (its session timeout expired).
async fn wait_group_empty(group: &str) {
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config().create().expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = c
                .fetch_group_list(Some(&group), Duration::from_secs(10))
                .expect("group list");
            if list.groups().iter().all(|g| g.members().is_empty()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} never became empty"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repartitioning_procedure_moves_each_persons_state_with_it() {
    const PERSONS: usize = 24;
    inproc::init_logging("warn");
    let ns = Namespace::new("proc_repartition", 2);
    let mut cfg = config(&ns);
    cfg.policy.notice_after = Duration::from_secs(20);
    cfg.policy.deregister_after = Duration::from_secs(40);
    cfg.clock.tick_interval = Duration::from_secs(1);
    ns.create_topics().await.expect("create topics");

    // Before: 2 partitions, 40 s.
    let mut before: Vec<(i32, Option<String>, Vec<u8>)> = (0..PERSONS)
        .map(|k| {
            let id = format!("person-{k}");
            let c = Contact::Registration(Registration {
                person_id: id.clone(),
                device_id: "d".into(),
                address: format!("Address {k}"),
                lat: None,
                lon: None,
                received_at: T0,
            });
            (
                partition_of(id.as_bytes(), 2),
                Some(id),
                serde_json::to_vec(&c).unwrap(),
            )
        })
        .collect();
    for s in 0..40 {
        before.extend(round(s, 2, PERSONS));
    }
    let after: Vec<_> = (40..90).flat_map(|s| round(s, 3, PERSONS)).collect();
    assert!(
        (0..PERSONS).any(|k| {
            let id = format!("person-{k}");
            partition_of(id.as_bytes(), 2) != partition_of(id.as_bytes(), 3)
        }),
        "some persons move"
    );

    // The reference: one detector over the whole stream, each tick once. Every partition sees
    // the same ticks and no outage, so per person it is what partitioned detectors give.
    let mut d = Detector::new(cfg.policy, cfg.clock).unwrap();
    let mut want: BTreeMap<String, Vec<PersonEvent>> = BTreeMap::new();
    for (p, _, payload) in before.iter().chain(&after) {
        let c: Contact = serde_json::from_slice(payload).unwrap();
        if matches!(c, Contact::Tick(_)) && *p != 0 {
            continue;
        }
        let mut out = Vec::new();
        d.apply(&c, &mut out);
        for e in out {
            want.entry(e.person_id.clone()).or_default().push(e);
        }
    }
    let kinds: std::collections::BTreeSet<_> = want.values().flatten().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EventKind::Deregistered) && kinds.contains(&EventKind::Resumed),
        "{kinds:?}"
    );

    produce_all(&cfg.kafka.contacts_topic, &before)
        .await
        .unwrap();
    let p = inproc::processor(cfg.clone()).await;
    wait_group_caught_up(
        &cfg.processor.group_id,
        &cfg.kafka.contacts_topic,
        Duration::from_secs(60),
    )
    .await
    .expect("caught up");
    // 1-3. Ingest stopped (nothing produced), processors drained and stopped, and the group
    // empty: a static member that rejoins a stable group gets its old assignment back, which
    // would leave the new partition unassigned until the next metadata refresh.
    p.stop().await.expect("processor");
    wait_group_empty(&cfg.processor.group_id).await;
    // 4. Contacts to 3 partitions; a new, empty, compacted changelog with 3.
    add_partitions(&cfg.kafka.contacts_topic, 3).await;
    let new_changelog = testkit::names::topic(&ns.name, "state2");
    testkit::kafka::create_topics(&[TopicSpec::new(&new_changelog, 3).compacted()])
        .await
        .unwrap();
    // 5. The rebuild.
    let (client, from, to, contacts) = (
        cfg.kafka_client_config("test-rekey"),
        cfg.kafka.changelog_topic.clone(),
        new_changelog.clone(),
        cfg.kafka.contacts_topic.clone(),
    );
    let plan =
        tokio::task::spawn_blocking(move || processor::rekey::run(&client, &from, &to, &contacts))
            .await
            .unwrap()
            .expect("rekey");
    assert_eq!(plan.persons, PERSONS);
    assert!(plan.moved > 0);
    // 6. Processors on the new changelog; then ingest (here: the records after).
    let mut cfg2 = cfg.clone();
    cfg2.kafka.changelog_topic = new_changelog.clone();
    let p = inproc::processor(cfg2.clone()).await;
    p.wait_ready(Duration::from_secs(60)).await;
    produce_all(&cfg.kafka.contacts_topic, &after)
        .await
        .unwrap();
    wait_group_caught_up(
        &cfg.processor.group_id,
        &cfg.kafka.contacts_topic,
        Duration::from_secs(60),
    )
    .await
    .expect("caught up after");
    assert_eq!(testkit::http::metric(&p.url, GAUGE).await, 0.0);
    p.stop().await.expect("processor");

    let mut got: BTreeMap<String, Vec<PersonEvent>> = BTreeMap::new();
    for m in read_committed(&cfg.kafka.events_topic).await.unwrap() {
        let e: PersonEvent = m.json();
        got.entry(e.person_id.clone()).or_default().push(e);
    }
    assert_eq!(
        got, want,
        "per person, the events of one uninterrupted detector: state moved with each person"
    );
    testkit::kafka::delete_topics(&[&new_changelog])
        .await
        .unwrap();
    ns.cleanup().await.expect("cleanup");
}
