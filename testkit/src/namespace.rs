//! One test's own topics, ClickHouse database, consumer groups and transactional ids, so that
//! tests run in parallel on the shared broker and server.

use crate::db::{Db, clickhouse_url};
use crate::kafka::{self, TopicSpec, brokers};
use crate::names;
use common::Config;
use std::collections::BTreeMap;
use std::time::Duration;

/// A test's namespace: topics `e2e.<name>.{contacts,events,state,dead-letter}`, database
/// `e2e_<name>`, groups and transactional ids `<name>-<service>`.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// `<test>_<pid>_<nanos>` (see [`names::unique`]).
    pub name: String,
    pub partitions: i32,
    pub contacts_topic: String,
    pub events_topic: String,
    pub changelog_topic: String,
    pub dead_letter_topic: String,
    pub database: String,
}

impl Namespace {
    /// Names a fresh namespace for `test` whose topics have `partitions` partitions (the
    /// dead-letter topic one). Creates nothing: see [`Namespace::create_topics`].
    pub fn new(test: &str, partitions: i32) -> Namespace {
        let name = names::unique(test);
        Namespace {
            partitions,
            contacts_topic: names::topic(&name, "contacts"),
            events_topic: names::topic(&name, "events"),
            changelog_topic: names::topic(&name, "state"),
            dead_letter_topic: names::topic(&name, "dead-letter"),
            database: format!("e2e_{name}"),
            name,
        }
    }

    /// Every topic of the namespace.
    pub fn topics(&self) -> [&str; 4] {
        [
            &self.contacts_topic,
            &self.events_topic,
            &self.changelog_topic,
            &self.dead_letter_topic,
        ]
    }

    /// Creates the four topics (the changelog compacted).
    pub async fn create_topics(&self) -> anyhow::Result<()> {
        let p = self.partitions;
        kafka::create_topics(&[
            TopicSpec::new(&self.contacts_topic, p),
            TopicSpec::new(&self.events_topic, p),
            TopicSpec::new(&self.changelog_topic, p).compacted(),
            TopicSpec::new(&self.dead_letter_topic, 1),
        ])
        .await
    }

    /// The consumer group (and transactional-id prefix) of `service` in this namespace.
    pub fn group(&self, service: &str) -> String {
        format!("{}-{service}", self.name)
    }

    /// The namespace's database.
    pub fn db(&self) -> Db {
        Db::new(&self.database)
    }

    /// Points `c` at this namespace: the test broker and ClickHouse, the topics, the database,
    /// the groups and transactional ids. Nothing else changes (a benchmark keeps the defaults).
    pub fn apply(&self, c: &mut Config) {
        c.kafka.brokers = brokers();
        c.kafka.contacts_topic = self.contacts_topic.clone();
        c.kafka.events_topic = self.events_topic.clone();
        c.kafka.changelog_topic = self.changelog_topic.clone();
        c.kafka.dead_letter_topic = self.dead_letter_topic.clone();
        c.kafka.partitions = self.partitions;
        c.clickhouse.url = clickhouse_url();
        c.clickhouse.database = self.database.clone();
        c.processor.group_id = self.group("processor");
        c.processor.transactional_id_prefix = self.group("processor");
        c.sink.group_id = self.group("sink");
    }

    /// The configuration of a service in this namespace, for services run in-process
    /// ([`crate::inproc`]): [`Namespace::apply`] and the settings of [`Namespace::env`].
    pub fn config(&self) -> Config {
        let mut c = Config::defaults();
        self.apply(&mut c);
        c.auth.hs256_secret = crate::SECRET.into();
        c.ingest.rate_limit_per_device = 0.0;
        c.sink.max_delay = Duration::from_millis(200);
        c
    }

    /// The `LASTSEEN_*` environment of a service in this namespace, for services run as child
    /// processes ([`crate::Stack`]). Listen addresses are not included.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            ("LASTSEEN_KAFKA__BROKERS", brokers()),
            (
                "LASTSEEN_KAFKA__CONTACTS_TOPIC",
                self.contacts_topic.clone(),
            ),
            ("LASTSEEN_KAFKA__EVENTS_TOPIC", self.events_topic.clone()),
            (
                "LASTSEEN_KAFKA__CHANGELOG_TOPIC",
                self.changelog_topic.clone(),
            ),
            (
                "LASTSEEN_KAFKA__DEAD_LETTER_TOPIC",
                self.dead_letter_topic.clone(),
            ),
            ("LASTSEEN_KAFKA__PARTITIONS", self.partitions.to_string()),
            ("LASTSEEN_CLICKHOUSE__URL", clickhouse_url()),
            ("LASTSEEN_CLICKHOUSE__DATABASE", self.database.clone()),
            ("LASTSEEN_AUTH__HS256_SECRET", crate::SECRET.to_string()),
            ("LASTSEEN_INGEST__RATE_LIMIT_PER_DEVICE", "0".to_string()),
            ("LASTSEEN_PROCESSOR__GROUP_ID", self.group("processor")),
            (
                "LASTSEEN_PROCESSOR__TRANSACTIONAL_ID_PREFIX",
                self.group("processor"),
            ),
            ("LASTSEEN_SINK__GROUP_ID", self.group("sink")),
            ("LASTSEEN_SINK__MAX_DELAY", "200ms".to_string()),
            ("LASTSEEN_LOG__LEVEL", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The end of a test that passed: drops the database and deletes the topics (each
    /// left-over partition slows every later broker start). A failing test never gets here
    /// and keeps everything for debugging; `prune_topics` removes its topics later.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        self.db().drop_database().await;
        kafka::delete_topics(&self.topics()).await
    }
}
