//! Load benchmark for ingest.
//!
//! `cargo run --release -p ingest --example ingest_bench -- --duration 20s --concurrency 256 --devices 10000`
//!
//! Starts ingest in-process (its own runtime threads) against the real Kafka on a fresh
//! topic, unless `--url` targets a running one (then `--secret` must match its HS256 secret
//! and its rate limit should be off). Signs one token per device, posts batches of
//! `--batch` pings from `--concurrency` connections for `--duration`, then measures a bare
//! rdkafka producer writing the same serialized records to the same topic with the same
//! settings (the floor), then replays half the achieved load at a fixed rate. Prints one JSON
//! line: pings_per_sec, p50_ms, p99_ms, errors, bare_producer_pings_per_sec, half_load_p99_ms.
//!
//! The bare producer enqueues each batch of records the way ingest does (one
//! `rd_kafka_produce_batch` call, payload not copied, on the partition librdkafka's default
//! partitioner picks for the batch's person, computed once per batch from the topic's
//! partition count), so it stays a floor for ingest's own produce path;
//! `--bare-unassigned` leaves partitioning to librdkafka per record (ingest's path before the
//! partition was computed), `--bare-per-record` uses one `send` per record.
//!
//! `--producer-set KEY=VALUE` (repeatable) overrides one of ingest's librdkafka producer
//! settings for the in-process ingest and the bare producer alike (e.g. `linger.ms=2`), to
//! measure a setting without changing ingest's defaults; the JSON line lists the overrides.

use clap::Parser;
use common::Config;
use ingest::auth::Identity;
use ingest::decode::PingIn;
use ingest::kafka::native::BatchProducer;
use ingest::kafka::{Records, producer_config};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Length of the full-load phase (and of the bare-producer phase).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent requests in flight. 256 saturates ingest on 2 cores (64 left it latency-bound,
    /// with cores idle: docs/BENCHMARKS.md, Ingest, 2026-12-01).
    #[arg(long, default_value_t = 256)]
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
    /// Bare producer: one `send` per record (copied) instead of one batch call per request.
    #[arg(long)]
    bare_per_record: bool,
    /// Bare producer: one batch call per request, partitioned by librdkafka per record.
    #[arg(long, conflicts_with = "bare_per_record")]
    bare_unassigned: bool,
    /// A librdkafka producer setting `KEY=VALUE` applied over ingest's own settings, to the
    /// in-process ingest and the bare producer alike (repeatable; e.g. `linger.ms=2`).
    #[arg(long = "producer-set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    producer_set: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Ingest's producer settings with the benchmark's overrides.
fn producer_settings(config: &Config, overrides: &[(String, String)]) -> ClientConfig {
    let mut c = producer_config(config);
    for (k, v) in overrides {
        c.set(k, v);
    }
    c
}

#[derive(Default)]
struct Stats {
    lat_us: Vec<u32>,
    ok_pings: u64,
    errors: u64,
    last_error: Option<String>,
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

/// The load generator's requests, built once: one HTTP/1.1 head per signed token and one body.
///
/// The generator is a minimal HTTP/1.1 keep-alive client over plain TCP (one connection per
/// worker, request written with one syscall) so that it takes as little as possible of the
/// CPU it shares with ingest: every request is still a real `POST /v1/pings` with a real
/// bearer token, and every response is read in full and checked (status 202 and
/// `{"accepted": batch}`).
struct Requests {
    addr: String,
    heads: Vec<Vec<u8>>,
    body: bytes::Bytes,
}

impl Requests {
    fn new(url: &str, tokens: &[String], body: bytes::Bytes) -> Requests {
        let addr = url
            .strip_prefix("http://")
            .expect("the load generator speaks plain http")
            .trim_end_matches('/')
            .to_string();
        let heads = tokens
            .iter()
            .map(|t| {
                format!(
                    "POST /v1/pings HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {t}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes()
            })
            .collect();
        Requests { addr, heads, body }
    }
}

/// Why one request did not get its 202.
#[derive(Debug)]
enum ReqError {
    Io(std::io::Error),
    Status(u16),
    Protocol(&'static str),
}

impl std::fmt::Display for ReqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReqError::Io(e) => write!(f, "io: {e}"),
            ReqError::Status(s) => write!(f, "status {s}"),
            ReqError::Protocol(p) => write!(f, "protocol: {p}"),
        }
    }
}

impl From<std::io::Error> for ReqError {
    fn from(e: std::io::Error) -> Self {
        ReqError::Io(e)
    }
}

/// One keep-alive connection of the load generator.
struct Conn {
    stream: tokio::net::TcpStream,
    out: Vec<u8>,
    inb: Vec<u8>,
}

impl Conn {
    async fn connect(addr: &str) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(16 * 1024),
            inb: Vec::with_capacity(4096),
        })
    }

    /// Posts one request and reads its whole response; `Ok(keep_alive)` on a 202 whose body
    /// is `{"accepted": batch}`.
    async fn post(&mut self, head: &[u8], body: &[u8], batch: usize) -> Result<bool, ReqError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.out.clear();
        self.out.extend_from_slice(head);
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.inb.clear();
        let (head_len, status, content_length, keep_alive) = loop {
            if let Some(h) = parse_response_head(&self.inb)? {
                break h;
            }
            if self.inb.len() > 64 * 1024 {
                return Err(ReqError::Protocol("response head too large"));
            }
            self.inb.reserve(4096);
            if self.stream.read_buf(&mut self.inb).await? == 0 {
                return Err(ReqError::Protocol("connection closed"));
            }
        };
        let total = head_len + content_length;
        while self.inb.len() < total {
            self.inb.reserve(total - self.inb.len());
            if self.stream.read_buf(&mut self.inb).await? == 0 {
                return Err(ReqError::Protocol("connection closed in body"));
            }
        }
        if self.inb.len() != total {
            return Err(ReqError::Protocol("unexpected bytes after the response"));
        }
        if status != 202 {
            return Err(ReqError::Status(status));
        }
        #[derive(serde::Deserialize)]
        struct Accepted {
            accepted: usize,
        }
        match serde_json::from_slice::<Accepted>(&self.inb[head_len..]) {
            Ok(a) if a.accepted == batch => Ok(keep_alive),
            _ => Err(ReqError::Protocol("202 without the right `accepted` count")),
        }
    }
}

/// Parses a response head once complete: `(head length, status, content length, keep-alive)`.
fn parse_response_head(buf: &[u8]) -> Result<Option<(usize, u16, usize, bool)>, ReqError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ReqError::Protocol("head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ReqError::Protocol("status line"))?;
    let mut content_length = None;
    let mut keep_alive = true;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(ReqError::Protocol("header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| ReqError::Protocol("content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReqError::Protocol("chunked responses are not expected"));
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    let content_length = content_length.ok_or(ReqError::Protocol("no content-length"))?;
    Ok(Some((end + 4, status, content_length, keep_alive)))
}

/// Closed loop: `concurrency` workers post back to back until `deadline`; or, with
/// `interval`, each worker posts once per interval (a fixed arrival rate).
async fn load(
    reqs: Arc<Requests>,
    batch: usize,
    concurrency: usize,
    dur: Duration,
    interval: Option<Duration>,
) -> Stats {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let reqs = reqs.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut conn: Option<Conn> = None;
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
                let head = &reqs.heads[n % reqs.heads.len()];
                let t0 = Instant::now();
                if conn.is_none() {
                    match Conn::connect(&reqs.addr).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            s.lat_us.push(elapsed_us(t0));
                            s.errors += 1;
                            s.last_error = Some(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected");
                let r = c.post(head, &reqs.body, batch).await;
                s.lat_us.push(elapsed_us(t0));
                match r {
                    Ok(true) => s.ok_pings += batch as u64,
                    Ok(false) => {
                        s.ok_pings += batch as u64;
                        conn = None;
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                        // Status errors leave the connection usable; anything else drops it.
                        if !matches!(e, ReqError::Status(_)) {
                            conn = None;
                        }
                    }
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
        all.last_error = all.last_error.or(s.last_error);
    }
    all.lat_us.sort_unstable();
    all
}

fn elapsed_us(t0: Instant) -> u32 {
    t0.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// The bare producer's delivery reports only release the records' bytes (like
/// `DefaultProducerContext`, it does not look at the result; `flush` waits for all).
struct BareCtx;

impl ClientContext for BareCtx {}

impl ProducerContext for BareCtx {
    type DeliveryOpaque = Arc<Records>;
    fn delivery(&self, _: &DeliveryResult<'_>, _: Arc<Records>) {}
}

/// Encodes request `n` (of the next identity in turn) as ingest does, and counts it.
fn encode_request(ids: &[Identity], pings: &[PingIn], n: &mut usize, recs: &mut Records) {
    ingest::encode_pings(
        &ids[*n % ids.len()],
        pings,
        common::record::now_millis(),
        recs,
    );
    *n += 1;
}

/// The floor: the same serialized records through a bare producer with ingest's settings.
fn bare_producer(
    config: &Config,
    overrides: &[(String, String)],
    batch: usize,
    devices: usize,
    dur: Duration,
    per_record: bool,
    unassigned: bool,
) -> f64 {
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
    if !per_record {
        let producer: BatchProducer<BareCtx> = BatchProducer::new(
            producer_settings(config, overrides)
                .create_with_context(BareCtx)
                .expect("producer"),
            topic,
        )
        .expect("topic handle");
        // The partition count, as ingest's probe learns it (before the clock starts).
        let partitions = if unassigned {
            0
        } else {
            let md = producer
                .producer()
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            md.topics()[0].partitions().len() as i32
        };
        let start = Instant::now();
        let mut sent = 0u64;
        let mut n = 0;
        while start.elapsed() < dur {
            let mut recs = Records::with_capacity(batch);
            encode_request(&ids, &pings, &mut n, &mut recs);
            // Like `Kafka::send_all`: one partition for the request's person.
            let partition = ingest::kafka::partition_for(&recs, partitions);
            let recs = Arc::new(recs);
            let mut from = 0;
            loop {
                match producer.enqueue_to(&recs, from, partition) {
                    Ok(()) => break,
                    // After a full queue every later record is refused too: retry from there.
                    Err(e) if e.code == RDKafkaErrorCode::QueueFull => {
                        from = e.first;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("bare produce: {e}"),
                }
            }
            sent += recs.len() as u64;
        }
        producer
            .producer()
            .flush(Duration::from_secs(60))
            .expect("flush");
        return sent as f64 / start.elapsed().as_secs_f64();
    }
    let producer: ThreadedProducer<DefaultProducerContext> = producer_settings(config, overrides)
        .create()
        .expect("producer");
    let start = Instant::now();
    let mut sent = 0u64;
    let mut recs = Records::with_capacity(batch);
    let mut n = 0;
    while start.elapsed() < dur {
        recs.clear();
        encode_request(&ids, &pings, &mut n, &mut recs);
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

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-load")
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
        testkit::kafka::Admin::at(&args.brokers)
            .create_topics(&[testkit::kafka::TopicSpec::new(&topic, args.partitions)])
            .await
            .expect("create topic");
    }

    // In-process ingest on its own runtime, unless targeting a running one.
    let mut server = None;
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let tx = common::lifecycle::Shutdown::new();
            let rx = tx.clone();
            let cfg = config.clone();
            let producer = producer_settings(&config, &args.producer_set);
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ingest-server")
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).unwrap();
                    let listeners = common::lifecycle::Listeners::public(l);
                    ingest::run_with_producer(cfg, listeners, rx, producer).await
                })
            });
            server = Some((tx, handle));
            format!("http://{addr}")
        }
    };
    testkit::http::wait_ready(&url, Duration::from_secs(30), || Ok(()))
        .await
        .expect("ingest ready");

    let tokens: Vec<String> = (0..args.devices)
        .map(|i| {
            testkit::token_with(
                &args.secret,
                &format!("bench-person-{i}"),
                &format!("bench-device-{i}"),
            )
        })
        .collect();
    let reqs = Arc::new(Requests::new(&url, &tokens, body(args.batch)));

    // Warm-up.
    let _ = load(
        reqs.clone(),
        args.batch,
        args.concurrency,
        Duration::from_secs(2),
        None,
    )
    .await;

    let t0 = Instant::now();
    let full = load(
        reqs.clone(),
        args.batch,
        args.concurrency,
        args.duration,
        None,
    )
    .await;
    let pps = full.ok_pings as f64 / t0.elapsed().as_secs_f64();

    let cfg = config.clone();
    let overrides = args.producer_set.clone();
    let (batch, devices, dur, per_record, unassigned) = (
        args.batch,
        args.devices,
        args.duration,
        args.bare_per_record,
        args.bare_unassigned,
    );
    let bare = tokio::task::spawn_blocking(move || {
        bare_producer(
            &cfg, &overrides, batch, devices, dur, per_record, unassigned,
        )
    })
    .await
    .unwrap();

    let mut half = None;
    if !args.no_half_load && pps > 0.0 {
        let req_rate = pps / 2.0 / args.batch as f64;
        let interval = Duration::from_secs_f64(args.concurrency as f64 / req_rate);
        let s = load(
            reqs.clone(),
            args.batch,
            args.concurrency,
            args.duration.min(Duration::from_secs(15)),
            Some(interval),
        )
        .await;
        half = Some(s);
    }

    if let Some((tx, handle)) = server {
        tx.trigger();
        let _ = handle.join();
    }
    if fresh_topic {
        let _ = testkit::kafka::Admin::at(&args.brokers)
            .delete_topics(&[&topic])
            .await;
    }
    let out = serde_json::json!({
        "pings_per_sec": pps.round(),
        "p50_ms": percentile(&full.lat_us, 0.50),
        "p99_ms": percentile(&full.lat_us, 0.99),
        "errors": full.errors + half.as_ref().map_or(0, |h| h.errors),
        "last_error": full.last_error.as_ref().or(half.as_ref().and_then(|h| h.last_error.as_ref())),
        "requests": full.lat_us.len(),
        "bare_producer_pings_per_sec": bare.round(),
        "bare_producer": if args.bare_per_record {
            "send per record"
        } else if args.bare_unassigned {
            "batch per request, librdkafka partitions"
        } else {
            "batch per request, one partition"
        },
        "ratio_to_bare": (pps / bare * 100.0).round() / 100.0,
        "half_load_pings_per_sec": half.as_ref().map(|h| (h.ok_pings as f64 / args.duration.min(Duration::from_secs(15)).as_secs_f64()).round()),
        "half_load_p50_ms": half.as_ref().map(|h| percentile(&h.lat_us, 0.50)),
        "half_load_p99_ms": half.as_ref().map(|h| percentile(&h.lat_us, 0.99)),
        "producer_overrides": args.producer_set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "concurrency": args.concurrency,
        "devices": args.devices,
        "batch": args.batch,
        "duration_s": args.duration.as_secs_f64(),
    });
    println!("{out}");
}
