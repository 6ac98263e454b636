//! Sink throughput benchmark on the real local Kafka and ClickHouse.
//!
//! `cargo run --release -p sink --example sink_bench -- --rows 2000000`
//!
//! 1. Pre-fills a fresh topic with `--rows` pings (JSON, as ingest writes them).
//! 2. Runs the real sink code path (`sink::run`) and measures rows/s until every row is visible
//!    in ClickHouse.
//! 3. Floor: the same rows from a local TSV file via `clickhouse-client ... FORMAT TabSeparated`
//!    into an identical schema (same materialized views).
//! 4. Peer: ClickHouse's own Kafka table engine reading the same topic into the same schema,
//!    if it can talk to the broker (`--kafka-engine-timeout 0` skips it; stopping it early
//!    with a short timeout has crashed ClickHouse 18.16 in its bundled librdkafka).
//!
//! Prints one JSON line. Cleans up its topics and databases.

use common::config::Config;
use common::record::{Contact, Ping, now_millis};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{Db, Namespace, procstat};

/// The value after `name` on the command line.
fn arg_str(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn count(ch: &sink::ch::Ch, table: &str) -> u64 {
    scalar(ch, &format!("SELECT count() FROM {table}")).await
}

/// The first value of a query's result as a number (0 if none or on error).
async fn scalar(ch: &sink::ch::Ch, sql: &str) -> u64 {
    ch.fetch(sql)
        .await
        .ok()
        .and_then(|r| {
            r.first()
                .and_then(|r| r.first())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn client(db: &str) -> Command {
    let mut c = Command::new("clickhouse-client");
    c.args(["--host", "127.0.0.1", "--database", db]);
    c
}

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 2_000_000) as usize;
    let partitions = arg("--partitions", 6) as i32;
    let kafka_engine_timeout = Duration::from_secs(arg("--kafka-engine-timeout", 240));
    // A test namespace (its topics are pruned like any test's if the run dies).
    let ns = Namespace::new("sink_bench", partitions);
    let id = ns.database.clone();
    let mut config = Config::defaults();
    ns.apply(&mut config);
    // `RUST_LOG=sink=debug` shows the sink's start-up and every batch, with timestamps.
    config.log.level = "warn".into();
    // Sink and ClickHouse share this host, as in the local deploy (`deploy/local/demo`), so the
    // insert bodies are not compressed unless asked (`--compression lz4`).
    config.clickhouse.compression = arg_str("--compression")
        .map_or(common::config::Compression::None, |s| {
            s.parse().expect("--compression")
        });
    // Batch limits: the configured defaults unless given.
    config.sink.max_rows = arg("--max-rows", config.sink.max_rows as u64) as usize;
    config.sink.max_bytes = arg("--max-bytes", config.sink.max_bytes as u64) as usize;
    config.sink.catch_up_factor =
        arg("--catch-up-factor", config.sink.catch_up_factor as u64) as usize;
    common::telemetry::init_logging(&config.log);

    ns.create_topics().await.unwrap();

    // Pre-fill Kafka and write the TSV floor file.
    let tsv_path = std::env::temp_dir().join(format!("{id}.tsv"));
    let mut tsv = std::io::BufWriter::new(std::fs::File::create(&tsv_path).unwrap());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let now = now_millis();
    let t_fill = Instant::now();
    let mut payload_bytes = 0usize;
    for i in 0..rows {
        let person = format!("person-{:07}", i % 200_000);
        let p = Ping {
            device_id: format!("device-{:07}", i % 200_000),
            person_id: person.clone(),
            device_ts: now - 3_600_000 + (i as i64 * 7) % 3_600_000,
            lat: 55.5 + (i % 10_007) as f64 * 1e-5,
            lon: 37.3 + (i % 9_973) as f64 * 1e-5,
            accuracy_m: Some(5.0 + (i % 50) as f32),
            received_at: now - 3_600_000 + (i as i64 * 1_800_000) / rows as i64,
        };
        // Make every row distinct: device_ts increases per person.
        let p = Ping {
            device_ts: p.device_ts + (i / 200_000) as i64,
            ..p
        };
        writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t0\t{}",
            p.person_id,
            p.device_id,
            p.device_ts / 1000,
            p.device_ts,
            p.received_at / 1000,
            p.received_at,
            p.lat,
            p.lon,
            p.accuracy_m.unwrap(),
            i
        )
        .unwrap();
        let body = serde_json::to_vec(&Contact::Ping(p)).unwrap();
        payload_bytes += body.len();
        let mut rec = BaseRecord::to(&config.kafka.contacts_topic)
            .key(&person)
            .payload(&body);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    drop(tsv);
    let fill_secs = t_fill.elapsed().as_secs_f64();

    // The sink.
    let ch = sink::ch::Ch::new(&config.clickhouse);
    let stop = common::lifecycle::Shutdown::new();
    // The schema exists before the clock starts, as for the floor and the peer; the sink still
    // checks it (and finds nothing to apply) inside the timed phase.
    sink::migrate_once(&config).await.unwrap();
    merges_settled(&config).await;
    // Phase marks on stderr, for profiling a phase from outside (`perf record -p`).
    eprintln!("phase: sink start");
    let cpu0 = Cpu::now();
    let t0 = Instant::now();
    let handle = tokio::spawn(sink::run(
        config.clone(),
        common::lifecycle::Listeners::default(),
        stop.clone(),
    ));
    let mut first_visible = None;
    loop {
        let n = count(&ch, "pings").await;
        if n > 0 && first_visible.is_none() {
            first_visible = Some(t0.elapsed());
        }
        if n as usize >= rows {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "sink too slow: {n}/{rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink_secs = t0.elapsed().as_secs_f64();
    let sink_cpu = Cpu::now().since(&cpu0);
    eprintln!("phase: sink end");
    stop.trigger();
    handle.await.unwrap().unwrap();
    let first = first_visible.unwrap_or_default().as_secs_f64();

    // The floor: clickhouse-client bulk insert of the same rows into the same schema.
    let bulk_db = format!("{id}_bulk");
    let mut bulk_cfg = config.clone();
    bulk_cfg.clickhouse.database = bulk_db.clone();
    sink::migrate_once(&bulk_cfg).await.unwrap();
    // Each phase starts on a quiet server: the previous phase's background merges would
    // otherwise run during (and slow) the next one.
    merges_settled(&config).await;
    eprintln!("phase: bulk start");
    let bulk_cpu0 = Cpu::now();
    let t_bulk = Instant::now();
    let st = client(&bulk_db)
        .args(["--query", "INSERT INTO pings FORMAT TabSeparated"])
        .stdin(std::fs::File::open(&tsv_path).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "bulk insert failed");
    let bulk_secs = t_bulk.elapsed().as_secs_f64();
    let bulk_cpu = Cpu::now().since(&bulk_cpu0);
    eprintln!("phase: bulk end");
    let bulk_ch = sink::ch::Ch::new(&bulk_cfg.clickhouse);
    assert_eq!(count(&bulk_ch, "pings").await as usize, rows);

    // The peer: ClickHouse's Kafka engine on the same topic.
    let keng_db = format!("{id}_kafka_engine");
    let mut keng_cfg = config.clone();
    keng_cfg.clickhouse.database = keng_db.clone();
    sink::migrate_once(&keng_cfg).await.unwrap();
    let keng_ch = sink::ch::Ch::new(&keng_cfg.clickhouse);
    merges_settled(&config).await;
    let (kafka_engine, kafka_engine_aggregates_ok) = kafka_engine_peer(
        &keng_ch,
        &keng_db,
        &config.kafka.brokers,
        &config.kafka.contacts_topic,
        &format!("{id}_engine"),
        rows,
        kafka_engine_timeout,
    )
    .await;

    // Clean up.
    for db in [&id, &bulk_db, &keng_db] {
        Db::new(db).drop_database().await;
    }
    let _ = ns.cleanup().await;
    let _ = std::fs::remove_file(&tsv_path);

    let rps = rows as f64 / sink_secs;
    let bulk_rps = rows as f64 / bulk_secs;
    let out = serde_json::json!({
        "rows": rows,
        "rows_per_sec": rps.round(),
        "sink_secs": (sink_secs * 1000.0).round() / 1000.0,
        "first_row_visible_secs": (first * 1000.0).round() / 1000.0,
        "steady_rows_per_sec": (rows as f64 / (sink_secs - first).max(1e-3)).round(),
        "bulk_rows_per_sec": bulk_rps.round(),
        "sink_vs_bulk": (rps / bulk_rps * 1000.0).round() / 1000.0,
        "kafka_engine_rows_per_sec": kafka_engine.0.map(f64::round),
        "kafka_engine_note": kafka_engine.1,
        "kafka_engine_aggregates_ok": kafka_engine_aggregates_ok,
        "sink_vs_kafka_engine": kafka_engine.0.map(|k| (rps / k * 1000.0).round() / 1000.0),
        "prefill_secs": (fill_secs * 1000.0).round() / 1000.0,
        "avg_payload_bytes": payload_bytes / rows.max(1),
        "partitions": partitions,
        "max_rows": config.sink.max_rows,
        "catch_up_factor": config.sink.catch_up_factor,
        "compression": config.clickhouse.compression,
        // CPU-seconds spent during the sink phase by this process (the sink), by
        // clickhouse-server and by the Kafka broker; and by clickhouse-server during the bulk
        // insert (clickhouse-client's own parsing not included). Null where unreadable.
        "sink_phase_cpu_secs": sink_cpu,
        "bulk_phase_clickhouse_cpu_secs": bulk_cpu.clickhouse,
    });
    println!("{out}");
}

/// The peer: ClickHouse's own Kafka table engine reading the same topic into the same schema
/// (same `pings` table and the same aggregate views), timed until every row is visible.
/// Returns (rows/s or a note why not, whether the engine's copy of the aggregates is exact).
///
/// On 18.16 this needs two work-arounds, both found by experiment here:
/// - A view that renames `device_ts`/`received_at` (JSON milliseconds) to the table's columns
///   of the same names cannot be one `SELECT`: 18.16's aliases are global, so
///   `toDateTime(intDiv(device_ts, 1000)) AS device_ts` is cyclic, and the same with a subquery
///   fails while streaming with Code 393 "There is no query" (ClickHouse #8180). So two views:
///   `kafka_pings_mv1` renames into a `Null` stage table, `kafka_pings_mv2` converts.
/// - 18.16 does not cascade through a view's `TO` table when the Kafka engine pushes (an
///   `INSERT` into the stage does cascade; the engine's push does not — it landed 0 rows), but
///   it does cascade to views that read *from a view*. So `mv2` and the copies of the aggregate
///   views read from the previous view. A view can only be created over an existing one, and
///   the engine starts consuming as soon as a view reads from it, so the chain is built over a
///   `Null` placeholder with the Kafka table's columns, which is then replaced by the Kafka
///   table (18.16 keeps view dependencies by name).
async fn kafka_engine_peer(
    ch: &sink::ch::Ch,
    db: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    rows: usize,
    timeout: Duration,
) -> ((Option<f64>, Option<String>), Option<bool>) {
    if timeout.is_zero() {
        return (
            (None, Some("skipped (--kafka-engine-timeout 0)".into())),
            None,
        );
    }
    let cols = "type String, person_id String, device_id String, device_ts Int64, \
                lat Float64, lon Float64, accuracy_m Nullable(Float32), received_at Int64";
    // The aggregate views over `pings`, to be re-created over the engine's last view.
    let views = ch
        .fetch(
            "SELECT name, create_table_query FROM system.tables \
             WHERE database = currentDatabase() AND engine = 'MaterializedView'",
        )
        .await
        .unwrap_or_default();
    let from_pings = format!(" FROM {db}.pings ");
    let mut copies = Vec::new();
    for v in &views {
        let (Some(name), Some(q)) = (v.first(), v.get(1)) else {
            continue;
        };
        let (Some(to), Some(sel)) = (q.find(" TO "), q.find(" AS SELECT ")) else {
            continue;
        };
        if !q[sel..].contains(&from_pings) {
            continue;
        }
        let target = q[to + 4..].split_whitespace().next().unwrap_or_default();
        let select = q[sel + 4..].replace(&from_pings, &format!(" FROM {db}.kafka_pings_mv2 "));
        copies.push(format!(
            "CREATE MATERIALIZED VIEW kafka_{name} TO {target} AS {select}"
        ));
    }
    let steps = [
        format!("CREATE TABLE kafka_pings ({cols}) ENGINE = Null"),
        "CREATE TABLE kafka_stage (person_id String, device_id String, dts Int64, rat Int64, \
         lat Float64, lon Float64, accuracy_m Nullable(Float32)) ENGINE = Null"
            .to_string(),
        "CREATE MATERIALIZED VIEW kafka_pings_mv1 TO kafka_stage AS SELECT person_id, device_id, \
         device_ts AS dts, received_at AS rat, lat, lon, accuracy_m FROM kafka_pings"
            .to_string(),
        "CREATE MATERIALIZED VIEW kafka_pings_mv2 TO pings AS SELECT person_id, device_id, \
         toDateTime(intDiv(dts, 1000)) AS device_ts, dts AS device_ts_ms, \
         toDateTime(intDiv(rat, 1000)) AS received_at, rat AS received_at_ms, \
         lat, lon, accuracy_m, toInt32(0) AS kafka_partition, toInt64(0) AS kafka_offset \
         FROM kafka_pings_mv1"
            .to_string(),
    ];
    for sql in steps.iter().chain(copies.iter()) {
        if let Err(e) = ch.exec(sql).await {
            return ((None, Some(format!("{sql}: {e}"))), None);
        }
    }
    let _ = ch.exec("DROP TABLE kafka_pings").await;
    let create = format!(
        "CREATE TABLE kafka_pings ({cols}) ENGINE = Kafka('{brokers}', '{topic}', '{group}', 'JSONEachRow')"
    );
    let t_k = Instant::now();
    if let Err(e) = ch.exec(&create).await {
        return (
            (None, Some(format!("CREATE ... ENGINE = Kafka failed: {e}"))),
            None,
        );
    }
    let mut result = (None, None);
    let mut n = 0;
    while t_k.elapsed() < timeout {
        n = count(ch, "pings").await;
        if n as usize >= rows {
            result.0 = Some(rows as f64 / t_k.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if result.0.is_none() {
        result.1 = Some(format!(
            "ClickHouse Kafka engine read {n}/{rows} rows in {}s; server log: {}",
            timeout.as_secs(),
            tail_server_errors()
        ));
    }
    let _ = ch.exec("DROP TABLE IF EXISTS kafka_pings").await;
    // Wait out the aggregate views' last push, then compare with the row count.
    let aggregates_ok = if copies.is_empty() {
        None
    } else {
        let t = Instant::now();
        let mut ok = false;
        while !ok && t.elapsed() < Duration::from_secs(15) {
            ok = count_aggregated(ch).await == rows as u64;
            if !ok {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Some(ok)
    };
    (result, aggregates_ok)
}

/// Waits (at most 60 s) until the server runs no merges.
async fn merges_settled(config: &Config) {
    let mut cfg = config.clickhouse.clone();
    cfg.database = "system".into();
    let system = sink::ch::Ch::new(&cfg);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) && count(&system, "merges").await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Distinct pings counted by the per-minute aggregate.
async fn count_aggregated(ch: &sink::ch::Ch) -> u64 {
    scalar(ch, "SELECT uniqExactMerge(pings) FROM pings_per_minute").await
}

/// CPU time (user + system) of this process and of the local ClickHouse and Kafka, read from
/// `/proc/<pid>/stat` with the pids `deploy/local` records.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Cpu {
    sink: Option<f64>,
    clickhouse: Option<f64>,
    kafka: Option<f64>,
}

impl Cpu {
    fn now() -> Cpu {
        let shared = |name| procstat::shared_pid(name).and_then(procstat::cpu_secs);
        Cpu {
            sink: procstat::cpu_secs(std::process::id()),
            clickhouse: shared("clickhouse"),
            kafka: shared("kafka"),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| {
            a.zip(b).map(|(a, b)| ((a - b) * 100.0).round() / 100.0)
        };
        Cpu {
            sink: d(self.sink, before.sink),
            clickhouse: d(self.clickhouse, before.clickhouse),
            kafka: d(self.kafka, before.kafka),
        }
    }
}

fn tail_server_errors() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.local/clickhouse/logs/clickhouse-server.err.log"
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| l.contains("<Error>") && (l.contains("Kafka") || l.contains("rdk")))
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_else(|| "no Kafka errors logged".into())
}
