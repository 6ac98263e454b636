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
//! the same functions the full decoder uses.

use super::{Limits, PingIn, Val, check_accuracy, check_coord, check_ts};
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

    /// One ping object, validated.
    #[inline]
    fn ping(&mut self, limits: &Limits, now: Millis) -> Option<PingIn> {
        self.eat(b'{')?;
        let mut fields: [Val<'static>; 4] =
            [Val::Missing, Val::Missing, Val::Missing, Val::Missing];
        loop {
            let i = match self.key()? {
                b"ts" => 0,
                b"lat" => 1,
                b"lon" => 2,
                b"accuracy_m" => 3,
                _ => return None,
            };
            self.eat(b':')?;
            let v = if i == 3 && self.peek()? == b'n' {
                self.null()?
            } else {
                self.number()?
            };
            if fields[i] != Val::Missing {
                return None;
            }
            fields[i] = v;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        let [ts, lat, lon, acc] = &fields;
        Some(PingIn {
            device_ts: check_ts(ts, limits, now).ok()?,
            lat: check_coord(lat, 90.0).ok()?,
            lon: check_coord(lon, 180.0).ok()?,
            accuracy_m: check_accuracy(acc).ok()?,
        })
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
        match c.peek()? {
            b',' => c.i += 1,
            b']' => {
                c.i += 1;
                break;
            }
            _ => return None,
        }
    }
    c.eat(b'}')?;
    c.ws();
    (c.i == body.len()).then_some(out)
}
