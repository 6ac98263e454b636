//! Events-topic records ([`PersonEvent`]): written by the processor inside its transaction,
//! read by the sink. Events are rare next to contacts, so serde does both directions.

use super::DecodeError;
use crate::record::PersonEvent;

/// Appends the encoding of `e` to `out`.
pub fn encode(e: &PersonEvent, out: &mut Vec<u8>) {
    serde_json::to_writer(out, e).expect("an event serializes");
}

/// Decodes one events-topic message.
pub fn decode(payload: &[u8]) -> Result<PersonEvent, DecodeError> {
    super::from_json(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventKind;

    #[test]
    fn round_trips_and_rejects_a_contact() {
        let e = PersonEvent {
            event_id: "id".into(),
            person_id: "p".into(),
            kind: EventKind::SilenceNotice,
            at: 5,
            last_contact_at: 1,
            notice_after_ms: 2,
            deregister_after_ms: 3,
            excluded_outage_ms: 0,
            address: Some("Arbat 1".into()),
            seq: Some(7),
        };
        let mut b = Vec::new();
        encode(&e, &mut b);
        assert_eq!(decode(&b).unwrap(), e);
        // Events written before `seq` existed still decode, without one.
        let legacy = br#"{"event_id":"id","person_id":"p","kind":"resumed","at":5,"last_contact_at":1,"notice_after_ms":2,"deregister_after_ms":3,"excluded_outage_ms":0}"#;
        assert_eq!(decode(legacy).unwrap().seq, None);
        let ping = br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":2,"received_at":9}"#;
        assert_eq!(decode(ping).unwrap_err().reason, "schema_mismatch");
    }
}
