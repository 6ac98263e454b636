//! One registration and one ping, over HTTP, through the real Kafka, the real processor and
//! the real sink into the real ClickHouse. Nothing mocked.

use common::PersonEvent;
use futures::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::time::Duration;
use testkit::{Stack, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_ping_come_out_the_other_side() -> anyhow::Result<()> {
    let mut stack = Stack::new("one_ping", 2, &[]).await?;
    stack.start_all().await?;

    let person = unique("person");
    let token = stack.token(&person, "device-1");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/registrations", stack.ingest_url))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"address": "Tverskaya 1, Moscow", "lat": 55.7575, "lon": 37.6135}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    let now_ms = common::record::now_millis();
    let r = http
        .post(format!("{}/v1/pings", stack.ingest_url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"pings": [{"ts": now_ms, "lat": 55.75, "lon": 37.61, "accuracy_m": 8.5}]}))
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    assert_eq!(r.json::<serde_json::Value>().await?["accepted"], 1);

    // The `registered` event on the events topic, as a read_committed consumer sees it.
    let consumer: StreamConsumer = testkit::kafka::client_config()
        .set("group.id", unique("e2e-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[&stack.events_topic])?;
    let mut stream = consumer.stream();
    let event = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(m) = stream.next().await {
            let m = m?;
            let e: PersonEvent = serde_json::from_slice(m.payload().unwrap_or_default())?;
            if e.person_id == person {
                return anyhow::Ok(e);
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await??;
    assert_eq!(event.kind, common::EventKind::Registered);
    assert_eq!(event.address.as_deref(), Some("Tverskaya 1, Moscow"));
    assert_eq!(event.event_id.len(), 32);

    // Rows in ClickHouse.
    let ch = stack.clickhouse();
    let pings = ch
        .wait_count(
            &format!("SELECT count() FROM pings FINAL WHERE person_id = '{person}'"),
            1,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(pings, 1, "pings rows");
    let row = ch
        .query(&format!(
            "SELECT device_id, round(lat, 2), round(lon, 2) FROM pings FINAL WHERE person_id = '{person}'"
        ))
        .await?;
    assert_eq!(row.trim(), "device-1\t55.75\t37.61");
    let events = ch
        .wait_count(
            &format!(
                "SELECT count() FROM person_events FINAL WHERE person_id = '{person}' AND kind = 'registered'"
            ),
            1,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(events, 1, "person_events rows");
    stack.check_alive()?;
    stack.cleanup().await?;
    Ok(())
}
