//! The one-call enqueue of a request's records (`ingest::kafka::native`) against the real
//! broker and against an unreachable one: records arrive byte for byte, keyed, on the
//! partition a per-record `send` of the same key picks; a full queue refuses the rest and
//! returns their delivery opaques; every delivery report (success, failure, purge) releases
//! the records' bytes; `Kafka::send_all` maps a full queue and a dead broker to errors (503).
//!
//! The explicit partition (`enqueue_to`, and `send_all` after a probe) is the one librdkafka's
//! own partitioner picks on the real broker, for many keys and several partition counts; the
//! count is the first one probed, and a later change (or a partition librdkafka does not know)
//! refuses requests instead of following it.

use ingest::kafka::native::{BatchProducer, NotEnqueued, RecordsOwner};
use ingest::kafka::partition::{UNASSIGNED, consistent};
use ingest::kafka::{Kafka, ProduceError, Records, producer_config};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{inproc, kafka, names};

/// Records plus what their delivery reports said.
struct Owned {
    records: Records,
}

impl RecordsOwner for Owned {
    fn records(&self) -> &Records {
        &self.records
    }
}

/// Counts delivery reports and keeps their error codes and partitions.
#[derive(Default)]
struct Reports {
    ok: AtomicUsize,
    errors: Mutex<Vec<RDKafkaErrorCode>>,
    partitions: Mutex<Vec<i32>>,
}

struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Arc<Owned>;
    fn delivery(&self, r: &DeliveryResult<'_>, _owner: Arc<Owned>) {
        match r {
            Ok(m) => {
                self.0.ok.fetch_add(1, Ordering::SeqCst);
                self.0.partitions.lock().unwrap().push(m.partition());
            }
            Err((e, _)) => self
                .0
                .errors
                .lock()
                .unwrap()
                .push(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown)),
        }
    }
}

fn records(person: &str, n: usize) -> Records {
    let mut r = Records::default();
    for i in 0..n {
        r.push_raw(person.as_bytes(), |b| {
            b.extend_from_slice(format!(r#"{{"person":"{person}","i":{i}}}"#).as_bytes())
        });
    }
    r
}

fn producer(config: &common::Config, extra: &[(&str, &str)]) -> (BatchProducer<Ctx>, Arc<Reports>) {
    let mut c = producer_config(config);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let reports = Arc::new(Reports::default());
    let p: ThreadedProducer<Ctx> = c
        .create_with_context(Ctx(reports.clone()))
        .expect("producer");
    (
        BatchProducer::new(p, &config.kafka.contacts_topic).expect("topic handle"),
        reports,
    )
}

/// One `reference` record of `key` through the per-record `send` of `p`'s producer: the
/// partition librdkafka's partitioner picks.
fn send_one(p: &BatchProducer<Ctx>, topic: &str, key: &[u8]) {
    let owner = Arc::new(Owned {
        records: Records::default(),
    });
    p.producer()
        .send(
            BaseRecord::<[u8], [u8], Arc<Owned>>::with_opaque_to(topic, owner)
                .key(key)
                .payload(b"reference".as_slice()),
        )
        .map_err(|(e, _)| e)
        .expect("send");
}

fn wait_until(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// `(partition, key, payload)` of every record of `topic`, until `n` were read.
fn read_raw(topic: &str, n: usize) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    kafka::read_until(topic, Duration::from_secs(20), |ms| ms.len() >= n)
        .into_iter()
        .map(|m| (m.partition, m.key.unwrap_or_default(), m.payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_byte_for_byte_on_the_partition_a_send_picks() {
    let topic = names::unique_topic("batch");
    kafka::create_topic(&topic, 4).await;
    let config = inproc::ingest_config(&topic);
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        let (p, reports) = producer(&config, &[]);
        let persons = ["person-1", "person-2", "person-3", "person-4", "person-5"];
        let owners: Vec<Arc<Owned>> = persons
            .iter()
            .map(|person| {
                Arc::new(Owned {
                    records: records(person, 40),
                })
            })
            .collect();
        for o in &owners {
            p.enqueue(o, 0).expect("enqueued");
        }
        // The reference: one record per person through the per-record `send`.
        for person in persons {
            send_one(&p, &t, person.as_bytes());
        }
        p.producer().flush(Duration::from_secs(20)).expect("flush");
        assert_eq!(reports.ok.load(Ordering::SeqCst), 5 * 40 + 5);
        assert!(reports.errors.lock().unwrap().is_empty());
        for o in &owners {
            // Every delivery report released its clone: only ours is left.
            assert_eq!(Arc::strong_count(o), 1);
        }

        let read = read_raw(&t, 5 * 40 + 5);
        assert_eq!(read.len(), 5 * 40 + 5);
        for (o, person) in owners.iter().zip(persons) {
            let reference = read
                .iter()
                .find(|(_, k, v)| k == person.as_bytes() && v == b"reference")
                .expect("reference record")
                .0;
            let got: Vec<_> = read
                .iter()
                .filter(|(_, k, v)| k == person.as_bytes() && v != b"reference")
                .collect();
            assert_eq!(got.len(), 40);
            for (i, (partition, _, payload)) in got.iter().enumerate() {
                assert_eq!(*partition, reference, "same partition as send for {person}");
                // In order and byte for byte.
                assert_eq!(payload.as_slice(), o.records.get(i).1);
            }
        }
    })
    .await
    .unwrap();
    kafka::delete_topics(&[&topic]).await.unwrap();
}

#[test]
fn a_full_queue_refuses_the_rest_and_every_report_releases_the_bytes() {
    // Nothing listens on port 1: the queue never drains.
    let mut config = inproc::ingest_config("test.ingest.unreachable");
    config.kafka.brokers = "127.0.0.1:1".into();
    let (p, reports) = producer(
        &config,
        &[
            ("queue.buffering.max.messages", "10"),
            ("message.timeout.ms", "1000"),
        ],
    );
    let owner = Arc::new(Owned {
        records: records("person-q", 25),
    });
    let err = p.enqueue(&owner, 0).expect_err("queue holds 10");
    assert_eq!(
        err,
        NotEnqueued {
            failed: 15,
            first: 10,
            code: RDKafkaErrorCode::QueueFull,
        }
    );
    // The 15 refused records gave their clones back; the 10 queued ones hold theirs.
    assert_eq!(Arc::strong_count(&owner), 1 + 10);
    // Still full: a retry from the first refused record is refused whole.
    let again = p.enqueue(&owner, err.first).expect_err("still full");
    assert_eq!((again.failed, again.first), (15, 10));
    assert_eq!(Arc::strong_count(&owner), 1 + 10);

    // The broker never answers: the queued records time out, each with a failed report.
    assert!(wait_until(Duration::from_secs(15), || Arc::strong_count(
        &owner
    ) == 1));
    let errors = reports.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 10);
    assert!(
        errors
            .iter()
            .all(|c| *c == RDKafkaErrorCode::MessageTimedOut),
        "{errors:?}"
    );
    assert_eq!(reports.ok.load(Ordering::SeqCst), 0);

    // Purged records report too.
    let owner = Arc::new(Owned {
        records: records("person-q", 5),
    });
    p.enqueue(&owner, 0).expect("room again");
    p.producer().purge(PurgeConfig::default().queue());
    p.producer().flush(Duration::from_secs(5)).expect("flush");
    assert!(wait_until(Duration::from_secs(5), || Arc::strong_count(
        &owner
    ) == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_refuses_on_a_full_queue_and_a_dead_broker() {
    let mut config = inproc::ingest_config("test.ingest.unreachable");
    // A broker that accepts connections and never answers. A refused port would make
    // librdkafka report "all brokers down" at once, which marks the producer unhealthy and
    // turns the timeout below into `Unreachable` whenever that report beats `send_all`.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    config.kafka.brokers = silent.local_addr().expect("bound").to_string();
    config.ingest.produce_timeout = Duration::from_secs(2);

    // A full queue: refused at once, nothing acknowledged.
    let mut client = producer_config(&config);
    client.set("queue.buffering.max.messages", "10");
    let kafka = Kafka::with_client_config(&config, client).expect("producer");
    kafka.health().set(true);
    let started = Instant::now();
    assert_eq!(
        kafka.send_all(records("person-f", 25)).await,
        Err(ProduceError::QueueFull)
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Records enqueued but never acknowledged: an error after the produce timeout.
    let kafka = Kafka::new(&config).expect("producer");
    kafka.health().set(true);
    let started = Instant::now();
    let r = kafka.send_all(records("person-d", 5)).await;
    assert!(
        matches!(r, Err(ProduceError::Timeout)),
        "dead broker must not acknowledge: {r:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A failed acknowledgement marks the producer unhealthy (requests get 503 until a probe).
    assert!(!kafka.health().is_up());
}

/// Keys shaped like the person ids we see (uuids), plain names, and odd bytes.
fn many_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("person-{i}").into_bytes(),
            1 => format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                i * 2_654_435_761 % 4_294_967_291,
                i % 65_536,
                i % 4096,
                i * 7 % 4096,
                i * 1_000_003
            )
            .into_bytes(),
            2 => format!("Jürgen {i} 日本").into_bytes(),
            _ => vec![i as u8, 0, 0xff, (i >> 8) as u8, b'k'],
        })
        .collect()
}

/// Per key: the reference record's partition and the other records' `(partition, payload)`.
type ByKey = std::collections::HashMap<Vec<u8>, (Option<i32>, Vec<(i32, Vec<u8>)>)>;

/// Per key: the partition of the `reference` record (a per-record `send`: librdkafka's own
/// choice) and the partitions and payloads of its other records, in topic order.
fn by_key(read: &[(i32, Vec<u8>, Vec<u8>)]) -> ByKey {
    let mut m: ByKey = Default::default();
    for (p, k, v) in read {
        let e = m.entry(k.clone()).or_default();
        if v == b"reference" {
            assert!(e.0.replace(*p).is_none(), "one reference per key");
        } else {
            e.1.push((*p, v.clone()));
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_partition_is_the_one_librdkafka_picks_for_the_key() {
    const KEYS: usize = 240;
    const PER_KEY: usize = 3;
    for partitions in [1, 2, 3, 4, 6, 7, 12] {
        let topic = names::unique_topic("explicit");
        kafka::create_topic(&topic, partitions).await;
        let config = inproc::ingest_config(&topic);
        let t = topic.clone();
        tokio::task::spawn_blocking(move || {
            let (p, reports) = producer(&config, &[]);
            let keys = many_keys(KEYS);
            let mut owners = Vec::new();
            for key in &keys {
                // librdkafka's choice: a per-record send of the key, partitioner and all.
                send_one(&p, &t, key);
                // Ours: the whole batch to the partition we compute.
                let mut r = Records::default();
                for i in 0..PER_KEY {
                    r.push_raw(key, |b| b.extend_from_slice(format!("{i}").as_bytes()));
                }
                let owner = Arc::new(Owned { records: r });
                p.enqueue_to(&owner, 0, consistent(key, partitions))
                    .expect("enqueued");
                owners.push(owner);
            }
            p.producer().flush(Duration::from_secs(30)).expect("flush");
            assert_eq!(reports.ok.load(Ordering::SeqCst), KEYS * (1 + PER_KEY));
            assert!(reports.errors.lock().unwrap().is_empty());

            let read = read_raw(&t, KEYS * (1 + PER_KEY));
            assert_eq!(read.len(), KEYS * (1 + PER_KEY));
            let m = by_key(&read);
            let mut used = std::collections::BTreeSet::new();
            for key in &keys {
                let (reference, ours) = &m[key];
                let reference = reference.expect("reference record");
                assert_eq!(
                    consistent(key, partitions),
                    reference,
                    "librdkafka put key {key:?} on another partition ({partitions} partitions)"
                );
                assert_eq!(ours.len(), PER_KEY);
                for (i, (partition, payload)) in ours.iter().enumerate() {
                    assert_eq!(*partition, reference, "key {key:?}");
                    assert_eq!(payload.as_slice(), format!("{i}").as_bytes());
                }
                used.insert(reference);
            }
            assert_eq!(used.len(), partitions as usize, "keys spread over all");
        })
        .await
        .unwrap();
        kafka::delete_topics(&[&topic]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_partition_is_refused_whole_and_gives_every_record_back() {
    let topic = names::unique_topic("unknown-partition");
    kafka::create_topic(&topic, 2).await;
    let config = inproc::ingest_config(&topic);
    tokio::task::spawn_blocking(move || {
        let (p, reports) = producer(&config, &[]);
        // librdkafka knows the topic's metadata first.
        p.producer()
            .client()
            .fetch_metadata(Some(&config.kafka.contacts_topic), Duration::from_secs(10))
            .expect("metadata");
        let owner = Arc::new(Owned {
            records: records("person-u", 10),
        });
        assert_eq!(
            p.enqueue_to(&owner, 0, 2),
            Err(NotEnqueued {
                failed: 10,
                first: 0,
                code: RDKafkaErrorCode::UnknownPartition,
            })
        );
        assert_eq!(Arc::strong_count(&owner), 1);
        p.enqueue_to(&owner, 0, UNASSIGNED).expect("enqueued");
        p.producer().flush(Duration::from_secs(20)).expect("flush");
        assert_eq!(reports.ok.load(Ordering::SeqCst), 10);
        assert_eq!(Arc::strong_count(&owner), 1);
    })
    .await
    .unwrap();
    kafka::delete_topics(&[&topic]).await.unwrap();
}

/// A record of `key` through a fresh per-record producer: the partition librdkafka picks now.
fn send_reference(topic: &str, keys: &[Vec<u8>]) {
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        kafka::client_config().create().expect("producer");
    for key in keys {
        p.send(
            BaseRecord::to(topic)
                .key(key.as_slice())
                .payload(b"reference".as_slice()),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    }
    p.flush(Duration::from_secs(20)).expect("flush");
}

async fn send_requests(kafka: &Kafka, keys: &[Vec<u8>], tag: &str) {
    let sends = keys.iter().map(|key| {
        let mut r = Records::default();
        for i in 0..5 {
            r.push_raw(key, |b| b.extend_from_slice(format!("{tag}{i}").as_bytes()));
        }
        kafka.send_all(r)
    });
    for r in futures::future::join_all(sends).await {
        r.expect("acknowledged");
    }
}

/// Checks every key's records tagged `tag` are on `want(key)`, in order.
fn check_tagged(m: &ByKey, keys: &[Vec<u8>], tag: &str, want: impl Fn(&[u8]) -> i32) {
    for key in keys {
        let got: Vec<_> = m[key]
            .1
            .iter()
            .filter(|(_, v)| v.starts_with(tag.as_bytes()))
            .collect();
        assert_eq!(got.len(), 5, "{tag} {key:?}");
        for (i, (p, v)) in got.iter().enumerate() {
            assert_eq!(*p, want(key), "{tag}: key {key:?}");
            assert_eq!(v.as_slice(), format!("{tag}{i}").as_bytes());
        }
    }
}

/// Sends one request of 5 records per key; the results in key order.
async fn try_requests(kafka: &Kafka, keys: &[Vec<u8>], tag: &str) -> Vec<Result<(), ProduceError>> {
    let sends = keys.iter().map(|key| {
        let mut r = Records::default();
        for i in 0..5 {
            r.push_raw(key, |b| b.extend_from_slice(format!("{tag}{i}").as_bytes()));
        }
        kafka.send_all(r)
    });
    futures::future::join_all(sends).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_pins_the_first_probed_count_and_refuses_a_change() {
    const KEYS: usize = 60;
    let topic = names::unique_topic("send-all-partition");
    kafka::create_topic(&topic, 3).await;
    let config = inproc::ingest_config(&topic);
    let kafka = Arc::new(Kafka::new(&config).expect("producer"));
    let keys = many_keys(KEYS);
    kafka.health().set(true);

    // Before any probe the count is unknown: librdkafka partitions (same partitions).
    assert_eq!(kafka.partitions(), 0);
    send_requests(&kafka, &keys, "a").await;

    let probe = |k: Arc<Kafka>| async move {
        tokio::task::spawn_blocking(move || k.probe(Duration::from_secs(5)))
            .await
            .unwrap()
    };
    assert_eq!(probe(kafka.clone()).await, Ok(3));
    assert_eq!(kafka.partitions(), 3);
    assert_eq!(kafka.partition_change(), None);
    send_requests(&kafka, &keys, "b").await;

    // Partitions added: until the next probe requests keep the count they know (a valid
    // partition); once a probe has seen the new count, every request is refused and nothing
    // is written: ingest never follows a new count (librdkafka's partitioner would).
    let admin: AdminClient<DefaultClientContext> = kafka::client_config().create().expect("admin");
    for r in admin
        .create_partitions(
            &[NewPartitions::new(&topic, 6)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create partitions")
    {
        r.expect("partitions added");
    }
    send_requests(&kafka, &keys, "c").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while kafka.partition_change().is_none() {
        assert!(Instant::now() < deadline, "probe never saw 6 partitions");
        assert_eq!(probe(kafka.clone()).await, Ok(3), "the pinned count");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(kafka.partition_change(), Some((3, 6)));
    assert_eq!(kafka.partitions(), 3);
    for r in try_requests(&kafka, &keys, "d").await {
        assert_eq!(r, Err(ProduceError::PartitionsChanged));
    }
    assert_eq!(
        ProduceError::PartitionsChanged.reason(),
        "partitions_changed"
    );

    // A fresh producer that assumes a count above the real one (as after a topic was
    // recreated smaller): a partition librdkafka does not know is refused as a count change,
    // never left to librdkafka's partitioner; a partition that exists is used.
    let fresh = Arc::new(Kafka::new(&config).expect("producer"));
    fresh.health().set(true);
    // librdkafka knows the topic's metadata first (as it does after ingest's first probe).
    assert_eq!(probe(fresh.clone()).await, Ok(6));
    fresh.assume_partitions(64);
    assert!(keys.iter().any(|k| consistent(k, 64) >= 6));
    assert!(keys.iter().any(|k| consistent(k, 64) < 6));
    for (key, r) in keys.iter().zip(try_requests(&fresh, &keys, "e").await) {
        if consistent(key, 64) >= 6 {
            assert_eq!(r, Err(ProduceError::PartitionsChanged), "{key:?}");
        } else {
            assert_eq!(r, Ok(()), "{key:?}");
        }
    }
    // A count below the real one: a valid partition, the one that count picks.
    fresh.assume_partitions(2);
    send_requests(&fresh, &keys, "f").await;

    let t = topic.clone();
    let k2 = keys.clone();
    tokio::task::spawn_blocking(move || send_reference(&t, &k2))
        .await
        .unwrap();
    let e_written = keys.iter().filter(|k| consistent(k, 64) < 6).count();
    let total = KEYS * (4 * 5 + 1) + e_written * 5;
    let t = topic.clone();
    let read = tokio::task::spawn_blocking(move || read_raw(&t, total))
        .await
        .unwrap();
    assert_eq!(
        read.len(),
        total,
        "nothing of the refused requests was written"
    );
    let m = by_key(&read);
    for key in &keys {
        // librdkafka's own choice with 6 partitions.
        assert_eq!(m[key].0, Some(consistent(key, 6)), "reference of {key:?}");
        assert!(
            !m[key].1.iter().any(|(_, v)| v.starts_with(b"d")),
            "refused records are not in Kafka"
        );
    }
    check_tagged(&m, &keys, "a", |k| consistent(k, 3));
    check_tagged(&m, &keys, "b", |k| consistent(k, 3));
    check_tagged(&m, &keys, "c", |k| consistent(k, 3));
    let written: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| consistent(k, 64) < 6)
        .cloned()
        .collect();
    check_tagged(&m, &written, "e", |k| consistent(k, 64));
    check_tagged(&m, &keys, "f", |k| consistent(k, 2));
    assert!(
        keys.iter().any(|k| consistent(k, 3) != consistent(k, 6)),
        "the count change would have moved some keys"
    );
    kafka::delete_topics(&[&topic]).await.unwrap();
}
