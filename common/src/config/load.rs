//! Loading: the embedded defaults (`defaults.toml`) → `--config FILE` (TOML) →
//! `LASTSEEN_<SECTION>__<KEY>` environment variables.
//!
//! Loading never stops at the first problem. Every overriding value is tried on its own, on
//! top of the defaults of its section, by deserialising that section (`check_section`): a
//! value that does not fit its field (a bad duration, an unknown enum value, an address that
//! is not one, an unknown key) becomes one problem naming the key and where the value came
//! from, and is left out, so the other values are still tried and the rules of
//! [`super::validate`] still run on the rest. All problems are returned together.

use super::schema::{
    AuthConfig, ClickHouseConfig, ClockConfig, Config, IngestConfig, KafkaConfig, LogConfig,
    PolicyConfig, ProcessorConfig, SinkConfig,
};
use super::validate::ConfigError;
use serde::{Deserialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::path::Path;
use toml::{Table, Value};

/// The embedded defaults, with a comment for every key.
pub const DEFAULTS_TOML: &str = include_str!("../defaults.toml");
/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "LASTSEEN_";

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

/// Deserialises one section's table into its struct: `Ok` when every field fits its type.
pub(super) fn check_section(section: &str, table: Table) -> Result<(), String> {
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
