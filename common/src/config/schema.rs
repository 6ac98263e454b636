//! The shape of the configuration: one struct per `[section]` of `defaults.toml`, every field
//! typed. Closed sets of values are enums, addresses are [`SocketAddr`], durations are
//! [`Duration`] written like `48h`: a value of the wrong kind is a deserialisation error of
//! that one field, which [`super::load`] attributes to its key and origin. Rules that span
//! fields are in [`super::validate`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// The whole configuration. `defaults.toml` documents every key as a user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[kafka]`: the brokers and the topics.
    pub kafka: KafkaConfig,
    /// `[clickhouse]`: where the sink writes.
    pub clickhouse: ClickHouseConfig,
    /// `[ingest]`: the HTTP API.
    pub ingest: IngestConfig,
    /// `[auth]`: how ingest verifies tokens.
    pub auth: AuthConfig,
    /// `[clock]`: stream time (ticks, outages).
    pub clock: ClockConfig,
    /// `[policy]`: when silence becomes a notice and a deregistration.
    pub policy: PolicyConfig,
    /// `[processor]`: the processor service.
    pub processor: ProcessorConfig,
    /// `[sink]`: the ClickHouse sink service.
    pub sink: SinkConfig,
    /// `[log]`: logging of every service.
    pub log: LogConfig,
}

/// Kafka endpoints and topic names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (librdkafka's `bootstrap.servers`; host names are
    /// allowed, so this stays a string).
    pub brokers: String,
    /// Registrations, pings and ticks (written by ingest, read by the processor and the sink).
    pub contacts_topic: String,
    /// Per-person events (written transactionally by the processor, read by the sink).
    pub events_topic: String,
    /// Compacted changelog of the processor's per-person state.
    pub changelog_topic: String,
    /// Records that could not be decoded or processed, with the reason.
    pub dead_letter_topic: String,
    /// Partitions used when the project creates its topics (at least 1).
    pub partitions: i32,
    /// Replication factor used when the project creates its topics (at least 1).
    pub replication_factor: i32,
    /// Prefix of every client.id, followed by the service name.
    pub client_id: String,
}

/// ClickHouse endpoint and credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database of the lastseen tables.
    pub database: String,
    /// User the sink writes as.
    pub user: String,
    /// Password of that user; redacted by `--print-config`.
    pub password: String,
    /// Compression of the sink's insert bodies.
    pub compression: Compression,
}

/// Compression of the sink's insert bodies (`clickhouse.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Compression {
    /// LZ4, for a ClickHouse across a network.
    Lz4,
    /// None, for a ClickHouse on the same host: compressing loopback traffic only costs both
    /// sides CPU.
    None,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the HTTP API listens on.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// Most pings accepted in one request (at least 1).
    pub max_batch: usize,
    /// Largest request body accepted, bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Device times further than this ahead of the server clock are rejected.
    #[serde(with = "duration_str")]
    pub max_future_skew: Duration,
    /// Device times older than this are rejected.
    #[serde(with = "duration_str")]
    pub max_age: Duration,
    /// Sustained requests per second per device (token bucket); 0 disables the limit.
    pub rate_limit_per_device: f64,
    /// Burst of the per-device token bucket, in requests.
    pub rate_limit_burst: u32,
    /// Longest wait for Kafka's acknowledgement before a request answers 503.
    #[serde(with = "duration_str")]
    pub produce_timeout: Duration,
    /// Name of this ingest instance, written into ticks.
    pub instance_id: String,
}

/// Token verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret (local use and tests); empty disables HS256. Redacted by
    /// `--print-config`.
    pub hs256_secret: String,
    /// PEM public key file for RS256/ES256 (production); empty disables it.
    pub public_key_file: String,
    /// Clock leeway when checking `exp`.
    #[serde(with = "duration_str")]
    pub leeway: Duration,
}

/// Stream time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// How often ingest writes a tick into every partition of the contacts topic.
    #[serde(with = "duration_str")]
    pub tick_interval: Duration,
    /// A gap between consecutive records of a partition longer than this is a platform outage,
    /// not counted against anyone's silence.
    #[serde(with = "duration_str")]
    pub outage_after: Duration,
}

/// The silence policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// No contact for this long → a silence notice.
    #[serde(with = "duration_str")]
    pub notice_after: Duration,
    /// No contact for more than this → deregistration.
    #[serde(with = "duration_str")]
    pub deregister_after: Duration,
}

/// The processor service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Kafka consumer group of the processor instances.
    pub group_id: String,
    /// Stable instance name: the transactional.id is `<transactional_id_prefix>-<instance_id>`.
    pub instance_id: String,
    /// Prefix of the transactional.id.
    pub transactional_id_prefix: String,
    /// How often the open transaction (events, state, offsets) is committed.
    #[serde(with = "duration_str")]
    pub commit_interval: Duration,
    /// Address of /metrics, /healthz, /readyz.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// How often the partition counts of the contacts and changelog topics are checked while
    /// running (they are also checked at start-up and on every assignment). A count that
    /// differs between the two topics, or from the one first seen, stops processing.
    #[serde(with = "duration_str")]
    pub partition_check_interval: Duration,
}

/// The sink service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Kafka consumer group of the sink.
    pub group_id: String,
    /// A batch is written when it reaches this many rows (at least 1)...
    pub max_rows: usize,
    /// ...or this many bytes of input...
    pub max_bytes: usize,
    /// ...or when its oldest record has waited this long.
    #[serde(with = "duration_str")]
    pub max_delay: Duration,
    /// Most a batch's limits grow (doubling per batch) while the sink is behind; 1 = fixed.
    pub catch_up_factor: usize,
    /// Raw pings older than this are dropped (by day partition).
    #[serde(with = "duration_str")]
    pub pings_retention: Duration,
    /// Decimals kept in the analytics copy of coordinates, 0..=8; -1 keeps them as received.
    pub coordinate_decimals: i32,
    /// First delay between retries of a failed ClickHouse write (doubles up to max_backoff).
    #[serde(with = "duration_str")]
    pub min_backoff: Duration,
    /// Longest delay between retries of a failed ClickHouse write.
    #[serde(with = "duration_str")]
    pub max_backoff: Duration,
    /// Address of /metrics, /healthz, /readyz.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// Static consumer-group membership (`group.instance.id`); empty for dynamic membership.
    #[serde(default)]
    pub instance_id: String,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in tracing's EnvFilter syntax (`info`, `sink=debug,warn`; `RUST_LOG` overrides
    /// it). An open set of directives, so a string; telemetry falls back to `info` when it
    /// does not parse.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A configuration value outside its closed set: `` `zstd` is not one of lz4, none ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {}", .choices.join(", "))]
pub struct NotOneOf {
    /// What was written.
    pub value: String,
    /// The accepted spellings.
    pub choices: &'static [&'static str],
}

/// The closed sets of values: their spellings in the configuration, in one place per type.
macro_rules! closed_set {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// How the configuration writes this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = NotOneOf;
            fn from_str(s: &str) -> Result<Self, NotOneOf> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(NotOneOf { value: s.to_string(), choices: Self::NAMES }),
                }
            }
        }

        // serde's `try_from`: the error's text becomes the field's error message.
        impl TryFrom<String> for $ty {
            type Error = NotOneOf;
            fn try_from(s: String) -> Result<Self, NotOneOf> {
                s.parse()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set!(Compression { Lz4 = "lz4", None = "none" });
closed_set!(LogFormat { Text = "text", Json = "json" });

/// Formats a duration the way the configuration writes it (`48h`, `250ms`).
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// Parses `48h`, `5s`, `250ms`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 48h, 5s or 250ms ({e})"))
}

/// Serde adapter for durations written as strings like `48h`.
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }
}

/// Serde adapter for listen addresses written as `127.0.0.1:8080`, with a message that shows
/// the expected form (std's own says only "invalid socket address syntax").
pub mod socket_addr {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| D::Error::custom(format!("`{s}` is not an address like 127.0.0.1:8080")))
    }
}

impl Config {
    /// librdkafka client settings common to every client of this system.
    pub fn kafka_client_config(&self, service: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("client.id", format!("{}-{service}", self.kafka.client_id));
        c
    }
}

/// Renders the effective configuration (secrets redacted), for `--print-config`. The output is
/// a configuration file: loaded with `--config`, it gives the same configuration back (but the
/// secrets).
pub fn redacted_toml(c: &Config) -> String {
    let mut c = c.clone();
    if !c.clickhouse.password.is_empty() {
        c.clickhouse.password = "<redacted>".into();
    }
    if !c.auth.hs256_secret.is_empty() {
        c.auth.hs256_secret = "<redacted>".into();
    }
    toml::to_string(&c).unwrap_or_default()
}
