//! The one codec for every record on every topic.
//!
//! | module | records | written by | read by |
//! |---|---|---|---|
//! | [`contact`] | pings, registrations, ticks (`kafka.contacts_topic`) | ingest | processor, sink |
//! | [`event`] | per-person events (`kafka.events_topic`) | processor | sink |
//! | [`dead_letter`] | parked records (`kafka.dead_letter_topic`) | processor, sink | operators |
//! | [`changelog`] | the processor's per-person and clock state (binary, version byte first) | processor | processor |
//!
//! Contacts, events and dead letters are JSON, one record per Kafka message (the measurement behind that choice is
//! in `ARCHITECTURE.md`, "The record codec"). [`json::Cursor`] is the one byte cursor that the
//! fast paths read with; serde decodes everything else and gives every error. Decoders borrow
//! from the message: no allocation per field on the hot path.

pub mod changelog;
pub mod contact;
pub mod dead_letter;
pub mod event;
pub mod json;

/// Decodes one JSON record of a type serde reads as a whole (events, dead letters).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::json(&e))
}

/// A record that cannot be decoded. `reason` is a short, fixed label (a metric label and the
/// start of a dead letter's reason); `detail` says what is wrong, in our words and field names
/// only: never a value of the record (details go into dead-letter reasons and logs).
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

    /// A serde_json error, classified. The detail is the category and the position only:
    /// serde's message quotes the offending value (`invalid type: string "Arbat 1"`,
    /// `unknown variant `…``), and details end up in dead-letter reasons and logs.
    pub(crate) fn json(e: &serde_json::Error) -> DecodeError {
        use serde_json::error::Category;
        let (reason, what) = match e.classify() {
            Category::Syntax => ("invalid_json", "not valid JSON"),
            Category::Eof => ("truncated_json", "JSON ends early"),
            Category::Data => ("schema_mismatch", "a field does not fit the record type"),
            Category::Io => ("io", "read error"),
        };
        DecodeError::new(
            reason,
            format!("{what} at line {} column {}", e.line(), e.column()),
        )
    }

    /// Valid JSON whose fields do not fit the record's type.
    pub(crate) fn schema(detail: String) -> DecodeError {
        DecodeError::new("schema_mismatch", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's values never reach the detail, whatever serde would have said.
    #[test]
    fn json_error_details_carry_no_values() {
        for bad in [
            r#"{"type":"registration","person_id":"p-secret","address":98765,"received_at":1}"#,
            r#"{"type":"ping","person_id":"p-secret","device_id":"d","device_ts":"Arbat 1","lat":1,"lon":2,"received_at":1}"#,
            r#"{"type":"Arbat 1","received_at":1}"#,
            r#"{"type":"ping","Arbat 1":1}"#,
            r#"{"type":"ping","person_id":"p-secret" Arbat 1"#,
            r#"{"type":"ping","person_id":"p-secret"#,
        ] {
            let e = contact::decode(bad.as_bytes()).unwrap_err();
            let shown = e.to_string();
            for v in ["Arbat", "p-secret", "98765"] {
                assert!(!shown.contains(v), "{shown} echoes {v}");
            }
            assert!(shown.contains(" at line 1 column "), "{shown}");
        }
        let e = contact::decode(br#"{"type":"ping","person_id":"p""#).unwrap_err();
        assert_eq!(e.reason, "truncated_json");
    }
}
