//! Integration tests against the real Kafka: each test has its own topic and its own ingest.

use common::Contact;
use common::record::now_millis;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use testkit::{http, inproc, kafka, names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_acknowledged_stamped_keyed_and_ticks_reach_every_partition() {
    let (topic, cfg) = inproc::ingest_topic("pings", 3).await;
    let ingest = inproc::ingest(cfg).await;
    ingest.wait_ready(Duration::from_secs(20)).await;

    let before = now_millis();
    let now = now_millis();
    let mut sent = 0;
    for (person, device) in [
        ("person-a", "dev-a"),
        ("person-b", "dev-b"),
        ("person-c", "dev-c"),
    ] {
        let body = json!({"pings": [
            {"ts": now - 1000, "lat": 55.75, "lon": 37.61, "accuracy_m": 12.5},
            {"ts": "2025-09-01T12:00:00+03:00", "lat": 55.76, "lon": 37.62},
        ]});
        let mut body = body;
        // Keep the RFC 3339 ping inside max_age: use the current time in UTC.
        body["pings"][1]["ts"] = json!(now - 2000);
        let r = http::post(
            &ingest.url,
            "/v1/pings",
            Some(&testkit::token(person, device)),
            body.to_string(),
        )
        .await;
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 2}));
        sent += 2;
    }
    // An RFC 3339 timestamp with an offset.
    let ts = std::time::SystemTime::now() - Duration::from_secs(60);
    let secs = ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let rfc = rfc3339_plus3(secs);
    let r = http::post(
        &ingest.url,
        "/v1/pings",
        Some(&testkit::token("person-a", "dev-a")),
        json!({"pings":[{"ts": rfc, "lat": 1.0, "lon": 2.0}]}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    sent += 1;
    let after = now_millis();

    let records = kafka::contacts_until(&topic, Duration::from_secs(20), move |rs| {
        let parts: BTreeSet<i32> = rs
            .iter()
            .filter(|r| matches!(r.contact, Contact::Tick(_)))
            .map(|r| r.partition)
            .collect();
        kafka::pings_of(rs).len() >= sent && parts.len() == 3
    })
    .await;
    let pings = kafka::pings_of(&records);
    assert_eq!(pings.len(), sent, "{records:#?}");
    let mut partition_of = std::collections::HashMap::new();
    for (r, p) in &pings {
        assert_eq!(
            r.key.as_deref(),
            Some(p.person_id.as_str()),
            "keyed by person"
        );
        assert!(
            p.received_at >= before && p.received_at <= after,
            "received_at stamped"
        );
        assert_eq!(p.device_id, format!("dev-{}", &p.person_id[7..]));
        // One person's records stay on one partition: the one librdkafka's default
        // partitioner picks for the person (crc32 of the key modulo the partition count).
        assert_eq!(
            *partition_of
                .entry(p.person_id.clone())
                .or_insert(r.partition),
            r.partition
        );
        assert_eq!(
            r.partition,
            ingest::kafka::partition::consistent(p.person_id.as_bytes(), 3)
        );
    }
    let a: Vec<_> = pings
        .iter()
        .filter(|(_, p)| p.person_id == "person-a")
        .collect();
    assert_eq!(a[0].1.accuracy_m, Some(12.5));
    assert_eq!(a[2].1.device_ts, secs * 1000);
    let tick_partitions: BTreeSet<i32> = records
        .iter()
        .filter_map(|r| match &r.contact {
            Contact::Tick(t) => {
                assert_eq!(t.source, "ingest-test");
                assert!(r.key.is_none());
                Some(r.partition)
            }
            _ => None,
        })
        .collect();
    assert_eq!(tick_partitions, BTreeSet::from([0, 1, 2]));

    ingest.stop().await.expect("clean shutdown");
    kafka::delete_topics(&[&topic]).await.unwrap();
}

fn rfc3339_plus3(secs: i64) -> String {
    // Civil time at +03:00, from epoch seconds (inverse of days_from_civil).
    let local = secs + 3 * 3600;
    let days = local.div_euclid(86_400);
    let rem = local.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+03:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_produce_nothing() {
    let (topic, mut cfg) = inproc::ingest_topic("rejected", 2).await;
    cfg.ingest.max_body_bytes = 2048;
    let ingest = inproc::ingest(cfg).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    let ok_token = testkit::token("person-x", "dev-x");
    let now = now_millis();
    let url = &ingest.url;

    // 401: missing, expired, wrong secret.
    let good = json!({"pings":[{"ts": now, "lat": 1, "lon": 2}]}).to_string();
    let r = http::post(url, "/v1/pings", None, good.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "unauthorized");
    let expired = ingest::auth::testing::hs256(
        testkit::SECRET,
        &json!({"sub":"p","device_id":"d","exp": now / 1000 - 3600}),
    );
    let r = http::post(url, "/v1/pings", Some(&expired), good.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "token expired");
    let forged = ingest::auth::testing::hs256_for("not-the-secret", "person-x", "dev-x");
    let r = http::post(url, "/v1/pings", Some(&forged), good.clone()).await;
    assert_eq!(r.status(), 401);

    // 400: one bad item among good ones rejects the whole request, naming the item.
    let body = json!({"pings":[
        {"ts": now, "lat": 1, "lon": 2},
        {"ts": now, "lat": 1, "lon": 2},
        {"ts": now, "lat": 1, "lon": 2},
        {"ts": now, "lat": 91, "lon": 2},
    ]});
    let r = http::post(url, "/v1/pings", Some(&ok_token), body.to_string()).await;
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        b,
        json!({"error":"invalid_request","details":[{"index":3,"field":"lat","reason":"must be within [-90, 90]"}]})
    );
    // A device cannot name another person: person_id in the body is an unknown field.
    let body = json!({"pings":[{"ts": now, "lat": 1, "lon": 2, "person_id": "someone-else"}]});
    let r = http::post(url, "/v1/pings", Some(&ok_token), body.to_string()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["details"][0]["field"],
        "person_id"
    );
    // Malformed JSON names the position.
    let r = http::post(url, "/v1/pings", Some(&ok_token), "{\"pings\": [").await;
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["line"].as_u64(), b["column"].as_u64()),
        (Some(1), Some(11))
    );
    // 413 and 415.
    let big = format!(
        r#"{{"pings":[{}]}}"#,
        vec![r#"{"ts":0,"lat":0,"lon":0}"#; 200].join(",")
    );
    let r = http::post(url, "/v1/pings", Some(&ok_token), big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["limit_bytes"], 2048);
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/pings"))
        .header("authorization", format!("Bearer {ok_token}"))
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http::post(
        url,
        "/v1/registrations",
        Some(&ok_token),
        r#"{"address":""}"#,
    )
    .await;
    assert_eq!(r.status(), 400);

    // Finally one good registration, which must be the only non-tick record.
    let r = http::post(
        url,
        "/v1/registrations",
        Some(&ok_token),
        json!({"address": "Москва, ул. Тверская, 1", "lat": 55.76, "lon": 37.61}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 1}));

    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"lastseen_ingest_requests_total{route="/v1/pings",status="401"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lastseen_ingest_rejected_total{reason="invalid"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"lastseen_ingest_records_total{type="registration"} 1"#));
    assert!(metrics.contains("lastseen_ingest_ticks_total"));
    assert!(metrics.contains("lastseen_ingest_request_duration_seconds_bucket"));
    assert!(!metrics.contains("person-x") && !metrics.contains("dev-x"));

    ingest.stop().await.expect("clean shutdown");
    let records = kafka::contacts_until(&topic, Duration::from_secs(5), |_| false).await;
    let non_ticks: Vec<_> = records
        .iter()
        .filter(|r| !matches!(r.contact, Contact::Tick(_)))
        .collect();
    assert_eq!(non_ticks.len(), 1, "{non_ticks:#?}");
    match &non_ticks[0].contact {
        Contact::Registration(reg) => {
            assert_eq!(reg.person_id, "person-x");
            assert_eq!(reg.device_id, "dev-x");
            assert_eq!(reg.address, "Москва, ул. Тверская, 1");
            assert_eq!(non_ticks[0].key.as_deref(), Some("person-x"));
        }
        other => panic!("{other:?}"),
    }
    kafka::delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let (topic, mut cfg) = inproc::ingest_topic("ratelimit", 1).await;
    cfg.ingest.rate_limit_per_device = 0.5;
    cfg.ingest.rate_limit_burst = 2;
    let ingest = inproc::ingest(cfg).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    let t = testkit::token("person-r", "dev-r");
    let body = json!({"pings":[{"ts": now_millis(), "lat": 1, "lon": 2}]}).to_string();
    for _ in 0..2 {
        assert_eq!(
            http::post(&ingest.url, "/v1/pings", Some(&t), body.clone())
                .await
                .status(),
            202
        );
    }
    let r = http::post(&ingest.url, "/v1/pings", Some(&t), body.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");
    // Another device of the same person is not affected.
    let t2 = testkit::token("person-r", "dev-r2");
    assert_eq!(
        http::post(&ingest.url, "/v1/pings", Some(&t2), body)
            .await
            .status(),
        202
    );
    ingest.stop().await.unwrap();
    kafka::delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_is_not_ready_and_refuses_with_503() {
    let topic = names::unique_topic("missing");
    let ingest = inproc::ingest(inproc::ingest_config(&topic)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = http::get(&format!("{}/readyz", ingest.url)).await.unwrap();
    assert_eq!(status, 503);
    let (status, _) = http::get(&format!("{}/healthz", ingest.url)).await.unwrap();
    assert_eq!(status, 200);
    let body = json!({"pings":[{"ts": now_millis(), "lat": 1, "lon": 2}]}).to_string();
    let r = http::post(
        &ingest.url,
        "/v1/pings",
        Some(&testkit::token("p", "d")),
        body,
    )
    .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unavailable");
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served() {
    let topic = names::unique_topic("openapi");
    let ingest = inproc::ingest(inproc::ingest_config(&topic)).await;
    let r = reqwest::get(format!("{}/openapi.json", ingest.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::from_str::<Value>(ingest::OPENAPI_JSON).unwrap()
    );
    ingest.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partition_count_is_refused_with_503_and_never_followed() {
    let (topic, cfg) = inproc::ingest_topic("repartitioned", 2).await;
    let ingest = inproc::ingest(cfg).await;
    ingest.wait_ready(Duration::from_secs(20)).await;
    let body = || json!({"pings":[{"ts": now_millis(), "lat": 1, "lon": 2}]}).to_string();
    let token = testkit::token("person-r", "dev-r");
    let r = http::post(&ingest.url, "/v1/pings", Some(&token), body()).await;
    assert_eq!(r.status(), 202);

    let admin = kafka::Admin::test().client().expect("admin");
    for r in admin
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(&topic, 3)],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create partitions")
    {
        r.expect("partitions added");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while http::metric(&ingest.url, "lastseen_ingest_partition_mismatch").await != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "mismatch never reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = http::get(&format!("{}/readyz", ingest.url)).await.unwrap();
    assert_eq!(status, 503, "not ready while refusing");
    let r = http::post(&ingest.url, "/v1/pings", Some(&token), body()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unavailable");
    assert_eq!(
        http::metric(
            &ingest.url,
            r#"lastseen_ingest_produce_errors_total{reason="partitions_changed"}"#
        )
        .await,
        1.0
    );
    // Ticks stopped too: nothing ever reaches the new partition, and after a few tick
    // intervals nothing more reaches the old ones either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = topic.clone();
    let first = kafka::contacts_until(&t, Duration::from_secs(3), |_| false).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = kafka::contacts_until(&t, Duration::from_secs(3), |_| false).await;
    assert!(
        first.iter().all(|r| r.partition < 2),
        "the new partition gets nothing"
    );
    assert_eq!(first.len(), later.len(), "no ticks while refusing");
    ingest.stop().await.unwrap();
    kafka::delete_topics(&[&topic]).await.unwrap();
}
