//! `ingest::kafka::partition::consistent` against librdkafka's own partitioner functions,
//! called directly (no broker): for many keys and partition counts it must return what
//! `rd_kafka_msg_partitioner_consistent_random` (librdkafka's default `partitioner`) and
//! `rd_kafka_msg_partitioner_consistent` return. `produce_batch.rs` checks the same against
//! the partitions the real broker's records land on.

use ingest::kafka::Records;
use ingest::kafka::partition::{UNASSIGNED, consistent, crc32};
use rdkafka::bindings as rd;
use std::ffi::c_void;

fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..2000u32 {
        keys.push(format!("person-{i}").into_bytes());
        keys.push(format!("bench-person-{i}").into_bytes());
        // UUID-shaped ids, as real person ids are.
        let h = crc32(&i.to_le_bytes());
        keys.push(
            format!(
                "{h:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                i & 0xffff,
                i % 4096,
                (i * 7) % 4096,
                u64::from(h) * 31 + u64::from(i)
            )
            .into_bytes(),
        );
    }
    // Every single byte, non-UTF-8 and NUL bytes, long keys and multi-byte UTF-8.
    for b in 0..=255u8 {
        keys.push(vec![b]);
        keys.push(vec![0, b, 0xff, b]);
    }
    for len in [63, 64, 65, 255, 256, 1000, 4096] {
        keys.push((0..len).map(|i| (i * 31 % 251) as u8).collect());
    }
    keys.push("Jürgen-Ærø-日本-🙂".as_bytes().to_vec());
    keys
}

fn librdkafka(
    f: unsafe extern "C" fn(
        *const rd::rd_kafka_topic_t,
        *const c_void,
        usize,
        i32,
        *mut c_void,
        *mut c_void,
    ) -> i32,
    key: &[u8],
    partitions: i32,
) -> i32 {
    // SAFETY: for a non-empty key both partitioners only hash `keylen` bytes at `key` (see
    // librdkafka's rdkafka_msg.c); they never touch the topic or the opaques, so null is fine.
    #[allow(unsafe_code)]
    unsafe {
        f(
            std::ptr::null(),
            key.as_ptr().cast(),
            key.len(),
            partitions,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

#[test]
fn consistent_is_librdkafkas_default_partitioner_for_keyed_records() {
    let keys = keys();
    let counts = [
        1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 31, 32, 48, 64, 100, 127, 128, 1000, 4096, 65_537,
    ];
    let mut spread = vec![0usize; 6];
    for n in counts {
        for key in &keys {
            let ours = consistent(key, n);
            assert_eq!(
                ours,
                librdkafka(rd::rd_kafka_msg_partitioner_consistent_random, key, n),
                "consistent_random, key {key:?}, {n} partitions"
            );
            assert_eq!(
                ours,
                librdkafka(rd::rd_kafka_msg_partitioner_consistent, key, n),
                "consistent, key {key:?}, {n} partitions"
            );
            if n == 6 {
                spread[ours as usize] += 1;
            }
        }
    }
    // Not a constant: the keys spread over the partitions.
    assert!(spread.iter().all(|&c| c > keys.len() / 12), "{spread:?}");
}

#[test]
fn a_request_shares_its_persons_partition_and_mixed_or_unknown_is_left_to_librdkafka() {
    let mut r = Records::default();
    assert_eq!(ingest::kafka::partition_for(&r, 6), UNASSIGNED);
    for i in 0..100 {
        r.push_raw(b"person-42", |b| {
            b.extend_from_slice(format!("{{\"i\":{i}}}").as_bytes())
        });
    }
    assert_eq!(r.shared_key(), Some(b"person-42".as_slice()));
    for n in [1, 3, 6, 64] {
        assert_eq!(
            ingest::kafka::partition_for(&r, n),
            librdkafka(
                rd::rd_kafka_msg_partitioner_consistent_random,
                b"person-42",
                n
            )
        );
    }
    // Count unknown: librdkafka partitions.
    assert_eq!(ingest::kafka::partition_for(&r, 0), UNASSIGNED);
    // Another key among them: librdkafka partitions each record.
    r.push_raw(b"person-43", |b| b.extend_from_slice(b"{}"));
    assert_eq!(r.shared_key(), None);
    assert_eq!(ingest::kafka::partition_for(&r, 6), UNASSIGNED);
    // An empty key is randomly (stickily) partitioned by librdkafka: not ours to choose.
    let mut e = Records::default();
    e.push_raw(b"", |b| b.extend_from_slice(b"{}"));
    assert_eq!(ingest::kafka::partition_for(&e, 6), UNASSIGNED);
}

#[test]
fn only_the_default_and_consistent_partitioners_are_computed() {
    let mut c = rdkafka::config::ClientConfig::new();
    assert!(ingest::kafka::computes_partitioner(&c));
    c.set("partitioner", "consistent_random");
    assert!(ingest::kafka::computes_partitioner(&c));
    c.set("partitioner", "consistent");
    assert!(ingest::kafka::computes_partitioner(&c));
    for other in [
        "murmur2",
        "murmur2_random",
        "fnv1a",
        "fnv1a_random",
        "random",
    ] {
        c.set("partitioner", other);
        assert!(!ingest::kafka::computes_partitioner(&c), "{other}");
    }
    // And ingest's own settings keep the default.
    let config = common::Config::defaults();
    assert!(ingest::kafka::computes_partitioner(
        &ingest::kafka::producer_config(&config)
    ));
}
