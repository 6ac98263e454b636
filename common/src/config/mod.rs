//! One configuration for the whole system: embedded defaults → `--config FILE` (TOML) →
//! `LASTSEEN_<SECTION>__<KEY>` environment variables. Each service reads its own sections, so
//! one file and one environment serve every binary.
//!
//! Loading never stops at the first problem: every unknown key, every bad value and every
//! broken policy rule is collected and reported together ([`ConfigError`]).
//!
//! # Layout
//! - [`schema`] — the structs (one per section, `deny_unknown_fields`, every field documented)
//!   and their typed values: [`Compression`], [`LogFormat`], [`std::net::SocketAddr`],
//!   durations (`48h`); `--print-config`'s [`redacted_toml`].
//! - [`load`] — the layers (embedded `defaults.toml`, the file, the environment) and how each
//!   overriding value is tried on its own, so one bad value does not hide another.
//! - [`validate`] — [`ConfigError`], the every-problem report, and the rules across fields.
//!
//! A new key goes into `defaults.toml` (with its comment) and its section's struct in
//! [`schema`]; a new section also into `load::check_section`; a rule between keys into
//! [`Config::validate`].

pub mod load;
pub mod schema;
pub mod validate;

pub use load::{DEFAULTS_TOML, ENV_PREFIX, env_var_names};
pub use schema::{
    AuthConfig, ClickHouseConfig, ClockConfig, Compression, Config, IngestConfig, KafkaConfig,
    LogConfig, LogFormat, NotOneOf, PolicyConfig, ProcessorConfig, SinkConfig, duration_str,
    fmt_duration, parse_duration, redacted_toml, socket_addr,
};
pub use validate::ConfigError;

#[cfg(test)]
mod tests;
