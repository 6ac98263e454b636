//! The one-call enqueue of a request's records (`ingest::kafka::native`) against the real
//! broker and against an unreachable one: records arrive byte for byte, keyed, on the
//! partition a per-record `send` of the same key picks; a full queue refuses the rest and
//! returns their delivery opaques; every delivery report (success, failure, purge) releases
//! the records' bytes; `Kafka::send_all` maps a full queue and a dead broker to errors (503).

mod support;

use ingest::kafka::native::{BatchProducer, NotEnqueued, RecordsOwner};
use ingest::kafka::{Kafka, ProduceError, Records, producer_config};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

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
fn read_raw(topic: &str, partitions: i32, n: usize) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            out.push((
                m.partition(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_byte_for_byte_on_the_partition_a_send_picks() {
    let topic = unique_topic("batch");
    create_topic(&topic, 4).await;
    let config = config(&topic);
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
            p.producer()
                .send(
                    BaseRecord::<[u8], [u8], Arc<Owned>>::with_opaque_to(
                        &t,
                        Arc::new(Owned {
                            records: Records::default(),
                        }),
                    )
                    .key(person.as_bytes())
                    .payload(b"reference".as_slice()),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        p.producer().flush(Duration::from_secs(20)).expect("flush");
        assert_eq!(reports.ok.load(Ordering::SeqCst), 5 * 40 + 5);
        assert!(reports.errors.lock().unwrap().is_empty());
        for o in &owners {
            // Every delivery report released its clone: only ours is left.
            assert_eq!(Arc::strong_count(o), 1);
        }

        let read = read_raw(&t, 4, 5 * 40 + 5);
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
    delete_topic(&topic).await;
}

#[test]
fn a_full_queue_refuses_the_rest_and_every_report_releases_the_bytes() {
    // Nothing listens on port 1: the queue never drains.
    let mut config = config("test.ingest.unreachable");
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
    let mut config = config("test.ingest.unreachable");
    config.kafka.brokers = "127.0.0.1:1".into();
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
