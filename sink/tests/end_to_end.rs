//! End to end on the real local Kafka and ClickHouse: exact counts, aborted transactions,
//! metrics and readiness, poison records, migrations twice.

use common::record::{Contact, DeadLetter};
use std::time::Duration;
use testkit::fixtures::*;
use testkit::{http, inproc, kafka};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_end_to_end() {
    let env = Env::new("sink_e2e").await;
    let tag = env.name.clone();
    let prod = env.producer();
    let mut contacts = pings(&tag, 3000, 50);
    // Retried identical pings (an ingest retry, a producer retry): must collapse.
    let dups: Vec<Contact> = contacts[..300].to_vec();
    contacts.extend(dups);
    contacts.extend(registrations(&tag, 40));
    contacts.extend(ticks(25));
    env.produce_contacts(&prod, &contacts).await;

    let txp = env.tx_producer("events");
    let committed = events(&tag, 120, 0);
    env.produce_events_tx(&txp, &committed, true).await;
    let aborted = events(&tag, 30, 10_000);
    env.produce_events_tx(&txp, &aborted, false).await;
    // A replayed event (same event_id) in a later transaction collapses.
    env.produce_events_tx(&txp, &committed[..10], true).await;

    let sink = inproc::sink(env.config.clone()).await;
    env.wait_for("SELECT count() FROM pings FINAL", 3000, T)
        .await;
    env.wait_for("SELECT count() FROM registrations FINAL", 40, T)
        .await;
    env.wait_for("SELECT count() FROM person_events FINAL", 120, T)
        .await;
    // Aborted events never land, not even as duplicates awaiting a merge.
    let ids: Vec<String> = aborted
        .iter()
        .map(|e| format!("'{}'", e.event_id))
        .collect();
    let q = format!(
        "SELECT count() FROM person_events WHERE event_id IN ({})",
        ids.join(",")
    );
    assert_eq!(env.scalar(&q).await, Some(0));
    // Every committed event exactly once through FINAL.
    assert_eq!(
        env.scalar("SELECT uniqExact(event_id) FROM person_events")
            .await,
        Some(120)
    );
    // Aggregates count distinct facts, so they are exact without FINAL.
    env.wait_for("SELECT sum(n) FROM (SELECT uniqExactMerge(pings) AS n FROM pings_per_minute GROUP BY minute)", 3000, T).await;
    assert_eq!(env.scalar("SELECT sum(n) FROM (SELECT uniqExactMerge(events) AS n FROM events_per_hour GROUP BY hour, kind)").await, Some(120));
    assert_eq!(
        env.scalar("SELECT count() FROM person_status FINAL").await,
        Some(17)
    );
    assert_eq!(
        env.scalar("SELECT uniqExact(person_id) FROM pings").await,
        Some(50)
    );
    // Nullable accuracy survived the trip.
    assert_eq!(
        env.scalar("SELECT count() FROM pings FINAL WHERE accuracy_m IS NULL")
            .await,
        Some(1000)
    );

    // Metrics and readiness.
    let addr = sink.url.clone();
    let (status, _) = http::get(&format!("{addr}/readyz")).await.unwrap();
    assert_eq!(status, 200);
    let (_, metrics) = http::get(&format!("{addr}/metrics")).await.unwrap();
    for needle in [
        "lastseen_sink_rows_written_total{table=\"pings\"}",
        "lastseen_sink_batches_total{result=\"ok\",table=\"person_events\"}",
        "lastseen_sink_insert_duration_seconds_bucket",
        "lastseen_sink_clickhouse_up 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert!(!metrics.contains(&tag), "ids must not appear in metrics");

    sink.stop().await.unwrap();
    // Offsets were committed: a second run reads nothing new and adds no rows.
    let before = env.scalar("SELECT count() FROM pings").await;
    let sink = inproc::sink(env.config.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.scalar("SELECT count() FROM pings").await, before);
    sink.stop().await.unwrap();
    env.cleanup().await;
}

/// The `ok` pings batches in the sink's metrics.
async fn pings_batches(base: &str) -> u64 {
    http::metric(
        base,
        "lastseen_sink_batches_total{result=\"ok\",table=\"pings\"}",
    )
    .await as u64
}

/// A backlog found at start (a restart, an outage) lands in fewer, larger inserts with
/// `sink.catch_up_factor`, every row exactly once; with a factor of 1 the same backlog takes
/// one insert per `max_rows`, so the comparison can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_lands_in_fewer_larger_batches() {
    const ROWS: usize = 60_000;
    let mut per_factor = Vec::new();
    for factor in [1, 4] {
        let mut env = Env::new("sink_backlog").await;
        env.config.sink.max_rows = 5_000;
        env.config.sink.max_delay = Duration::from_secs(5);
        env.config.sink.catch_up_factor = factor;
        let tag = env.name.clone();
        env.produce_contacts(&env.producer(), &pings(&tag, ROWS, 300))
            .await;
        let sink = inproc::sink(env.config.clone()).await;
        env.wait_for("SELECT count() FROM pings FINAL", ROWS as i64, T)
            .await;
        assert_eq!(
            env.scalar("SELECT count() FROM pings").await,
            Some(ROWS as i64),
            "every row once"
        );
        per_factor.push(pings_batches(&sink.url).await);
        sink.stop().await.unwrap();
        env.cleanup().await;
    }
    // Fixed limits: 60,000 / 5,000 (more if a batch was cut early by max_delay).
    assert!(per_factor[0] >= 12, "{per_factor:?}");
    // Doubling to 4 × 5,000 while behind: 5k, 10k, 20k, 20k, then the rest once the backlog
    // is read; a slow first fetch can cost a batch or two more.
    assert!(per_factor[1] <= 8, "{per_factor:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_goes_to_dead_letter_and_partition_moves_on() {
    let env = Env::new("sink_poison").await;
    let tag = env.name.clone();
    let prod = env.producer();
    let topic = env.config.kafka.contacts_topic.clone();
    // Everything on one key → one partition: good, poison, good.
    let key = Some("same-key".to_string());
    let good = |range: std::ops::Range<usize>| -> Vec<(Option<String>, Vec<u8>)> {
        pings(&tag, 200, 5)[range]
            .iter()
            .map(|c| (key.clone(), serde_json::to_vec(c).unwrap()))
            .collect()
    };
    env.produce(&prod, &topic, &good(0..100)).await;
    env.produce(
        &prod,
        &topic,
        &[(key.clone(), b"{\"type\":\"ping\",\"person_id\":".to_vec())],
    )
    .await;
    env.produce(
        &prod,
        &topic,
        &[(
            key.clone(),
            br#"{"type":"ping","person_id":"x","extra":1}"#.to_vec(),
        )],
    )
    .await;
    env.produce(&prod, &topic, &good(100..200)).await;

    let sink = inproc::sink(env.config.clone()).await;
    env.wait_for("SELECT count() FROM pings FINAL", 200, T)
        .await;

    let dlq = env.config.kafka.dead_letter_topic.clone();
    let read = tokio::task::spawn_blocking(move || kafka::read_until(&dlq, T, |m| m.len() >= 2))
        .await
        .unwrap();
    assert!(read.len() >= 2, "dead letters");
    let mut letters: Vec<DeadLetter> = read.iter().map(|m| m.json()).collect();
    letters.sort_by_key(|l| l.offset);
    assert_eq!(letters[0].stage, "sink");
    assert_eq!(letters[0].topic, topic);
    assert_eq!(letters[0].offset, 100);
    assert!(
        letters[0].reason.starts_with("truncated_json"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.starts_with("schema_mismatch"),
        "{}",
        letters[1].reason
    );
    assert!(letters[1].payload.contains("extra"));
    let metrics = http::metrics(&sink.url).await;
    assert!(
        metrics.contains("lastseen_sink_dead_letters_total{reason=\"truncated_json\"} 1"),
        "{metrics}"
    );
    sink.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_twice_and_concurrently_give_the_same_schema() {
    let env = Env::new("sink_migrate").await;
    let schema = || async {
        let ch = env.ch();
        let mut out = Vec::new();
        let tables = ch
            .fetch(&format!(
                "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
                env.config.clickhouse.database
            ))
            .await
            .unwrap();
        for t in tables {
            let create = ch
                .fetch(&format!("SHOW CREATE TABLE `{}`", t[0]))
                .await
                .unwrap();
            out.push(create[0][0].clone());
        }
        out
    };
    let (a, b) = tokio::join!(
        sink::migrate_once(&env.config),
        sink::migrate_once(&env.config)
    );
    let (v, ra) = a.unwrap();
    let (_, rb) = b.unwrap();
    let n = sink::migrate::MIGRATIONS.len();
    assert!(ra.applied.len() + ra.already.len() == n && rb.applied.len() + rb.already.len() == n);
    let first = schema().await;
    assert_eq!(first.len(), 10, "{first:#?}");
    let (_, again) = sink::migrate_once(&env.config).await.unwrap();
    assert_eq!(again.applied, Vec::<u32>::new());
    assert_eq!(again.already, vec![1, 2, 3, 4]);
    assert_eq!(schema().await, first);
    assert_eq!(
        env.scalar("SELECT count() FROM schema_migrations FINAL")
            .await,
        Some(n as i64)
    );
    // Version detection against the real server.
    let real = env.ch().version().await.unwrap();
    assert_eq!(real, v);
    if real < sink::ServerVersion::new(19, 6, 0) {
        assert!(again.optional_applied.is_empty() && again.optional_skipped.len() == 2);
    }
    env.cleanup().await;
}

/// The hand-encoded `pings` body (`PingBlock`, the sink's hot path) must land exactly what the
/// `clickhouse` crate's own `RowBinary` encoding of the same rows lands, on the real server —
/// including multi-byte string lengths, non-ASCII ids, a missing accuracy, extreme values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_ping_block_lands_the_same_rows_as_the_crate_encoding() {
    use sink::rows::{PingBlock, PingRow};
    let env = Env::new("sink_rowbinary").await;
    sink::migrate_once(&env.config).await.unwrap();
    let ch = env.ch();
    ch.exec("CREATE TABLE pings_crate AS pings").await.unwrap();
    let long = "x".repeat(300);
    let rows: Vec<PingRow> = (0..200i64)
        .map(|i| PingRow {
            person_id: match i % 4 {
                0 => String::new(),
                1 => format!("person-ü-{i}"),
                2 => long.clone(),
                _ => format!("p{i}"),
            },
            device_id: format!("дев-{i}"),
            device_ts: (1_700_000_000 + i) as u32,
            device_ts_ms: 1_700_000_000_000 + i * 1001,
            received_at: if i == 7 { u32::MAX } else { 1_700_000_100 },
            received_at_ms: -i,
            lat: -89.999_999 + i as f64 * 0.1,
            lon: 179.5 - i as f64,
            accuracy_m: (i % 3 != 0).then_some(i as f32 * 0.5),
            kafka_partition: (i % 5) as i32 - 1,
            kafka_offset: i64::MAX - i,
        })
        .collect();
    let mut block = PingBlock::default();
    for r in &rows {
        block.push(&r.as_ref());
    }
    assert_eq!(block.len(), rows.len());
    // The body in small chunks that split values, as the sink cuts it by size.
    let chunks = block.native_body(1001);
    assert!(chunks.len() > 10 && chunks.iter().all(|c| c.len() <= 1001));
    ch.insert_native("pings", PingBlock::COLUMNS, &chunks, None)
        .await
        .unwrap();
    ch.insert("pings_crate", &rows, None).await.unwrap();
    // The same body uncompressed (`clickhouse.compression = "none"`, as on one host).
    ch.exec("CREATE TABLE pings_plain AS pings").await.unwrap();
    let mut plain_cfg = env.config.clickhouse.clone();
    plain_cfg.compression = common::config::Compression::None;
    let whole = block.native_body(usize::MAX);
    assert_eq!(whole.len(), 1);
    sink::ch::Ch::new(&plain_cfg)
        .insert_native("pings_plain", PingBlock::COLUMNS, &whole, None)
        .await
        .unwrap();
    // Byte for byte what the server itself writes as Native for these rows.
    let url = format!(
        "{}/?database={}&query=SELECT%20*%20FROM%20pings_crate%20ORDER%20BY%20kafka_offset%20DESC%20FORMAT%20Native",
        env.config.clickhouse.url, env.config.clickhouse.database
    );
    let server_native = http::get_bytes(&url).await;
    assert_eq!(server_native, whole[0].to_vec());
    let dump = |t: &str| {
        let ch = ch.clone();
        let sql = format!("SELECT * FROM {t} ORDER BY kafka_offset");
        async move { ch.fetch(&sql).await.unwrap() }
    };
    let (ours, theirs) = (dump("pings").await, dump("pings_crate").await);
    assert_eq!(ours.len(), rows.len());
    assert_eq!(ours, theirs);
    assert_eq!(dump("pings_plain").await, theirs);
    block.clear();
    assert!(block.is_empty());
    assert!(block.native_body(CHUNK_ANY).is_empty());
    env.cleanup().await;
}

const CHUNK_ANY: usize = 1 << 20;
