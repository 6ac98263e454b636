//! The partition-count guard against the real broker (`deploy/local/up` first;
//! `LASTSEEN_TEST_KAFKA` overrides `127.0.0.1:9092`):
//! - partitions added to the contacts topic while the processor runs: it stops processing
//!   (records produced after the change emit no events, the committed offsets stay), its
//!   `lastseen_processor_partition_mismatch` gauge is 1 and `/readyz` answers 503, while
//!   `/metrics` keeps answering;
//! - contacts and changelog with different counts at start-up: it never processes.

use common::config::Config;
use common::record::{Contact, Registration};
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::kafka::{Admin, client_config, produce_all, read_committed, wait_group_caught_up};
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
