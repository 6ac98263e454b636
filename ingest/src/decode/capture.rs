//! Reading a body into loose values: every field of every item is captured whatever its JSON
//! type (scalars kept, containers only noted), unknown and duplicate keys are listed, and only
//! malformed JSON stops early, with its position. Judging the values is [`super::validation`]'s.
//!
//! Every captured shape (a loose value, an object of known fields, the `pings` array, the body)
//! is read by one visitor, [`ShapeVisitor`]: a shape says what it makes of an object or an
//! array, and anything else becomes its "found instead" [`Val`].

use super::DecodeError;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Any JSON value, captured loosely: scalars kept, containers only noted.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) enum Val<'a> {
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
    pub(super) fn type_name(&self) -> &'static str {
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

    pub(super) fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Int(i) => Some(i as f64),
            Val::UInt(u) => Some(u as f64),
            Val::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// A captured shape: what it makes of an object and of an array (by default the loose
/// [`Val::Object`] or [`Val::Array`], their contents skipped), and of any other value.
trait Shape<'de>: Sized {
    /// The value was not of the expected kind: this is what it was.
    const OTHER: fn(Val<'de>) -> Self;

    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::OTHER(Val::Object))
    }

    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::OTHER(Val::Array))
    }
}

/// The one visitor of every [`Shape`].
struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for ShapeVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // Never shown: every kind of value is visited.
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::OTHER(Val::Null))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::OTHER(Val::Null))
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::OTHER(Val::Bool))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::OTHER(Val::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::OTHER(Val::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::OTHER(Val::Float(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::OTHER(Val::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::OTHER(Val::Str(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::OTHER(Val::Str(Cow::Owned(v))))
    }
}

/// `Deserialize` for shapes, through [`ShapeVisitor`].
macro_rules! deserialize_as_shape {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ShapeVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_as_shape!(
    Val<'de>,
    PingItem<'de>,
    RegItem<'de>,
    PingsVal<'de>,
    PingsBody<'de>
);

impl<'de> Shape<'de> for Val<'de> {
    const OTHER: fn(Val<'de>) -> Self = std::convert::identity;
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

/// The known fields of an object, in the order of its captured `fields`.
pub(super) trait FieldNames {
    const NAMES: &'static [&'static str];
}

/// The fields of one ping, in this order.
pub(super) struct PingFields;
impl FieldNames for PingFields {
    const NAMES: &'static [&'static str] = &["ts", "lat", "lon", "accuracy_m"];
}

/// The fields of a registration, in this order.
pub(super) struct RegFields;
impl FieldNames for RegFields {
    const NAMES: &'static [&'static str] = &["address", "lat", "lon"];
}

/// An object captured field by field; keys other than the `N` names of `F` are listed.
pub(super) struct Obj<'a, const N: usize, F> {
    pub fields: [Val<'a>; N],
    pub unknown: Vec<String>,
    pub duplicate: Vec<&'static str>,
    names: PhantomData<F>,
}

/// What should be an object of `F`'s fields: either the captured object or what it was instead.
pub(super) enum Item<'a, const N: usize, F> {
    Obj(Obj<'a, N, F>),
    Other(Val<'a>),
}

impl<'de, const N: usize, F: FieldNames> Shape<'de> for Item<'de, N, F> {
    const OTHER: fn(Val<'de>) -> Self = Item::Other;
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut obj = Obj {
            fields: std::array::from_fn(|_| Val::Missing),
            unknown: Vec::new(),
            duplicate: Vec::new(),
            names: PhantomData,
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
        Ok(Item::Obj(obj))
    }
}

pub(super) type PingItem<'a> = Item<'a, 4, PingFields>;
pub(super) type RegItem<'a> = Item<'a, 3, RegFields>;

/// The `pings` member: an array of items, or what it was instead.
pub(super) enum PingsVal<'a> {
    Missing,
    Array(Vec<PingItem<'a>>),
    Other(Val<'a>),
}

impl<'de> Shape<'de> for PingsVal<'de> {
    const OTHER: fn(Val<'de>) -> Self = PingsVal::Other;
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<PingItem<'de>>()? {
            v.push(item);
        }
        Ok(PingsVal::Array(v))
    }
}

/// The pings body: `{"pings": [...]}`, or what it was instead.
pub(super) enum PingsBody<'a> {
    Obj {
        pings: PingsVal<'a>,
        duplicate: bool,
        unknown: Vec<String>,
    },
    Other(Val<'a>),
}

impl<'de> Shape<'de> for PingsBody<'de> {
    const OTHER: fn(Val<'de>) -> Self = PingsBody::Other;
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut pings = PingsVal::Missing;
        let mut duplicate = false;
        let mut unknown = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if k == "pings" {
                duplicate |= !matches!(pings, PingsVal::Missing);
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
}

/// Reads `body` as `T`; malformed JSON (or not UTF-8, or a number out of range) stops here.
pub(super) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
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
