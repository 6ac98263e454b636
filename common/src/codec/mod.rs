//! The one codec for every record on every topic.
//!
//! | module | records | written by | read by |
//! |---|---|---|---|
//! | [`contact`] | pings, registrations, ticks (`kafka.contacts_topic`) | ingest | processor, sink |
//! | [`event`] | per-person events (`kafka.events_topic`) | processor | sink |
//! | [`dead_letter`] | parked records (`kafka.dead_letter_topic`) | processor, sink | operators |
//! | `changelog` | the processor's per-person and clock state | processor | processor |
//!
//! The encoding is JSON, one record per Kafka message (the measurement behind that choice is
//! in `ARCHITECTURE.md`, "The record codec"). [`json::Cursor`] is the one byte cursor that the
//! fast paths read with; serde decodes everything else and gives every error. Decoders borrow
//! from the message: no allocation per field on the hot path.

pub mod contact;
pub mod dead_letter;
pub mod event;
pub mod json;

/// Decodes one JSON record of a type serde reads as a whole (events, dead letters).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::json(&e))
}

/// A record that cannot be decoded. `reason` is a short, fixed label (a metric label and the
/// start of a dead letter's reason); `detail` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    pub reason: &'static str,
    pub detail: String,
}

impl DecodeError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }

    /// A record without a value (a tombstone where none belongs).
    pub fn empty() -> DecodeError {
        DecodeError::new("empty_payload", "record has no value")
    }

    /// A serde_json error, classified.
    pub(crate) fn json(e: &serde_json::Error) -> DecodeError {
        use serde_json::error::Category;
        let reason = match e.classify() {
            Category::Syntax => "invalid_json",
            Category::Eof => "truncated_json",
            Category::Data => "schema_mismatch",
            Category::Io => "io",
        };
        DecodeError::new(reason, e.to_string())
    }

    /// Valid JSON whose fields do not fit the record's type.
    pub(crate) fn schema(detail: String) -> DecodeError {
        DecodeError::new("schema_mismatch", detail)
    }
}
