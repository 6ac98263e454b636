//! Kafka records → ClickHouse rows. Records are decoded by the one codec
//! (`common::codec`), so the sink accepts exactly what the producers are allowed to write; a
//! decoded ping goes straight into the `pings` Native block ([`PingBlock`]) with its strings
//! still borrowed from the Kafka message.

use bytes::Bytes;
use clickhouse::Row;
use common::codec::{self, DecodeError};
use common::record::ContactRef;
use serde::Serialize;
use std::borrow::Cow;
use std::ops::Range;

/// A row of `pings`, owned: the oracle of the tests that check [`PingBlock`] against the
/// `clickhouse` crate's own encoding. The sink itself never builds one.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct PingRow {
    pub person_id: String,
    pub device_id: String,
    pub device_ts: u32,
    pub device_ts_ms: i64,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f32>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// A row of `pings` whose strings borrow from the record it was decoded from: what
/// [`PingBlock::push`] takes.
#[derive(Debug, Clone, PartialEq)]
pub struct PingRef<'a> {
    pub person_id: Cow<'a, str>,
    pub device_id: Cow<'a, str>,
    pub device_ts: u32,
    pub device_ts_ms: i64,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f32>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl PingRow {
    pub fn as_ref(&self) -> PingRef<'_> {
        PingRef {
            person_id: Cow::Borrowed(&self.person_id),
            device_id: Cow::Borrowed(&self.device_id),
            device_ts: self.device_ts,
            device_ts_ms: self.device_ts_ms,
            received_at: self.received_at,
            received_at_ms: self.received_at_ms,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy_m,
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
        }
    }
}

/// `pings` rows encoded column by column for one ClickHouse `Native` block: the sink's hot
/// path. A decoded ping goes straight from the Kafka record's bytes into these column buffers
/// — no owned strings per row, no second serialization pass — and ClickHouse reads a Native
/// block column-wise instead of parsing every field of every row (with `RowBinary` the server
/// spent more CPU per row than the whole sink does). The buffers are reused batch after batch.
/// An integration test checks the block byte for byte against the server's own `Native`
/// output for the same rows.
#[derive(Debug, Default)]
pub struct PingBlock {
    person_id: Vec<u8>,
    device_id: Vec<u8>,
    device_ts: Vec<u32>,
    device_ts_ms: Vec<i64>,
    received_at: Vec<u32>,
    received_at_ms: Vec<i64>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    accuracy_null: Vec<u8>,
    accuracy_m: Vec<f32>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
}

/// Little-endian bytes of a column of numbers (all supported targets are little-endian, as
/// ClickHouse's format is).
fn le_bytes<T: Copy, const N: usize>(out: &mut Vec<u8>, values: &[T], to: fn(T) -> [u8; N]) {
    out.reserve(values.len() * N);
    for v in values {
        out.extend_from_slice(&to(*v));
    }
}

impl PingBlock {
    /// The insert's column list, in block order.
    pub const COLUMNS: &'static str = "person_id, device_id, device_ts, device_ts_ms, \
        received_at, received_at_ms, lat, lon, accuracy_m, kafka_partition, kafka_offset";

    pub fn push(&mut self, p: &PingRef<'_>) {
        put_string(&mut self.person_id, &p.person_id);
        put_string(&mut self.device_id, &p.device_id);
        self.device_ts.push(p.device_ts);
        self.device_ts_ms.push(p.device_ts_ms);
        self.received_at.push(p.received_at);
        self.received_at_ms.push(p.received_at_ms);
        self.lat.push(p.lat);
        self.lon.push(p.lon);
        self.accuracy_null.push(u8::from(p.accuracy_m.is_none()));
        self.accuracy_m.push(p.accuracy_m.unwrap_or(0.0));
        self.kafka_partition.push(p.kafka_partition);
        self.kafka_offset.push(p.kafka_offset);
    }

    pub fn len(&self) -> usize {
        self.device_ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.device_ts.is_empty()
    }

    /// The rows as one `Native` block (`INSERT ... FORMAT Native` over HTTP: column and row
    /// counts, then per column its name, its type and its values), cut into chunks of at most
    /// `chunk` bytes for the request body. Empty when there are no rows.
    pub fn native_body(&self, chunk: usize) -> Vec<Bytes> {
        self.encode(0..self.len(), &self.person_id, &self.device_id, chunk)
    }

    /// Where each row's strings start in the string columns: what [`PingBlock::rows_body`]
    /// and [`PingBlock::row`] need. Built only when a batch has to be split (one pass over
    /// the strings), so the hot path keeps no per-row boundaries.
    pub fn index(&self) -> PingIndex {
        let starts = |col: &[u8]| {
            let mut out = Vec::with_capacity(self.len() + 1);
            let mut at = 0;
            while at < col.len() {
                out.push(at);
                let (len, n) = get_varuint(&col[at..]);
                at += n + usize::try_from(len).expect("a string length fits in memory");
            }
            out.push(at);
            out
        };
        PingIndex {
            person_id: starts(&self.person_id),
            device_id: starts(&self.device_id),
        }
    }

    /// [`PingBlock::native_body`] of the rows `rows` only (`index` from [`PingBlock::index`]).
    pub fn rows_body(&self, index: &PingIndex, rows: Range<usize>, chunk: usize) -> Vec<Bytes> {
        let person = &self.person_id[index.person_id[rows.start]..index.person_id[rows.end]];
        let device = &self.device_id[index.device_id[rows.start]..index.device_id[rows.end]];
        self.encode(rows, person, device, chunk)
    }

    /// Row `i`, owned (for a dead letter).
    pub fn row(&self, index: &PingIndex, i: usize) -> PingRow {
        let text = |col: &[u8], starts: &[usize]| {
            let field = &col[starts[i]..starts[i + 1]];
            let (_, n) = get_varuint(field);
            String::from_utf8_lossy(&field[n..]).into_owned()
        };
        PingRow {
            person_id: text(&self.person_id, &index.person_id),
            device_id: text(&self.device_id, &index.device_id),
            device_ts: self.device_ts[i],
            device_ts_ms: self.device_ts_ms[i],
            received_at: self.received_at[i],
            received_at_ms: self.received_at_ms[i],
            lat: self.lat[i],
            lon: self.lon[i],
            accuracy_m: (self.accuracy_null[i] == 0).then_some(self.accuracy_m[i]),
            kafka_partition: self.kafka_partition[i],
            kafka_offset: self.kafka_offset[i],
        }
    }

    /// The Kafka partition and offset row `i` was read from.
    pub fn source(&self, i: usize) -> (i32, i64) {
        (self.kafka_partition[i], self.kafka_offset[i])
    }

    /// The block of `rows`, whose encoded strings are `person` and `device`.
    fn encode(&self, rows: Range<usize>, person: &[u8], device: &[u8], chunk: usize) -> Vec<Bytes> {
        let n = rows.len();
        if n == 0 {
            return Vec::new();
        }
        let mut b = Vec::with_capacity(
            256 + person.len() + device.len() + n * (4 + 8 + 4 + 8 + 8 + 8 + 1 + 4 + 4 + 8),
        );
        put_varuint(&mut b, 11);
        put_varuint(&mut b, n as u64);
        let column = |b: &mut Vec<u8>, name: &str, ty: &str| {
            put_string(b, name);
            put_string(b, ty);
        };
        let r = rows;
        column(&mut b, "person_id", "String");
        b.extend_from_slice(person);
        column(&mut b, "device_id", "String");
        b.extend_from_slice(device);
        column(&mut b, "device_ts", "DateTime");
        le_bytes(&mut b, &self.device_ts[r.clone()], u32::to_le_bytes);
        column(&mut b, "device_ts_ms", "Int64");
        le_bytes(&mut b, &self.device_ts_ms[r.clone()], i64::to_le_bytes);
        column(&mut b, "received_at", "DateTime");
        le_bytes(&mut b, &self.received_at[r.clone()], u32::to_le_bytes);
        column(&mut b, "received_at_ms", "Int64");
        le_bytes(&mut b, &self.received_at_ms[r.clone()], i64::to_le_bytes);
        column(&mut b, "lat", "Float64");
        le_bytes(&mut b, &self.lat[r.clone()], f64::to_le_bytes);
        column(&mut b, "lon", "Float64");
        le_bytes(&mut b, &self.lon[r.clone()], f64::to_le_bytes);
        column(&mut b, "accuracy_m", "Nullable(Float32)");
        b.extend_from_slice(&self.accuracy_null[r.clone()]);
        le_bytes(&mut b, &self.accuracy_m[r.clone()], f32::to_le_bytes);
        column(&mut b, "kafka_partition", "Int32");
        le_bytes(&mut b, &self.kafka_partition[r.clone()], i32::to_le_bytes);
        column(&mut b, "kafka_offset", "Int64");
        le_bytes(&mut b, &self.kafka_offset[r], i64::to_le_bytes);
        let body = Bytes::from(b);
        let chunk = chunk.max(1);
        (0..body.len())
            .step_by(chunk)
            .map(|at| body.slice(at..(at + chunk).min(body.len())))
            .collect()
    }

    /// Empties the block, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.person_id.clear();
        self.device_id.clear();
        self.device_ts.clear();
        self.device_ts_ms.clear();
        self.received_at.clear();
        self.received_at_ms.clear();
        self.lat.clear();
        self.lon.clear();
        self.accuracy_null.clear();
        self.accuracy_m.clear();
        self.kafka_partition.clear();
        self.kafka_offset.clear();
    }
}

/// LEB128, as ClickHouse writes lengths and counts.
fn put_varuint(b: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            b.push(byte);
            break;
        }
        b.push(byte | 0x80);
    }
}

/// A LEB128 number at the start of `b`, and how many bytes it took.
fn get_varuint(b: &[u8]) -> (u64, usize) {
    let mut n = 0u64;
    for (i, byte) in b.iter().enumerate() {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    (n, b.len())
}

/// Where each row's strings start in a [`PingBlock`]'s string columns (one more entry than
/// rows: the end).
#[derive(Debug, Clone, Default)]
pub struct PingIndex {
    person_id: Vec<usize>,
    device_id: Vec<usize>,
}

/// `String`: length, then the bytes.
fn put_string(b: &mut Vec<u8>, s: &str) {
    put_varuint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// A row of `registrations`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct RegistrationRow {
    pub person_id: String,
    pub device_id: String,
    pub address: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// A row of `person_events`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub person_id: String,
    pub kind: String,
    pub at: u32,
    pub at_ms: i64,
    pub last_contact_at: u32,
    pub last_contact_at_ms: i64,
    pub notice_after_ms: i64,
    pub deregister_after_ms: i64,
    pub excluded_outage_ms: i64,
    pub address: Option<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// The event's per-person sequence number; -1 for events written before it existed.
    pub seq: i64,
}

/// A row of a table written from `Vec` rows: where it was read from (for its dead letter).
pub trait SourceRow {
    /// The Kafka partition and offset of the record the row came from.
    fn source(&self) -> (i32, i64);
}

impl SourceRow for RegistrationRow {
    fn source(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

impl SourceRow for EventRow {
    fn source(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// What one Kafka record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    Ping(PingRef<'a>),
    Registration(RegistrationRow),
    Event(EventRow),
    /// Ticks: consumed (their offsets count) but not stored.
    Skip,
}

/// Which topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Contacts,
    Events,
}

/// Epoch milliseconds → DateTime seconds, clamped to what DateTime can hold.
pub fn to_datetime(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

/// Rounds a coordinate to `decimals` (negative keeps it).
pub fn round_coord(x: f64, decimals: i32) -> f64 {
    if decimals < 0 {
        return x;
    }
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Decodes one payload from `source` at `partition`/`offset` with the one codec, and maps it
/// to its table's row (coordinates rounded to `coordinate_decimals`).
pub fn decode(
    source: Source,
    payload: Option<&[u8]>,
    partition: i32,
    offset: i64,
    coordinate_decimals: i32,
) -> Result<Decoded<'_>, DecodeError> {
    let payload = payload.ok_or_else(DecodeError::empty)?;
    let round = |x: f64| round_coord(x, coordinate_decimals);
    match source {
        Source::Contacts => Ok(match codec::contact::decode(payload)? {
            ContactRef::Ping {
                person_id,
                device_id,
                device_ts,
                lat,
                lon,
                accuracy_m,
                received_at,
            } => Decoded::Ping(PingRef {
                person_id,
                device_id,
                device_ts: to_datetime(device_ts),
                device_ts_ms: device_ts,
                received_at: to_datetime(received_at),
                received_at_ms: received_at,
                lat: round(lat),
                lon: round(lon),
                accuracy_m,
                kafka_partition: partition,
                kafka_offset: offset,
            }),
            ContactRef::Registration {
                person_id,
                device_id,
                address,
                lat,
                lon,
                received_at,
            } => Decoded::Registration(RegistrationRow {
                person_id: person_id.into_owned(),
                device_id: device_id.into_owned(),
                address: address.into_owned(),
                lat: lat.map(round),
                lon: lon.map(round),
                received_at: to_datetime(received_at),
                received_at_ms: received_at,
                kafka_partition: partition,
                kafka_offset: offset,
            }),
            ContactRef::Tick { .. } => Decoded::Skip,
        }),
        Source::Events => {
            let e = codec::event::decode(payload)?;
            Ok(Decoded::Event(EventRow {
                kind: e.kind.as_str().to_string(),
                at: to_datetime(e.at),
                at_ms: e.at,
                last_contact_at: to_datetime(e.last_contact_at),
                last_contact_at_ms: e.last_contact_at,
                notice_after_ms: e.notice_after_ms,
                deregister_after_ms: e.deregister_after_ms,
                excluded_outage_ms: e.excluded_outage_ms,
                event_id: e.event_id,
                person_id: e.person_id,
                address: e.address,
                kafka_partition: partition,
                kafka_offset: offset,
                seq: e.seq.map_or(-1, i64::from),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind_and_rejects_garbage() {
        let ping = br#"{"type":"ping","person_id":"p","device_id":"d","device_ts":1700000000123,"lat":55.123456,"lon":37.654321,"received_at":1700000000999}"#;
        let Decoded::Ping(r) = decode(Source::Contacts, Some(ping), 3, 7, 2).unwrap() else {
            panic!()
        };
        assert_eq!((r.device_ts, r.received_at), (1_700_000_000, 1_700_000_000));
        assert_eq!((r.lat, r.lon), (55.12, 37.65));
        assert_eq!((r.kafka_partition, r.kafka_offset), (3, 7));
        let tick = br#"{"type":"tick","received_at":5}"#;
        assert_eq!(
            decode(Source::Contacts, Some(tick), 0, 0, -1).unwrap(),
            Decoded::Skip
        );
        let reg = br#"{"type":"registration","person_id":"p","address":"A","received_at":5}"#;
        assert!(matches!(
            decode(Source::Contacts, Some(reg), 0, 0, -1),
            Ok(Decoded::Registration(_))
        ));
        assert_eq!(
            decode(Source::Contacts, Some(b"{nope"), 0, 0, -1)
                .unwrap_err()
                .reason,
            "invalid_json"
        );
        assert_eq!(
            decode(Source::Contacts, Some(b"{\"type\":\"x\"}"), 0, 0, -1)
                .unwrap_err()
                .reason,
            "schema_mismatch"
        );
        assert_eq!(
            decode(Source::Events, None, 0, 0, -1).unwrap_err().reason,
            "empty_payload"
        );
        // A contact is not an event.
        assert!(decode(Source::Events, Some(ping), 0, 0, -1).is_err());
    }

    fn ping(i: usize) -> PingRow {
        PingRow {
            person_id: if i % 5 == 0 {
                String::new()
            } else {
                format!("person-ü-{i}-{}", "x".repeat(i * 7))
            },
            device_id: format!("дев-{i}"),
            device_ts: i as u32,
            device_ts_ms: i as i64 * 1001,
            received_at: 7,
            received_at_ms: -(i as i64),
            lat: i as f64 * 0.5,
            lon: -(i as f64),
            accuracy_m: (i % 3 != 0).then_some(i as f32),
            kafka_partition: (i % 4) as i32,
            kafka_offset: 1000 + i as i64,
        }
    }

    /// A range of rows encodes exactly as a block of only those rows would, and each row
    /// comes back as it was pushed (long strings: multi-byte lengths).
    #[test]
    fn a_range_of_the_block_is_the_block_of_the_range() {
        let rows: Vec<PingRow> = (0..40).map(ping).collect();
        let mut block = PingBlock::default();
        for r in &rows {
            block.push(&r.as_ref());
        }
        let index = block.index();
        let flat = |c: Vec<Bytes>| c.concat();
        assert_eq!(
            flat(block.rows_body(&index, 0..40, 64)),
            flat(block.native_body(1 << 20))
        );
        for range in [0..1, 3..4, 5..17, 20..40, 39..40, 0..40] {
            let mut part = PingBlock::default();
            for r in &rows[range.clone()] {
                part.push(&r.as_ref());
            }
            assert_eq!(
                flat(block.rows_body(&index, range.clone(), 100)),
                flat(part.native_body(1 << 20)),
                "{range:?}"
            );
        }
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(&block.row(&index, i), r);
            assert_eq!(block.source(i), (r.kafka_partition, r.kafka_offset));
        }
        assert!(block.rows_body(&index, 4..4, 10).is_empty());
    }

    #[test]
    fn rounding_and_clamping() {
        assert_eq!(round_coord(55.75583, 3), 55.756);
        assert_eq!(round_coord(55.75583, -1), 55.75583);
        assert_eq!(round_coord(-37.5, 0), -38.0);
        assert_eq!(to_datetime(-5), 0);
        assert_eq!(to_datetime(1999), 1);
        assert_eq!(to_datetime(i64::MAX), u32::MAX);
    }
}
