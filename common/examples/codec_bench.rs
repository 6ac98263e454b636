//! The record codec on its hot record, the ping: ns/record to encode and decode, bytes/record
//! plain and lz4-compressed (as the producer sends them: `compression.type=lz4`, batches of
//! `--batch` records), for the JSON codec in use (`common::codec::contact`) and for the binary
//! alternative the structure issue named (protobuf via `prost`, with a one-byte version
//! marker). Prints one JSON line.
//!
//! ```text
//! cargo run --release -p common --example codec_bench -- [--records 1000000] [--batch 1000]
//! ```
//!
//! The pings are shaped like the fleet simulator's: ids `person-0012345` / `device-0012345`,
//! coordinates around Moscow with the 6–15 fraction digits phones send, an accuracy on 90 %
//! of them, server times a few ms apart. Each measurement is the median of 5 passes over all
//! records, after one warm-up pass.

use common::codec::contact::{self, PingEncoder};
use common::record::ContactRef;
use std::hint::black_box;
use std::time::Instant;

/// The protobuf alternative: the same fields, a version byte in front.
#[derive(Clone, PartialEq, prost::Message)]
struct PingPb {
    #[prost(string, tag = "1")]
    person_id: String,
    #[prost(string, tag = "2")]
    device_id: String,
    #[prost(sint64, tag = "3")]
    device_ts: i64,
    #[prost(double, tag = "4")]
    lat: f64,
    #[prost(double, tag = "5")]
    lon: f64,
    #[prost(float, optional, tag = "6")]
    accuracy_m: Option<f32>,
    #[prost(sint64, tag = "7")]
    received_at: i64,
}

const VERSION: u8 = 1;

struct Args {
    records: usize,
    batch: usize,
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        batch: 1000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let n = w.get(1).and_then(|x| x.parse().ok()).expect("a number");
        match w[0].as_str() {
            "--records" => a.records = n,
            "--batch" => a.batch = n,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// A small deterministic generator (xorshift), so every run encodes the same pings.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn pings(n: usize) -> Vec<PingPb> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = 1_764_000_000_000i64;
    (0..n)
        .map(|i| {
            t += (r.next() % 5) as i64;
            let person = r.next() % 100_000;
            let digits = 6 + (r.next() % 10) as i32;
            let f = 10f64.powi(digits);
            PingPb {
                person_id: format!("person-{person:07}"),
                device_id: format!("device-{person:07}"),
                device_ts: t - 800 + (i % 300) as i64,
                lat: ((55.55 + r.unit() * 0.4) * f).round() / f,
                lon: ((37.35 + r.unit() * 0.5) * f).round() / f,
                accuracy_m: (r.next() % 10 != 0).then(|| (5 + r.next() % 60) as f32),
                received_at: t,
            }
        })
        .collect()
}

/// Median ns/record over 5 timed passes of `f` (after one warm-up).
fn time(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

/// Bytes per record after lz4 on batches of `batch` concatenated records (librdkafka
/// compresses a whole message set; lz4_flex's block format stands in for its frame format).
fn lz4_bytes(records: &[Vec<u8>], batch: usize) -> f64 {
    let total: usize = records
        .chunks(batch)
        .map(|c| lz4_flex::compress(&c.concat()).len())
        .sum();
    total as f64 / records.len() as f64
}

fn main() {
    let a = args();
    let src = pings(a.records);
    let n = src.len();

    // JSON: what ingest writes (one encoder per request; here one per record, the worst case).
    let json: Vec<Vec<u8>> = src
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(200);
            PingEncoder::new(&p.person_id, &p.device_id, p.received_at).encode(
                p.device_ts,
                p.lat,
                p.lon,
                p.accuracy_m,
                &mut b,
            );
            b
        })
        .collect();
    let mut buf = Vec::with_capacity(256);
    let json_encode = time(n, || {
        for p in &src {
            buf.clear();
            PingEncoder::new(&p.person_id, &p.device_id, p.received_at).encode(
                p.device_ts,
                p.lat,
                p.lon,
                p.accuracy_m,
                &mut buf,
            );
            black_box(&buf);
        }
    });
    let json_decode = time(n, || {
        for b in &json {
            match contact::decode(b) {
                Ok(ContactRef::Ping { lat, .. }) => {
                    black_box(lat);
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let json_decode_full = time(n, || {
        for b in &json {
            black_box(contact::decode_full(b).is_ok());
        }
    });

    // Protobuf with a version byte.
    let pb: Vec<Vec<u8>> = src
        .iter()
        .map(|p| {
            let mut b = vec![VERSION];
            prost::Message::encode(p, &mut b).expect("a Vec grows");
            b
        })
        .collect();
    let pb_encode = time(n, || {
        for p in &src {
            buf.clear();
            buf.push(VERSION);
            prost::Message::encode(p, &mut buf).expect("a Vec grows");
            black_box(&buf);
        }
    });
    let pb_decode = time(n, || {
        for b in &pb {
            assert_eq!(b[0], VERSION);
            let p = <PingPb as prost::Message>::decode(&b[1..]).expect("valid");
            black_box(p.lat);
        }
    });
    let bytes = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "codec",
            "records": n,
            "batch": a.batch,
            "json": {
                "encode_ns": json_encode,
                "decode_ns": json_decode,
                "decode_full_ns": json_decode_full,
                "bytes": bytes(&json),
                "lz4_bytes": lz4_bytes(&json, a.batch),
            },
            "protobuf": {
                "encode_ns": pb_encode,
                "decode_ns": pb_decode,
                "bytes": bytes(&pb),
                "lz4_bytes": lz4_bytes(&pb, a.batch),
            },
        })
    );
}
