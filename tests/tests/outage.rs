//! A platform outage is not the persons' silence: ingest is stopped (`kill -9`: no pings, no
//! ticks reach Kafka) for longer than the deregistration threshold; the persons who were
//! pinging until the outage and resume afterwards get no `silence_notice` and no
//! `deregistered`. A control person who went silent well before the outage is noticed and
//! deregistered all the same (so the test can fail), with the outage excluded from its silence.

use common::record::now_millis;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use testkit::stack::policy_env;
use testkit::{Service, Stack, unique};

const PINGERS: usize = 12;
const OUTAGE: Duration = Duration::from_secs(12);

async fn post(http: &reqwest::Client, url: &str, token: &str, body: serde_json::Value) -> bool {
    matches!(http.post(url).bearer_auth(token).json(&body).send().await, Ok(r) if r.status() == 202)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_outage_longer_than_deregistration_deregisters_no_one() -> anyhow::Result<()> {
    let mut stack = Stack::new("outage", 2, &policy_env("4s", "8s", "2s", "250ms")).await?;
    stack.start_all().await?;
    let prefix = unique("op");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let regs = format!("{}/v1/registrations", stack.ingest_url);
    let pings = format!("{}/v1/pings", stack.ingest_url);

    // The control person registers and then says nothing.
    let control = format!("{prefix}-control");
    let ctoken = stack.token(&control, "phone");
    assert!(
        post(
            &http,
            &regs,
            &ctoken,
            serde_json::json!({"address": "Control 1"})
        )
        .await
    );

    // Steady persons: register, then a ping every second, retrying through the outage.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..PINGERS {
        let (http, regs, pings, stop, acked) = (
            http.clone(),
            regs.clone(),
            pings.clone(),
            stop.clone(),
            acked.clone(),
        );
        let id = format!("{prefix}-p{i}");
        let token = stack.token(&id, "phone");
        tasks.push(tokio::spawn(async move {
            while !post(
                &http,
                &regs,
                &token,
                serde_json::json!({"address": format!("Street {i}")}),
            )
            .await
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            while !stop.load(Relaxed) {
                let body =
                    serde_json::json!({"pings": [{"ts": now_millis(), "lat": 55.7, "lon": 37.6}]});
                if post(&http, &pings, &token, body).await {
                    acked.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        }));
    }

    // Pinging for 6 s: the control person is silent 6 s (> notice 4 s) when ingest dies.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ch = stack.clickhouse();
    let q = |kind: &str, who: &str| {
        format!(
            "SELECT count() FROM person_events FINAL WHERE kind = '{kind}' AND person_id LIKE '{who}'"
        )
    };
    assert_eq!(
        ch.wait_count(&q("silence_notice", &control), 1, Duration::from_secs(20))
            .await?,
        1,
        "the control person should have its notice before the outage"
    );
    let down = Instant::now();
    stack.kill(Service::Ingest, 0);
    tokio::time::sleep(OUTAGE).await;
    stack.start(Service::Ingest)?;
    let url = stack.ingest_url.clone();
    stack.wait_ready(&url, Duration::from_secs(60)).await?;
    let outage = down.elapsed();
    eprintln!("ingest was down {outage:?} (deregister_after 8s)");

    // The control person: 6 s of silence before + 2 s after → deregistered, outage excluded.
    assert_eq!(
        ch.wait_count(&q("deregistered", &control), 1, Duration::from_secs(40))
            .await?,
        1,
        "the control person must be deregistered after the outage"
    );
    let excluded = ch
        .count(&format!("SELECT excluded_outage_ms FROM person_events FINAL WHERE kind = 'deregistered' AND person_id = '{control}'"))
        .await?;
    assert!(
        excluded as i64 >= OUTAGE.as_millis() as i64 - 1000,
        "the outage ({outage:?}) must be excluded from the control's silence, got {excluded} ms"
    );
    // Keep pinging for more than the notice threshold after the restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pingers = format!("{prefix}-p%");
    // Events of those 6 s are in ClickHouse within a few seconds (commit 200 ms, sink 200 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let notices = ch.count(&q("silence_notice", &pingers)).await?;
    let deregs = ch.count(&q("deregistered", &pingers)).await?;
    let registered = ch.count(&q("registered", &pingers)).await?;
    let all = ch
        .query(&format!(
            "SELECT kind, count() FROM person_events FINAL WHERE person_id LIKE '{pingers}' GROUP BY kind ORDER BY kind"
        ))
        .await?;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await?;
    }
    assert_eq!(
        registered, PINGERS as u64,
        "events of the steady persons:\n{all}"
    );
    assert_eq!(
        (notices, deregs),
        (0, 0),
        "the outage was held against steady persons:\n{all}"
    );
    assert_eq!(
        all.lines().count(),
        1,
        "only `registered` for steady persons:\n{all}"
    );
    // Every acknowledged ping is stored once.
    let want = acked.load(Relaxed);
    let got = ch
        .wait_count(
            &format!("SELECT count() FROM pings FINAL WHERE person_id LIKE '{pingers}'"),
            want,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(got, want, "acknowledged pings stored");
    stack.check_alive()?;
    stack.cleanup().await?;
    Ok(())
}
