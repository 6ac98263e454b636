//! `e2e_bench` — sustained pings per second through ingest → Kafka → processor → sink →
//! ClickHouse, everything on this machine, with the release binaries.
//!
//! ```text
//! cargo build --release --bins
//! cargo run --release -p e2e --bin e2e_bench -- --duration 60s --persons 20000
//! ```
//! Load: `--concurrency` closed-loop clients, each request a batch of `--batch` pings of a random
//! person. Measured:
//! - pings acknowledged per second, and *sustained* pings per second = acknowledged pings / time
//!   from the start until the last of them is visible in ClickHouse;
//! - request → row visible in ClickHouse (p50/p99), from marker pings sent every 250 ms and
//!   polled for;
//! - deadline → event row visible (p50/p99), from probe persons that register and fall silent:
//!   their `silence_notice` row's `at_ms` is the deadline;
//! - CPU seconds and peak RSS of each service process (`/proc`), and of Kafka and ClickHouse.
//!
//! The last line of stdout is one JSON object with all figures.

use anyhow::{Context, Result};
use clap::Parser;
use common::config::parse_duration;
use common::record::now_millis;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use testkit::procstat;
use testkit::{Service, Stack};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "e2e_bench",
    about = "end-to-end throughput and latency of lastseen"
)]
struct Args {
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 20_000)]
    persons: usize,
    /// Pings per request.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Partitions of the topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// policy.notice_after during the bench (deadline → event is measured on it).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    notice: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if std::env::var_os("LASTSEEN_BIN_DIR").is_none() && !cfg!(debug_assertions) {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
        // SAFETY: set before the runtime (and any other thread) exists; `Stack` reads it later.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("LASTSEEN_BIN_DIR", &dir)
        };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench(a: Args) -> Result<()> {
    eprintln!(
        "e2e_bench: binaries from {}",
        testkit::stack::bin_dir().display()
    );
    let notice = format!("{}ms", a.notice.as_millis());
    let dereg = format!("{}ms", a.notice.as_millis() * 2);
    let mut stack = Stack::new(
        "bench",
        a.partitions,
        &[
            ("LASTSEEN_POLICY__NOTICE_AFTER", &notice),
            ("LASTSEEN_POLICY__DEREGISTER_AFTER", &dereg),
            ("LASTSEEN_LOG__LEVEL", "warn"),
        ],
    )
    .await?;
    stack.start_all().await?;
    let ch = stack.clickhouse();
    let pid = |comm: &str| procstat::children_named(comm).first().copied();
    let pids: Vec<(&str, Option<u32>)> = ["ingest", "processor", "sink"]
        .iter()
        .map(|s| (*s, pid(s)))
        .collect();
    let shared: Vec<(&str, Option<u32>)> = vec![
        ("kafka", procstat::shared_pid("kafka")),
        ("clickhouse", procstat::shared_pid("clickhouse")),
    ];
    let cpu_before: Vec<f64> = pids
        .iter()
        .chain(shared.iter())
        .map(|(_, p)| p.and_then(procstat::usage).map(|u| u.cpu_s).unwrap_or(0.0))
        .collect();

    let tokens: Arc<Vec<String>> = Arc::new(
        (0..a.persons)
            .map(|i| testkit::token(&format!("bp-{i}"), "phone"))
            .collect(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/v1/pings", stack.ingest_url);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Each person's device times strictly increase: one counter per person.
    let t_init = now_millis() as u64 - 60_000;
    let last_ts: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.persons).map(|_| AtomicU64::new(t_init)).collect());
    let start = Instant::now();
    let end = start + a.duration;
    let mut clients = Vec::new();
    for c in 0..a.concurrency {
        let (http, url, tokens, stop, acked, failed, last_ts) = (
            http.clone(),
            url.clone(),
            tokens.clone(),
            stop.clone(),
            acked.clone(),
            failed.clone(),
            last_ts.clone(),
        );
        let batch = a.batch;
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            while Instant::now() < end && !stop.load(Relaxed) {
                let i = rng.random_range(0..tokens.len());
                let first = last_ts[i].fetch_add(batch as u64, Relaxed);
                let pings: Vec<serde_json::Value> = (0..batch)
                    .map(|k| serde_json::json!({"ts": first + k as u64, "lat": 55.7, "lon": 37.6}))
                    .collect();
                let body = serde_json::json!({ "pings": pings });
                match http
                    .post(&url)
                    .bearer_auth(&tokens[i])
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        acked.fetch_add(batch as u64, Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }

    // Markers: request → row visible.
    let visible: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut markers = Vec::new();
    let marker_token = testkit::token("bench-marker", "phone");
    let mut n = 0u64;
    // Probes: deadline → event visible.
    let events: Arc<Mutex<Vec<i64>>> = Arc::default();
    let probe_until = end - a.notice.min(a.duration) - Duration::from_secs(2).min(a.duration / 4);
    let mut probes = Vec::new();
    let mut next_probe = Instant::now();
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        n += 1;
        let (mhttp, url, token, mch, visible) = (
            http.clone(),
            url.clone(),
            marker_token.clone(),
            ch.clone(),
            visible.clone(),
        );
        markers.push(tokio::spawn(async move {
            let (http, ch) = (mhttp, mch);
            let ts = now_millis();
            let sent = Instant::now();
            let body = serde_json::json!({"pings": [{"ts": ts, "lat": 1.0, "lon": 2.0}]});
            let ok = matches!(http.post(&url).bearer_auth(&token).json(&body).send().await, Ok(r) if r.status() == 202);
            if !ok {
                return;
            }
            let q = format!("SELECT count() FROM pings WHERE person_id = 'bench-marker' AND device_ts_ms = {ts}");
            while sent.elapsed() < Duration::from_secs(120) {
                if ch.count(&q).await.unwrap_or(0) > 0 {
                    visible.lock().await.push(sent.elapsed().as_millis() as i64);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
        if Instant::now() >= next_probe && Instant::now() < probe_until {
            next_probe += Duration::from_secs(1);
            let (http, stack_url, ch, events) = (
                http.clone(),
                stack.ingest_url.clone(),
                ch.clone(),
                events.clone(),
            );
            let id = format!("bench-probe-{n}");
            let token = testkit::token(&id, "phone");
            let wait = a.notice + Duration::from_secs(90);
            probes.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{stack_url}/v1/registrations"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"address": "Probe 1"}))
                    .send()
                    .await;
                if !matches!(r, Ok(r) if r.status() == 202) {
                    return;
                }
                let q = format!(
                    "SELECT at_ms FROM person_events WHERE person_id = '{id}' AND kind = 'silence_notice' LIMIT 1"
                );
                let t = Instant::now();
                while t.elapsed() < wait {
                    if let Ok(s) = ch.query(&q).await {
                        if let Ok(at) = s.trim().parse::<i64>() {
                            events.lock().await.push(now_millis() - at);
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "e2e_bench {:>4.0}s: acked pings {} ({:.0}/s), failed requests {}",
                start.elapsed().as_secs_f64(),
                acked.load(Relaxed),
                acked.load(Relaxed) as f64 / start.elapsed().as_secs_f64(),
                failed.load(Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for c in clients {
        c.await?;
    }
    let load_s = start.elapsed().as_secs_f64();
    let total = acked.load(Relaxed);
    eprintln!(
        "e2e_bench: load done: {total} pings acknowledged in {load_s:.1}s; waiting for ClickHouse"
    );
    // Drain: every acknowledged load ping visible (raw count; retried duplicates only add).
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    let mut stored = 0;
    while Instant::now() < drain_deadline {
        stored = ch
            .count("SELECT count() FROM pings WHERE person_id LIKE 'bp-%'")
            .await
            .unwrap_or(0);
        if stored >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_visible_s = start.elapsed().as_secs_f64();
    for m in markers {
        let _ = m.await;
    }
    for p in probes {
        let _ = p.await;
    }
    let usage: Vec<serde_json::Value> = pids
        .iter()
        .chain(shared.iter())
        .zip(cpu_before.iter())
        .map(|((name, p), before)| {
            let u = p.and_then(procstat::usage).unwrap_or_default();
            serde_json::json!({"name": name, "cpu_s": ((u.cpu_s - before) * 10.0).round() / 10.0,
                "cpu_cores": ((u.cpu_s - before) / all_visible_s * 100.0).round() / 100.0,
                "max_rss_mib": u.max_rss_kib / 1024})
        })
        .collect();
    let final_rows = ch
        .count("SELECT count() FROM pings FINAL WHERE person_id LIKE 'bp-%'")
        .await
        .unwrap_or(0);
    let events_total = ch
        .count("SELECT count() FROM person_events")
        .await
        .unwrap_or(0);
    let mut vis = visible.lock().await.clone();
    let mut ev = events.lock().await.clone();
    let json = serde_json::json!({
        "bench": "e2e",
        "date": chrono_like_now(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "duration_s": a.duration.as_secs_f64(),
        "persons": a.persons,
        "batch": a.batch,
        "concurrency": a.concurrency,
        "partitions": a.partitions,
        "acked_pings": total,
        "failed_requests": failed.load(Relaxed),
        "stored_raw": stored,
        "stored_final": final_rows,
        "events": events_total,
        "ingest_pings_per_s": (total as f64 / load_s).round(),
        "sustained_pings_per_s": (total as f64 / all_visible_s).round(),
        "drain_s": ((all_visible_s - load_s) * 10.0).round() / 10.0,
        "ping_visible_ms": {"p50": pct(&mut vis, 0.5), "p99": pct(&mut vis, 0.99), "n": vis.len()},
        "deadline_to_event_ms": {"p50": pct(&mut ev, 0.5), "p99": pct(&mut ev, 0.99), "n": ev.len()},
        "processes": usage,
    });
    stack
        .check_alive()
        .context("a service died during the bench")?;
    for s in [Service::Ingest, Service::Processor, Service::Sink] {
        let _ = stack.terminate(s, 0, Duration::from_secs(10));
    }
    stack.cleanup().await?;
    println!("{json}");
    Ok(())
}

fn chrono_like_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
