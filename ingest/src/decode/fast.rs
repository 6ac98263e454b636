//! A fast path for the common pings body: `{"pings":[{"ts":…,"lat":…,"lon":…,"accuracy_m":…},…]}`
//! with plain keys, plain numbers and every ping valid.
//!
//! It either returns exactly what the full decoder returns for the body, or `None`, and then the
//! full decoder runs (and names every problem). It gives up on anything it does not handle:
//! another key, an escape in a key, a duplicate field, a string (RFC 3339 `ts`), a number with an
//! exponent, more than 2^53 in its significand or more than 22 fraction digits, `-0`, a value that
//! fails validation, too few or too many pings, trailing bytes. The numbers it accepts are exact
//! in `f64` before one division by an exact power of ten, so the result is the correctly rounded
//! value, the same as serde_json's (with or without its `float_roundtrip` feature). Validation is
//! the same function the full decoder uses (`validation::ping`).

use super::capture::{FieldNames, PingFields, Val};
use super::{Limits, PingIn, validation};
use common::Millis;

/// 10^0 ..= 10^22, all exact in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
const MAX_EXACT: u64 = 1 << 53;

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace, then takes `c`.
    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// Skips whitespace; the next byte, not taken.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// A key without escapes or control characters.
    #[inline]
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let k = &self.b[start..self.i];
        self.i += 1;
        Some(k)
    }

    /// A JSON number without exponent, exact as described in the module documentation.
    #[inline]
    fn number(&mut self) -> Option<Val<'static>> {
        self.ws();
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let mut sig: u64 = match *self.b.get(self.i)? {
            b'0' => {
                self.i += 1;
                if self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    return None; // leading zero: malformed, let the full decoder say so
                }
                0
            }
            c @ b'1'..=b'9' => {
                self.i += 1;
                let mut s = u64::from(c - b'0');
                while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                    s = s * 10 + u64::from(c - b'0');
                    if s > MAX_EXACT {
                        return None;
                    }
                    self.i += 1;
                }
                s
            }
            _ => return None,
        };
        let mut frac = 0usize;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                sig = sig * 10 + u64::from(c - b'0');
                frac += 1;
                if sig > MAX_EXACT || frac >= POW10.len() {
                    return None;
                }
                self.i += 1;
            }
            if frac == 0 {
                return None;
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            return None;
        }
        Some(if frac > 0 {
            let f = sig as f64 / POW10[frac];
            Val::Float(if negative { -f } else { f })
        } else if !negative {
            Val::UInt(sig)
        } else if sig == 0 {
            return None; // `-0` is a float to serde_json
        } else {
            Val::Int(-(sig as i64))
        })
    }

    /// `null`.
    #[inline]
    fn null(&mut self) -> Option<Val<'static>> {
        self.ws();
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            Some(Val::Null)
        } else {
            None
        }
    }

    /// After an element: `true` on a `,`, `false` on `close`, `None` on anything else.
    #[inline]
    fn next(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// One ping object, validated.
    #[inline]
    fn ping(&mut self, limits: &Limits, now: Millis) -> Option<PingIn> {
        self.eat(b'{')?;
        let mut fields: [Val<'static>; 4] =
            [Val::Missing, Val::Missing, Val::Missing, Val::Missing];
        loop {
            let k = self.key()?;
            let i = PingFields::NAMES.iter().position(|n| n.as_bytes() == k)?;
            self.eat(b':')?;
            // `accuracy_m` may be null.
            let v = if i == 3 && self.peek()? == b'n' {
                self.null()?
            } else {
                self.number()?
            };
            if fields[i] != Val::Missing {
                return None;
            }
            fields[i] = v;
            if !self.next(b'}')? {
                break;
            }
        }
        validation::ping(&fields, limits, now, |_, _| ())
    }
}

/// The pings of `body` when it is the common, valid case; `None` otherwise.
pub(super) fn decode_pings(body: &[u8], limits: &Limits, now: Millis) -> Option<Vec<PingIn>> {
    let mut c = Cur { b: body, i: 0 };
    c.eat(b'{')?;
    if c.key()? != b"pings" {
        return None;
    }
    c.eat(b':')?;
    c.eat(b'[')?;
    // A ping takes at least 25 bytes (`{"ts":0,"lat":0,"lon":0}`).
    let mut out = Vec::with_capacity((body.len() / 25).min(limits.max_batch));
    loop {
        if out.len() == limits.max_batch {
            return None;
        }
        out.push(c.ping(limits, now)?);
        if !c.next(b']')? {
            break;
        }
    }
    c.eat(b'}')?;
    c.ws();
    (c.i == body.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Millis = 1_756_684_800_000; // 2025-09-01T00:00:00Z

    // The fast path must agree with the full decoder whenever it answers.

    fn same(a: &[PingIn], b: &[PingIn]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.device_ts == y.device_ts
                    && x.lat.to_bits() == y.lat.to_bits()
                    && x.lon.to_bits() == y.lon.to_bits()
                    && x.accuracy_m.map(f32::to_bits) == y.accuracy_m.map(f32::to_bits)
            })
    }

    fn agree(body: &str, limits: &Limits) -> bool {
        let full = validation::pings(body.as_bytes(), limits, NOW);
        match decode_pings(body.as_bytes(), limits, NOW) {
            Some(f) => {
                let full = full.unwrap_or_else(|e| panic!("fast accepted {body:?}, full: {e:?}"));
                assert!(same(&f, &full), "{body:?}: fast {f:?} full {full:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn fast_path_takes_the_common_body_and_agrees() {
        let mut items = Vec::new();
        for i in 0..100 {
            items.push(format!(
                r#"{{"ts":{},"lat":{:.6},"lon":{:.6},"accuracy_m":{}}}"#,
                NOW - 1000 + i,
                55.75 + i as f64 * 1e-4,
                37.61 - i as f64 * 1e-4,
                5 + i % 20
            ));
        }
        let body = format!(r#"{{"pings":[{}]}}"#, items.join(","));
        assert!(agree(&body, &Limits::default()));
        let spaced = format!(
            " {{ \"pings\" :\n[ {} ] }}\r\n",
            items.join(" ,\t").replace(':', " : ")
        );
        assert!(agree(&spaced, &Limits::default()));
        for ok in [
            r#"{"pings":[{"lon":-180,"lat":-90.0,"ts":1756684800000}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0,"accuracy_m":null}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0.1,"lon":-0.5,"accuracy_m":0}]}"#,
        ] {
            assert!(agree(ok, &Limits::default()), "{ok}");
        }
        // Everything else goes to the full decoder.
        for other in [
            r#"{"pings":[]}"#,
            r#"{"pings":[{"ts":"2025-09-01T00:00:00Z","lat":0,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":1e1,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":-0,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":01,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":1.,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lat":0,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"l\u0061t":0,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0,"x":1}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":91,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0}],"x":1}"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0}]}x"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0}]"#,
            r#"{"pings":[{"ts":1756684800000,"lat":0.12345678901234567,"lon":0}]}"#,
            r#"{"pings":[{"ts":1756684800000.0,"lat":0,"lon":0}]}"#,
        ] {
            assert!(!agree(other, &Limits::default()), "{other}");
        }
        let two = r#"{"pings":[{"ts":1756684800000,"lat":0,"lon":0},{"ts":1756684800000,"lat":0,"lon":0}]}"#;
        let one = Limits {
            max_batch: 1,
            ..Limits::default()
        };
        assert!(!agree(two, &one));
        assert!(agree(two, &Limits::default()));
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            (-200i64..200).prop_map(|i| i.to_string()),
            (-200.0f64..200.0).prop_map(|f| f.to_string()),
            (-200.0f64..200.0, 0usize..25).prop_map(|(f, d)| format!("{f:.d$}")),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            (0u64..u64::MAX, 0usize..30).prop_map(|(m, z)| format!("0.{}{m}", "0".repeat(z))),
            (1u64..u64::MAX).prop_map(|m| format!("{m}.5")),
            (-3_600_000i64..3_600_000).prop_map(|d| (NOW + d).to_string()),
            prop::sample::select(vec![
                "0",
                "-0",
                "0.0",
                "-0.0",
                "00",
                "01",
                "1.",
                ".5",
                "-",
                "1e5",
                "1E-3",
                "-1.5e+2",
                "9007199254740992",
                "9007199254740993",
                "0.9007199254740993",
                "1.0000000000000000000001",
                "55.750000",
                "37.6100000000000000000",
                "null",
                "true",
                "\"x\"",
                "[]",
                "{}",
                "\"2025-09-01T00:00:00Z\"",
            ])
            .prop_map(String::from),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\n", "\t ", "\r\n", "\u{a0}"])
    }

    fn field() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "ts",
                "lat",
                "lon",
                "accuracy_m",
                "ts",
                "lat",
                "lon",
                "accuracy_m",
                "x",
                "l\\u0061t",
                "Lat",
                "",
            ]),
            number(),
            ws(),
            ws(),
        )
            .prop_map(|(k, v, a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
    }

    fn ping() -> impl Strategy<Value = String> {
        prop_oneof![
            // Mostly complete pings with plausible values...
            (
                -3_600_000i64..3_600_000,
                -95.0f64..95.0,
                -185.0f64..185.0,
                prop::option::of(0.0f64..100.0),
                0usize..9,
                ws(),
            )
                .prop_map(|(d, lat, lon, acc, digits, w)| {
                    let mut s = format!(
                        "{{{w}\"ts\":{w}{},\"lat\":{lat:.digits$},{w}\"lon\":{lon:.digits$}",
                        NOW + d
                    );
                    if let Some(a) = acc {
                        s.push_str(&format!(",\"accuracy_m\":{a:.digits$}{w}"));
                    }
                    s.push('}');
                    s
                }),
            // ...and arbitrary field lists.
            prop::collection::vec(field(), 0..6).prop_map(|f| format!("{{{}}}", f.join(","))),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn fast_path_agrees_with_the_full_decoder(
            items in prop::collection::vec(ping(), 0..6),
            a in ws(),
            b in ws(),
            tail in prop::sample::select(vec!["", "", "", " ", "x", ",", "}", "\n"]),
            max_batch in 1usize..8,
        ) {
            let limits = Limits { max_batch, ..Limits::default() };
            let body = format!("{a}{{{b}\"pings\"{a}:{b}[{}]{a}}}{tail}", items.join(&format!("{a},{b}")));
            agree(&body, &limits);
        }

        #[test]
        fn fast_path_agrees_on_single_numbers(n in number(), which in 0usize..4) {
            let mut v = [NOW.to_string(), "1.5".to_string(), "2.5".to_string(), "3".to_string()];
            v[which] = n;
            let body = format!(
                r#"{{"pings":[{{"ts":{},"lat":{},"lon":{},"accuracy_m":{}}}]}}"#,
                v[0], v[1], v[2], v[3]
            );
            agree(&body, &Limits::default());
        }
    }
}
