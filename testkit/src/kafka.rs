//! Kafka for tests: the broker address, one admin with one retry policy, producers,
//! committed readers, and waiting for a consumer group to catch up.
//!
//! The broker is shared with other suites (and restarted by the fault tests), so every admin
//! call is retried with the same policy: [`admin_backoff`], through the services' own
//! [`common::lifecycle::retry`].

use crate::names;
use anyhow::{Context, Result, bail};
use common::lifecycle::{Backoff, RetryError, Retryable, Shutdown, retry};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Kafka bootstrap servers for tests (`LASTSEEN_TEST_KAFKA`, default `127.0.0.1:9092`).
pub fn brokers() -> String {
    std::env::var("LASTSEEN_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A client configuration for the test broker.
pub fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

/// The one retry policy of every admin call: 250 ms doubling to 2 s, 40 retries (about
/// 75 s, longer than a broker restart).
pub fn admin_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(2)).with_max_retries(40)
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
    pub replication: i32,
}

impl TopicSpec {
    /// Replication 1, not compacted.
    pub fn new(name: impl Into<String>, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
            compacted: false,
            replication: 1,
        }
    }

    pub fn compacted(mut self) -> TopicSpec {
        self.compacted = true;
        self
    }

    pub fn replication(mut self, n: i32) -> TopicSpec {
        self.replication = n;
        self
    }
}

/// An admin call failed; every failure is retried (a restarting broker answers with many
/// different codes) until the policy gives up.
#[derive(Debug)]
struct AdminFailure(String);

impl fmt::Display for AdminFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Retryable for AdminFailure {
    fn is_retryable(&self) -> bool {
        true
    }
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)))
}

/// What an admin call on topics answers: a result per topic.
type TopicResults = Result<Vec<rdkafka::admin::TopicResult>, KafkaError>;

/// Checks the per-topic results of an admin call: each is Ok or `fine`.
fn all_fine(results: TopicResults, fine: RDKafkaErrorCode) -> Result<(), AdminFailure> {
    let results = results.map_err(|e| AdminFailure(e.to_string()))?;
    let bad: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(_) => None,
            Err((_, code)) if code == fine => None,
            Err((t, code)) => Some(format!("{t}: {code}")),
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(AdminFailure(bad.join(", ")))
    }
}

/// Topic administration on one cluster, every call under [`admin_backoff`].
#[derive(Debug, Clone)]
pub struct Admin {
    brokers: String,
}

impl Admin {
    /// The test broker ([`brokers`]).
    pub fn test() -> Admin {
        Admin::at(&brokers())
    }

    /// Another cluster (a benchmark's `--brokers`, a deployment's `kafka.brokers`).
    pub fn at(brokers: &str) -> Admin {
        Admin {
            brokers: brokers.to_string(),
        }
    }

    /// A raw admin client of the cluster, for calls the kit does not wrap.
    pub fn client(&self) -> Result<AdminClient<DefaultClientContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .context("creating a Kafka admin client")
    }

    /// Runs one admin call under the policy.
    async fn call<F, Fut>(&self, what: &str, call: F) -> Result<()>
    where
        F: Fn(AdminClient<DefaultClientContext>) -> Fut,
        Fut: Future<Output = Result<(), AdminFailure>>,
    {
        let never = Shutdown::new();
        let mut backoff = admin_backoff();
        retry(&never, &mut backoff, what, || async {
            let admin = self.client().map_err(|e| AdminFailure(e.to_string()))?;
            call(admin).await
        })
        .await
        .map_err(|e: RetryError<AdminFailure>| anyhow::anyhow!("{what}: {}", e.into_inner()))
    }

    /// Creates `topics` if absent.
    pub async fn create_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.call("creating topics", |admin| async move {
            let new: Vec<NewTopic> = topics
                .iter()
                .map(|t| {
                    let n = NewTopic::new(
                        &t.name,
                        t.partitions,
                        TopicReplication::Fixed(t.replication),
                    );
                    if t.compacted {
                        n.set("cleanup.policy", "compact")
                    } else {
                        n
                    }
                })
                .collect();
            let r = admin.create_topics(&new, &admin_options()).await;
            all_fine(r, RDKafkaErrorCode::TopicAlreadyExists)
        })
        .await
    }

    /// Deletes `topics` and waits until the controller has; topics that do not exist are
    /// fine.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.call("deleting topics", |admin| async move {
            let r = admin.delete_topics(topics, &admin_options()).await;
            all_fine(r, RDKafkaErrorCode::UnknownTopicOrPartition)
        })
        .await
    }
}

/// [`Admin::create_topics`] on the test broker.
pub async fn create_topics(topics: &[TopicSpec]) -> Result<()> {
    Admin::test().create_topics(topics).await
}

/// Creates one plain topic with `partitions` partitions on the test broker; panics if it
/// cannot.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topics(&[TopicSpec::new(name, partitions)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`Admin::delete_topics`] on the test broker.
pub async fn delete_topics(topics: &[&str]) -> Result<()> {
    Admin::test().delete_topics(topics).await
}

/// Harness topics left behind by test processes that no longer run (a failed or crashed
/// test): harness topics whose creating pid is not alive. Topics of a running test (even one
/// started by another user of the shared broker) are never listed; nor is anything that is
/// not a harness topic (`lastseen.*`, `bench.*`, other suites' topics).
pub async fn stale_test_topics() -> Result<Vec<String>> {
    tokio::task::spawn_blocking(|| {
        let consumer: BaseConsumer = client_config()
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
                names::test_topic_pid(t)
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            })
            .map(str::to_string)
            .collect())
    })
    .await?
}

/// An idempotent producer (`acks=all`, 5 ms linger).
pub fn producer() -> FutureProducer {
    client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// A transactional producer with `transactional.id` = `id`, transactions initialised.
pub fn tx_producer(id: &str) -> FutureProducer {
    let p: FutureProducer = client_config()
        .set("transactional.id", id)
        .create()
        .expect("transactional producer");
    p.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    p
}

/// One record to produce: its partition (`None`: by key), key and payload.
pub trait Record {
    fn partition(&self) -> Option<i32>;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> &[u8];
}

/// `(partition, key, payload)`.
impl Record for (i32, Option<String>, Vec<u8>) {
    fn partition(&self) -> Option<i32> {
        Some(self.0)
    }
    fn key(&self) -> Option<&[u8]> {
        self.1.as_deref().map(str::as_bytes)
    }
    fn payload(&self) -> &[u8] {
        &self.2
    }
}

/// `(key, payload)`, partitioned by the key.
impl Record for (Option<String>, Vec<u8>) {
    fn partition(&self) -> Option<i32> {
        None
    }
    fn key(&self) -> Option<&[u8]> {
        self.0.as_deref().map(str::as_bytes)
    }
    fn payload(&self) -> &[u8] {
        &self.1
    }
}

/// Produces `records` to `topic` and waits until Kafka acknowledged all of them.
pub async fn produce<R: Record>(
    producer: &FutureProducer,
    topic: &str,
    records: &[R],
) -> Result<()> {
    let futures = records.iter().map(|r| {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic).payload(r.payload());
        if let Some(k) = r.key() {
            rec = rec.key(k);
        }
        if let Some(p) = r.partition() {
            rec = rec.partition(p);
        }
        producer.send(rec, Duration::from_secs(30))
    });
    for f in futures::future::join_all(futures).await {
        f.map_err(|(e, _)| anyhow::anyhow!("produce to {topic} failed: {e}"))?;
    }
    Ok(())
}

/// [`produce`] with a fresh idempotent [`producer`].
pub async fn produce_all<R: Record>(topic: &str, records: &[R]) -> Result<()> {
    produce(&producer(), topic, records).await
}

/// Sends `records` in one transaction of `producer` (see [`tx_producer`]), committed or
/// aborted.
pub async fn produce_tx<R: Record>(
    producer: &FutureProducer,
    topic: &str,
    records: &[R],
    commit: bool,
) -> Result<()> {
    let t = Duration::from_secs(30);
    producer.begin_transaction()?;
    produce(producer, topic, records).await?;
    if commit {
        producer.commit_transaction(t)?;
    } else {
        producer.abort_transaction(t)?;
    }
    Ok(())
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Msg {
    /// The key as text (lossy).
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The payload as JSON of `T`; panics if it is not.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: {}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A read_committed consumer assigned every partition of `topic` from the beginning; the
/// partitions and their end offsets as of now.
fn reader(topic: &str) -> Result<(BaseConsumer, BTreeMap<i32, i64>)> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", names::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        ends.insert(p.id(), high);
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok((consumer, ends))
}

fn to_msg(m: &rdkafka::message::BorrowedMessage<'_>) -> Msg {
    Msg {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

/// Reads `topic` from the beginning (read_committed) until `done(records)` or `within`
/// elapses. Blocking: call it from a blocking thread.
pub fn read_until(topic: &str, within: Duration, done: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
    read_mapped(topic, within, |m| m.clone(), done)
}

/// [`read_until`], each record turned into a `T` once, as it arrives.
fn read_mapped<T>(
    topic: &str,
    within: Duration,
    map: impl Fn(&Msg) -> T,
    done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let (consumer, _) = reader(topic).expect("reader");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(map(&to_msg(&m))),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
        }
    }
    out
}

/// Every committed record of `topic` (read_committed) up to its end as of the call.
pub async fn read_committed(topic: &str) -> Result<Vec<Msg>> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let (consumer, ends) = reader(&topic)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = |c: &BaseConsumer| -> Result<bool> {
            let pos = c.position()?;
            Ok(ends.iter().all(|(p, high)| {
                *high == 0
                    || matches!(pos.find_partition(&topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *high)
            }))
        };
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(to_msg(&m)),
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
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

/// One contacts-topic record read back, decoded.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub key: Option<String>,
    pub contact: common::Contact,
}

/// [`read_until`] on a contacts topic, every record decoded as a [`common::Contact`].
pub fn read_contacts(topic: &str, within: Duration, done: impl Fn(&[Read]) -> bool) -> Vec<Read> {
    let decode = |m: &Msg| Read {
        partition: m.partition,
        key: m.key_str(),
        contact: m.json(),
    };
    read_mapped(topic, within, decode, done)
}

/// [`read_contacts`] from async code (on a blocking thread).
pub async fn contacts_until(
    topic: &str,
    within: Duration,
    done: impl Fn(&[Read]) -> bool + Send + 'static,
) -> Vec<Read> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_contacts(&topic, within, done))
        .await
        .expect("reader thread")
}

/// The pings among `records`.
pub fn pings_of(records: &[Read]) -> Vec<(&Read, &common::Ping)> {
    records
        .iter()
        .filter_map(|r| match &r.contact {
            common::Contact::Ping(p) => Some((r, p)),
            _ => None,
        })
        .collect()
}

/// Waits until consumer group `group` has committed offsets at the end of every partition of
/// `topic` (the group has processed everything produced so far).
pub async fn wait_group_caught_up(group: &str, topic: &str, timeout: Duration) -> Result<()> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(topic, *p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut behind = 0i64;
        for p in &parts {
            let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
            let c = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
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
