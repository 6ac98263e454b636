//! End-to-end harness: runs the real service binaries against the real Kafka and ClickHouse
//! started by `deploy/local/up`.
//!
//! # Layout
//! - [`Stack`] — one isolated pipeline per test: its own topics, consumer groups,
//!   transactional ids, ClickHouse database and ports, so tests run in parallel on one broker.
//!   Services are child processes (so tests can `kill -9` them); they are killed on drop.
//!   A test that passed ends with [`Stack::cleanup`] (database dropped, topics deleted); a
//!   failing one returns or panics before it, so its topics, database and logs stay for
//!   debugging. [`stale_test_topics`] finds what crashed runs left behind (`prune_topics`).
//! - [`token`] — signs HS256 tokens the way a phone app's backend would.
//! - [`ClickHouse`] — a tiny HTTP query client for assertions.
//! - `tests/` — the end-to-end tests; `src/bin/` — fleet tools and benchmarks.
//!
//! The binaries are taken from `target/debug` (or `LASTSEEN_BIN_DIR`); `./tests/run` builds
//! them first.

pub mod fleet;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kafka bootstrap servers for tests (`LASTSEEN_TEST_KAFKA`, default `127.0.0.1:9092`).
pub fn kafka_brokers() -> String {
    std::env::var("LASTSEEN_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// ClickHouse HTTP URL for tests (`LASTSEEN_TEST_CLICKHOUSE`, default `http://127.0.0.1:8123`).
pub fn clickhouse_url() -> String {
    std::env::var("LASTSEEN_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The HS256 secret the harness configures and signs with.
pub const TEST_SECRET: &str = "e2e-test-secret";

/// A name unique to this test run, safe for topics and ClickHouse databases.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Signs an HS256 token for `person` on `device`, valid for an hour.
pub fn token(secret: &str, person: &str, device: &str) -> String {
    let exp = common::record::now_millis() / 1000 + 3600;
    let claims = serde_json::json!({"sub": person, "device_id": device, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Ingest,
    Processor,
    Sink,
}

impl Service {
    pub fn binary(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Processor => "processor",
            Service::Sink => "sink",
        }
    }
}

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LASTSEEN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("debug")
}

/// A free loopback port for a service to listen on, picked *below* the kernel's ephemeral
/// range. A port from `bind(0)` lies inside that range, so between being picked here and
/// being bound by the service it can be taken as the local port of an outgoing connection
/// (any Kafka client's on this machine), and the service then fails to start with "address
/// in use" (seen in CI: a processor exiting at start-up).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Where this process tries next: a random start, so concurrent test processes rarely
    // meet, then sequential, so one process never hands out the same port twice.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FLOOR: u32 = 10_000;
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&lo| lo > FLOOR + 1_000 && lo <= 65_536)
        .unwrap_or(32_768);
    let span = top - FLOOR;
    let _ = NEXT.compare_exchange(
        0,
        rand::random_range(1..=span),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = FLOOR + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {FLOOR}..{top}")
}

/// One isolated pipeline: topics, database, ports and the service processes.
#[derive(Debug)]
pub struct Stack {
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub ingest_url: String,
    pub processor_url: String,
    pub sink_url: String,
    pub database: String,
    pub contacts_topic: String,
    pub events_topic: String,
    pub changelog_topic: String,
    pub dead_letter_topic: String,
    pub log_dir: PathBuf,
    children: BTreeMap<(Service, usize), Child>,
}

impl Stack {
    /// Creates the topics (with `partitions` partitions) and picks ports; starts nothing.
    /// `extra` env pairs (`LASTSEEN_*`) override the harness defaults.
    pub async fn new(test: &str, partitions: i32, extra: &[(&str, &str)]) -> Result<Stack> {
        let name = unique(test);
        let topic = |t: &str| format!("e2e.{name}.{t}");
        let (contacts, events, changelog, dead) = (
            topic("contacts"),
            topic("events"),
            topic("state"),
            topic("dead-letter"),
        );
        create_topics(&[
            (&contacts, partitions, false),
            (&events, partitions, false),
            (&changelog, partitions, true),
            (&dead, 1, false),
        ])
        .await?;
        let (ingest_port, processor_port, sink_port) = (free_port(), free_port(), free_port());
        let database = format!("e2e_{name}");
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("LASTSEEN_KAFKA__BROKERS", kafka_brokers()),
            ("LASTSEEN_KAFKA__CONTACTS_TOPIC", contacts.clone()),
            ("LASTSEEN_KAFKA__EVENTS_TOPIC", events.clone()),
            ("LASTSEEN_KAFKA__CHANGELOG_TOPIC", changelog.clone()),
            ("LASTSEEN_KAFKA__DEAD_LETTER_TOPIC", dead.clone()),
            ("LASTSEEN_KAFKA__PARTITIONS", partitions.to_string()),
            ("LASTSEEN_CLICKHOUSE__URL", clickhouse_url()),
            ("LASTSEEN_CLICKHOUSE__DATABASE", database.clone()),
            ("LASTSEEN_AUTH__HS256_SECRET", TEST_SECRET.to_string()),
            (
                "LASTSEEN_INGEST__LISTEN",
                format!("127.0.0.1:{ingest_port}"),
            ),
            ("LASTSEEN_INGEST__RATE_LIMIT_PER_DEVICE", "0".to_string()),
            (
                "LASTSEEN_PROCESSOR__LISTEN",
                format!("127.0.0.1:{processor_port}"),
            ),
            ("LASTSEEN_PROCESSOR__GROUP_ID", format!("{name}-processor")),
            (
                "LASTSEEN_PROCESSOR__TRANSACTIONAL_ID_PREFIX",
                format!("{name}-processor"),
            ),
            ("LASTSEEN_SINK__LISTEN", format!("127.0.0.1:{sink_port}")),
            ("LASTSEEN_SINK__GROUP_ID", format!("{name}-sink")),
            ("LASTSEEN_SINK__MAX_DELAY", "200ms".to_string()),
            ("LASTSEEN_LOG__LEVEL", "info".to_string()),
        ] {
            env.insert(k.to_string(), v);
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/e2e-logs")
            .join(&name);
        std::fs::create_dir_all(&log_dir)?;
        Ok(Stack {
            name,
            env,
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            processor_url: format!("http://127.0.0.1:{processor_port}"),
            sink_url: format!("http://127.0.0.1:{sink_port}"),
            database,
            contacts_topic: contacts,
            events_topic: events,
            changelog_topic: changelog,
            dead_letter_topic: dead,
            log_dir,
            children: BTreeMap::new(),
        })
    }

    /// Starts instance `n` of `svc` (instances > 0 get their own instance id and port).
    pub fn start_instance(&mut self, svc: Service, n: usize) -> Result<()> {
        let bin = bin_dir().join(svc.binary());
        if !bin.exists() {
            bail!(
                "{} not found: build the services first (`cargo build --workspace --bins`)",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}-{n}.log", svc.binary())))?;
        let mut cmd = Command::new(&bin);
        // Harness-only variables (LASTSEEN_BIN_DIR, LASTSEEN_TEST_*) are not configuration: the
        // services reject any LASTSEEN_ variable without a `__`.
        for (k, _) in std::env::vars() {
            if k.starts_with("LASTSEEN_") && !k.contains("__") {
                cmd.env_remove(&k);
            }
        }
        // An error that ends a service is printed without anyhow's backtrace, which would
        // push the error itself out of the log tail that `check_alive` reports.
        cmd.env("RUST_LIB_BACKTRACE", "0")
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if n > 0 {
            let section = svc.binary().to_uppercase();
            cmd.env(
                format!("LASTSEEN_{section}__LISTEN"),
                format!("127.0.0.1:{}", free_port()),
            );
            cmd.env(
                format!("LASTSEEN_{section}__INSTANCE_ID"),
                format!("{}-{n}", svc.binary()),
            );
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.children.insert((svc, n), child);
        Ok(())
    }

    /// Starts instance 0 of `svc`.
    pub fn start(&mut self, svc: Service) -> Result<()> {
        self.start_instance(svc, 0)
    }

    /// `kill -9` instance `n` of `svc` and reaps it.
    pub fn kill(&mut self, svc: Service, n: usize) {
        if let Some(mut c) = self.children.remove(&(svc, n)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM instance `n` of `svc` and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, svc: Service, n: usize, timeout: Duration) -> Result<()> {
        let Some(mut c) = self.children.remove(&(svc, n)) else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!(
            "{} did not exit within {timeout:?} of SIGTERM",
            svc.binary()
        )
    }

    /// Fails if a started service exited by itself (with its log tail).
    pub fn check_alive(&mut self) -> Result<()> {
        for ((svc, n), c) in self.children.iter_mut() {
            if let Some(status) = c.try_wait()? {
                let log =
                    std::fs::read_to_string(self.log_dir.join(format!("{}-{n}.log", svc.binary())))
                        .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                // The error a service ended with (`main`'s `Error: ...`), in case a panic's
                // backtrace pushed it out of the tail.
                let error = log
                    .lines()
                    .rfind(|l| l.starts_with("Error: ") || l.contains("panicked at"))
                    .unwrap_or("(no error line)");
                bail!(
                    "{}-{n} exited with {status}: {error}\nlog tail:\n{}",
                    svc.binary(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// Waits until `url` + `/readyz` answers 200.
    pub async fn wait_ready(&mut self, base: &str, timeout: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{base}/readyz not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts ingest, processor and sink and waits until all three are ready.
    pub async fn start_all(&mut self) -> Result<()> {
        for s in [Service::Ingest, Service::Processor, Service::Sink] {
            self.start(s)?;
        }
        let timeout = Duration::from_secs(60);
        let urls = [
            self.ingest_url.clone(),
            self.processor_url.clone(),
            self.sink_url.clone(),
        ];
        for u in urls {
            self.wait_ready(&u, timeout).await?;
        }
        Ok(())
    }

    /// A ClickHouse client bound to this stack's database.
    pub fn clickhouse(&self) -> ClickHouse {
        ClickHouse {
            url: clickhouse_url(),
            database: self.database.clone(),
        }
    }

    /// A token for `person` on `device`, signed with the stack's secret.
    pub fn token(&self, person: &str, device: &str) -> String {
        token(TEST_SECRET, person, device)
    }

    /// Every topic [`Stack::new`] created.
    pub fn topics(&self) -> [&str; 4] {
        [
            &self.contacts_topic,
            &self.events_topic,
            &self.changelog_topic,
            &self.dead_letter_topic,
        ]
    }

    /// The end of a test that passed: kills the services, drops the database and deletes the
    /// topics (each left-over partition slows every later broker start). Call it last, after
    /// the assertions: a test that fails never gets here and keeps everything for debugging
    /// (the logs in `log_dir` are always kept).
    pub async fn cleanup(mut self) -> Result<()> {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.clickhouse().drop_database().await;
        delete_topics(&self.topics()).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates topics `(name, partitions, compacted)` with replication 1, if absent.
pub async fn create_topics(topics: &[(&str, i32, bool)]) -> Result<()> {
    let admin = admin_client()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let t = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics(&new, &opts)
        .await
        .context("creating topics")?
    {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Deletes `topics` and waits until the controller has deleted them; topics that do not exist
/// are not an error.
pub async fn delete_topics(topics: &[&str]) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin_client()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .delete_topics(topics, &opts)
        .await
        .context("deleting topics")?
    {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => bail!("deleting topic {t}: {e}"),
        }
    }
    Ok(())
}

/// The pid of the test process that created `topic`, if it is a harness topic
/// (`e2e.<test>_<pid>_<nanos>.<kind>`, see [`Stack::new`] and [`unique`]).
pub fn test_topic_pid(topic: &str) -> Option<u32> {
    let (name, _kind) = topic.strip_prefix("e2e.")?.rsplit_once('.')?;
    let mut parts = name.rsplit('_');
    let nanos = parts.next()?;
    let pid = parts.next()?;
    parts.next()?; // the test's name (may itself contain `_`)
    nanos.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Harness topics left behind by test processes that no longer run (a failed or crashed
/// test): `e2e.*` topics whose creating pid is not alive. Topics of a running test (even one
/// started by another user of the shared broker) are never listed; nor is anything that is
/// not a harness topic (`lastseen.*`, other suites' topics).
pub async fn stale_test_topics() -> Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    tokio::task::spawn_blocking(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .create()
            .context("creating a Kafka client")?;
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(30))
            .context("listing topics")?;
        Ok(md
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|t| {
                test_topic_pid(t)
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            })
            .map(str::to_string)
            .collect())
    })
    .await?
}

fn admin_client() -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .context("creating a Kafka admin client")
}

/// Minimal ClickHouse HTTP client for assertions (TSV in, TSV out).
#[derive(Debug, Clone)]
pub struct ClickHouse {
    pub url: String,
    pub database: String,
}

impl ClickHouse {
    /// Runs `sql` in the stack's database and returns the raw TSV answer.
    pub async fn query(&self, sql: &str) -> Result<String> {
        let r = reqwest::Client::new()
            .post(format!("{}/?database={}", self.url, self.database))
            .body(sql.to_string())
            .send()
            .await
            .context("ClickHouse request")?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            bail!("ClickHouse {status} for `{sql}`: {body}");
        }
        Ok(body)
    }

    /// Runs a query returning one number.
    pub async fn count(&self, sql: &str) -> Result<u64> {
        let s = self.query(sql).await?;
        s.trim()
            .parse()
            .with_context(|| format!("`{sql}` returned {s:?}"))
    }

    /// Polls `sql` until it returns `want` or `timeout` passes; returns the last value.
    pub async fn wait_count(&self, sql: &str, want: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.count(sql).await.unwrap_or(u64::MAX);
            if got == want || Instant::now() > deadline {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drops the database (best effort).
    pub async fn drop_database(&self) {
        let _ = reqwest::Client::new()
            .post(&self.url)
            .body(format!("DROP DATABASE IF EXISTS {}", self.database))
            .send()
            .await;
    }
}

/// One record to produce: partition, key, payload.
pub type Record = (i32, Option<String>, Vec<u8>);

/// Produces `records` (JSON, explicit partition, optional key) to `topic` with an idempotent
/// producer and waits until Kafka acknowledged all of them.
pub async fn produce_all(topic: &str, records: &[Record]) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let futures: Vec<_> = records
        .iter()
        .map(|(p, key, payload)| {
            let mut r = FutureRecord::<String, Vec<u8>>::to(topic)
                .partition(*p)
                .payload(payload);
            if let Some(k) = key {
                r = r.key(k);
            }
            producer.send(r, Duration::from_secs(30))
        })
        .collect();
    for f in futures::future::join_all(futures).await {
        f.map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    Ok(())
}

/// Waits until consumer group `group` has committed offsets at the end of every partition of
/// `topic` (the group has processed everything produced so far).
pub async fn wait_group_caught_up(group: &str, topic: &str, timeout: Duration) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(topic, *p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut behind = 0i64;
        for p in &parts {
            let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
            let c = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => 0,
            };
            behind += (high - c).max(0);
        }
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("group {group} still {behind} records behind on {topic} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every committed record of `topic` (read_committed) up to the current end.
pub async fn read_all_committed(topic: &str) -> Result<Vec<Vec<u8>>> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .set("group.id", unique("e2e-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()?;
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in md.topics()[0].partitions() {
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
            ends.insert(p.id(), high);
            tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = |c: &BaseConsumer| -> Result<bool> {
            let pos = c.position()?;
            Ok(ends.iter().all(|(p, high)| {
                *high == 0
                    || matches!(pos.find_partition(&topic, *p).map(|e| e.offset()),
                        Some(rdkafka::Offset::Offset(o)) if o >= *high)
            }))
        };
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {
                    if done(&consumer)? {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                bail!("reading {topic} did not reach the end in time");
            }
        }
        Ok(out)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_topic_pid_reads_the_harness_names_only() {
        let name = unique("proc_crash");
        let pid = std::process::id();
        for kind in ["contacts", "events", "state", "dead-letter"] {
            assert_eq!(test_topic_pid(&format!("e2e.{name}.{kind}")), Some(pid));
        }
        assert_eq!(
            test_topic_pid("e2e.chaos_18984_157487756.events"),
            Some(18984)
        );
        for other in [
            "lastseen.contacts",
            "lastseen-promcheck.events",
            "test.ingest.schemathesis",
            "sink_chrestart_26774_968043997.contacts",
            "e2e.chaos.events",
            "e2e.chaos_x_1.events",
            "e2e.18984_157487756.events",
            "e2e.chaos_18984_157487756",
            "bench.contacts.123.456",
        ] {
            assert_eq!(test_topic_pid(other), None, "{other}");
        }
    }
}
