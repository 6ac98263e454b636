//! Helpers shared by the integration tests: a real Kafka (127.0.0.1:9092, or
//! `LASTSEEN_TEST_KAFKA`), a uniquely named topic per test, and ingest on an ephemeral port.
#![allow(dead_code)]

use common::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SECRET: &str = "integration-test-secret";

pub fn brokers() -> String {
    std::env::var("LASTSEEN_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic name no other test (or run) uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "test.ingest.{prefix}.{}.{}.{}",
        std::process::id(),
        common::record::now_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn create_topic(name: &str, partitions: i32) {
    // The broker is shared (and sometimes restarted by other suites): retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin client");
        let res = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new()
                    .operation_timeout(Some(Duration::from_secs(10)))
                    .request_timeout(Some(Duration::from_secs(10))),
            )
            .await;
        let err = match res {
            Ok(rs) => match rs.into_iter().next() {
                Some(Ok(_)) => return,
                Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => return,
                Some(Err((_, code))) => format!("{code:?}"),
                None => "no result".into(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "cannot create topic {name}: {err}"
        );
        eprintln!("create topic {name}: {err}; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn delete_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let _ = admin.delete_topics(&[name], &AdminOptions::new()).await;
}

/// The configuration of a test ingest writing to `topic`.
pub fn config(topic: &str) -> Config {
    let mut c = Config::defaults();
    c.kafka.brokers = brokers();
    c.kafka.contacts_topic = topic.to_string();
    c.auth.hs256_secret = SECRET.into();
    c.clock.tick_interval = Duration::from_millis(200);
    c.ingest.instance_id = "ingest-test".into();
    c.ingest.rate_limit_per_device = 0.0;
    c
}

/// A running ingest.
pub struct Ingest {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<common::lifecycle::Shutdown>,
    handle: Option<tokio::task::JoinHandle<Result<(), ingest::RunError>>>,
}

impl Ingest {
    pub async fn start(config: Config) -> Ingest {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tx = common::lifecycle::Shutdown::new();
        let handle = tokio::spawn(ingest::run(
            config,
            common::lifecycle::Listeners::public(listener),
            tx.clone(),
        ));
        Ingest {
            addr,
            url: format!("http://{addr}"),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ingest not ready within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shuts down gracefully and returns run()'s result.
    pub async fn stop(mut self) -> Result<(), ingest::RunError> {
        self.stop.take().unwrap().trigger();
        self.handle.take().unwrap().await.expect("run task")
    }
}

pub fn token(person: &str, device: &str) -> String {
    ingest::auth::testing::hs256_for(SECRET, person, device)
}

pub async fn post(
    url: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.expect("request")
}

/// One record read back from the topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub key: Option<String>,
    pub contact: common::Contact,
}

/// Reads the whole topic from the beginning until `done(records)` or `within` elapses.
pub fn read_topic(
    topic: &str,
    partitions: i32,
    within: Duration,
    done: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let contact: common::Contact =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("contact json");
            out.push(Read {
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                contact,
            });
        }
    }
    out
}

pub fn pings_of(records: &[Read]) -> Vec<(&Read, &common::Ping)> {
    records
        .iter()
        .filter_map(|r| match &r.contact {
            common::Contact::Ping(p) => Some((r, p)),
            _ => None,
        })
        .collect()
}
