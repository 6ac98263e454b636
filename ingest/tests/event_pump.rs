//! Delivery reports of ingest's producer are served by a task on the async runtime
//! (`ingest::kafka::native::EventPump`), not by a polling thread; outside a runtime, by a
//! thread. Against the real broker: every request of a concurrent burst is acknowledged and
//! its records are in the topic, both ways; dropping the producer stops the pump and releases
//! librdkafka (its threads end).
//!
//! One test function, so that counting this process's threads is not disturbed by another
//! test running in parallel.

use ingest::auth::Identity;
use ingest::decode::PingIn;
use ingest::kafka::{Kafka, Records};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{inproc, kafka, names};

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let path = e.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_string())
        })
        .collect()
}

fn librdkafka_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("rdk:"))
        .count()
}

fn request(person: usize, pings: usize) -> Records {
    let id = Identity {
        person_id: format!("pump-person-{person}"),
        device_id: format!("pump-device-{person}"),
    };
    let now = common::record::now_millis();
    let pings: Vec<PingIn> = (0..pings)
        .map(|i| PingIn {
            device_ts: now - i as i64,
            lat: 55.75,
            lon: 37.61,
            accuracy_m: None,
        })
        .collect();
    let mut r = Records::with_capacity(pings.len());
    ingest::encode_pings(&id, &pings, now, &mut r);
    r
}

/// Sends `requests` requests of `pings` pings at once; every one must be acknowledged.
async fn burst(kafka: &Kafka, first_person: usize, requests: usize, pings: usize) {
    let sends = (0..requests).map(|i| kafka.send_all(request(first_person + i, pings)));
    for r in futures::future::join_all(sends).await {
        r.expect("acknowledged");
    }
}

fn count_in_topic(topic: &str, want: usize) -> usize {
    kafka::read_contacts(topic, Duration::from_secs(30), |r| r.len() >= want).len()
}

#[test]
fn deliveries_are_served_on_the_runtime_or_on_a_thread_outside_one() {
    const PARTITIONS: i32 = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let topic = names::unique_topic("event-pump");
    rt.block_on(kafka::create_topic(&topic, PARTITIONS));
    let config = inproc::ingest_config(&topic);
    let before = librdkafka_threads();

    // Inside a runtime: no polling thread, deliveries served by the pump task.
    let kafka = rt.block_on(async { Arc::new(Kafka::new(&config).expect("producer")) });
    kafka.health().set(true);
    kafka.assume_partitions(PARTITIONS);
    let names = thread_names();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("producer poll") || n == "ingest-kafka-ev"),
        "no polling thread inside a runtime: {names:?}"
    );
    assert!(librdkafka_threads() > before, "the producer runs");
    rt.block_on(burst(&kafka, 0, 200, 50));
    // A second burst after the queue went idle: the pump is woken again.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    rt.block_on(burst(&kafka, 200, 50, 10));
    assert_eq!(
        count_in_topic(&topic, 200 * 50 + 50 * 10),
        200 * 50 + 50 * 10
    );

    // Dropped: the pump stops and releases the producer; librdkafka's threads end.
    drop(kafka);
    let deadline = Instant::now() + Duration::from_secs(10);
    while librdkafka_threads() > before {
        assert!(
            Instant::now() < deadline,
            "librdkafka still running after the producer was dropped: {:?}",
            thread_names()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Outside a runtime: a thread serves the deliveries (a request still needs a runtime to
    // await its acknowledgement).
    let kafka = Kafka::new(&config).expect("producer");
    kafka.health().set(true);
    // (The thread names itself once running.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while !thread_names().iter().any(|n| n == "ingest-kafka-ev") {
        assert!(
            Instant::now() < deadline,
            "an event thread outside a runtime"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.block_on(burst(&kafka, 1000, 20, 5));
    drop(kafka);
    assert_eq!(
        count_in_topic(&topic, 200 * 50 + 50 * 10 + 20 * 5),
        200 * 50 + 50 * 10 + 20 * 5
    );
    rt.block_on(kafka::delete_topics(&[&topic])).unwrap();
}
