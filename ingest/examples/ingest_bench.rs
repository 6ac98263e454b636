//! Load benchmark for ingest.
//!
//! `cargo run --release -p ingest --example ingest_bench -- --duration 20s --concurrency 64 --devices 10000`
//!
//! Starts ingest in-process (its own runtime threads) against the real Kafka on a fresh
//! topic, unless `--url` targets a running one (then `--secret` must match its HS256 secret
//! and its rate limit should be off). Signs one token per device, posts batches of
//! `--batch` pings from `--concurrency` connections for `--duration`, then measures a bare
//! rdkafka producer writing the same serialized records to the same topic with the same
//! settings (the floor), then replays half the achieved load at a fixed rate. Prints one JSON
//! line: pings_per_sec, p50_ms, p99_ms, errors, bare_producer_pings_per_sec, half_load_p99_ms.

use clap::Parser;
use common::Config;
use ingest::auth::Identity;
use ingest::decode::PingIn;
use ingest::kafka::{Records, producer_config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Length of the full-load phase (and of the bare-producer phase).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct devices (and persons) signing requests.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Pings per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Target a running ingest instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// HS256 secret of the target.
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Kafka brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic for the bare producer (and for the in-process ingest); default: a fresh one.
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the fresh topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Skip the half-load phase.
    #[arg(long)]
    no_half_load: bool,
}

#[derive(Default)]
struct Stats {
    lat_us: Vec<u32>,
    ok_pings: u64,
    errors: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn body(batch: usize) -> bytes::Bytes {
    let now = common::record::now_millis();
    let pings: Vec<String> = (0..batch)
        .map(|i| {
            format!(
                r#"{{"ts":{},"lat":{:.6},"lon":{:.6},"accuracy_m":{}}}"#,
                now - 1000 + i as i64,
                55.75 + i as f64 * 1e-4,
                37.61 - i as f64 * 1e-4,
                5 + i % 20
            )
        })
        .collect();
    format!(r#"{{"pings":[{}]}}"#, pings.join(",")).into()
}

/// Closed loop: `concurrency` workers post back to back until `deadline`; or, with
/// `interval`, each worker posts once per interval (a fixed arrival rate).
async fn load(
    url: &str,
    tokens: Arc<Vec<reqwest::header::HeaderValue>>,
    body: bytes::Bytes,
    batch: usize,
    concurrency: usize,
    dur: Duration,
    interval: Option<Duration>,
) -> Stats {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let tokens = tokens.clone();
        let body = body.clone();
        let next = next.clone();
        let url = format!("{url}/v1/pings");
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut ticker = interval.map(|i| {
                let start = tokio::time::Instant::now() + i.mul_f64(w as f64 / concurrency as f64);
                let mut t = tokio::time::interval_at(start, i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let token = &tokens[n % tokens.len()];
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .header("authorization", token.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) => {
                        let st = r.status();
                        let _ = r.bytes().await;
                        st == 202
                    }
                    Err(_) => false,
                };
                s.lat_us
                    .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if ok {
                    s.ok_pings += batch as u64;
                } else {
                    s.errors += 1;
                }
            }
            s
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await.unwrap();
        all.lat_us.extend(s.lat_us);
        all.ok_pings += s.ok_pings;
        all.errors += s.errors;
    }
    all.lat_us.sort_unstable();
    all
}

/// The floor: the same serialized records through a bare producer with ingest's settings.
fn bare_producer(config: &Config, batch: usize, devices: usize, dur: Duration) -> f64 {
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(config).create().expect("producer");
    let now = common::record::now_millis();
    let pings: Vec<PingIn> = (0..batch)
        .map(|i| PingIn {
            device_ts: now - 1000 + i as i64,
            lat: 55.75 + i as f64 * 1e-4,
            lon: 37.61 - i as f64 * 1e-4,
            accuracy_m: Some((5 + i % 20) as f32),
        })
        .collect();
    let ids: Vec<Identity> = (0..devices.min(1000))
        .map(|i| Identity {
            person_id: format!("bench-person-{i}"),
            device_id: format!("bench-device-{i}"),
        })
        .collect();
    let topic = &config.kafka.contacts_topic;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut recs = Records::with_capacity(batch);
    let mut n = 0;
    while start.elapsed() < dur {
        recs.clear();
        ingest::encode_pings(
            &ids[n % ids.len()],
            &pings,
            common::record::now_millis(),
            &mut recs,
        );
        n += 1;
        for i in 0..recs.len() {
            let (k, p) = recs.get(i);
            let mut rec = BaseRecord::to(topic).key(k).payload(p);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => panic!("bare produce: {e}"),
                }
            }
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    sent as f64 / start.elapsed().as_secs_f64()
}

async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic")
    {
        r.expect("topic created");
    }
}

async fn delete_topic(brokers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let _ = admin.delete_topics(&[name], &AdminOptions::new()).await;
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async_main(args));
}

async fn async_main(args: Args) {
    let mut config = Config::defaults();
    config.kafka.brokers = args.brokers.clone();
    config.auth.hs256_secret = args.secret.clone();
    config.ingest.rate_limit_per_device = 0.0;
    config.log.level = "warn".into();
    let fresh_topic = args.topic.is_none();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench.ingest.{}", common::record::now_millis()));
    config.kafka.contacts_topic = topic.clone();
    if fresh_topic {
        create_topic(&args.brokers, &topic, args.partitions).await;
    }

    // In-process ingest on its own runtime, unless targeting a running one.
    let mut server = None;
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let cfg = config.clone();
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).unwrap();
                    ingest::run(l, cfg, async {
                        let _ = rx.await;
                    })
                    .await
                })
            });
            server = Some((tx, handle));
            format!("http://{addr}")
        }
    };
    // Wait until ready.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "ingest at {url} not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let exp = common::record::now_millis() / 1000 + 3600;
    let tokens: Arc<Vec<reqwest::header::HeaderValue>> = Arc::new(
        (0..args.devices)
            .map(|i| {
                let t = ingest::auth::testing::hs256(
                    &args.secret,
                    &serde_json::json!({
                        "sub": format!("bench-person-{i}"),
                        "device_id": format!("bench-device-{i}"),
                        "exp": exp,
                    }),
                );
                reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).unwrap()
            })
            .collect(),
    );
    let body = body(args.batch);

    // Warm-up.
    let _ = load(
        &url,
        tokens.clone(),
        body.clone(),
        args.batch,
        args.concurrency,
        Duration::from_secs(2),
        None,
    )
    .await;

    let t0 = Instant::now();
    let full = load(
        &url,
        tokens.clone(),
        body.clone(),
        args.batch,
        args.concurrency,
        args.duration,
        None,
    )
    .await;
    let pps = full.ok_pings as f64 / t0.elapsed().as_secs_f64();

    let cfg = config.clone();
    let (batch, devices, dur) = (args.batch, args.devices, args.duration);
    let bare = tokio::task::spawn_blocking(move || bare_producer(&cfg, batch, devices, dur))
        .await
        .unwrap();

    let mut half = None;
    if !args.no_half_load && pps > 0.0 {
        let req_rate = pps / 2.0 / args.batch as f64;
        let interval = Duration::from_secs_f64(args.concurrency as f64 / req_rate);
        let s = load(
            &url,
            tokens.clone(),
            body.clone(),
            args.batch,
            args.concurrency,
            args.duration.min(Duration::from_secs(15)),
            Some(interval),
        )
        .await;
        half = Some(s);
    }

    if let Some((tx, handle)) = server {
        let _ = tx.send(());
        let _ = handle.join();
    }
    if fresh_topic {
        delete_topic(&args.brokers, &topic).await;
    }
    let out = serde_json::json!({
        "pings_per_sec": pps.round(),
        "p50_ms": percentile(&full.lat_us, 0.50),
        "p99_ms": percentile(&full.lat_us, 0.99),
        "errors": full.errors + half.as_ref().map_or(0, |h| h.errors),
        "requests": full.lat_us.len(),
        "bare_producer_pings_per_sec": bare.round(),
        "ratio_to_bare": (pps / bare * 100.0).round() / 100.0,
        "half_load_pings_per_sec": half.as_ref().map(|h| (h.ok_pings as f64 / args.duration.min(Duration::from_secs(15)).as_secs_f64()).round()),
        "half_load_p50_ms": half.as_ref().map(|h| percentile(&h.lat_us, 0.50)),
        "half_load_p99_ms": half.as_ref().map(|h| percentile(&h.lat_us, 0.99)),
        "concurrency": args.concurrency,
        "devices": args.devices,
        "batch": args.batch,
        "duration_s": args.duration.as_secs_f64(),
    });
    println!("{out}");
}
