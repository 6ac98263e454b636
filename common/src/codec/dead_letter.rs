//! Dead-letter records ([`DeadLetter`]): a record a stage could not process, with the reason.

use super::DecodeError;
use crate::record::DeadLetter;

/// The encoding of `d`.
pub fn to_vec(d: &DeadLetter) -> Vec<u8> {
    serde_json::to_vec(d).expect("a dead letter serializes")
}

/// Decodes one dead-letter message.
pub fn decode(payload: &[u8]) -> Result<DeadLetter, DecodeError> {
    super::from_json(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let d = DeadLetter {
            stage: "sink".into(),
            reason: "invalid_json: expected value".into(),
            topic: "lastseen.contacts".into(),
            partition: 3,
            offset: 9,
            payload: "{nope".into(),
            at: 1,
        };
        assert_eq!(decode(&to_vec(&d)).unwrap(), d);
    }
}
