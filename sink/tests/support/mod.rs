//! Helpers shared by the sink's integration tests: unique topics and databases per test on the
//! real local Kafka and ClickHouse (`deploy/local/up`), producers, waiting for counts.
#![allow(dead_code)]

use common::config::Config;
use common::record::{
    Contact, EventKind, PersonEvent, Ping, Registration, Tick, event_id, now_millis,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sink::ch::Ch;
use std::time::{Duration, Instant};

pub const PARTITIONS: i32 = 3;

/// A per-test namespace: topics `<name>.contacts|events|dlq`, database `<name>`, group `<name>`.
pub struct Env {
    pub name: String,
    pub config: Config,
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A free loopback port outside the kernel's ephemeral range (see [`e2e::free_port`]).
pub use e2e::free_port;

impl Env {
    pub async fn new(prefix: &str) -> Env {
        common::telemetry::init_logging(&common::config::LogConfig {
            level: "sink=info,warn".into(),
            format: common::config::LogFormat::Text,
        });
        let name = unique(prefix);
        let mut config = Config::defaults();
        config.kafka.contacts_topic = format!("{name}.contacts");
        config.kafka.events_topic = format!("{name}.events");
        config.kafka.dead_letter_topic = format!("{name}.dlq");
        config.clickhouse.database = name.clone();
        config.sink.group_id = name.clone();
        config.sink.listen = ([127, 0, 0, 1], free_port()).into();
        config.sink.max_rows = 5000;
        config.sink.max_delay = Duration::from_millis(200);
        config.sink.min_backoff = Duration::from_millis(50);
        config.sink.max_backoff = Duration::from_millis(1000);
        let env = Env { name, config };
        env.create_topics().await;
        env
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.kafka.brokers)
            .create()
            .unwrap()
    }

    async fn create_topics(&self) {
        let k = &self.config.kafka;
        let names = [&k.contacts_topic, &k.events_topic, &k.dead_letter_topic];
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        // The shared broker may be restarting (other suites' fault tests): retry for a while.
        let admin = self.admin();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let t0 = Instant::now();
        loop {
            match admin.create_topics(&topics, &opts).await {
                Ok(res)
                    if res.iter().all(|r| match r {
                        Ok(_) => true,
                        Err((_, code)) => {
                            *code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                        }
                    }) =>
                {
                    return;
                }
                other if t0.elapsed() > Duration::from_secs(90) => {
                    panic!("create topics: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Drops the database and deletes the topics.
    pub async fn cleanup(&self) {
        let _ = self
            .ch_server_exec(&format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await;
        let k = &self.config.kafka;
        let names = [
            k.contacts_topic.as_str(),
            k.events_topic.as_str(),
            k.dead_letter_topic.as_str(),
        ];
        let _ = self
            .admin()
            .delete_topics(&names, &AdminOptions::new())
            .await;
    }

    pub fn ch(&self) -> Ch {
        Ch::new(&self.config.clickhouse)
    }

    async fn ch_server_exec(&self, sql: &str) -> Result<(), sink::SinkError> {
        let mut c = self.config.clickhouse.clone();
        c.database = "default".into();
        Ch::new(&c).exec(sql).await
    }

    /// One number from ClickHouse (None while it fails, e.g. table missing or server down).
    pub async fn scalar(&self, sql: &str) -> Option<i64> {
        let rows = self.ch().fetch(sql).await.ok()?;
        rows.first()?.first()?.parse().ok()
    }

    /// Waits until `sql` returns `want` (or panics after `timeout`, showing the last value).
    pub async fn wait_for(&self, sql: &str, want: i64, timeout: Duration) {
        let t0 = Instant::now();
        let mut last = None;
        while t0.elapsed() < timeout {
            last = self.scalar(sql).await;
            if last == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("timeout waiting for `{sql}` = {want}; last value {last:?}");
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    pub fn tx_producer(&self, id: &str) -> FutureProducer {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.kafka.brokers)
            .set("transactional.id", format!("{}-{id}", self.name))
            .create()
            .unwrap();
        p.init_transactions(Duration::from_secs(30)).unwrap();
        p
    }

    /// Produces raw payloads to the contacts topic (key = person id → partition by hash).
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        records: &[(Option<String>, Vec<u8>)],
    ) {
        let futs = records.iter().map(|(k, v)| {
            let mut r = FutureRecord::<String, Vec<u8>>::to(topic).payload(v);
            if let Some(k) = k {
                r = r.key(k);
            }
            producer.send(r, Duration::from_secs(30))
        });
        for res in futures::future::join_all(futs).await {
            res.map_err(|(e, _)| e).unwrap();
        }
    }

    pub async fn produce_contacts(&self, producer: &FutureProducer, contacts: &[Contact]) {
        let recs: Vec<(Option<String>, Vec<u8>)> = contacts
            .iter()
            .map(|c| {
                (
                    c.person_id().map(str::to_string),
                    serde_json::to_vec(c).unwrap(),
                )
            })
            .collect();
        self.produce(producer, &self.config.kafka.contacts_topic, &recs)
            .await;
    }

    /// Sends `events` in one transaction, committed or aborted.
    pub async fn produce_events_tx(
        &self,
        producer: &FutureProducer,
        events: &[PersonEvent],
        commit: bool,
    ) {
        producer.begin_transaction().unwrap();
        let recs: Vec<(Option<String>, Vec<u8>)> = events
            .iter()
            .map(|e| (Some(e.person_id.clone()), serde_json::to_vec(e).unwrap()))
            .collect();
        self.produce(producer, &self.config.kafka.events_topic, &recs)
            .await;
        if commit {
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
}

/// `n` distinct pings of `persons` people, received around now (seq makes them unique).
pub fn pings(tag: &str, n: usize, persons: usize) -> Vec<Contact> {
    let now = now_millis();
    (0..n)
        .map(|i| {
            Contact::Ping(Ping {
                person_id: format!("{tag}-p{}", i % persons),
                device_id: format!("{tag}-d{}", i % persons),
                device_ts: now - 60_000 + i as i64,
                lat: 55.75 + (i % 1000) as f64 * 1e-5,
                lon: 37.61 + (i % 997) as f64 * 1e-5,
                accuracy_m: if i % 3 == 0 {
                    None
                } else {
                    Some(10.0 + (i % 7) as f32)
                },
                received_at: now + i as i64 / 10,
            })
        })
        .collect()
}

pub fn registrations(tag: &str, n: usize) -> Vec<Contact> {
    let now = now_millis();
    (0..n)
        .map(|i| {
            Contact::Registration(Registration {
                person_id: format!("{tag}-p{i}"),
                device_id: format!("{tag}-d{i}"),
                address: format!("Moscow, street {i}"),
                lat: Some(55.7),
                lon: None,
                received_at: now + i as i64,
            })
        })
        .collect()
}

pub fn ticks(n: usize) -> Vec<Contact> {
    let now = now_millis();
    (0..n)
        .map(|i| {
            Contact::Tick(Tick {
                received_at: now + i as i64,
                source: "test".into(),
            })
        })
        .collect()
}

pub fn events(tag: &str, n: usize, seq0: u64) -> Vec<PersonEvent> {
    let now = now_millis();
    (0..n)
        .map(|i| {
            let kind = EventKind::ALL[i % EventKind::ALL.len()];
            let person = format!("{tag}-p{}", i % 17);
            let at = now + i as i64;
            PersonEvent {
                event_id: event_id(&person, kind, at, seq0 + i as u64),
                person_id: person,
                kind,
                at,
                last_contact_at: at - 1000,
                notice_after_ms: 172_800_000,
                deregister_after_ms: 259_200_000,
                excluded_outage_ms: 0,
                address: (i % 2 == 0).then(|| format!("addr {i}")),
            }
        })
        .collect()
}

/// Minimal HTTP GET against the admin server: (status, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Runs the sink in-process with its admin endpoints on `config.sink.listen`; the returned
/// handle stops it.
pub fn spawn_sink(
    config: Config,
) -> (
    common::lifecycle::Shutdown,
    tokio::task::JoinHandle<Result<(), sink::SinkError>>,
) {
    let admin = std::net::TcpListener::bind(config.sink.listen).expect("bind sink.listen");
    admin.set_nonblocking(true).unwrap();
    let admin = tokio::net::TcpListener::from_std(admin).unwrap();
    let stop = common::lifecycle::Shutdown::new();
    let h = tokio::spawn(sink::run(
        config,
        common::lifecycle::Listeners::admin(admin),
        stop.clone(),
    ));
    (stop, h)
}
