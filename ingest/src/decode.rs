//! Request decoding and validation.
//!
//! Bodies are read with small hand-written serde visitors that never stop at the first
//! problem: every field of every item is captured loosely (any JSON type), and validation then
//! names every bad item and field. Only malformed JSON stops early, with its position.
//! Nothing here allocates per ping on the happy path except the output vector.

mod fast;

use common::Millis;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Most details reported for one request; the rest are summarised by `truncated`.
pub const MAX_DETAILS: usize = 1000;
/// Largest accepted `accuracy_m`, metres.
pub const MAX_ACCURACY_M: f64 = 1.0e7;
/// Longest accepted registration address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 500;

/// The bounds a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most pings in one request.
    pub max_batch: usize,
    /// Device times further ahead of the server clock are rejected (ms).
    pub max_future_skew_ms: i64,
    /// Device times older than this are rejected (ms).
    pub max_age_ms: i64,
}

impl Limits {
    pub fn from_config(c: &common::config::IngestConfig) -> Limits {
        Limits {
            max_batch: c.max_batch,
            max_future_skew_ms: i64::try_from(c.max_future_skew.as_millis()).unwrap_or(i64::MAX),
            max_age_ms: i64::try_from(c.max_age.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 1000,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// One valid ping, as the device sent it (person and device come from the token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingIn {
    pub device_ts: Millis,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f32>,
}

/// One valid registration body.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationIn {
    pub address: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// One problem with a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// Index of the item in `pings`; absent for problems of the body itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8, or a number out of range).
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    /// JSON, but with the listed problems.
    #[error("invalid request ({} problem(s))", .details.len())]
    Invalid {
        details: Vec<Detail>,
        /// More problems than [`MAX_DETAILS`] were found.
        truncated: bool,
    },
}

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
    fn is_empty(&self) -> bool {
        self.details.is_empty()
    }
    fn into_error(self) -> DecodeError {
        DecodeError::Invalid {
            details: self.details,
            truncated: self.truncated,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loose capture of JSON values.

/// Any JSON value, captured loosely: scalars kept, containers only noted.
#[derive(Debug, Clone, Default, PartialEq)]
enum Val<'a> {
    #[default]
    Missing,
    Null,
    Bool,
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Val<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Missing => "missing",
            Val::Null => "null",
            Val::Bool => "a boolean",
            Val::Int(_) | Val::UInt(_) | Val::Float(_) => "a number",
            Val::Str(_) => "a string",
            Val::Array => "an array",
            Val::Object => "an object",
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Int(i) => Some(i as f64),
            Val::UInt(u) => Some(u as f64),
            Val::Float(f) => Some(f),
            _ => None,
        }
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Val::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Val::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Val::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Val::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Val::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Object)
    }
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object captured field by field; fields other than `N` known names are listed.
struct Obj<'a, const N: usize> {
    fields: [Val<'a>; N],
    unknown: Vec<String>,
    duplicate: Vec<&'static str>,
}

trait FieldNames {
    const NAMES: &'static [&'static str];
}

/// An item that should be an object: either the captured object or what it was instead.
enum Item<'a, const N: usize, F> {
    Obj(Obj<'a, N>, std::marker::PhantomData<F>),
    Other(Val<'a>),
}

struct ItemVisitor<const N: usize, F>(std::marker::PhantomData<F>);

impl<'de, const N: usize, F: FieldNames> Visitor<'de> for ItemVisitor<N, F> {
    type Value = Item<'de, N, F>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = Obj {
            fields: std::array::from_fn(|_| Val::Missing),
            unknown: Vec::new(),
            duplicate: Vec::new(),
        };
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match F::NAMES.iter().position(|n| *n == k) {
                Some(i) => {
                    let v: Val<'de> = map.next_value()?;
                    if obj.fields[i] != Val::Missing {
                        obj.duplicate.push(F::NAMES[i]);
                    }
                    obj.fields[i] = v;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    obj.unknown.push(k.into_owned());
                }
            }
        }
        Ok(Item::Obj(obj, std::marker::PhantomData))
    }
    // Everything else: delegate to the loose value visitor.
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Null))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Null))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Bool))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Float(v)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Item::Other(Val::Str(Cow::Borrowed(""))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other(Val::Array))
    }
}

impl<'de, const N: usize, F: FieldNames> Deserialize<'de> for Item<'de, N, F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor::<N, F>(std::marker::PhantomData))
    }
}

struct PingFields;
impl FieldNames for PingFields {
    const NAMES: &'static [&'static str] = &["ts", "lat", "lon", "accuracy_m"];
}
type PingItem<'a> = Item<'a, 4, PingFields>;

struct RegFields;
impl FieldNames for RegFields {
    const NAMES: &'static [&'static str] = &["address", "lat", "lon"];
}
type RegItem<'a> = Item<'a, 3, RegFields>;

/// The `pings` member: an array of items, or what it was instead.
enum PingsVal<'a> {
    Missing,
    Array(Vec<PingItem<'a>>),
    Other(Val<'a>),
}

impl<'de> Deserialize<'de> for PingsVal<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PingsVal<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<PingItem<'de>>()? {
                    v.push(item);
                }
                Ok(PingsVal::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ValVisitor.visit_map(map).map(PingsVal::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::Null))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::Bool))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::Float(v)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(PingsVal::Other(Val::Str(Cow::Borrowed(""))))
            }
        }
        d.deserialize_any(V)
    }
}

/// The pings body: `{"pings": [...]}`, or what it was instead.
enum PingsBody<'a> {
    Obj {
        pings: PingsVal<'a>,
        duplicate: bool,
        unknown: Vec<String>,
    },
    Other(Val<'a>),
}

impl<'de> Deserialize<'de> for PingsBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PingsBody<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pings = PingsVal::Missing;
                let mut duplicate = false;
                let mut unknown = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    if k == "pings" {
                        if !matches!(pings, PingsVal::Missing) {
                            duplicate = true;
                        }
                        pings = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        unknown.push(k.into_owned());
                    }
                }
                Ok(PingsBody::Obj {
                    pings,
                    duplicate,
                    unknown,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                ValVisitor.visit_seq(seq).map(PingsBody::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::Null))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::Bool))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::Float(v)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(PingsBody::Other(Val::Str(Cow::Borrowed(""))))
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::Malformed {
        line: e.line(),
        column: e.column(),
        // The message names what was expected, never echoes the body (it may hold locations).
        message: malformed_message(&e),
    })
}

fn malformed_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is reported separately.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Decodes and validates a `POST /v1/pings` body. `now` is the server clock (epoch ms).
pub fn decode_pings(body: &[u8], limits: &Limits, now: Millis) -> Result<Vec<PingIn>, DecodeError> {
    // The common case (plain numbers, every ping valid) without building the loose capture;
    // anything else, and every error, comes from the full decoder below.
    match fast::decode_pings(body, limits, now) {
        Some(pings) => Ok(pings),
        None => decode_pings_full(body, limits, now),
    }
}

/// The full decoder: captures every item loosely, then names every problem.
fn decode_pings_full(
    body: &[u8],
    limits: &Limits,
    now: Millis,
) -> Result<Vec<PingIn>, DecodeError> {
    let parsed: PingsBody<'_> = parse_json(body)?;
    let mut p = Problems::new();
    let (pings, duplicate, unknown) = match parsed {
        PingsBody::Obj {
            pings,
            duplicate,
            unknown,
        } => (pings, duplicate, unknown),
        PingsBody::Other(v) => {
            p.push(
                None,
                "body",
                format!("must be an object, found {}", v.type_name()),
            );
            return Err(p.into_error());
        }
    };
    for k in &unknown {
        p.push(None, k, "unknown field");
    }
    if duplicate {
        p.push(None, "pings", "duplicate field");
    }
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
    let mut out = Vec::with_capacity(items.len().min(limits.max_batch));
    for (index, item) in items.iter().enumerate() {
        let obj = match item {
            Item::Obj(o, _) => o,
            Item::Other(v) => {
                p.push(
                    Some(index),
                    "pings",
                    format!("each ping must be an object, found {}", v.type_name()),
                );
                continue;
            }
        };
        let idx = Some(index);
        let before = p.details.len() + usize::from(p.truncated);
        for k in &obj.unknown {
            p.push(idx, k, "unknown field");
        }
        for k in &obj.duplicate {
            p.push(idx, k, "duplicate field");
        }
        let [ts, lat, lon, acc] = &obj.fields;
        let device_ts = check_ts(ts, limits, now)
            .map_err(|r| p.push(idx, "ts", r))
            .ok();
        let lat = check_coord(lat, 90.0)
            .map_err(|r| p.push(idx, "lat", r))
            .ok();
        let lon = check_coord(lon, 180.0)
            .map_err(|r| p.push(idx, "lon", r))
            .ok();
        let acc = check_accuracy(acc)
            .map_err(|r| p.push(idx, "accuracy_m", r))
            .ok();
        let clean = p.details.len() + usize::from(p.truncated) == before;
        if let (true, Some(device_ts), Some(lat), Some(lon), Some(accuracy_m)) =
            (clean, device_ts, lat, lon, acc)
        {
            out.push(PingIn {
                device_ts,
                lat,
                lon,
                accuracy_m,
            });
        }
    }
    if p.is_empty() {
        Ok(out)
    } else {
        Err(p.into_error())
    }
}

/// Decodes and validates a `POST /v1/registrations` body.
pub fn decode_registration(body: &[u8]) -> Result<RegistrationIn, DecodeError> {
    let parsed: RegItem<'_> = parse_json(body)?;
    let mut p = Problems::new();
    let obj = match parsed {
        Item::Obj(o, _) => o,
        Item::Other(v) => {
            p.push(
                None,
                "body",
                format!("must be an object, found {}", v.type_name()),
            );
            return Err(p.into_error());
        }
    };
    for k in &obj.unknown {
        p.push(None, k, "unknown field");
    }
    for k in &obj.duplicate {
        p.push(None, k, "duplicate field");
    }
    let [address, lat, lon] = &obj.fields;
    let address = match address {
        Val::Str(s) => {
            let n = s.chars().count();
            if n == 0 {
                p.push(None, "address", "must be 1 to 500 characters, found 0");
                None
            } else if n > MAX_ADDRESS_CHARS {
                p.push(
                    None,
                    "address",
                    format!("must be 1 to {MAX_ADDRESS_CHARS} characters, found {n}"),
                );
                None
            } else if s.trim().is_empty() {
                p.push(None, "address", "must not be blank");
                None
            } else if s.chars().any(char::is_control) {
                p.push(None, "address", "must not contain control characters");
                None
            } else {
                Some(s.to_string())
            }
        }
        Val::Missing => {
            p.push(None, "address", "missing field");
            None
        }
        v => {
            p.push(
                None,
                "address",
                format!("must be a string, found {}", v.type_name()),
            );
            None
        }
    };
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
    match (p.is_empty(), address, lat, lon) {
        (true, Some(address), Ok(lat), Ok(lon)) => Ok(RegistrationIn { address, lat, lon }),
        _ => Err(p.into_error()),
    }
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
    if ts > now.saturating_add(limits.max_future_skew_ms) {
        return Err(format!(
            "is more than {} ahead of the server clock",
            common::config::fmt_duration(std::time::Duration::from_millis(
                limits.max_future_skew_ms.max(0) as u64
            ))
        ));
    }
    if ts < now.saturating_sub(limits.max_age_ms) {
        return Err(format!(
            "is older than {}",
            common::config::fmt_duration(std::time::Duration::from_millis(
                limits.max_age_ms.max(0) as u64
            ))
        ));
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

// ---------------------------------------------------------------------------------------------
// RFC 3339.

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
    use proptest::prelude::*;

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
        let full = decode_pings_full(body.as_bytes(), limits, NOW);
        match fast::decode_pings(body.as_bytes(), limits, NOW) {
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
