//! Rows that decode but that ClickHouse refuses, on the real local Kafka and ClickHouse 18.16:
//!
//! - `refused_rows_are_dead_lettered_and_the_rest_lands_once`: a ping and a registration are
//!   refused by a `throwIf` in a MATERIALIZED column (evaluated before anything is written,
//!   unlike a guard view, which 18.16 runs after the table's own write); the batch is split,
//!   exactly those two records are parked with value-free reasons and their offsets, every
//!   other row lands once, the events behind them too, the offsets are committed.
//! - `a_systemic_rejection_retries_and_parks_nothing`: a missing table stalls its inserts
//!   (retried, counted as systemic, nothing parked, nothing committed) until it is back.

use common::record::{Contact, DeadLetter};
use std::time::Duration;
use testkit::fixtures::*;
use testkit::{Msg, http, inproc, kafka};

const T: Duration = Duration::from_secs(60);

/// The dead-letter topic's records, read until `done`.
async fn dead_letters(env: &Env, within: Duration, want: usize) -> Vec<DeadLetter> {
    let dlq = env.config.kafka.dead_letter_topic.clone();
    let read = tokio::task::spawn_blocking(move || {
        kafka::read_until(&dlq, within, |m| m.len() >= want.max(1))
    })
    .await
    .unwrap();
    read.iter().map(Msg::json).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_are_dead_lettered_and_the_rest_lands_once() {
    let env = Env::new("sink_refused").await;
    sink::migrate_once(&env.config).await.unwrap();
    let ch = env.ch();
    ch.exec("ALTER TABLE pings ADD COLUMN guard UInt8 MATERIALIZED throwIf(device_id = 'poison-device')")
        .await
        .unwrap();
    ch.exec("ALTER TABLE registrations ADD COLUMN guard UInt8 MATERIALIZED throwIf(address = 'Poison street 13')")
        .await
        .unwrap();

    let tag = env.name.clone();
    let topic = env.config.kafka.contacts_topic.clone();
    // One key: one partition, so the poisoned records sit between good ones of one batch.
    let key = Some("same-key".to_string());
    let records = |cs: &[Contact]| -> Vec<(Option<String>, Vec<u8>)> {
        cs.iter()
            .map(|c| (key.clone(), serde_json::to_vec(c).unwrap()))
            .collect()
    };
    let good = pings(&tag, 2000, 40);
    let mut poison_ping = good[0].clone();
    let mut poison_reg = registrations(&tag, 1).remove(0);
    if let (Contact::Ping(p), Contact::Registration(r)) = (&mut poison_ping, &mut poison_reg) {
        p.person_id = format!("{tag}-poisoned-person");
        p.device_id = "poison-device".into();
        p.lat = 12.345_678;
        p.lon = 98.765_432;
        r.person_id = format!("{tag}-poisoned-registrant");
        r.address = "Poison street 13".into();
    }
    let regs = registrations(&tag, 30);
    let prod = env.producer();
    env.produce(&prod, &topic, &records(&good[..1000])).await;
    env.produce(&prod, &topic, &records(&[poison_ping])).await;
    env.produce(&prod, &topic, &records(&good[1000..])).await;
    env.produce(&prod, &topic, &records(&regs[..15])).await;
    env.produce(&prod, &topic, &records(&[poison_reg])).await;
    env.produce(&prod, &topic, &records(&regs[15..])).await;
    let txp = env.tx_producer("events");
    let evs = events(&tag, 50, 0);
    env.produce_events_tx(&txp, &evs, true).await;

    let sink = inproc::sink(env.config.clone()).await;
    env.wait_for("SELECT count() FROM pings FINAL", 2000, T)
        .await;
    env.wait_for("SELECT count() FROM registrations FINAL", 30, T)
        .await;
    env.wait_for("SELECT count() FROM person_events FINAL", 50, T)
        .await;
    kafka::wait_group_caught_up(&env.config.sink.group_id, &topic, T)
        .await
        .unwrap();

    // Every other row exactly once, not even a duplicate awaiting a merge (the refused
    // inserts wrote nothing, each half that succeeded was inserted once).
    assert_eq!(env.scalar("SELECT count() FROM pings").await, Some(2000));
    assert_eq!(
        env.scalar("SELECT count() FROM registrations").await,
        Some(30)
    );
    assert_eq!(
        env.scalar("SELECT count() FROM pings WHERE device_id = 'poison-device'")
            .await,
        Some(0)
    );
    assert_eq!(
        env.scalar("SELECT sum(n) FROM (SELECT uniqExactMerge(pings) AS n FROM pings_per_minute GROUP BY minute)").await,
        Some(2000)
    );

    // Exactly the two refused records are parked, naming their records.
    let letters = dead_letters(&env, T, 2).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let contacts = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || kafka::read_until(&topic, T, |m| m.len() >= 2032))
            .await
            .unwrap()
    };
    let source_of = |needle: &str| {
        let m = contacts
            .iter()
            .find(|m| String::from_utf8_lossy(&m.payload).contains(needle))
            .expect("the poisoned record");
        (m.partition, m.offset)
    };
    let (ping_letter, reg_letter) = {
        let mut l = letters.clone();
        l.sort_by_key(|l| l.offset);
        (l[0].clone(), l[1].clone())
    };
    assert_eq!(
        (ping_letter.partition, ping_letter.offset),
        source_of("poison-device")
    );
    assert_eq!(
        (reg_letter.partition, reg_letter.offset),
        source_of("Poison street 13")
    );
    for (l, table) in [(&ping_letter, "pings"), (&reg_letter, "registrations")] {
        assert_eq!(l.stage, "sink");
        assert_eq!(l.topic, topic);
        assert_eq!(
            l.reason,
            format!(
                "clickhouse_rejected: table {table}, clickhouse code 395 \
                 FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"
            )
        );
        for value in ["poison", "Poison", tag.as_str(), "12.34", "98.76", "street"] {
            assert!(!l.reason.contains(value), "{} echoes {value}", l.reason);
        }
    }
    // The payload is the refused row, insertable as JSONEachRow once the cause is fixed.
    let row: serde_json::Value = serde_json::from_str(&ping_letter.payload).unwrap();
    assert_eq!(row["device_id"], "poison-device");
    assert_eq!(row["kafka_offset"], ping_letter.offset);
    let row: serde_json::Value = serde_json::from_str(&reg_letter.payload).unwrap();
    assert_eq!(row["address"], "Poison street 13");

    let metrics = http::metrics(&sink.url).await;
    for needle in [
        "lastseen_sink_rows_dead_lettered_total{reason=\"FUNCTION_THROW_IF_VALUE_IS_NON_ZERO\",table=\"pings\"} 1",
        "lastseen_sink_rows_dead_lettered_total{reason=\"FUNCTION_THROW_IF_VALUE_IS_NON_ZERO\",table=\"registrations\"} 1",
        "lastseen_sink_dead_letters_total{reason=\"clickhouse_rejected\"} 2",
        "lastseen_sink_insert_rejected_total{class=\"data\",table=\"pings\"}",
        "lastseen_sink_clickhouse_up 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert!(!metrics.contains("class=\"systemic\""), "{metrics}");
    assert!(!metrics.contains(&tag), "ids must not appear in metrics");
    sink.stop().await.unwrap();

    // Committed: a second run adds no row and parks nothing again.
    let sink = inproc::sink(env.config.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.scalar("SELECT count() FROM pings").await, Some(2000));
    assert_eq!(dead_letters(&env, Duration::from_secs(3), 3).await.len(), 2);
    sink.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemic_rejection_retries_and_parks_nothing() {
    let mut env = Env::new("sink_systemic").await;
    env.config.sink.max_backoff = Duration::from_millis(300);
    sink::migrate_once(&env.config).await.unwrap();
    let ch = env.ch();
    ch.exec("RENAME TABLE registrations TO registrations_away")
        .await
        .unwrap();
    let tag = env.name.clone();
    let prod = env.producer();
    env.produce_contacts(&prod, &pings(&tag, 100, 5)).await;
    env.produce_contacts(&prod, &registrations(&tag, 10)).await;

    let sink = inproc::sink(env.config.clone()).await;
    // Pings are written first; registrations then fail with UNKNOWN_TABLE, retried.
    env.wait_for("SELECT count() FROM pings FINAL", 100, T)
        .await;
    let series = "lastseen_sink_insert_rejected_total{class=\"systemic\",table=\"registrations\"}";
    let t0 = std::time::Instant::now();
    while http::metric(&sink.url, series).await < 3.0 {
        assert!(t0.elapsed() < T, "no systemic rejection counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing parked, nothing committed, not ready.
    assert!(
        dead_letters(&env, Duration::from_secs(2), 1)
            .await
            .is_empty()
    );
    assert!(
        kafka::wait_group_caught_up(
            &env.config.sink.group_id,
            &env.config.kafka.contacts_topic,
            Duration::from_millis(500)
        )
        .await
        .is_err(),
        "offsets committed while registrations were not written"
    );
    let metrics = http::metrics(&sink.url).await;
    assert!(
        metrics.contains("lastseen_sink_clickhouse_up 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("lastseen_sink_rows_dead_lettered_total{"));

    // The operator puts the table back: the same rows land, the offsets move.
    ch.exec("RENAME TABLE registrations_away TO registrations")
        .await
        .unwrap();
    env.wait_for("SELECT count() FROM registrations FINAL", 10, T)
        .await;
    kafka::wait_group_caught_up(
        &env.config.sink.group_id,
        &env.config.kafka.contacts_topic,
        T,
    )
    .await
    .unwrap();
    assert!(
        dead_letters(&env, Duration::from_secs(1), 1)
            .await
            .is_empty()
    );
    sink.stop().await.unwrap();
    env.cleanup().await;
}
