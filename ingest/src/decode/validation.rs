//! Judging the captured values: every bad item and field is named, up to [`MAX_DETAILS`].
//!
//! The checks of one ping's fields ([`ping`]) are the only ones: the full decoder reports what
//! they find, the fast path uses them to decide whether it may answer.

use super::capture::{Item, PingsBody, PingsVal, RegItem, Val, parse_json};
use super::{
    DecodeError, Detail, Limits, MAX_ACCURACY_M, MAX_ADDRESS_CHARS, MAX_DETAILS, PingIn,
    RegistrationIn,
};
use common::Millis;

/// The problems found so far.
struct Problems {
    details: Vec<Detail>,
    truncated: bool,
}

impl Problems {
    fn new() -> Self {
        Problems {
            details: Vec::new(),
            truncated: false,
        }
    }

    fn push(&mut self, index: Option<usize>, field: &str, reason: impl Into<String>) {
        if self.details.len() >= MAX_DETAILS {
            self.truncated = true;
            return;
        }
        self.details.push(Detail {
            index,
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    /// The unknown and duplicate keys of an object.
    fn keys(&mut self, index: Option<usize>, unknown: &[String], duplicate: &[&str]) {
        for k in unknown {
            self.push(index, k, "unknown field");
        }
        for k in duplicate {
            self.push(index, k, "duplicate field");
        }
    }

    /// The body is not an object: that is the only problem reported.
    fn not_an_object(mut self, v: &Val<'_>) -> DecodeError {
        self.push(
            None,
            "body",
            format!("must be an object, found {}", v.type_name()),
        );
        self.into_error()
    }

    fn into_error(self) -> DecodeError {
        DecodeError::Invalid {
            details: self.details,
            truncated: self.truncated,
        }
    }

    fn into_result<T>(self, ok: T) -> Result<T, DecodeError> {
        if self.details.is_empty() {
            Ok(ok)
        } else {
            Err(self.into_error())
        }
    }
}

/// The full pings decoder: captures every item loosely, then names every problem.
pub(super) fn pings(body: &[u8], limits: &Limits, now: Millis) -> Result<Vec<PingIn>, DecodeError> {
    let mut p = Problems::new();
    let (pings, duplicate, unknown) = match parse_json(body)? {
        PingsBody::Obj {
            pings,
            duplicate,
            unknown,
        } => (pings, duplicate, unknown),
        PingsBody::Other(v) => return Err(p.not_an_object(&v)),
    };
    p.keys(None, &unknown, if duplicate { &["pings"] } else { &[] });
    let items = match pings {
        PingsVal::Missing => {
            p.push(None, "pings", "missing field");
            return Err(p.into_error());
        }
        PingsVal::Other(v) => {
            p.push(
                None,
                "pings",
                format!("must be an array, found {}", v.type_name()),
            );
            return Err(p.into_error());
        }
        PingsVal::Array(items) => items,
    };
    if items.is_empty() {
        p.push(None, "pings", "must contain at least 1 ping");
    }
    if items.len() > limits.max_batch {
        p.push(
            None,
            "pings",
            format!(
                "must contain at most {} pings, found {}",
                limits.max_batch,
                items.len()
            ),
        );
    }
    // Only returned when there is no problem at all, so every ping in it is a clean one.
    let mut out = Vec::with_capacity(items.len().min(limits.max_batch));
    for (index, item) in items.iter().enumerate() {
        let idx = Some(index);
        match item {
            Item::Obj(o) => {
                p.keys(idx, &o.unknown, &o.duplicate);
                if let Some(ping) = ping(&o.fields, limits, now, |f, r| p.push(idx, f, r)) {
                    out.push(ping);
                }
            }
            Item::Other(v) => p.push(
                idx,
                "pings",
                format!("each ping must be an object, found {}", v.type_name()),
            ),
        }
    }
    p.into_result(out)
}

/// The full registration decoder.
pub(super) fn registration(body: &[u8]) -> Result<RegistrationIn, DecodeError> {
    let mut p = Problems::new();
    let obj = match parse_json::<RegItem<'_>>(body)? {
        Item::Obj(o) => o,
        Item::Other(v) => return Err(p.not_an_object(&v)),
    };
    p.keys(None, &obj.unknown, &obj.duplicate);
    let [address, lat, lon] = &obj.fields;
    let address = check_address(address).map_err(|r| p.push(None, "address", r));
    let opt_coord = |v: &Val<'_>, bound: f64| match v {
        Val::Missing | Val::Null => Ok(None),
        v => check_coord(v, bound).map(Some),
    };
    let lat = opt_coord(lat, 90.0).map_err(|r| p.push(None, "lat", r));
    let lon = opt_coord(lon, 180.0).map_err(|r| p.push(None, "lon", r));
    if let (Ok(a), Ok(b)) = (&lat, &lon) {
        if a.is_some() != b.is_some() {
            let missing = if a.is_none() { "lat" } else { "lon" };
            p.push(None, missing, "lat and lon must be given together");
        }
    }
    match (address, lat, lon) {
        (Ok(address), Ok(lat), Ok(lon)) => p.into_result(RegistrationIn { address, lat, lon }),
        _ => Err(p.into_error()),
    }
}

/// Checks the fields of one ping (`ts`, `lat`, `lon`, `accuracy_m`, as captured), telling
/// `problem` the field and reason of each bad one; the ping if none is.
pub(super) fn ping(
    fields: &[Val<'_>; 4],
    limits: &Limits,
    now: Millis,
    mut problem: impl FnMut(&'static str, String),
) -> Option<PingIn> {
    let [ts, lat, lon, acc] = fields;
    let device_ts = check_ts(ts, limits, now).map_err(|r| problem("ts", r));
    let lat = check_coord(lat, 90.0).map_err(|r| problem("lat", r));
    let lon = check_coord(lon, 180.0).map_err(|r| problem("lon", r));
    let accuracy_m = check_accuracy(acc).map_err(|r| problem("accuracy_m", r));
    Some(PingIn {
        device_ts: device_ts.ok()?,
        lat: lat.ok()?,
        lon: lon.ok()?,
        accuracy_m: accuracy_m.ok()?,
    })
}

fn check_ts(v: &Val<'_>, limits: &Limits, now: Millis) -> Result<Millis, String> {
    let ts = match v {
        Val::Missing => return Err("missing field".into()),
        Val::Int(i) => *i,
        Val::UInt(u) => i64::try_from(*u).map_err(|_| "epoch milliseconds out of range")?,
        Val::Str(s) => parse_rfc3339(s).ok_or(
            "must be an RFC 3339 date-time like 2025-09-01T12:00:00+03:00 or integer epoch milliseconds",
        )?,
        Val::Float(_) => return Err("epoch milliseconds must be an integer".into()),
        other => {
            return Err(format!(
                "must be an RFC 3339 string or integer epoch milliseconds, found {}",
                other.type_name()
            ));
        }
    };
    let window =
        |ms: i64| common::config::fmt_duration(std::time::Duration::from_millis(ms.max(0) as u64));
    if ts > now.saturating_add(limits.max_future_skew_ms) {
        return Err(format!(
            "is more than {} ahead of the server clock",
            window(limits.max_future_skew_ms)
        ));
    }
    if ts < now.saturating_sub(limits.max_age_ms) {
        return Err(format!("is older than {}", window(limits.max_age_ms)));
    }
    Ok(ts)
}

fn check_coord(v: &Val<'_>, bound: f64) -> Result<f64, String> {
    match v {
        Val::Missing => Err("missing field".into()),
        v => match v.as_f64() {
            Some(x) if !x.is_finite() => Err("must be a finite number".into()),
            Some(x) if (-bound..=bound).contains(&x) => Ok(x),
            Some(_) => Err(format!("must be within [-{bound}, {bound}]")),
            None => Err(format!("must be a number, found {}", v.type_name())),
        },
    }
}

fn check_accuracy(v: &Val<'_>) -> Result<Option<f32>, String> {
    match v {
        Val::Missing | Val::Null => Ok(None),
        v => match v.as_f64() {
            Some(x) if !x.is_finite() => Err("must be a finite number".into()),
            Some(x) if x < 0.0 => Err("must not be negative".into()),
            Some(x) if x > MAX_ACCURACY_M => Err(format!("must be at most {MAX_ACCURACY_M}")),
            Some(x) => Ok(Some(x as f32)),
            None => Err(format!("must be a number or null, found {}", v.type_name())),
        },
    }
}

fn check_address(v: &Val<'_>) -> Result<String, String> {
    let s = match v {
        Val::Str(s) => s,
        Val::Missing => return Err("missing field".into()),
        v => return Err(format!("must be a string, found {}", v.type_name())),
    };
    let n = s.chars().count();
    if n == 0 || n > MAX_ADDRESS_CHARS {
        Err(format!(
            "must be 1 to {MAX_ADDRESS_CHARS} characters, found {n}"
        ))
    } else if s.trim().is_empty() {
        Err("must not be blank".into())
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(s.to_string())
    }
}

/// Parses an RFC 3339 date-time (`2025-09-01T12:00:00.123+03:00`, `...Z`) into epoch
/// milliseconds. Fractions beyond milliseconds are truncated. A leap second (`:60`) is accepted
/// only where one can occur (23:59:60 UTC on the last day of a month) and is read as the last
/// nanosecond of the minute before it, as `time` reads it.
///
/// `time`'s RFC 3339 parser does the work. Two things it accepts are refused here first, as
/// this function always did: a date/time separator other than `T`, `t` or the space that RFC
/// 3339 section 5.6 allows (`time` takes any one byte there), and more than nine fraction
/// digits (`time` reads any number).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    // `time` needs the fields at these fixed positions anyway: 4-digit year, 2-digit rest.
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if b.get(19) == Some(&b'.') && b[20..].iter().take_while(|c| c.is_ascii_digit()).count() > 9 {
        return None;
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() * 1000 + i64::from(t.millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_pings, decode_registration};
    use std::fmt;

    const NOW: Millis = 1_756_684_800_000; // 2025-09-01T00:00:00Z

    fn pings(body: &str) -> Result<Vec<PingIn>, DecodeError> {
        decode_pings(body.as_bytes(), &Limits::default(), NOW)
    }

    fn details(r: Result<impl fmt::Debug, DecodeError>) -> Vec<(Option<usize>, String, String)> {
        match r {
            Err(DecodeError::Invalid { details, .. }) => details
                .into_iter()
                .map(|d| (d.index, d.field, d.reason))
                .collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn has(d: &[(Option<usize>, String, String)], index: Option<usize>, field: &str, reason: &str) {
        assert!(
            d.iter()
                .any(|(i, f, r)| *i == index && f == field && r.contains(reason)),
            "no ({index:?}, {field}, ~{reason}) in {d:#?}"
        );
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-09-01T00:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339("2025-09-01T03:00:00+03:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2025-08-31T23:00:00-01:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2025-09-01t00:00:00.5z"), Some(NOW + 500));
        assert_eq!(
            parse_rfc3339("2025-09-01T00:00:00.123456789Z"),
            Some(NOW + 123)
        );
        assert_eq!(parse_rfc3339("2025-09-01 00:00:00.12Z"), Some(NOW + 120));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "2025-09-01",
            "2025-09-01T00:00:00",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-09-31T00:00:00Z",
            "2025-09-01T24:00:00Z",
            "2025-09-01T00:60:00Z",
            "2025-09-01T00:00:61Z",
            "2025-09-01T00:00:00.Z",
            "2025-09-01T00:00:00.1234567890Z",
            "2025-09-01T00:00:00+0300",
            "2025-09-01T00:00:00+24:00",
            "2025-09-01T00:00:00Zjunk",
            "2025-09-01X00:00:00Z",
            "+025-09-01T00:00:00Z",
            "2025-09-01T00:00:00\u{0660}Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_leap_seconds_only_where_they_can_occur() {
        // 2016-12-31T23:59:60Z was a leap second: the last millisecond before 2017.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            Some(1_483_228_800_000 - 1)
        );
        assert_eq!(
            parse_rfc3339("2017-01-01T02:59:60.5+03:00"),
            Some(1_483_228_800_000 - 1)
        );
        assert_eq!(parse_rfc3339("2025-09-01T12:00:60Z"), None);
    }

    #[test]
    fn valid_pings_decode() {
        let b = format!(
            r#"{{"pings":[{{"ts":{NOW},"lat":55.75,"lon":37.61,"accuracy_m":12.5}},
                {{"ts":"2025-09-01T02:59:00+03:00","lat":-90,"lon":180}},
                {{"ts":{NOW},"lat":0,"lon":-180,"accuracy_m":null}}]}}"#
        );
        let v = pings(&b).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].accuracy_m, Some(12.5));
        assert_eq!(v[1].device_ts, NOW - 60_000);
        assert_eq!(v[1].lat, -90.0);
        assert_eq!(v[2].accuracy_m, None);
    }

    #[test]
    fn validation_matrix_names_every_item_and_field() {
        let b = format!(
            r#"{{"pings":[
            {{"ts":{NOW},"lat":91,"lon":0}},
            {{"ts":{NOW},"lat":0,"lon":-180.5,"accuracy_m":-1}},
            {{"lat":0,"lon":0}},
            {{"ts":"yesterday","lat":"55","lon":true,"extra":1}},
            {{"ts":{future},"lat":0,"lon":0}},
            {{"ts":{old},"lat":0,"lon":0}},
            {{"ts":1.5,"lat":null,"lon":[1],"accuracy_m":"3"}},
            7,
            {{"ts":{NOW},"lat":0,"lon":0,"lat":1}},
            {{"ts":{NOW},"lat":0,"lon":0,"accuracy_m":1e30}},
            {{"ts":{NOW},"lat":0,"lon":0}}
            ],"more":{{}}}}"#,
            future = NOW + 5 * 60_000 + 1,
            old = NOW - 7 * 86_400_000 - 1
        );
        let d = details(pings(&b));
        has(&d, Some(0), "lat", "must be within [-90, 90]");
        has(&d, Some(1), "lon", "must be within [-180, 180]");
        has(&d, Some(1), "accuracy_m", "must not be negative");
        has(&d, Some(2), "ts", "missing field");
        has(&d, Some(3), "ts", "RFC 3339");
        has(&d, Some(3), "lat", "must be a number, found a string");
        has(&d, Some(3), "lon", "found a boolean");
        has(&d, Some(3), "extra", "unknown field");
        has(&d, Some(4), "ts", "ahead of the server clock");
        has(&d, Some(5), "ts", "older than 7days");
        has(&d, Some(6), "ts", "must be an integer");
        has(&d, Some(6), "lat", "found null");
        has(&d, Some(6), "lon", "found an array");
        has(&d, Some(6), "accuracy_m", "found a string");
        has(&d, Some(7), "pings", "must be an object, found a number");
        has(&d, Some(8), "lat", "duplicate field");
        has(&d, Some(9), "accuracy_m", "at most");
        has(&d, None, "more", "unknown field");
        assert!(!d.iter().any(|(i, _, _)| *i == Some(10)), "{d:#?}");
        assert_eq!(d.len(), 18, "{d:#?}");
    }

    #[test]
    fn edges_of_the_time_window_are_accepted() {
        let b = format!(
            r#"{{"pings":[{{"ts":{},"lat":0,"lon":0}},{{"ts":{},"lat":0,"lon":0}}]}}"#,
            NOW + 5 * 60_000,
            NOW - 7 * 86_400_000
        );
        assert_eq!(pings(&b).unwrap().len(), 2);
    }

    #[test]
    fn body_shape_errors() {
        has(&details(pings("[]")), None, "body", "must be an object");
        has(&details(pings("{}")), None, "pings", "missing field");
        has(
            &details(pings(r#"{"pings":[]}"#)),
            None,
            "pings",
            "at least 1",
        );
        has(
            &details(pings(r#"{"pings":{}}"#)),
            None,
            "pings",
            "must be an array",
        );
        has(
            &details(pings(r#"{"pings":"x"}"#)),
            None,
            "pings",
            "found a string",
        );
        let ping = format!(r#"{{"ts":{NOW},"lat":0,"lon":0}}"#);
        let many = format!(r#"{{"pings":[{}]}}"#, vec![ping.as_str(); 1001].join(","));
        let d = details(pings(&many));
        has(&d, None, "pings", "at most 1000 pings, found 1001");
        assert_eq!(d.len(), 1);
        let exactly = format!(r#"{{"pings":[{}]}}"#, vec![ping.as_str(); 1000].join(","));
        assert_eq!(pings(&exactly).unwrap().len(), 1000);
    }

    #[test]
    fn details_are_capped() {
        let many = format!(r#"{{"pings":[{}]}}"#, vec!["{}"; 2000].join(","));
        match pings(&many) {
            Err(DecodeError::Invalid { details, truncated }) => {
                assert_eq!(details.len(), MAX_DETAILS);
                assert!(truncated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_json_reports_position() {
        for (body, line, col) in [
            ("{\"pings\": [", 1, 11),
            ("{\n \"pings\": [1,]}", 2, 14),
            ("{\"pings\":[{\"lat\":NaN}]}", 1, 18),
            ("{\"pings\":[{\"lat\":1e999}]}", 1, 22),
            ("", 1, 0),
        ] {
            match pings(body) {
                Err(DecodeError::Malformed {
                    line: l, column: c, ..
                }) => {
                    assert_eq!((l, c), (line, col), "{body:?}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            decode_pings(b"{\"pings\":[{\"ts\":\"\xff\"}]}", &Limits::default(), NOW),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn registrations() {
        let r = decode_registration(br#"{"address":"Moscow, Tverskaya 1","lat":55.7,"lon":37.6}"#)
            .unwrap();
        assert_eq!(r.address, "Moscow, Tverskaya 1");
        assert_eq!((r.lat, r.lon), (Some(55.7), Some(37.6)));
        let r = decode_registration(r#"{"address":"Улица"}"#.as_bytes()).unwrap();
        assert_eq!(r.lat, None);
        let long = "я".repeat(500);
        assert!(decode_registration(format!(r#"{{"address":"{long}"}}"#).as_bytes()).is_ok());
        let d = details(decode_registration(
            format!(r#"{{"address":"{long}я","lat":100,"x":1}}"#).as_bytes(),
        ));
        has(&d, None, "address", "1 to 500 characters, found 501");
        has(&d, None, "lat", "within [-90, 90]");
        has(&d, None, "x", "unknown field");
        has(
            &details(decode_registration(br#"{"address":""}"#)),
            None,
            "address",
            "found 0",
        );
        has(
            &details(decode_registration(br#"{"address":"  "}"#)),
            None,
            "address",
            "blank",
        );
        has(
            &details(decode_registration(br#"{}"#)),
            None,
            "address",
            "missing",
        );
        has(
            &details(decode_registration(br#"{"address":5}"#)),
            None,
            "address",
            "a string",
        );
        has(
            &details(decode_registration(br#"{"address":"a","lat":1}"#)),
            None,
            "lon",
            "together",
        );
        has(
            &details(decode_registration(b"[1]")),
            None,
            "body",
            "an object",
        );
    }
}
