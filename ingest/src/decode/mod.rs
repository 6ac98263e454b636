//! Request decoding and validation.
//!
//! Bodies never stop at the first problem: every field of every item is captured loosely (any
//! JSON type), and validation then names every bad item and field. Only malformed JSON stops
//! early, with its position. Nothing here allocates per ping on the happy path except the
//! output vector.
//!
//! Layout:
//! - this module: the API ([`decode_pings`], [`decode_registration`], [`parse_rfc3339`]), the
//!   decoded types and the errors;
//! - `capture`: reading the JSON into loose values (one serde visitor for every shape);
//! - `validation`: the checks that name every bad field, and the full decoders built on them;
//! - `fast`: the fast path for the common pings body, which answers exactly as the full
//!   decoder would, or declines.

mod capture;
mod fast;
mod validation;

pub use validation::parse_rfc3339;

use common::Millis;
use serde::{Deserialize, Serialize};

/// Most details reported for one request; the rest are summarised by `truncated`.
pub const MAX_DETAILS: usize = 1000;
/// Largest accepted `accuracy_m`, metres.
pub const MAX_ACCURACY_M: f64 = 1.0e7;
/// Longest accepted registration address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 500;

/// The bounds a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most pings in one request.
    pub max_batch: usize,
    /// Device times further ahead of the server clock are rejected (ms).
    pub max_future_skew_ms: i64,
    /// Device times older than this are rejected (ms).
    pub max_age_ms: i64,
}

impl Limits {
    pub fn from_config(c: &common::config::IngestConfig) -> Limits {
        Limits {
            max_batch: c.max_batch,
            max_future_skew_ms: i64::try_from(c.max_future_skew.as_millis()).unwrap_or(i64::MAX),
            max_age_ms: i64::try_from(c.max_age.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 1000,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// One valid ping, as the device sent it (person and device come from the token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingIn {
    pub device_ts: Millis,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f32>,
}

/// One valid registration body.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationIn {
    pub address: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// One problem with a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// Index of the item in `pings`; absent for problems of the body itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8, or a number out of range).
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    /// JSON, but with the listed problems.
    #[error("invalid request ({} problem(s))", .details.len())]
    Invalid {
        details: Vec<Detail>,
        /// More problems than [`MAX_DETAILS`] were found.
        truncated: bool,
    },
}

/// Decodes and validates a `POST /v1/pings` body. `now` is the server clock (epoch ms).
pub fn decode_pings(body: &[u8], limits: &Limits, now: Millis) -> Result<Vec<PingIn>, DecodeError> {
    // The common case (plain numbers, every ping valid) without building the loose capture;
    // anything else, and every error, comes from the full decoder.
    match fast::decode_pings(body, limits, now) {
        Some(pings) => Ok(pings),
        None => validation::pings(body, limits, now),
    }
}

/// Decodes and validates a `POST /v1/registrations` body.
pub fn decode_registration(body: &[u8]) -> Result<RegistrationIn, DecodeError> {
    validation::registration(body)
}
