//! One configuration for the whole system: embedded defaults → `--config FILE` (TOML) →
//! `LASTSEEN_<SECTION>__<KEY>` environment variables. Each service reads its own sections, so
//! one file and one environment serve every binary.
//!
//! Loading never stops at the first problem: every unknown key, every bad value and every
//! broken policy rule is collected and reported together ([`ConfigError`]).

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::{Table, Value};

/// The embedded defaults, with a comment for every key.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");
/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "LASTSEEN_";

/// The whole configuration. See `defaults.toml` for what every field means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub ingest: IngestConfig,
    pub auth: AuthConfig,
    pub clock: ClockConfig,
    pub policy: PolicyConfig,
    pub processor: ProcessorConfig,
    pub sink: SinkConfig,
    pub log: LogConfig,
}

/// Kafka endpoints and topic names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Registrations, pings and ticks.
    pub contacts_topic: String,
    /// Per-person events.
    pub events_topic: String,
    /// Compacted changelog of the processor's state.
    pub changelog_topic: String,
    /// Records parked with a reason.
    pub dead_letter_topic: String,
    /// Partitions used when the project creates its topics.
    pub partitions: i32,
    /// Replication factor used when the project creates its topics.
    pub replication_factor: i32,
    /// Prefix of every client.id.
    pub client_id: String,
}

/// ClickHouse endpoint and credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint.
    pub url: String,
    /// Database of the lastseen tables.
    pub database: String,
    /// User the sink writes as.
    pub user: String,
    /// Password of that user.
    pub password: String,
    /// Compression of insert bodies: `lz4` (across a network) or `none` (same host: saves
    /// both sides the CPU).
    pub compression: String,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Listen address.
    pub listen: String,
    /// Most pings in one request.
    pub max_batch: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Device times further ahead of the server clock are rejected.
    #[serde(with = "duration_str")]
    pub max_future_skew: Duration,
    /// Device times older than this are rejected.
    #[serde(with = "duration_str")]
    pub max_age: Duration,
    /// Requests per second per device; 0 disables the limit.
    pub rate_limit_per_device: f64,
    /// Burst of the per-device token bucket.
    pub rate_limit_burst: u32,
    /// Longest wait for Kafka's acknowledgement.
    #[serde(with = "duration_str")]
    pub produce_timeout: Duration,
    /// Name of this instance, written into ticks.
    pub instance_id: String,
}

/// Token verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret; empty disables HS256.
    pub hs256_secret: String,
    /// PEM public key for RS256/ES256; empty disables it.
    pub public_key_file: String,
    /// Clock leeway for `exp`.
    #[serde(with = "duration_str")]
    pub leeway: Duration,
}

/// Stream time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Interval of ingest's ticks.
    #[serde(with = "duration_str")]
    pub tick_interval: Duration,
    /// Gaps longer than this are platform outages.
    #[serde(with = "duration_str")]
    pub outage_after: Duration,
}

/// The silence policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// No contact for this long → silence notice.
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
    /// Consumer group.
    pub group_id: String,
    /// Stable instance name.
    pub instance_id: String,
    /// Prefix of the transactional.id.
    pub transactional_id_prefix: String,
    /// Transaction commit interval.
    #[serde(with = "duration_str")]
    pub commit_interval: Duration,
    /// Address of /metrics, /healthz, /readyz.
    pub listen: String,
}

/// The sink service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Consumer group.
    pub group_id: String,
    /// Rows per batch.
    pub max_rows: usize,
    /// Input bytes per batch.
    pub max_bytes: usize,
    /// Longest wait of a batch's oldest record.
    #[serde(with = "duration_str")]
    pub max_delay: Duration,
    /// Most a batch's limits grow (doubling per batch) while the sink is behind.
    pub catch_up_factor: usize,
    /// Raw ping retention.
    #[serde(with = "duration_str")]
    pub pings_retention: Duration,
    /// Decimals kept in the analytics copy of coordinates; -1 keeps them.
    pub coordinate_decimals: i32,
    /// First retry delay.
    #[serde(with = "duration_str")]
    pub min_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_str")]
    pub max_backoff: Duration,
    /// Address of /metrics, /healthz, /readyz.
    pub listen: String,
    /// Static consumer-group membership (`group.instance.id`); empty for dynamic membership.
    #[serde(default)]
    pub instance_id: String,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// EnvFilter directives.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem{}):\n  - {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Where a layer's values came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(String),
    Env(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "in {p}"),
            Origin::Env(v) => write!(f, "from ${v}"),
        }
    }
}

/// One overriding value with where it came from. Environment values are strings; they are
/// read as TOML scalars when they parse as one of the expected type.
#[derive(Debug, Clone)]
struct Override {
    section: String,
    key: String,
    value: Value,
    /// Set for environment values: the raw text, tried as a string when the TOML reading fails.
    raw_env: Option<String>,
    origin: Origin,
}

impl Config {
    /// The embedded defaults alone.
    pub fn defaults() -> Config {
        Config::load_from(None, std::iter::empty()).expect("embedded defaults are valid")
    }

    /// Loads defaults → `file` → the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, std::env::vars())
    }

    /// Loads defaults → `file` → the given environment (testable without touching the
    /// process environment).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut overrides = Vec::new();
        if let Some(path) = file {
            let origin = path.display().to_string();
            match std::fs::read_to_string(path) {
                Err(e) => problems.push(format!("cannot read config file {origin}: {e}")),
                Ok(text) => match text.parse::<Table>() {
                    Err(e) => problems.push(format!("config file {origin} is not valid TOML: {e}")),
                    Ok(table) => flatten_file(&table, &origin, &mut overrides, &mut problems),
                },
            }
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, raw) in env {
            let rest = &name[ENV_PREFIX.len()..];
            let Some((section, key)) = rest.split_once("__") else {
                problems.push(format!(
                    "${name}: expected LASTSEEN_<SECTION>__<KEY>, e.g. LASTSEEN_POLICY__NOTICE_AFTER"
                ));
                continue;
            };
            let value = parse_env_value(&raw);
            overrides.push(Override {
                section: section.to_ascii_lowercase(),
                key: key.to_ascii_lowercase(),
                value,
                raw_env: Some(raw),
                origin: Origin::Env(name.clone()),
            });
        }
        Config::apply(overrides, problems)
    }

    fn apply(overrides: Vec<Override>, mut problems: Vec<String>) -> Result<Config, ConfigError> {
        let defaults: Table = DEFAULTS_TOML.parse().expect("embedded defaults parse");
        let mut merged = defaults.clone();
        for o in overrides {
            let Some(Value::Table(default_section)) = defaults.get(&o.section) else {
                let known: Vec<&str> = defaults.keys().map(String::as_str).collect();
                problems.push(format!(
                    "unknown section `{}` {} (known: {})",
                    o.section,
                    o.origin,
                    known.join(", ")
                ));
                continue;
            };
            // Try this one value on top of the defaults of its section, so each problem is
            // attributed to exactly one key and all of them are reported.
            let mut candidates = vec![o.value.clone()];
            if let Some(raw) = &o.raw_env {
                if !matches!(o.value, Value::String(_)) {
                    candidates.push(Value::String(raw.clone()));
                }
            }
            let mut first_err = None;
            let mut accepted = None;
            for candidate in candidates {
                let mut trial = default_section.clone();
                trial.insert(o.key.clone(), candidate.clone());
                match check_section(&o.section, trial) {
                    Ok(()) => {
                        accepted = Some(candidate);
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match accepted {
                Some(v) => {
                    if let Some(Value::Table(s)) = merged.get_mut(&o.section) {
                        s.insert(o.key, v);
                    }
                }
                None => problems.push(format!(
                    "{}.{} {}: {}",
                    o.section,
                    o.key,
                    o.origin,
                    first_err.unwrap_or_default()
                )),
            }
        }
        let config = match Config::deserialize(Value::Table(merged)) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        if let Some(c) = &config {
            problems.extend(c.validate());
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Rules that span fields. Returns every broken rule.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.policy.validate();
        let c = &self.clock;
        if c.tick_interval.is_zero() {
            p.push("clock.tick_interval: must be greater than zero".into());
        }
        if c.outage_after <= c.tick_interval {
            p.push(format!(
                "clock.outage_after ({}) must be longer than clock.tick_interval ({})",
                fmt_duration(c.outage_after),
                fmt_duration(c.tick_interval)
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            p.push("kafka.brokers: must not be empty".into());
        }
        if self.kafka.partitions < 1 {
            p.push("kafka.partitions: must be at least 1".into());
        }
        if self.kafka.replication_factor < 1 {
            p.push("kafka.replication_factor: must be at least 1".into());
        }
        for (name, addr) in [
            ("ingest.listen", &self.ingest.listen),
            ("processor.listen", &self.processor.listen),
            ("sink.listen", &self.sink.listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                p.push(format!(
                    "{name}: `{addr}` is not an address like 127.0.0.1:8080"
                ));
            }
        }
        if self.ingest.max_batch == 0 {
            p.push("ingest.max_batch: must be at least 1".into());
        }
        if !(self.ingest.rate_limit_per_device.is_finite()
            && self.ingest.rate_limit_per_device >= 0.0)
        {
            p.push("ingest.rate_limit_per_device: must be a finite number >= 0".into());
        }
        if self.auth.hs256_secret.is_empty() && self.auth.public_key_file.is_empty() {
            p.push(
                "auth: set auth.hs256_secret or auth.public_key_file, or no token can be verified"
                    .into(),
            );
        }
        if self.processor.commit_interval.is_zero() {
            p.push("processor.commit_interval: must be greater than zero".into());
        }
        if self.sink.catch_up_factor == 0 {
            p.push("sink.catch_up_factor: must be at least 1".into());
        }
        if self.sink.max_rows == 0 {
            p.push("sink.max_rows: must be at least 1".into());
        }
        if !(-1..=8).contains(&self.sink.coordinate_decimals) {
            p.push("sink.coordinate_decimals: must be -1 (keep) or 0..=8".into());
        }
        if self.sink.min_backoff > self.sink.max_backoff {
            p.push("sink.min_backoff must not exceed sink.max_backoff".into());
        }
        if !matches!(self.clickhouse.compression.as_str(), "lz4" | "none") {
            p.push(format!(
                "clickhouse.compression: `{}` is not one of lz4, none",
                self.clickhouse.compression
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            p.push(format!(
                "log.format: `{}` is not one of text, json",
                self.log.format
            ));
        }
        p
    }

    /// librdkafka client settings common to every client of this system.
    pub fn kafka_client_config(&self, service: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("client.id", format!("{}-{service}", self.kafka.client_id));
        c
    }
}

impl PolicyConfig {
    /// Returns every broken policy rule (empty when valid).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.notice_after.is_zero() {
            p.push("policy.notice_after: must be greater than zero".into());
        }
        if self.deregister_after.is_zero() {
            p.push("policy.deregister_after: must be greater than zero".into());
        }
        if self.notice_after >= self.deregister_after {
            p.push(format!(
                "policy.notice_after ({}) must be shorter than policy.deregister_after ({})",
                fmt_duration(self.notice_after),
                fmt_duration(self.deregister_after)
            ));
        }
        p
    }
}

fn flatten_file(table: &Table, origin: &str, out: &mut Vec<Override>, problems: &mut Vec<String>) {
    for (section, v) in table {
        match v {
            Value::Table(keys) => {
                for (key, value) in keys {
                    out.push(Override {
                        section: section.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        raw_env: None,
                        origin: Origin::File(origin.to_string()),
                    });
                }
            }
            _ => problems.push(format!(
                "`{section}` in {origin}: expected a [section] table, found a {}",
                v.type_str()
            )),
        }
    }
}

fn parse_env_value(raw: &str) -> Value {
    // `5s` is not TOML, `8080` and `true` are: read what parses as a scalar, else a string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => v,
            _ => Value::String(raw.to_string()),
        },
        Err(_) => Value::String(raw.to_string()),
    }
}

fn check_section(section: &str, table: Table) -> Result<(), String> {
    fn try_as<T: DeserializeOwned>(t: Table) -> Result<(), String> {
        T::deserialize(Value::Table(t))
            .map(|_| ())
            .map_err(|e| e.message().trim().to_string())
    }
    match section {
        "kafka" => try_as::<KafkaConfig>(table),
        "clickhouse" => try_as::<ClickHouseConfig>(table),
        "ingest" => try_as::<IngestConfig>(table),
        "auth" => try_as::<AuthConfig>(table),
        "clock" => try_as::<ClockConfig>(table),
        "policy" => try_as::<PolicyConfig>(table),
        "processor" => try_as::<ProcessorConfig>(table),
        "sink" => try_as::<SinkConfig>(table),
        "log" => try_as::<LogConfig>(table),
        other => Err(format!("unknown section `{other}`")),
    }
}

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

/// Renders the effective configuration (secrets redacted), for `--print-config`.
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

/// Environment variables for every key, for documentation and tests.
pub fn env_var_names() -> BTreeMap<String, String> {
    let defaults: Table = DEFAULTS_TOML.parse().expect("embedded defaults parse");
    let mut out = BTreeMap::new();
    for (section, v) in &defaults {
        if let Value::Table(keys) = v {
            for key in keys.keys() {
                out.insert(
                    format!(
                        "{ENV_PREFIX}{}__{}",
                        section.to_uppercase(),
                        key.to_uppercase()
                    ),
                    format!("{section}.{key}"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_match_the_issue() {
        let c = Config::defaults();
        assert_eq!(c.policy.notice_after, Duration::from_secs(48 * 3600));
        assert_eq!(c.policy.deregister_after, Duration::from_secs(72 * 3600));
        assert_eq!(c.clock.tick_interval, Duration::from_secs(1));
        assert_eq!(c.clock.outage_after, Duration::from_secs(30));
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.ingest.listen, "127.0.0.1:8080");
        assert_eq!(c.processor.commit_interval, Duration::from_millis(200));
    }

    #[test]
    fn every_default_key_is_documented_by_a_comment() {
        let mut prev_comment = false;
        for line in DEFAULTS_TOML.lines() {
            let t = line.trim();
            if t.starts_with('#') {
                prev_comment = true;
                continue;
            }
            if t.contains(" = ") {
                assert!(prev_comment, "undocumented key: {t}");
            }
            prev_comment = false;
        }
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[policy]\nnotice_after = \"10s\"\nderegister_after = \"1m\"\n[ingest]\nmax_batch = 7"
        )
        .unwrap();
        let c = Config::load_from(
            Some(f.path()),
            env(&[
                ("LASTSEEN_POLICY__NOTICE_AFTER", "5s"),
                ("LASTSEEN_INGEST__INSTANCE_ID", "123"),
                ("LASTSEEN_SINK__COORDINATE_DECIMALS", "3"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.policy.notice_after, Duration::from_secs(5));
        assert_eq!(c.policy.deregister_after, Duration::from_secs(60));
        assert_eq!(c.ingest.max_batch, 7);
        // A numeric-looking env value still fills a string field.
        assert_eq!(c.ingest.instance_id, "123");
        assert_eq!(c.sink.coordinate_decimals, 3);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[ingest]\nmax_batch = \"many\"\nbogus = 1\n[nope]\nx = 1"
        )
        .unwrap();
        let err = Config::load_from(
            Some(f.path()),
            env(&[
                ("LASTSEEN_POLICY__NOTICE_AFTER", "soon"),
                ("LASTSEEN_CLOCK__TICK_INTERVAL", "0s"),
                ("LASTSEEN_KAFKA", "x"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "ingest.max_batch",
            "ingest.bogus",
            "unknown field `bogus`",
            "unknown section `nope`",
            "policy.notice_after from $LASTSEEN_POLICY__NOTICE_AFTER",
            "`soon` is not a duration",
            "clock.tick_interval: must be greater than zero",
            "$LASTSEEN_KAFKA: expected",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.problems.len(), 6, "{text}");
    }

    #[test]
    fn clickhouse_compression_is_lz4_or_none() {
        let ok = Config::load_from(None, env(&[("LASTSEEN_CLICKHOUSE__COMPRESSION", "none")]));
        assert_eq!(ok.unwrap().clickhouse.compression, "none");
        assert_eq!(Config::defaults().clickhouse.compression, "lz4");
        let err = Config::load_from(None, env(&[("LASTSEEN_CLICKHOUSE__COMPRESSION", "zstd")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("clickhouse.compression: `zstd` is not one of lz4, none"),
            "{err}"
        );
    }

    #[test]
    fn invalid_policy_is_a_startup_error() {
        let err = Config::load_from(
            None,
            env(&[
                ("LASTSEEN_POLICY__NOTICE_AFTER", "72h"),
                ("LASTSEEN_POLICY__DEREGISTER_AFTER", "48h"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("must be shorter than policy.deregister_after"),
            "{err}"
        );
        let zero = PolicyConfig {
            notice_after: Duration::ZERO,
            deregister_after: Duration::ZERO,
        };
        assert_eq!(zero.validate().len(), 3);
    }

    #[test]
    fn durations_parse_like_the_docs_say() {
        assert_eq!(parse_duration("48h").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(fmt_duration(Duration::from_secs(172_800)), "2days");
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn env_names_cover_every_key() {
        let names = env_var_names();
        assert_eq!(
            names.get("LASTSEEN_POLICY__NOTICE_AFTER").unwrap(),
            "policy.notice_after"
        );
        assert!(names.len() > 40);
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut c = Config::defaults();
        c.clickhouse.password = "hunter2".into();
        let t = redacted_toml(&c);
        assert!(!t.contains("hunter2") && !t.contains("change-me"));
    }
}
