//! The one JSON byte cursor: the fast paths of every JSON decoder in lastseen (the topic records
//! in [`super::contact`], ingest's request bodies) read their common shapes with it.
//!
//! A cursor never decides anything on its own: each method returns `None` for a token it does
//! not handle (escapes, control characters, exponents in an integer, `-0`, ...) and the caller
//! then falls back to `serde_json`, which gives the authoritative answer and error. Numbers it
//! does accept come out bit for bit as `serde_json` would produce them: plain decimals are
//! computed the way serde_json computes them, everything else is handed to serde_json itself.

/// A read position in one JSON document.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    #[inline]
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, i: 0 }
    }

    /// The byte offset of the next unread byte.
    #[inline]
    pub fn pos(&self) -> usize {
        self.i
    }

    /// Whether every byte has been read.
    #[inline]
    pub fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    /// The next byte, not taken.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Takes `lit` (e.g. `null`) if the input continues with it.
    #[inline]
    pub fn literal(&mut self, lit: &[u8]) -> bool {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// Skips JSON whitespace.
    #[inline]
    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    /// Takes the next byte.
    #[inline]
    pub fn take(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// Takes the next byte if it is `want` (no whitespace skipped).
    #[inline]
    pub fn eat(&mut self, want: u8) -> Option<()> {
        (self.take()? == want).then_some(())
    }

    /// A string without escapes or control characters, as valid UTF-8.
    #[inline]
    pub fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_string()?).ok()
    }

    /// The bytes of a string without escapes or control characters (not checked for UTF-8:
    /// only for comparison with ASCII literals).
    #[inline]
    pub fn raw_string(&mut self) -> Option<&'a [u8]> {
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
    pub fn int(&mut self) -> Option<i64> {
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
    pub fn number<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
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
    pub fn opt_f32(&mut self) -> Option<Option<f32>> {
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
    pub fn f64(&mut self) -> Option<f64> {
        self.plain_decimal().or_else(|| self.number::<f64>())
    }

    /// The common token `-?(0|[1-9][0-9]*)\.[0-9]+` followed by a delimiter, computed the way
    /// `serde_json` computes it: its digits read as one `u64`, converted to `f64`, divided by
    /// 10^(fraction digits). Up to 2^53 that integer converts exactly and the one division is
    /// correctly rounded, so the result is serde's with or without its `float_roundtrip`
    /// feature; above 2^53 it is serde's only without that feature, which
    /// `serde_rounds_like_us` checks once. Anything else: `None`, the cursor unmoved, and
    /// the caller asks `serde_json`.
    #[inline]
    pub fn plain_decimal(&mut self) -> Option<f64> {
        let d = self.scan_plain_decimal()?;
        if d.1 > 1 << 53 && !serde_rounds_like_us() {
            return None;
        }
        Some(self.divide(d))
    }

    /// [`Cursor::plain_decimal`] only for digit strings up to 2^53: the value is then correctly
    /// rounded whatever serde_json's features (ingest's request fast path keeps to these).
    #[inline]
    pub fn exact_decimal(&mut self) -> Option<f64> {
        let d = self.scan_plain_decimal()?;
        (d.1 <= 1 << 53).then(|| self.divide(d))
    }

    /// [`Cursor::plain_decimal`] without the check for large digit strings.
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
/// [`Cursor::plain_decimal`] does (digits → `f64`, then one division: its default), rather than
/// correctly rounded (its `float_roundtrip` feature, which another crate could switch on).
/// The token is one where the two differ.
fn serde_rounds_like_us() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| {
        let tok = b"92.030920993190389,";
        let ours = Cursor::new(tok).digits_then_divide();
        let theirs = serde_json::from_slice::<f64>(&tok[..tok.len() - 1]).ok();
        ours.is_some() && ours.map(f64::to_bits) == theirs.map(f64::to_bits)
    })
}

/// Exact powers of ten (the literals serde_json divides by).
const POW10: [f64; 21] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `plain_decimal` on `tok` followed by a delimiter: its value and where the cursor stopped.
    fn scan(tok: &str) -> (Option<f64>, usize) {
        let text = format!("{tok},");
        let mut c = Cursor::new(text.as_bytes());
        (c.plain_decimal(), c.pos())
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
            let (fast, end) = scan(tok);
            let fast = fast.unwrap_or_else(|| panic!("{tok} not taken"));
            assert_eq!(end, tok.len());
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
            assert_eq!(scan(tok), (None, 0), "{tok}");
        }
    }

    #[test]
    fn exact_decimal_takes_only_digit_strings_up_to_2_pow_53() {
        for (tok, taken) in [
            ("9007199254740.992", true),
            ("-0.5", true),
            ("9007199254740.993", false),
            ("0.12345678901234567", false),
        ] {
            let text = format!("{tok},");
            let mut c = Cursor::new(text.as_bytes());
            let x = c.exact_decimal();
            assert_eq!(c.pos(), if taken { tok.len() } else { 0 }, "{tok}");
            assert_eq!(
                x.map(f64::to_bits),
                scan(tok).0.filter(|_| taken).map(f64::to_bits),
                "{tok}"
            );
        }
    }
}
