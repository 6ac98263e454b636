//! Single-threaded throughput and memory benchmark of the detector.
//!
//! ```text
//! GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
//! cargo run --release -p processor --example detector_bench -- \
//!     --persons 10000000 --records 100000000 [--seed 1] [--days 4] [--commit-every 200000]
//! ```
//! (`GLIBC_TUNABLES` lets malloc use transparent huge pages, as the deploy manifests do for
//! the processor; it applies to the detector and the baseline alike. Without it both are
//! slower, the detector more.)
//!
//! Setup (untimed): the timed registrations, the record schedule (`u32` codes), and a
//! warm-up in which 99 % of persons register over one hour of stream time (reported
//! separately). The timed loop decodes the schedule window by window (1024 records: each
//! id written into a fresh per-window buffer, as a consumer decodes a batch of messages) and
//! feeds each window to `Detector::apply_batch`, the entry point the service feeds too (each
//! run of one partition's decoded records in a poll burst of up to 1024 messages, its
//! `POLL_BATCH`; a run is shorter when a burst mixes partitions). The records: ~98.7 %
//! pings (from 96 % of persons uniformly; 3 % never ping again, so they are noticed and
//! deregistered; 1 % were never registered), 1 % registrations (half changing address), one
//! tick per second of stream time, stream time spanning `--days`, and a 2-hour ingest outage
//! in the middle. Every `--commit-every` records (at the next window boundary) the changelog
//! is drained (`drain_dirty`) as the service would, inside the timed loop.
//!
//! The baseline runs the same loop over the same windows doing only a `hashbrown` upsert of
//! the last contact time per person id.
//!
//! Memory: a counting global allocator (bytes requested, excluding allocator overhead);
//! `bytes_per_person` excludes the id and address bytes. RSS from /proc/self/statm is printed
//! too, for the whole process (it includes the warm-up records and the schedule).

use common::config::{ClockConfig, PolicyConfig};
use common::record::ContactRef;
use common::record::EventKind;
use processor::detector::Detector;
use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size(), Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        ALLOCATED.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new, Relaxed);
        ALLOCATED.fetch_sub(l.size(), Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const S: i64 = 1000;
const H: i64 = 3600 * S;
const T0: i64 = 1_756_684_800_000;
const KIND_BITS: u32 = 30;
const PING: u32 = 0;
const REG: u32 = 1;
const TICK: u32 = 2;
/// Records per `apply_batch` call (a consumer's batch of decoded messages).
const BATCH: usize = 1024;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number"))
        })
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn address(n: u64) -> String {
    const STREETS: [&str; 8] = [
        "Tverskaya",
        "Arbat",
        "Leninsky pr.",
        "Profsoyuznaya",
        "Mira pr.",
        "Butlerova",
        "Lyublinskaya",
        "Dmitrovskoe sh.",
    ];
    format!(
        "Moscow, {} {}, bld {}, apt {}",
        STREETS[(n % 8) as usize],
        n % 211 + 1,
        n % 7 + 1,
        n % 397 + 1
    )
}

/// Person `i`'s id: `u`, then 23 hex digits (always 24 bytes).
fn write_id(i: u64, seed: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = Rng(i ^ seed).next() >> 4 | i << 32;
    out[..8].copy_from_slice(b"u0000000");
    for (k, o) in out[8..24].iter_mut().enumerate() {
        *o = HEX[(v >> (60 - 4 * k) & 15) as usize];
    }
}

/// Decodes one window of the record schedule into borrowed contacts, the way a
/// consumer decodes a batch of messages: each id is written into a fresh per-window buffer
/// (`arena`, 24 bytes per record) rather than looked up in a table of 10M ids, so the input
/// side costs the same sequential work for the detector and for the baseline.
fn fill_window<'a>(
    codes: &[u32],
    from: usize,
    seed: u64,
    arena: &'a mut Vec<u8>,
    regs: &'a [(u32, String, i64)],
    t_at: &impl Fn(usize) -> i64,
) -> Vec<ContactRef<'a>> {
    let mask = (1u32 << KIND_BITS) - 1;
    arena.clear();
    arena.resize(codes.len() * 24, 0);
    for (k, &code) in codes.iter().enumerate() {
        let p = match code >> KIND_BITS {
            PING => u64::from(code & mask),
            REG => u64::from(regs[(code & mask) as usize].0),
            _ => continue,
        };
        write_id(p, seed, &mut arena[k * 24..k * 24 + 24]);
    }
    // One validation of the whole (ASCII) window, then plain slicing.
    let arena: &'a str = std::str::from_utf8(arena).unwrap_or_default();
    let id = |k: usize| &arena[k * 24..k * 24 + 24];
    let mut buf = Vec::with_capacity(codes.len());
    for (k, &code) in codes.iter().enumerate() {
        let t = t_at(from + k);
        buf.push(match code >> KIND_BITS {
            // Every field a decoded ping carries (the detector reads two of them).
            PING => ContactRef::Ping {
                person_id: Cow::Borrowed(id(k)),
                device_id: Cow::Borrowed(id(k)),
                device_ts: t - 500,
                lat: 55.75,
                lon: 37.62,
                accuracy_m: Some(10.0),
                received_at: t,
            },
            REG => {
                let (_, a, t) = &regs[(code & mask) as usize];
                ContactRef::Registration {
                    person_id: Cow::Borrowed(id(k)),
                    device_id: Cow::Borrowed(""),
                    address: Cow::Borrowed(a),
                    lat: None,
                    lon: None,
                    received_at: *t,
                }
            }
            _ => tick(t),
        });
    }
    buf
}

/// A tick as ingest writes it.
fn tick(t: i64) -> ContactRef<'static> {
    ContactRef::Tick {
        received_at: t,
        source: Cow::Borrowed("ingest-0"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let persons = arg(&args, "--persons", 1_000_000) as usize;
    let records = arg(&args, "--records", 10_000_000) as usize;
    let seed = arg(&args, "--seed", 1);
    let days = arg(&args, "--days", 4) as i64;
    let commit_every = arg(&args, "--commit-every", 200_000).max(1) as usize;
    assert!(
        (100..(1 << KIND_BITS)).contains(&persons),
        "--persons out of range"
    );
    let mut rng = Rng(seed);

    // ---- setup (untimed) ------------------------------------------------------------
    let ids: Vec<String> = (0..persons as u64)
        .map(|i| {
            let mut b = [0u8; 24];
            write_id(i, seed, &mut b);
            String::from_utf8_lossy(&b).into_owned()
        })
        .collect();
    assert_eq!(
        ids[1],
        format!("u{:023x}", Rng(1 ^ seed).next() >> 4 | 1 << 32)
    );
    let registered = persons - persons / 100; // the last 1 % never register
    let active = persons * 96 / 100; // 96..99 % register and then fall silent
    let mut addr_of: Vec<u32> = (0..persons as u32).collect();
    let span = days * 24 * H;
    let time_of = |i: usize| {
        T0 + (i as i64 * (span / 1000) / records as i64) * 1000
            + (i as i64 * (span % 1000) / records as i64)
    };
    let outage_at = records / 2;
    let outage = 2 * H;
    let t_at = |i: usize| time_of(i) + if i >= outage_at { outage } else { 0 };
    let mut codes: Vec<u32> = Vec::with_capacity(records);
    let mut regs: Vec<(u32, String, i64)> = Vec::new();
    let mut last_sec = t_at(0) / S;
    for i in 0..records {
        let t = t_at(i);
        if t / S != last_sec {
            last_sec = t / S;
            codes.push(TICK << KIND_BITS);
            continue;
        }
        let roll = rng.below(1000);
        if roll < 10 {
            let p = rng.below(active as u64) as usize;
            if roll < 5 {
                addr_of[p] = rng.below(1 << 30) as u32;
            }
            regs.push((p as u32, address(addr_of[p] as u64), t));
            codes.push(REG << KIND_BITS | (regs.len() - 1) as u32);
        } else if roll < 11 {
            let p = registered + rng.below((persons - registered) as u64) as usize;
            codes.push(PING << KIND_BITS | p as u32);
        } else {
            codes.push(PING << KIND_BITS | rng.below(active as u64) as u32);
        }
    }
    // Warm-up: every registered person registers, spread over the hour before T0, with a
    // tick per second.
    let warm_addr: Vec<String> = (0..registered).map(|p| address(p as u64)).collect();
    let mut warm: Vec<ContactRef<'_>> = Vec::with_capacity(registered + 3600);
    let mut last_tick = i64::MIN;
    for (p, addr) in warm_addr.iter().enumerate() {
        let t = T0 - H + (p as i64 * H / registered as i64);
        if t / S != last_tick / S {
            warm.push(tick(t));
            last_tick = t;
        }
        warm.push(ContactRef::Registration {
            person_id: Cow::Borrowed(&ids[p]),
            device_id: Cow::Borrowed(""),
            address: Cow::Borrowed(addr),
            lat: None,
            lon: None,
            received_at: t,
        });
    }
    // The timed records are built window by window, inside the timed loops (both the
    // detector's and the baseline's), as a consumer would decode a batch of messages.
    // ---- detector ---------------------------------------------------------------------
    let policy = PolicyConfig {
        notice_after: Duration::from_secs(48 * 3600),
        deregister_after: Duration::from_secs(72 * 3600),
    };
    let clock = ClockConfig {
        tick_interval: Duration::from_secs(1),
        outage_after: Duration::from_secs(30),
    };
    let mem0 = ALLOCATED.load(Relaxed);
    let mut det = Detector::new(policy, clock).expect("valid");
    let mut out = Vec::new();
    let mut events = [0u64; 6];
    let mut count = |out: &mut Vec<common::record::PersonEvent>| {
        for e in out.drain(..) {
            events[EventKind::ALL
                .iter()
                .position(|k| *k == e.kind)
                .unwrap_or(0)] += 1;
        }
    };
    let mut changelog_bytes = 0u64;
    let w0 = Instant::now();
    for w in warm.chunks(BATCH) {
        det.apply_batch(w, &mut out);
        count(&mut out);
    }
    det.drain_dirty(|_, b| changelog_bytes += b.map_or(0, |b| b.len()) as u64);
    let warm_secs = w0.elapsed().as_secs_f64();

    let mut drain_secs = 0.0;
    let mut arena = Vec::with_capacity(BATCH * 24);
    let mut next_drain = commit_every;
    let t0 = Instant::now();
    for from in (0..records).step_by(BATCH) {
        let w = &codes[from..(from + BATCH).min(records)];
        let buf = fill_window(w, from, seed, &mut arena, &regs, &t_at);
        det.apply_batch(&buf, &mut out);
        if !out.is_empty() {
            count(&mut out);
        }
        if from + buf.len() >= next_drain {
            next_drain += commit_every;
            let d0 = Instant::now();
            det.drain_dirty(|_, b| changelog_bytes += b.map_or(0, |b| b.len()) as u64);
            drain_secs += d0.elapsed().as_secs_f64();
        }
    }
    det.drain_dirty(|_, b| changelog_bytes += b.map_or(0, |b| b.len()) as u64);
    let secs = t0.elapsed().as_secs_f64();
    let mem = ALLOCATED.load(Relaxed) - mem0;
    let rss = rss_bytes();
    let (id_bytes, addr_bytes) = det.text_bytes();
    let n = det.persons();
    let counts = det.counts();
    let stream = det.stream_time().unwrap_or(0);
    let excluded = det.excluded_outage_ms();
    drop(det);

    // ---- baseline -----------------------------------------------------------------------
    let mut map: hashbrown::HashMap<Box<str>, i64> = hashbrown::HashMap::new();
    for r in &warm {
        if let ContactRef::Registration {
            person_id,
            received_at,
            ..
        } = r
        {
            map.insert(person_id.as_ref().into(), *received_at);
        }
    }
    let mut upsert = |id: &str, t: i64| match map.get_mut(id) {
        Some(v) => *v = t,
        None => {
            map.insert(id.into(), t);
        }
    };
    let b0 = Instant::now();
    for from in (0..records).step_by(BATCH) {
        let w = &codes[from..(from + BATCH).min(records)];
        let buf = fill_window(w, from, seed, &mut arena, &regs, &t_at);
        for r in &buf {
            match r {
                ContactRef::Ping {
                    person_id,
                    received_at,
                    ..
                }
                | ContactRef::Registration {
                    person_id,
                    received_at,
                    ..
                } => upsert(person_id, *received_at),
                ContactRef::Tick { received_at, .. } => {
                    std::hint::black_box(received_at);
                }
            }
        }
    }
    let base_secs = b0.elapsed().as_secs_f64();
    std::hint::black_box(map.len());

    let rps = records as f64 / secs;
    let base_rps = records as f64 / base_secs;
    let ev: Vec<String> = EventKind::ALL
        .iter()
        .zip(events)
        .map(|(k, c)| format!("\"{k}\":{c}"))
        .collect();
    println!(
        "{{\"persons\":{n},\"records\":{records},\"seed\":{seed},\"records_per_sec\":{rps:.0},\
         \"ns_per_record\":{:.1},\"bytes_per_person\":{:.1},\"bytes_per_person_total\":{:.1},\
         \"id_bytes_per_person\":{:.1},\"address_bytes_per_person\":{:.1},\
         \"baseline_records_per_sec\":{base_rps:.0},\"ratio_to_baseline\":{:.3},\
         \"changelog_drain_share\":{:.3},\"warmup_registrations_per_sec\":{:.0},\
         \"stream_hours\":{:.1},\"excluded_outage_ms\":{excluded},\"events\":{{{}}},\
         \"counts\":{{\"registered\":{},\"silent_noticed\":{},\"deregistered\":{},\"unregistered_contact\":{}}},\
         \"changelog_bytes\":{changelog_bytes},\"rss_bytes_end\":{rss},\"memory\":\"counting allocator (requested bytes)\"}}",
        1e9 / rps,
        (mem as f64 - id_bytes as f64 - addr_bytes as f64) / n as f64,
        mem as f64 / n as f64,
        id_bytes as f64 / n as f64,
        addr_bytes as f64 / n as f64,
        rps / base_rps,
        drain_secs / secs,
        registered as f64 / warm_secs,
        (stream - T0) as f64 / H as f64,
        ev.join(","),
        counts.registered,
        counts.silent_noticed,
        counts.deregistered,
        counts.unregistered_contact,
    );
}
