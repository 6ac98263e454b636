//! Records to produce: distinct pings, registrations, ticks and events, and the harness's
//! in-process [`Env`] (a [`Namespace`] with a sink configuration) that produces them.

use crate::db::Db;
use crate::inproc;
use crate::kafka::{self, Record};
use crate::namespace::Namespace;
use common::Config;
use common::record::{
    Contact, EventKind, PersonEvent, Ping, Registration, Tick, event_id, now_millis,
};
use rdkafka::producer::FutureProducer;
use std::time::Duration;

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

/// `n` registrations of distinct people.
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

/// `n` ticks a millisecond apart.
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

/// `n` events of every kind in turn, of 17 people, with ids from sequence `seq0` on.
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
                seq: Some((seq0 + i as u64) as u32),
            }
        })
        .collect()
}

/// Contacts as records keyed by their person (ticks unkeyed).
pub fn contact_records(contacts: &[Contact]) -> Vec<(Option<String>, Vec<u8>)> {
    contacts
        .iter()
        .map(|c| {
            (
                c.person_id().map(str::to_string),
                serde_json::to_vec(c).expect("contacts serialize"),
            )
        })
        .collect()
}

/// Events as records keyed by their person.
pub fn event_records(events: &[PersonEvent]) -> Vec<(Option<String>, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                Some(e.person_id.clone()),
                serde_json::to_vec(e).expect("events serialize"),
            )
        })
        .collect()
}

/// Partitions of an [`Env`]'s topics.
pub const PARTITIONS: i32 = 3;

/// A per-test namespace with its topics created and a configuration for services run
/// in-process ([`inproc::sink_config`]); what the sink's tests work in.
#[derive(Debug)]
pub struct Env {
    /// The namespace's unique name (also the tag of its records).
    pub name: String,
    pub ns: Namespace,
    pub config: Config,
    db: Db,
}

impl Env {
    /// Creates the namespace's topics ([`PARTITIONS`] each); panics if it cannot.
    pub async fn new(test: &str) -> Env {
        inproc::init_logging("sink=info,warn");
        let ns = Namespace::new(test, PARTITIONS);
        ns.create_topics().await.unwrap_or_else(|e| panic!("{e}"));
        Env {
            name: ns.name.clone(),
            config: inproc::sink_config(&ns),
            db: ns.db(),
            ns,
        }
    }

    /// The namespace's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The sink's ClickHouse client on the namespace's database.
    pub fn ch(&self) -> sink::ch::Ch {
        self.db.ch().clone()
    }

    /// See [`Db::scalar`].
    pub async fn scalar(&self, sql: &str) -> Option<i64> {
        self.db.scalar(sql).await
    }

    /// Waits until `sql` returns `want`; panics after `timeout`, naming the last value.
    pub async fn wait_for(&self, sql: &str, want: i64, timeout: Duration) {
        let want = u64::try_from(want).expect("a count");
        self.db.wait_for(sql, want, timeout).await
    }

    /// An idempotent producer ([`kafka::producer`]).
    pub fn producer(&self) -> FutureProducer {
        kafka::producer()
    }

    /// A transactional producer whose id is `id` in this namespace.
    pub fn tx_producer(&self, id: &str) -> FutureProducer {
        kafka::tx_producer(&format!("{}-{id}", self.name))
    }

    /// Produces `records` to `topic`; panics if Kafka does not acknowledge them.
    pub async fn produce<R: Record>(&self, producer: &FutureProducer, topic: &str, records: &[R]) {
        kafka::produce(producer, topic, records)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Produces `contacts` to the contacts topic, keyed by person.
    pub async fn produce_contacts(&self, producer: &FutureProducer, contacts: &[Contact]) {
        let topic = &self.config.kafka.contacts_topic;
        self.produce(producer, topic, &contact_records(contacts))
            .await;
    }

    /// Sends `events` to the events topic in one transaction, committed or aborted.
    pub async fn produce_events_tx(
        &self,
        producer: &FutureProducer,
        events: &[PersonEvent],
        commit: bool,
    ) {
        let topic = &self.config.kafka.events_topic;
        kafka::produce_tx(producer, topic, &event_records(events), commit)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Drops the database and deletes the topics.
    pub async fn cleanup(&self) {
        self.ns.cleanup().await.unwrap_or_else(|e| panic!("{e}"));
    }
}
