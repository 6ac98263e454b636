//! The records that travel between the services.
//!
//! Wire format: JSON, one record per Kafka message. Contacts are keyed by `person_id` so one
//! person's records stay in order on one partition; ticks carry no key and are written to an
//! explicit partition. Events are keyed by `person_id` too.
//!
//! All times are integer milliseconds since the Unix epoch (UTC). `received_at` is always the
//! server's clock as stamped by ingest; `device_ts` is the phone's own claim and is kept only
//! for analytics.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Current server time in epoch milliseconds. The only place the services read the wall clock
/// for record times, so tests and reviews have one thing to look at.
pub fn now_millis() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Everything on the contacts topic: what the processor consumes.
///
/// Serialised internally tagged (`{"type":"ping",...}`). Deserialisation goes through one flat
/// struct in one pass (see [`crate::codec::contact`]) instead of serde's buffered
/// internally-tagged path, which costs several times more per record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    try_from = "crate::codec::contact::RawContact<String>"
)]
pub enum Contact {
    /// A person registers, or declares a new residence address.
    Registration(Registration),
    /// A location ping from the person's device.
    Ping(Ping),
    /// A clock tick written by ingest into every partition, so stream time advances even when
    /// nobody in a partition pings.
    Tick(Tick),
}

impl Contact {
    /// The server receive time stamped by ingest.
    pub fn received_at(&self) -> Millis {
        match self {
            Contact::Registration(r) => r.received_at,
            Contact::Ping(p) => p.received_at,
            Contact::Tick(t) => t.received_at,
        }
    }

    /// The person this record is about; `None` for ticks.
    pub fn person_id(&self) -> Option<&str> {
        match self {
            Contact::Registration(r) => Some(&r.person_id),
            Contact::Ping(p) => Some(&p.person_id),
            Contact::Tick(_) => None,
        }
    }

    /// Short name of the record type, used as a metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            Contact::Registration(_) => "registration",
            Contact::Ping(_) => "ping",
            Contact::Tick(_) => "tick",
        }
    }
}

/// A contact with its strings borrowed from the message it was decoded from (owned only where
/// a string had escapes): what [`crate::codec::contact::decode`] returns, and the one input
/// type of the processor's detector. [`Contact`] is its owned form.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactRef<'a> {
    Registration {
        person_id: Cow<'a, str>,
        device_id: Cow<'a, str>,
        address: Cow<'a, str>,
        lat: Option<f64>,
        lon: Option<f64>,
        received_at: Millis,
    },
    Ping {
        person_id: Cow<'a, str>,
        device_id: Cow<'a, str>,
        device_ts: Millis,
        lat: f64,
        lon: f64,
        accuracy_m: Option<f32>,
        received_at: Millis,
    },
    Tick {
        received_at: Millis,
        source: Cow<'a, str>,
    },
}

impl<'a> ContactRef<'a> {
    /// Decodes and checks one contacts-topic message ([`crate::codec::contact::decode`]).
    pub fn decode(payload: &'a [u8]) -> Result<ContactRef<'a>, crate::codec::DecodeError> {
        crate::codec::contact::decode(payload)
    }

    /// Short name of the record type, as [`Contact::type_name`].
    pub fn type_name(&self) -> &'static str {
        match self {
            ContactRef::Registration { .. } => "registration",
            ContactRef::Ping { .. } => "ping",
            ContactRef::Tick { .. } => "tick",
        }
    }

    /// The server receive time stamped by ingest.
    pub fn received_at(&self) -> Millis {
        match self {
            ContactRef::Registration { received_at, .. }
            | ContactRef::Ping { received_at, .. }
            | ContactRef::Tick { received_at, .. } => *received_at,
        }
    }

    /// The person this record is about; `None` for ticks.
    pub fn person_id(&self) -> Option<&str> {
        match self {
            ContactRef::Registration { person_id, .. } | ContactRef::Ping { person_id, .. } => {
                Some(person_id)
            }
            ContactRef::Tick { .. } => None,
        }
    }

    /// The owned form.
    pub fn into_owned(self) -> Contact {
        match self {
            ContactRef::Registration {
                person_id,
                device_id,
                address,
                lat,
                lon,
                received_at,
            } => Contact::Registration(Registration {
                person_id: person_id.into_owned(),
                device_id: device_id.into_owned(),
                address: address.into_owned(),
                lat,
                lon,
                received_at,
            }),
            ContactRef::Ping {
                person_id,
                device_id,
                device_ts,
                lat,
                lon,
                accuracy_m,
                received_at,
            } => Contact::Ping(Ping {
                person_id: person_id.into_owned(),
                device_id: device_id.into_owned(),
                device_ts,
                lat,
                lon,
                accuracy_m,
                received_at,
            }),
            ContactRef::Tick {
                received_at,
                source,
            } => Contact::Tick(Tick {
                received_at,
                source: source.into_owned(),
            }),
        }
    }
}

impl Contact {
    /// The borrowed form (no copies).
    pub fn as_ref(&self) -> ContactRef<'_> {
        match self {
            Contact::Registration(r) => ContactRef::Registration {
                person_id: Cow::Borrowed(&r.person_id),
                device_id: Cow::Borrowed(&r.device_id),
                address: Cow::Borrowed(&r.address),
                lat: r.lat,
                lon: r.lon,
                received_at: r.received_at,
            },
            Contact::Ping(p) => ContactRef::Ping {
                person_id: Cow::Borrowed(&p.person_id),
                device_id: Cow::Borrowed(&p.device_id),
                device_ts: p.device_ts,
                lat: p.lat,
                lon: p.lon,
                accuracy_m: p.accuracy_m,
                received_at: p.received_at,
            },
            Contact::Tick(t) => ContactRef::Tick {
                received_at: t.received_at,
                source: Cow::Borrowed(&t.source),
            },
        }
    }
}

/// A registration or a change of the declared residence address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub person_id: String,
    /// The device the registration came from (from the token).
    #[serde(default)]
    pub device_id: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    pub received_at: Millis,
}

/// One location ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    pub person_id: String,
    pub device_id: String,
    /// The device's own clock; never used for liveness.
    pub device_ts: Millis,
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f32>,
    pub received_at: Millis,
}

/// A clock tick. `source` names the ingest instance that wrote it (ticks from several ingest
/// instances interleave; the processor's stream time is the maximum it has seen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tick {
    pub received_at: Millis,
    #[serde(default)]
    pub source: String,
}

/// The kinds of per-person event the processor emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A registration while not registered (never, or since deregistration).
    Registered,
    /// A registration with a different address while registered.
    AddressChanged,
    /// No contact for `policy.notice_after`; once per silence.
    SilenceNotice,
    /// The first contact after a `silence_notice`, while still registered.
    Resumed,
    /// No contact for more than `policy.deregister_after`; once.
    Deregistered,
    /// The first ping from someone not registered; once until they register again.
    UnregisteredContact,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Registered,
        EventKind::AddressChanged,
        EventKind::SilenceNotice,
        EventKind::Resumed,
        EventKind::Deregistered,
        EventKind::UnregisteredContact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::AddressChanged => "address_changed",
            EventKind::SilenceNotice => "silence_notice",
            EventKind::Resumed => "resumed",
            EventKind::Deregistered => "deregistered",
            EventKind::UnregisteredContact => "unregistered_contact",
        }
    }
}

impl EventKind {
    /// The person's status right after an event of this kind. Every status is a function of
    /// the latest event alone, so the processor's `lastseen_processor_persons{status}` gauge
    /// and ClickHouse's `person_status` (which keeps each person's latest event) agree by
    /// construction; `sink/migrations/0004_event_sequence.sql` spells this mapping in SQL and
    /// a test keeps the two in step.
    pub fn status(self) -> PersonStatus {
        match self {
            EventKind::Registered | EventKind::AddressChanged | EventKind::Resumed => {
                PersonStatus::Registered
            }
            EventKind::SilenceNotice => PersonStatus::Silent,
            EventKind::Deregistered => PersonStatus::Deregistered,
            EventKind::UnregisteredContact => PersonStatus::Unregistered,
        }
    }
}

/// The one set of person statuses, shared by the processor's metrics and ClickHouse's
/// `person_status` (see `docs/CLICKHOUSE.md`, "What each status means").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonStatus {
    /// Registered, and no silence notice outstanding: heard from within `policy.notice_after`
    /// of the last contact, or contacted again since the notice.
    Registered,
    /// Registered, and a silence notice was sent for the current silence (no contact for
    /// `policy.notice_after`, platform outages excluded); not yet deregistered.
    Silent,
    /// Deregistered for silence (more than `policy.deregister_after`), and not heard from
    /// since.
    Deregistered,
    /// Sending pings without a registration: never registered, or pinged after being
    /// deregistered. Registering makes the person `registered` again.
    Unregistered,
}

impl PersonStatus {
    pub const ALL: [PersonStatus; 4] = [
        PersonStatus::Registered,
        PersonStatus::Silent,
        PersonStatus::Deregistered,
        PersonStatus::Unregistered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PersonStatus::Registered => "registered",
            PersonStatus::Silent => "silent",
            PersonStatus::Deregistered => "deregistered",
            PersonStatus::Unregistered => "unregistered",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One per-person event on the events topic: enough for a person to contest it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonEvent {
    /// Deterministic: the same transition always gets the same id (see [`event_id`]).
    pub event_id: String,
    pub person_id: String,
    pub kind: EventKind,
    /// Server time of the transition.
    pub at: Millis,
    /// Server time of the last contact before (or at) this transition.
    pub last_contact_at: Millis,
    /// `policy.notice_after` in force, in milliseconds.
    pub notice_after_ms: i64,
    /// `policy.deregister_after` in force, in milliseconds.
    pub deregister_after_ms: i64,
    /// Platform outage time excluded from this silence, in milliseconds.
    pub excluded_outage_ms: i64,
    /// The current declared address, if registered (or the last one, for `deregistered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The person's transition counter at this event (the `seq` its [`event_id`] is built
    /// from): 0 for a person's first event, +1 for each next one, wrapping at 2^24. It orders
    /// a person's events, also within one millisecond (`person_status` keeps the latest).
    /// `None` only in events written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
}

/// Deterministic event id: a 128-bit XXH3 of the person, the kind, the transition time and a
/// per-person sequence number, as 32 hex characters. Replays and retries give the same id, so
/// any consumer can deduplicate on it.
pub fn event_id(person_id: &str, kind: EventKind, at: Millis, seq: u64) -> String {
    // One-shot hash of the same byte sequence the original streaming version fed in (so ids
    // are unchanged), from a stack buffer; the streaming hasher's 600-byte state and
    // `format!` cost more than the rest of an event.
    let kind = kind.as_str().as_bytes();
    let len = 8 + person_id.len() + kind.len() + 16;
    let mut stack = [0u8; 160];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut w = 0;
    for part in [
        &(person_id.len() as u64).to_le_bytes()[..],
        person_id.as_bytes(),
        kind,
        &at.to_le_bytes(),
        &seq.to_le_bytes(),
    ] {
        buf[w..w + part.len()].copy_from_slice(part);
        w += part.len();
    }
    let digest = xxhash_rust::xxh3::xxh3_128(buf);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, b) in digest.to_be_bytes().iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    hex.iter().map(|&c| char::from(c)).collect()
}

/// A record that could not be processed, parked on the dead-letter topic with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// Which service parked it (`sink`, `processor`).
    pub stage: String,
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The original payload, lossy UTF-8 (binary garbage stays inspectable).
    pub payload: String,
    pub at: Millis,
}

/// Kafka header an operator sets on a contact re-published to `kafka.contacts_topic` (a
/// repaired dead letter): value `1`. The processor commits such a record without applying
/// it (no event, no state change; counted in `lastseen_processor_replays_skipped_total`),
/// because its old `received_at` would count as a contact at today's stream time and could
/// emit a `resumed` that never happened. The sink stores it like any other record.
pub const REPLAY_HEADER: &str = "lastseen-replay";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_round_trips_with_type_tag() {
        let c = Contact::Ping(Ping {
            person_id: "p1".into(),
            device_id: "d1".into(),
            device_ts: 1,
            lat: 55.75,
            lon: 37.61,
            accuracy_m: Some(12.5),
            received_at: 2,
        });
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.starts_with(r#"{"type":"ping","person_id":"p1""#), "{s}");
        assert_eq!(serde_json::from_str::<Contact>(&s).unwrap(), c);
        let t: Contact = serde_json::from_str(r#"{"type":"tick","received_at":5}"#).unwrap();
        assert_eq!(t.received_at(), 5);
        assert_eq!(t.person_id(), None);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for bad in [
            r#"{"type":"tick","received_at":5,"extra":1}"#,
            r#"{"type":"tick","received_at":5,"person_id":"p"}"#,
            r#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":2,"received_at":3,"address":"x"}"#,
            r#"{"type":"registration","person_id":"p","address":"a","received_at":3,"source":"s"}"#,
        ] {
            assert!(serde_json::from_str::<Contact>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_fields_and_types_are_named() {
        let e =
            serde_json::from_str::<Contact>(r#"{"type":"ping","person_id":"p","received_at":3}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("missing field `device_id` in a ping"), "{e}");
        let e = serde_json::from_str::<Contact>(r#"{"type":"pong","received_at":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pong"), "{e}");
        // Every variant round-trips through the one-pass decoder.
        for c in [
            Contact::Registration(Registration {
                person_id: "p".into(),
                device_id: "d".into(),
                address: "Tverskaya 1".into(),
                lat: Some(55.7),
                lon: None,
                received_at: 9,
            }),
            Contact::Tick(Tick {
                received_at: 1,
                source: "ingest-0".into(),
            }),
        ] {
            let s = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Contact>(&s).unwrap(), c, "{s}");
        }
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let a = event_id("p", EventKind::SilenceNotice, 10, 1);
        assert_eq!(a, event_id("p", EventKind::SilenceNotice, 10, 1));
        assert_eq!(a.len(), 32);
        assert_ne!(a, event_id("p", EventKind::SilenceNotice, 10, 2));
        assert_ne!(a, event_id("p", EventKind::Deregistered, 10, 1));
        assert_ne!(a, event_id("q", EventKind::SilenceNotice, 10, 1));
        // Golden value: event ids are a contract with downstream deduplication.
        // Changing it silently would let a replay after an upgrade slip past deduplication.
        assert_eq!(
            event_id("person-1", EventKind::Registered, 1_700_000_000_000, 0),
            "8921a22bbdaecf1825d41c4bcdbc888c"
        );
    }

    #[test]
    fn event_id_equals_the_streaming_hash_for_short_and_long_ids() {
        use xxhash_rust::xxh3::Xxh3;
        for n in [0, 1, 24, 127, 128, 129, 500] {
            let id = "x".repeat(n);
            let (kind, at, seq) = (EventKind::Deregistered, -5_i64, 7_u64);
            let mut h = Xxh3::new();
            h.update(&(id.len() as u64).to_le_bytes());
            h.update(id.as_bytes());
            h.update(kind.as_str().as_bytes());
            h.update(&at.to_le_bytes());
            h.update(&seq.to_le_bytes());
            assert_eq!(
                event_id(&id, kind, at, seq),
                format!("{:032x}", h.digest128())
            );
        }
    }
}
