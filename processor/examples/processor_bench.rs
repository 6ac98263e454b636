//! Processor service benchmarks against the real broker (`deploy/local/up` first).
//!
//! ```text
//! cargo run --release -p processor --example processor_bench -- restore --persons 1000000
//! cargo run --release -p processor --example processor_bench -- throughput --records 2000000
//! ```
//! `restore` fills a fresh changelog topic with the state of `--persons` persons (written as
//! the service writes it: one snapshot per person plus the partition clock) and measures the
//! time to rebuild the detector from it. `throughput` pre-fills a fresh contacts topic and
//! measures (a) the raw consume rate of that topic with no processing — the floor — and (b)
//! the sustained rate of one processor instance (the real service, in-process) from the first
//! record until its group has committed the end of the topic. Each prints one JSON line.

use clap::{Parser, Subcommand};
use common::config::Config;
use common::record::{Contact, Ping, Registration, Tick};
use processor::detector::Detector;
use processor::service::{self, CLOCK_KEY, metrics::Metrics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use testkit::kafka::{Admin, TopicSpec};

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Changelog restore time.
    Restore {
        #[arg(long, default_value_t = 1_000_000)]
        persons: u64,
    },
    /// Sustained processing rate vs the raw consume rate.
    Throughput {
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        #[arg(long, default_value_t = 200_000)]
        persons: u64,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
    },
}

fn unique(prefix: &str) -> String {
    format!(
        "bench.{prefix}.{}.{}",
        std::process::id(),
        common::record::now_millis()
    )
}

async fn create_topic(brokers: &str, name: &str, partitions: i32, compact: bool) {
    let t = TopicSpec::new(name, partitions);
    Admin::at(brokers)
        .create_topics(&[if compact { t.compacted() } else { t }])
        .await
        .expect("create topic");
}

/// Deletes the bench's topics: left behind, every partition slows each later broker start.
async fn delete_topics(brokers: &str, names: &[&str]) {
    if let Err(e) = Admin::at(brokers).delete_topics(names).await {
        eprintln!("could not delete the bench topics {names:?}: {e}");
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, mut r: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((_, back)) => {
                p.poll(Duration::from_millis(5));
                r = back;
            }
        }
    }
}

fn config(brokers: &str) -> Config {
    let mut c = Config::defaults();
    c.kafka.brokers = brokers.into();
    c
}

async fn restore_bench(brokers: &str, persons: u64) -> serde_json::Value {
    let cfg0 = config(brokers);
    let topic = unique("changelog");
    create_topic(brokers, &topic, 1, true).await;
    // State as the service writes it: register everyone in one detector, drain the snapshots.
    let mut d = Detector::new(cfg0.policy, cfg0.clock).expect("detector");
    let mut out = Vec::new();
    let t0 = 1_750_000_000_000i64;
    for i in 0..persons {
        let c = Contact::Registration(Registration {
            person_id: format!("person-{i:010}"),
            device_id: String::new(),
            address: format!("Address {i}"),
            lat: None,
            lon: None,
            received_at: t0 + (i as i64 % 1000),
        });
        d.apply(&c, &mut out);
        out.clear();
    }
    let p = producer(brokers);
    let mut bytes = 0u64;
    d.drain_dirty(|id, snap| {
        bytes += (id.len() + snap.map_or(0, <[u8]>::len)) as u64;
        send(
            &p,
            BaseRecord::to(&topic)
                .partition(0)
                .key(id)
                .payload(snap.unwrap_or_default()),
        );
    });
    let clock = d.clock_snapshot();
    send(
        &p,
        BaseRecord::to(&topic)
            .partition(0)
            .key(CLOCK_KEY)
            .payload(&clock[..]),
    );
    p.flush(Duration::from_secs(120)).expect("flush");

    let mut cfg = cfg0.clone();
    cfg.kafka.changelog_topic = topic.clone();
    let metrics = Metrics::new();
    let started = Instant::now();
    let restored = tokio::task::spawn_blocking(move || service::restore(&cfg, 0, &metrics))
        .await
        .expect("join")
        .expect("restore");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(restored.persons(), persons, "every person restored");
    delete_topics(brokers, &[&topic]).await;
    serde_json::json!({
        "bench": "processor_restore",
        "persons": persons,
        "changelog_bytes": bytes,
        "restore_seconds": (secs * 1000.0).round() / 1000.0,
        "persons_per_sec": (persons as f64 / secs).round(),
    })
}

async fn throughput_bench(
    brokers: &str,
    records: u64,
    persons: u64,
    partitions: i32,
) -> serde_json::Value {
    let topic = unique("contacts");
    create_topic(brokers, &topic, partitions, false).await;
    let p = producer(brokers);
    let t0 = 1_750_000_000_000i64;
    let mut buf = Vec::with_capacity(256);
    let per_ms = 50; // records per millisecond of server time: 50k/s
    for i in 0..records {
        let person = (i.wrapping_mul(2_654_435_761)) % persons;
        let id = format!("person-{person:08}");
        let at = t0 + (i / per_ms) as i64;
        let part = (person % partitions as u64) as i32;
        let c = if i % 1000 == 0 {
            Contact::Registration(Registration {
                person_id: id.clone(),
                device_id: "d".into(),
                address: format!("Address {person}"),
                lat: None,
                lon: None,
                received_at: at,
            })
        } else {
            Contact::Ping(Ping {
                person_id: id.clone(),
                device_id: "d".into(),
                device_ts: at - 100,
                lat: 55.75,
                lon: 37.62,
                accuracy_m: Some(10.0),
                received_at: at,
            })
        };
        buf.clear();
        serde_json::to_writer(&mut buf, &c).expect("json");
        send(
            &p,
            BaseRecord::to(&topic)
                .partition(part)
                .key(id.as_bytes())
                .payload(&buf),
        );
        if i % (per_ms * 1000) == 0 {
            for q in 0..partitions {
                let t = serde_json::to_vec(&Contact::Tick(Tick {
                    received_at: at,
                    source: "bench".into(),
                }))
                .expect("json");
                send(&p, BaseRecord::to(&topic).partition(q).payload(&t));
            }
        }
    }
    p.flush(Duration::from_secs(300)).expect("flush");
    let total = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|q| {
                c.fetch_watermarks(&topic, q, Duration::from_secs(10))
                    .expect("wm")
                    .1
            })
            .sum::<i64>()
    };

    // (a) The floor: consume everything, decode nothing.
    let raw = {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("raw"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for q in 0..partitions {
            tpl.add_partition_offset(&topic, q, Offset::Beginning)
                .expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let started = Instant::now();
        let mut n = 0i64;
        let mut bytes = 0usize;
        while n < total {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                bytes += m.payload_len();
                n += 1;
            }
        }
        std::hint::black_box(bytes);
        total as f64 / started.elapsed().as_secs_f64()
    };

    // (b) One processor instance, the real service in-process.
    let mut cfg = config(brokers);
    cfg.kafka.contacts_topic = topic.clone();
    cfg.kafka.events_topic = unique("events");
    cfg.kafka.changelog_topic = unique("state");
    cfg.kafka.dead_letter_topic = unique("dead");
    cfg.processor.group_id = unique("group");
    cfg.processor.transactional_id_prefix = unique("txn");
    cfg.processor.listen = ([127, 0, 0, 1], 0).into();
    if let Ok(v) = std::env::var("BENCH_COMMIT_MS") {
        cfg.processor.commit_interval = Duration::from_millis(v.parse().expect("ms"));
    }
    create_topic(brokers, &cfg.kafka.events_topic, partitions, false).await;
    create_topic(brokers, &cfg.kafka.changelog_topic, partitions, true).await;
    create_topic(brokers, &cfg.kafka.dead_letter_topic, 1, false).await;
    let group = cfg.processor.group_id.clone();
    let commit_ms = cfg.processor.commit_interval.as_millis() as u64;
    let cfg_topics = cfg.kafka.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = common::lifecycle::Shutdown::new();
    let started = Instant::now();
    let svc = tokio::spawn(service::run(
        cfg,
        common::lifecycle::Listeners::admin(listener),
        stop.clone(),
    ));
    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    let mut first: Option<(Instant, i64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut tpl = TopicPartitionList::new();
        for q in 0..partitions {
            tpl.add_partition(&topic, q);
        }
        let committed = checker
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed");
        let done: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        // Steady state: from the first committed transaction to the last, so group join and
        // restore are not counted against the processing rate.
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= total {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (t_first, n_first) = first.expect("at least one commit");
    let steady = (total - n_first) as f64 / t_first.elapsed().as_secs_f64();
    stop.trigger();
    svc.await.expect("join").expect("service");
    let k = &cfg_topics;
    delete_topics(
        brokers,
        &[
            &topic,
            &k.events_topic,
            &k.changelog_topic,
            &k.dead_letter_topic,
        ],
    )
    .await;
    let processed = steady;
    serde_json::json!({
        "bench": "processor_throughput",
        "records": total,
        "persons": persons,
        "partitions": partitions,
        "records_per_sec": processed.round(),
        "raw_consume_records_per_sec": raw.round(),
        "ratio_to_raw": ((processed / raw) * 1000.0).round() / 1000.0,
        "records_per_sec_including_startup": (total as f64 / secs).round(),
        "commit_interval_ms": commit_ms,
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    common::telemetry::init_logging(&common::config::Config::defaults().log);
    let line = match args.mode {
        Mode::Restore { persons } => restore_bench(&args.brokers, persons).await,
        Mode::Throughput {
            records,
            persons,
            partitions,
        } => throughput_bench(&args.brokers, records, persons, partitions).await,
    };
    println!("{line}");
}
