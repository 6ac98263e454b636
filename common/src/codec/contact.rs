//! Contacts-topic records (pings, registrations, ticks): the one encoder and the one decoder.
//!
//! - [`decode`] is what the processor and the sink call for every record. It borrows every
//!   string from the message ([`ContactRef`]): a plainly written ping (the common record by
//!   far) is read by a flat scan with the shared [`Cursor`]; anything else, and every error,
//!   goes through serde ([`decode_full`]). The two agree exactly on what the scan accepts
//!   (property-tested below), so the scan is only ever a shortcut, never a second opinion.
//! - [`PingEncoder`] is ingest's encoder for the pings of one request: the person, device and
//!   receive time are escaped and formatted once per request, not once per ping. Its output is
//!   byte for byte serde's encoding of [`Contact::Ping`] (tested). Registrations and ticks are
//!   rare and go through [`encode`].

use super::DecodeError;
use super::json::Cursor;
use crate::record::{Contact, ContactRef, Millis};
use serde::Deserialize;
use std::borrow::Cow;

/// Appends the canonical encoding of `c` to `out`.
pub fn encode(c: &Contact, out: &mut Vec<u8>) {
    serde_json::to_writer(out, c).expect("a contact serializes");
}

/// The encoding of `c` as a new buffer.
pub fn to_vec(c: &Contact) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode(c, &mut out);
    out
}

/// Encodes the pings of one request: everything they share is written once.
#[derive(Debug, Clone)]
pub struct PingEncoder {
    /// `{"type":"ping","person_id":…,"device_id":…,"device_ts":`
    prefix: Vec<u8>,
    /// `,"received_at":…}`
    suffix: Vec<u8>,
}

impl PingEncoder {
    pub fn new(person_id: &str, device_id: &str, received_at: Millis) -> PingEncoder {
        let mut prefix = Vec::with_capacity(64 + person_id.len() + device_id.len());
        prefix.extend_from_slice(br#"{"type":"ping","person_id":"#);
        write_json(&mut prefix, person_id);
        prefix.extend_from_slice(br#","device_id":"#);
        write_json(&mut prefix, device_id);
        prefix.extend_from_slice(br#","device_ts":"#);
        let mut suffix = Vec::with_capacity(40);
        suffix.extend_from_slice(br#","received_at":"#);
        write_json(&mut suffix, &received_at);
        suffix.push(b'}');
        PingEncoder { prefix, suffix }
    }

    /// Appends one ping of the request to `out`.
    pub fn encode(
        &self,
        device_ts: Millis,
        lat: f64,
        lon: f64,
        accuracy_m: Option<f32>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&self.prefix);
        write_json(out, &device_ts);
        out.extend_from_slice(br#","lat":"#);
        write_json(out, &lat);
        out.extend_from_slice(br#","lon":"#);
        write_json(out, &lon);
        if let Some(a) = accuracy_m {
            out.extend_from_slice(br#","accuracy_m":"#);
            write_json(out, &a);
        }
        out.extend_from_slice(&self.suffix);
    }
}

fn write_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(buf, v).expect("strings and numbers serialize");
}

/// Decodes and checks one contacts-topic message; the error says what is wrong (a short
/// metric label and the detail).
pub fn decode(payload: &[u8]) -> Result<ContactRef<'_>, DecodeError> {
    if let Some(p) = fast_ping(payload) {
        return Ok(p);
    }
    decode_full(payload)
}

/// The full decoder: serde, for every record shape and every error.
pub fn decode_full(payload: &[u8]) -> Result<ContactRef<'_>, DecodeError> {
    let raw: RawContact<Text<'_>> =
        serde_json::from_slice(payload).map_err(|e| DecodeError::json(&e))?;
    let c = raw.check().map_err(DecodeError::schema)?;
    if let ContactRef::Ping { lat, lon, .. } = &c {
        if !(lat.is_finite() && lon.is_finite()) {
            return Err(DecodeError::new("invalid_value", "non-finite coordinate"));
        }
    }
    Ok(c)
}

/// The record types on the contacts topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ContactType {
    Registration,
    Ping,
    Tick,
}

/// A string field of a contact: borrowed from the message when it contains no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Every field any contact may carry, decoded in one pass; [`RawContact::check`] then
/// requires each type to have exactly its own fields. Generic over the string type so the
/// owned [`Contact`] (serde's `try_from`) and the borrowed [`ContactRef`] share one set of
/// rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContact<S> {
    #[serde(rename = "type")]
    kind: ContactType,
    person_id: Option<S>,
    device_id: Option<S>,
    address: Option<S>,
    device_ts: Option<Millis>,
    lat: Option<f64>,
    lon: Option<f64>,
    accuracy_m: Option<f32>,
    received_at: Millis,
    source: Option<S>,
}
/// A string field as the decoded contact holds it: borrowed from the message where it can be.
pub(crate) trait IntoCow<'a> {
    fn into_cow(self) -> Cow<'a, str>;
}

impl<'a> IntoCow<'a> for Text<'a> {
    fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
}

impl<'a> IntoCow<'a> for String {
    fn into_cow(self) -> Cow<'a, str> {
        Cow::Owned(self)
    }
}

impl<S> RawContact<S> {
    /// The contact, if every field its type requires is there and no other field is.
    fn check<'a>(self) -> Result<ContactRef<'a>, String>
    where
        S: IntoCow<'a>,
    {
        fn need<T>(v: Option<T>, field: &str, kind: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("missing field `{field}` in a {kind}"))
        }
        fn none<T>(v: &Option<T>, field: &str, kind: &str) -> Result<(), String> {
            match v {
                Some(_) => Err(format!("unknown field `{field}` in a {kind}")),
                None => Ok(()),
            }
        }
        let text = |v: Option<S>| v.map_or(Cow::Borrowed(""), IntoCow::into_cow);
        let r = self;
        match r.kind {
            ContactType::Registration => {
                let k = "registration";
                none(&r.device_ts, "device_ts", k)?;
                none(&r.accuracy_m, "accuracy_m", k)?;
                none(&r.source, "source", k)?;
                Ok(ContactRef::Registration {
                    person_id: need(r.person_id, "person_id", k)?.into_cow(),
                    address: need(r.address, "address", k)?.into_cow(),
                    device_id: text(r.device_id),
                    lat: r.lat,
                    lon: r.lon,
                    received_at: r.received_at,
                })
            }
            ContactType::Ping => {
                let k = "ping";
                none(&r.address, "address", k)?;
                none(&r.source, "source", k)?;
                Ok(ContactRef::Ping {
                    person_id: need(r.person_id, "person_id", k)?.into_cow(),
                    device_id: need(r.device_id, "device_id", k)?.into_cow(),
                    device_ts: need(r.device_ts, "device_ts", k)?,
                    lat: need(r.lat, "lat", k)?,
                    lon: need(r.lon, "lon", k)?,
                    accuracy_m: r.accuracy_m,
                    received_at: r.received_at,
                })
            }
            ContactType::Tick => {
                let k = "tick";
                none(&r.person_id, "person_id", k)?;
                none(&r.device_id, "device_id", k)?;
                none(&r.address, "address", k)?;
                none(&r.device_ts, "device_ts", k)?;
                none(&r.lat, "lat", k)?;
                none(&r.lon, "lon", k)?;
                none(&r.accuracy_m, "accuracy_m", k)?;
                Ok(ContactRef::Tick {
                    received_at: r.received_at,
                    source: text(r.source),
                })
            }
        }
    }
}

impl TryFrom<RawContact<String>> for Contact {
    type Error = String;

    /// serde's path for the owned [`Contact`]: the same checks; every string is already
    /// owned, so [`ContactRef::into_owned`] moves them without a copy.
    fn try_from(r: RawContact<String>) -> Result<Contact, String> {
        r.check().map(ContactRef::into_owned)
    }
}

const TYPE: u8 = 1;
const PERSON: u8 = 2;
const DEVICE: u8 = 4;
const DEVICE_TS: u8 = 8;
const LAT: u8 = 16;
const LON: u8 = 32;
const ACCURACY: u8 = 64;
const RECEIVED: u8 = 128;
const REQUIRED: u8 = TYPE | PERSON | DEVICE | DEVICE_TS | LAT | LON | RECEIVED;

/// The ping in `payload` if it is plainly written (flat, strings without escapes, any key
/// order); `None` means "ask [`decode_full`]", which then gives the authoritative answer. It
/// returns `Some` only for input that [`decode_full`] accepts as a ping, with the same values.
pub(crate) fn fast_ping(payload: &[u8]) -> Option<ContactRef<'_>> {
    let mut c = Cursor::new(payload);
    let (mut person, mut device) = ("", "");
    let (mut device_ts, mut received_at) = (0i64, 0i64);
    let (mut lat, mut lon) = (0f64, 0f64);
    let mut accuracy_m = None;
    let mut seen = 0u8;
    c.ws();
    c.eat(b'{')?;
    loop {
        c.ws();
        let key = c.raw_string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        let bit = match key {
            b"type" => {
                if c.raw_string()? != b"ping" {
                    return None;
                }
                TYPE
            }
            b"person_id" => {
                person = c.string()?;
                PERSON
            }
            b"device_id" => {
                device = c.string()?;
                DEVICE
            }
            b"device_ts" => {
                device_ts = c.int()?;
                DEVICE_TS
            }
            b"lat" => {
                lat = c.f64()?;
                LAT
            }
            b"lon" => {
                lon = c.f64()?;
                LON
            }
            b"accuracy_m" => {
                accuracy_m = c.opt_f32()?;
                ACCURACY
            }
            b"received_at" => {
                received_at = c.int()?;
                RECEIVED
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        c.ws();
        match c.take()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    if !c.at_end() || seen & REQUIRED != REQUIRED {
        return None;
    }
    if !(lat.is_finite() && lon.is_finite()) {
        return None;
    }
    Some(ContactRef::Ping {
        person_id: Cow::Borrowed(person),
        device_id: Cow::Borrowed(device),
        device_ts,
        lat,
        lon,
        accuracy_m,
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Contact, Ping};
    use std::borrow::Cow;

    #[test]
    fn contact_ref_accepts_and_rejects_exactly_what_contact_does() {
        let cases = [
            r#"{"type":"ping","person_id":"p1","device_id":"d","device_ts":1,"lat":1.5,"lon":2.5,"received_at":9}"#,
            r#"{"type":"ping","person_id":"p\u00e9\"","device_id":"d","device_ts":1,"lat":1,"lon":2,"accuracy_m":3,"received_at":9}"#,
            r#"{"type":"ping","person_id":"p1","device_id":"d","device_ts":1,"lat":1.5,"received_at":9}"#,
            r#"{"type":"ping","person_id":"p1","device_id":"d","device_ts":1,"lat":1.5,"lon":2,"address":"x","received_at":9}"#,
            r#"{"type":"ping","person_id":"p1","device_id":"d","device_ts":1,"lat":"1","lon":2,"received_at":9}"#,
            r#"{"type":"registration","person_id":"p1","address":"Arbat 1","received_at":9}"#,
            r#"{"type":"registration","person_id":"p1","device_id":"d","address":"A","lat":1,"lon":2,"received_at":9}"#,
            r#"{"type":"registration","person_id":"p1","received_at":9}"#,
            r#"{"type":"registration","person_id":"p1","address":"A","device_ts":3,"received_at":9}"#,
            r#"{"type":"tick","received_at":5}"#,
            r#"{"type":"tick","received_at":5,"source":"i1"}"#,
            r#"{"type":"tick","received_at":5,"person_id":"p"}"#,
            r#"{"type":"tick"}"#,
            r#"{"type":"nope","received_at":5}"#,
            r#"{"type":"tick","received_at":5,"extra":1}"#,
            r#"not json"#,
        ];
        for c in cases {
            let owned = serde_json::from_str::<Contact>(c);
            let view = ContactRef::decode(c.as_bytes());
            assert_eq!(owned.is_ok(), view.is_ok(), "{c}: {owned:?} vs {view:?}");
            let (Ok(owned), Ok(view)) = (owned, view) else {
                continue;
            };
            assert_eq!(owned.type_name(), view.type_name());
            let expect = owned.as_ref();
            assert_eq!(view, expect, "{c}");
        }
        // Plain strings are borrowed, not copied.
        let b = br#"{"type":"ping","person_id":"p1","device_id":"d","device_ts":1,"lat":1,"lon":2,"received_at":9}"#;
        match ContactRef::decode(b) {
            Ok(ContactRef::Ping { person_id, .. }) => {
                assert!(matches!(person_id, Cow::Borrowed("p1")))
            }
            other => panic!("{other:?}"),
        }
    }

    use proptest::prelude::*;

    /// The fast path either declines or agrees exactly (bit for bit) with the full decoder.
    fn agree(payload: &[u8]) -> Result<bool, TestCaseError> {
        let Some(fast) = fast_ping(payload) else {
            return Ok(false);
        };
        let full = decode_full(payload);
        let Ok(full @ ContactRef::Ping { .. }) = full else {
            return Err(TestCaseError::fail(format!(
                "fast path accepted what the full decoder does not: {:?} -> {full:?}",
                String::from_utf8_lossy(payload)
            )));
        };
        prop_assert_eq!(&fast, &full);
        let (
            ContactRef::Ping {
                lat: a,
                lon: b,
                accuracy_m: c,
                ..
            },
            ContactRef::Ping {
                lat: x,
                lon: y,
                accuracy_m: z,
                ..
            },
        ) = (&fast, &full)
        else {
            unreachable!("both are pings")
        };
        prop_assert_eq!(a.to_bits(), x.to_bits());
        prop_assert_eq!(b.to_bits(), y.to_bits());
        prop_assert_eq!(c.map(f32::to_bits), z.map(f32::to_bits));
        Ok(true)
    }

    fn sample() -> Ping {
        Ping {
            person_id: "person-0012345".into(),
            device_id: "device-0012345".into(),
            device_ts: 1_764_000_012_345,
            lat: 55.52338,
            lon: 37.323_719_999_999_994,
            accuracy_m: Some(50.0),
            received_at: 1_764_000_012_999,
        }
    }

    #[test]
    fn takes_the_common_shape() {
        let body = serde_json::to_vec(&Contact::Ping(sample())).unwrap();
        assert!(agree(&body).unwrap());
        let no_acc = Ping {
            accuracy_m: None,
            ..sample()
        };
        assert!(agree(&serde_json::to_vec(&Contact::Ping(no_acc)).unwrap()).unwrap());
        // Other key orders, whitespace, explicit null, integer coordinates.
        let odd = br#" { "received_at" : 5 ,"lat":55,"lon":-37.5e0,"accuracy_m":null,
            "device_ts":-7,"device_id":"d","person_id":"p","type":"ping" } "#;
        assert!(agree(odd).unwrap());
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for body in [
            &br#"{"type":"ping","person_id":"p\u0041","device_id":"d","device_ts":1,"lat":1,"lon":1,"received_at":1}"#[..],
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":-0,"lat":1,"lon":1,"received_at":1}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1.0,"lat":1,"lon":1,"received_at":1}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":01,"lat":1,"lon":1,"received_at":1}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":1,"received_at":1,"lat":2}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":1,"received_at":1,"x":2}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":1}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1e999,"lon":1,"received_at":1}"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":1,"received_at":1} x"#,
            br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1,"lat":1,"lon":1,"received_at":1,}"#,
            br#"{"type":"tick","received_at":1}"#,
            br#"["ping","p","d",1,1,1,null,1]"#,
            br#"{}"#,
            b"",
        ] {
            assert!(
                fast_ping(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn arb_ping() -> impl Strategy<Value = Ping> {
        let ts = || prop_oneof![any::<i64>(), -(10i64.pow(17))..10i64.pow(17)];
        (
            prop_oneof![".{0,12}", "[a-z0-9-]{0,12}"],
            "[a-z0-9-]{0,12}",
            ts(),
            prop_oneof![any::<f64>(), -90.0..90.0f64],
            prop_oneof![any::<f64>(), -180.0..180.0f64],
            proptest::option::of(any::<f32>()),
            ts(),
        )
            .prop_map(|(p, d, dts, lat, lon, acc, rat)| Ping {
                person_id: p,
                device_id: d,
                device_ts: dts,
                lat,
                lon,
                accuracy_m: acc,
                received_at: rat,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_ping_encoder_writes_serdes_bytes(p in arb_ping()) {
            let enc = PingEncoder::new(&p.person_id, &p.device_id, p.received_at);
            let mut ours = Vec::new();
            enc.encode(p.device_ts, p.lat, p.lon, p.accuracy_m, &mut ours);
            let serde = to_vec(&Contact::Ping(p));
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
        }

        #[test]
        fn agrees_with_the_full_decoder_on_pings(p in arb_ping()) {
            // Non-finite floats serialize as null: the full decoder rejects those; so must we.
            let body = serde_json::to_vec(&Contact::Ping(p)).unwrap();
            agree(&body)?;
        }

        #[test]
        fn takes_every_plain_ping(
            p in "[ -!#-\\[\\]-~é日]{0,16}",
            d in "[a-z0-9-]{1,16}",
            dts in -(10i64.pow(17))..10i64.pow(17),
            rat in 0..10i64.pow(14),
            lat in -90.0..90.0f64,
            lon in -180.0..180.0f64,
            acc in proptest::option::of(0.0..1e4f32),
        ) {
            let p = Ping { person_id: p, device_id: d, device_ts: dts, lat, lon, accuracy_m: acc, received_at: rat };
            let body = serde_json::to_vec(&Contact::Ping(p)).unwrap();
            prop_assert!(agree(&body)?, "declined {}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn agrees_with_the_full_decoder_on_mutations(
            p in arb_ping(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let mut body = serde_json::to_vec(&Contact::Ping(p)).unwrap();
            for (at, byte, op) in edits {
                if body.is_empty() { break; }
                let i = at.index(body.len());
                match op {
                    0 => body[i] = byte,
                    1 => { body.remove(i); }
                    _ => body.insert(i, byte),
                }
            }
            agree(&body)?;
        }

        #[test]
        fn agrees_on_hand_written_number_tokens(
            lat in "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            ts in "-?[0-9]{1,20}(\\.[0-9])?",
            acc in "null|-?[0-9]{1,3}(\\.[0-9]{1,12})?(e-?[0-9]{1,2})?",
        ) {
            let body = format!(
                r#"{{"type":"ping","person_id":"p","device_id":"d","device_ts":{ts},"lat":{lat},"lon":{lat},"accuracy_m":{acc},"received_at":{ts}}}"#
            );
            agree(body.as_bytes())?;
        }
    }
}
