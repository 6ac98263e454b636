//! A fast path for the one record shape that dominates the contacts topic: a flat JSON ping
//! whose strings have no escapes.
//!
//! It never decides anything on its own: it returns `Some` only for input that the full decoder
//! ([`Contact`](common::record::Contact) via serde) accepts as a ping, with the same values, and
//! `None` for everything else — any unusual token (escapes, control characters, `null` where a
//! value is required, `-0`, exponents in an integer field, duplicate or unknown keys, a JSON
//! array, trailing bytes...) — so the caller falls back to the full decoder, which then gives
//! the authoritative answer and error. Floating-point tokens are parsed by `serde_json` itself,
//! so coordinates come out bit for bit as the full decoder would produce them. The property
//! tests in this module check that equivalence on generated and mutated records.

use crate::rows::{PingRef, PingRow, round_coord, to_datetime};

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string without escapes or control characters, as valid UTF-8.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_string()?).ok()
    }

    /// The bytes of a string without escapes or control characters (not checked for UTF-8:
    /// only for comparison with ASCII literals).
    #[inline]
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let c = *self.b.get(self.i)?;
            if c == b'"' {
                break;
            }
            if c == b'\\' || c < 0x20 {
                return None;
            }
            self.i += 1;
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// An integer `0` or `-?[1-9][0-9]{0,17}`, followed by a delimiter (not `.`/`e`).
    #[inline]
    fn int(&mut self) -> Option<i64> {
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            if self.i - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (self.b[start] == b'0' && (digits > 1 || neg)) {
            return None;
        }
        if !matches!(
            self.b.get(self.i),
            Some(b' ' | b'\n' | b'\t' | b'\r' | b',' | b'}')
        ) {
            return None;
        }
        Some(if neg { -v } else { v })
    }

    /// The bytes of a number token, parsed by `serde_json` as `T`.
    #[inline]
    fn number<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                self.i += 1;
            } else {
                break;
            }
        }
        if start == self.i {
            return None;
        }
        serde_json::from_slice(&self.b[start..self.i]).ok()
    }

    /// `null` or a number token parsed as `f32`, like serde's `Option<f32>`.
    #[inline]
    fn opt_f32(&mut self) -> Option<Option<f32>> {
        if self.b.get(self.i) == Some(&b'n') {
            if self.b.get(self.i..self.i + 4) == Some(b"null") {
                self.i += 4;
                return Some(None);
            }
            return None;
        }
        // serde parses an `f32` as an `f64` and narrows it.
        match self.plain_decimal() {
            Some(x) => Some(Some(x as f32)),
            None => self.number::<f32>().map(Some),
        }
    }

    /// A number token parsed as `f64`, like serde's `f64`.
    #[inline]
    fn f64(&mut self) -> Option<f64> {
        self.plain_decimal().or_else(|| self.number::<f64>())
    }

    /// The common token `-?(0|[1-9][0-9]*)\.[0-9]+` followed by a delimiter, computed the way
    /// `serde_json` computes it: its digits read as one `u64`, converted to `f64`, divided by
    /// 10^(fraction digits). Up to 2^53 that integer converts exactly and the one division is
    /// correctly rounded, so the result is serde's with or without its `float_roundtrip`
    /// feature; above 2^53 it is serde's only without that feature, which
    /// [`serde_rounds_like_us`] checks once. Anything else: `None`, the cursor unmoved, and
    /// the caller asks `serde_json`.
    #[inline]
    fn plain_decimal(&mut self) -> Option<f64> {
        let d = self.scan_plain_decimal()?;
        if d.1 > 1 << 53 && !serde_rounds_like_us() {
            return None;
        }
        Some(self.divide(d))
    }

    /// [`Cur::plain_decimal`] without the check for large digit strings.
    #[inline]
    fn digits_then_divide(&mut self) -> Option<f64> {
        let d = self.scan_plain_decimal()?;
        Some(self.divide(d))
    }

    /// Moves past a scanned token and computes its value.
    #[inline]
    fn divide(&mut self, (neg, sig, frac_digits, end): (bool, u64, usize, usize)) -> f64 {
        self.i = end;
        let x = sig as f64 / POW10[frac_digits];
        if neg { -x } else { x }
    }

    /// Sign, digits as one integer, fraction digits and end of a plain decimal token.
    #[inline]
    fn scan_plain_decimal(&self) -> Option<(bool, u64, usize, usize)> {
        let b = self.b;
        let mut i = self.i;
        let neg = b.get(i) == Some(&b'-');
        if neg {
            i += 1;
        }
        let int_start = i;
        let mut sig: u64 = 0;
        let int_digits = digits(b, &mut i, &mut sig)?;
        if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') || b.get(i) != Some(&b'.') {
            return None;
        }
        i += 1;
        let frac_digits = digits(b, &mut i, &mut sig)?;
        if frac_digits == 0 || frac_digits >= POW10.len() {
            return None;
        }
        if !matches!(b.get(i), Some(b' ' | b'\n' | b'\t' | b'\r' | b',' | b'}')) {
            return None;
        }
        Some((neg, sig, frac_digits, i))
    }
}

/// Appends the ASCII digits at `b[*i..]` to `sig` (decimal), moving `i` past them; their
/// count, or `None` if `sig` would overflow.
#[inline]
fn digits(b: &[u8], i: &mut usize, sig: &mut u64) -> Option<usize> {
    let start = *i;
    while let Some(&c) = b.get(*i) {
        if !c.is_ascii_digit() {
            break;
        }
        *sig = sig.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        *i += 1;
    }
    Some(*i - start)
}

/// Whether `serde_json` turns a decimal with more than 53 bits of digits into `f64` the way
/// [`Cur::plain_decimal`] does (digits → `f64`, then one division: its default), rather than
/// correctly rounded (its `float_roundtrip` feature, which another crate could switch on).
/// The token is one where the two differ.
fn serde_rounds_like_us() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| {
        let tok = b"92.030920993190389,";
        let ours = Cur { b: tok, i: 0 }.digits_then_divide();
        let theirs = serde_json::from_slice::<f64>(&tok[..tok.len() - 1]).ok();
        ours.is_some() && ours.map(f64::to_bits) == theirs.map(f64::to_bits)
    })
}

/// Exact powers of ten (the literals serde_json divides by).
const POW10: [f64; 21] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20,
];

const TYPE: u8 = 1;
const PERSON: u8 = 2;
const DEVICE: u8 = 4;
const DEVICE_TS: u8 = 8;
const LAT: u8 = 16;
const LON: u8 = 32;
const ACCURACY: u8 = 64;
const RECEIVED: u8 = 128;
const REQUIRED: u8 = TYPE | PERSON | DEVICE | DEVICE_TS | LAT | LON | RECEIVED;

/// The row for `payload` if it is a plainly written ping; `None` means "use the full decoder".
pub(crate) fn ping(
    payload: &[u8],
    partition: i32,
    offset: i64,
    coordinate_decimals: i32,
) -> Option<PingRow> {
    ping_ref(payload, partition, offset, coordinate_decimals).map(|p| p.to_row())
}

/// [`ping`] without copying the ids: they borrow from `payload`.
pub(crate) fn ping_ref(
    payload: &[u8],
    partition: i32,
    offset: i64,
    coordinate_decimals: i32,
) -> Option<PingRef<'_>> {
    let mut c = Cur { b: payload, i: 0 };
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
        match c.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    if c.i != payload.len() || seen & REQUIRED != REQUIRED {
        return None;
    }
    if !(lat.is_finite() && lon.is_finite()) {
        return None;
    }
    Some(PingRef {
        person_id: person,
        device_id: device,
        device_ts: to_datetime(device_ts),
        device_ts_ms: device_ts,
        received_at: to_datetime(received_at),
        received_at_ms: received_at,
        lat: round_coord(lat, coordinate_decimals),
        lon: round_coord(lon, coordinate_decimals),
        accuracy_m,
        kafka_partition: partition,
        kafka_offset: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{Decoded, Source, decode_full};
    use common::record::{Contact, Ping};
    use proptest::prelude::*;

    /// The fast path either declines or agrees exactly (bit for bit) with the full decoder.
    fn agree(payload: &[u8], decimals: i32) -> Result<bool, TestCaseError> {
        let Some(fast) = ping(payload, 2, 9, decimals) else {
            return Ok(false);
        };
        let full = decode_full(Source::Contacts, Some(payload), 2, 9, decimals);
        let Ok(Decoded::Ping(full)) = full else {
            return Err(TestCaseError::fail(format!(
                "fast path accepted what the full decoder does not: {:?} -> {full:?}",
                String::from_utf8_lossy(payload)
            )));
        };
        prop_assert_eq!(&fast, &full);
        prop_assert_eq!(fast.lat.to_bits(), full.lat.to_bits());
        prop_assert_eq!(fast.lon.to_bits(), full.lon.to_bits());
        prop_assert_eq!(
            fast.accuracy_m.map(f32::to_bits),
            full.accuracy_m.map(f32::to_bits)
        );
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
        assert!(agree(&body, -1).unwrap());
        assert!(agree(&body, 3).unwrap());
        let no_acc = Ping {
            accuracy_m: None,
            ..sample()
        };
        assert!(agree(&serde_json::to_vec(&Contact::Ping(no_acc)).unwrap(), -1).unwrap());
        // Other key orders, whitespace, explicit null, integer coordinates.
        let odd = br#" { "received_at" : 5 ,"lat":55,"lon":-37.5e0,"accuracy_m":null,
            "device_ts":-7,"device_id":"d","person_id":"p","type":"ping" } "#;
        assert!(agree(odd, -1).unwrap());
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
                ping(body, 0, 0, -1).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn plain_decimals_are_parsed_here_exactly_as_serde_does() {
        for tok in [
            "0.1",
            "-0.0",
            "0.0",
            "55.52338",
            "37.323719999999994",
            "0.30000000000000004",
            "-179.99999999",
            "5.0",
            "9007199254740.992",
            "1.7976931348623157",
            "92.030920993190389",
            "9007199254740.993",
            "18446744073.709551615",
        ] {
            let text = format!("{tok},");
            let mut c = Cur {
                b: text.as_bytes(),
                i: 0,
            };
            let fast = c
                .plain_decimal()
                .unwrap_or_else(|| panic!("{tok} not taken"));
            assert_eq!(c.i, tok.len());
            let full: f64 = serde_json::from_str(tok).unwrap();
            assert_eq!(fast.to_bits(), full.to_bits(), "{tok}");
        }
        assert!(
            serde_rounds_like_us(),
            "serde_json's float_roundtrip is on somewhere"
        );
        // Left to serde: integers, exponents, leading zeros, digits beyond a u64.
        for tok in [
            "55",
            "1e5",
            "1.5e3",
            "01.5",
            "184467440737.09551616",
            "1.",
            ".5",
            "-.5",
        ] {
            let text = format!("{tok},");
            let mut c = Cur {
                b: text.as_bytes(),
                i: 0,
            };
            assert_eq!(c.plain_decimal(), None, "{tok}");
            assert_eq!(c.i, 0);
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
        fn agrees_with_the_full_decoder_on_pings(p in arb_ping(), decimals in -1..6i32) {
            // Non-finite floats serialize as null: the full decoder rejects those; so must we.
            let body = serde_json::to_vec(&Contact::Ping(p)).unwrap();
            agree(&body, decimals)?;
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
            prop_assert!(agree(&body, -1)?, "declined {}", String::from_utf8_lossy(&body));
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
            agree(&body, -1)?;
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
            agree(body.as_bytes(), -1)?;
        }
    }
}
