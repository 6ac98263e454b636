//! A fast path for the common pings body: `{"pings":[{"ts":…,"lat":…,"lon":…,"accuracy_m":…},…]}`
//! with plain keys, plain numbers and every ping valid, read with the shared
//! [`common::codec::json::Cursor`].
//!
//! It either returns exactly what the full decoder returns for the body, or `None`, and then the
//! full decoder runs (and names every problem). It gives up on anything it does not handle:
//! another key, an escape in a key, a duplicate field, a string (RFC 3339 `ts`), a number with an
//! exponent, a decimal with more than 2^53 in its digits or more than 20 fraction digits, an
//! integer of more than 18 digits, `-0`, a value that fails validation, too few or too many
//! pings, trailing bytes. The decimals it accepts are exact in `f64` before one division by an
//! exact power of ten ([`Cursor::exact_decimal`]), so the result is the correctly rounded
//! value, the same as serde_json's (with or without its `float_roundtrip` feature). Validation
//! is the same function the full decoder uses (`validation::ping`).

use super::capture::{FieldNames, PingFields, Val};
use super::{Limits, PingIn, validation};
use common::Millis;
use common::codec::json::Cursor;

/// Skips whitespace, then takes `want`. (JSON allows whitespace between any two tokens; the
/// shared cursor leaves skipping it to the caller.)
#[inline]
fn eat(c: &mut Cursor<'_>, want: u8) -> Option<()> {
    c.ws();
    c.eat(want)
}

/// After an element: `true` on a `,`, `false` on `close`, `None` on anything else.
#[inline]
fn next(c: &mut Cursor<'_>, close: u8) -> Option<bool> {
    c.ws();
    match c.take()? {
        b',' => Some(true),
        b if b == close => Some(false),
        _ => None,
    }
}

/// A number as the full decoder sees it: an integer (`ts` must be one), or a decimal as `f64`.
#[inline]
fn number(c: &mut Cursor<'_>, integer: bool) -> Option<Val<'static>> {
    c.ws();
    if integer {
        return c.int().map(Val::Int);
    }
    // `exact_decimal` leaves the cursor where it was when it declines.
    match c.exact_decimal() {
        Some(x) => Some(Val::Float(x)),
        // serde_json reads an integer as one; the checks read it `as f64`, as they read this.
        None => c.int().map(|i| Val::Float(i as f64)),
    }
}

/// One ping object, validated.
#[inline]
fn ping(c: &mut Cursor<'_>, limits: &Limits, now: Millis) -> Option<PingIn> {
    eat(c, b'{')?;
    let mut fields: [Val<'static>; 4] = [Val::Missing, Val::Missing, Val::Missing, Val::Missing];
    loop {
        c.ws();
        let k = c.raw_string()?;
        let i = PingFields::NAMES.iter().position(|n| n.as_bytes() == k)?;
        eat(c, b':')?;
        c.ws();
        // `ts` is an integer; `accuracy_m` may be null.
        let v = if i == 3 && c.literal(b"null") {
            Val::Null
        } else {
            number(c, i == 0)?
        };
        if fields[i] != Val::Missing {
            return None;
        }
        fields[i] = v;
        if !next(c, b'}')? {
            break;
        }
    }
    validation::ping(&fields, limits, now, |_, _| ())
}

/// The pings of `body` when it is the common, valid case; `None` otherwise.
pub(super) fn decode_pings(body: &[u8], limits: &Limits, now: Millis) -> Option<Vec<PingIn>> {
    let mut c = Cursor::new(body);
    eat(&mut c, b'{')?;
    c.ws();
    if c.raw_string()? != b"pings" {
        return None;
    }
    eat(&mut c, b':')?;
    eat(&mut c, b'[')?;
    // A ping takes at least 25 bytes (`{"ts":0,"lat":0,"lon":0}`).
    let mut out = Vec::with_capacity((body.len() / 25).min(limits.max_batch));
    loop {
        if out.len() == limits.max_batch {
            return None;
        }
        out.push(ping(&mut c, limits, now)?);
        if !next(&mut c, b']')? {
            break;
        }
    }
    eat(&mut c, b'}')?;
    c.ws();
    c.at_end().then_some(out)
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
