//! The processor against the real broker: killed with `kill -9` many times, and scaled out
//! and in mid-stream, its `read_committed` events must equal those of an uninterrupted run of
//! the same stream — none missing, none twice.
//!
//! The uninterrupted run is the pure detector fed each partition's records in order, which is
//! exactly what one never-failing processor computes.

use common::config::{ClockConfig, Config, PolicyConfig};
use common::record::{Contact, PersonEvent, Ping, Registration, Tick};
use processor::detector::Detector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::kafka;
use testkit::{Service, Stack};

const PARTITIONS: i32 = 4;

/// One record to produce: partition, key, JSON payload.
type Record = (i32, Option<String>, Vec<u8>);

fn policy() -> (PolicyConfig, ClockConfig) {
    let c = Config::defaults();
    (
        PolicyConfig {
            notice_after: Duration::from_secs(20),
            deregister_after: Duration::from_secs(40),
        },
        ClockConfig {
            tick_interval: Duration::from_secs(1),
            outage_after: c.clock.outage_after,
        },
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LASTSEEN_POLICY__NOTICE_AFTER", "20s"),
        ("LASTSEEN_POLICY__DEREGISTER_AFTER", "40s"),
        ("LASTSEEN_CLOCK__TICK_INTERVAL", "1s"),
    ]
}

/// A synthetic stream: `persons` people over `seconds` of server time with ticks every
/// second, registrations, address changes, silences of every length, unregistered pingers,
/// and one platform outage (no records at all for 90 s). Returns chunks of
/// `(partition, key, payload)` in production order, one chunk per `chunk_secs`.
fn stream(seed: u64, persons: usize, seconds: i64, chunk_secs: i64) -> Vec<Vec<Record>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = 1_750_000_000_000i64;
    let ids: Vec<String> = (0..persons).map(|i| format!("person-{seed}-{i}")).collect();
    let part = |id: &str| (xxhash(id) % PARTITIONS as u64) as i32;
    // Each person: registered?, ping probability per second, silent window.
    let plans: Vec<(bool, f64, i64, i64)> = (0..persons)
        .map(|_| {
            let registered = rng.random_bool(0.85);
            let rate = rng.random_range(0.05..0.5);
            let silent_from = rng.random_range(0..seconds);
            let silent_len = rng.random_range(0..70);
            (registered, rate, silent_from, silent_len)
        })
        .collect();
    let (outage_from, outage_to) = (seconds / 2, seconds / 2 + 90);
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    for s in 0..seconds {
        if s >= outage_from && s < outage_to {
            continue;
        }
        let now = t0 + s * 1000;
        for (i, id) in ids.iter().enumerate() {
            let (registered, rate, silent_from, silent_len) = plans[i];
            if s >= silent_from && s < silent_from + silent_len {
                continue;
            }
            let at = now + rng.random_range(0..1000);
            let contact = if registered && (s == 0 || rng.random_bool(0.002)) {
                let address = format!(
                    "Street {} {}",
                    i,
                    if rng.random_bool(0.5) { "A" } else { "B" }
                );
                Contact::Registration(Registration {
                    person_id: id.clone(),
                    device_id: "d".into(),
                    address,
                    lat: None,
                    lon: None,
                    received_at: at,
                })
            } else if rng.random_bool(rate) {
                Contact::Ping(Ping {
                    person_id: id.clone(),
                    device_id: "d".into(),
                    device_ts: at - 500,
                    lat: 55.7,
                    lon: 37.6,
                    accuracy_m: None,
                    received_at: at,
                })
            } else {
                continue;
            };
            chunk.push((
                part(id),
                Some(id.clone()),
                serde_json::to_vec(&contact).unwrap(),
            ));
        }
        for p in 0..PARTITIONS {
            let tick = Contact::Tick(Tick {
                received_at: now + 999,
                source: "test".into(),
            });
            chunk.push((p, None, serde_json::to_vec(&tick).unwrap()));
        }
        if (s + 1) % chunk_secs == 0 {
            chunks.push(std::mem::take(&mut chunk));
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

fn xxhash(s: &str) -> u64 {
    // Any stable hash will do; the test chooses partitions itself.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The events of an uninterrupted run: one detector per partition, records in order.
fn reference(chunks: &[Vec<Record>]) -> BTreeMap<String, usize> {
    let (policy, clock) = policy();
    let mut detectors: BTreeMap<i32, Detector> = BTreeMap::new();
    let mut out = Vec::new();
    for (p, _, payload) in chunks.iter().flatten() {
        let d = detectors
            .entry(*p)
            .or_insert_with(|| Detector::new(policy, clock).unwrap());
        let c: Contact = serde_json::from_slice(payload).unwrap();
        d.apply(&c, &mut out);
    }
    multiset(out.iter().map(|e| serde_json::to_string(e).unwrap()))
}

fn multiset(items: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

async fn committed_events(stack: &Stack) -> anyhow::Result<BTreeMap<String, usize>> {
    let raw = kafka::read_committed(&stack.events_topic).await?;
    // Re-serialise through the type so field order cannot differ.
    Ok(multiset(raw.iter().map(|m| {
        let e: PersonEvent = m.json();
        serde_json::to_string(&e).unwrap()
    })))
}

/// Waits until the processor group committed the whole contacts topic, then requires the
/// committed events to equal `want` exactly.
async fn caught_up_and_equal(
    stack: &Stack,
    want: &BTreeMap<String, usize>,
    timeout: Duration,
) -> anyhow::Result<()> {
    kafka::wait_group_caught_up(
        &format!("{}-processor", stack.name),
        &stack.contacts_topic,
        timeout,
    )
    .await?;
    assert_same(want, &committed_events(stack).await?);
    Ok(())
}

fn assert_same(want: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) {
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k) < Some(n))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k) < Some(n))
        .take(5)
        .collect();
    let total: usize = want.values().sum();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "of {total} expected events: missing (first 5) {missing:#?}\nextra or duplicated (first 5) {extra:#?}"
    );
    assert!(
        total > 100,
        "the stream should produce many events, got {total}"
    );
    let kinds: std::collections::BTreeSet<_> = want
        .keys()
        .map(|k| serde_json::from_str::<PersonEvent>(k).unwrap().kind)
        .collect();
    assert!(
        kinds.len() >= 5,
        "expected (nearly) every kind of event, got {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_twenty_times_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::new("proc_crash", PARTITIONS, &env()).await?;
    let chunks = stream(7, 1500, 400, 10);
    let want = reference(&chunks);
    let mut rng = StdRng::seed_from_u64(99);
    stack.start(Service::Processor)?;
    let url = stack.processor_url.clone();
    stack.wait_ready(&url, Duration::from_secs(60)).await?;
    let mut kills = 0;
    for chunk in &chunks {
        kafka::produce_all(&stack.contacts_topic, chunk).await?;
        if kills < 24 {
            // Let it work a random while (often mid-transaction), then kill -9 and restart.
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..1500))).await;
            stack.kill(Service::Processor, 0);
            kills += 1;
            stack.start(Service::Processor)?;
        }
    }
    assert!(kills >= 20, "only {kills} kills");
    stack.wait_ready(&url, Duration::from_secs(60)).await?;
    caught_up_and_equal(&stack, &want, Duration::from_secs(180)).await?;
    stack.cleanup().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_out_and_in_mid_stream_keeps_events_exact() -> anyhow::Result<()> {
    let mut stack = Stack::new("proc_scale", PARTITIONS, &env()).await?;
    let chunks = stream(11, 1500, 300, 10);
    let want = reference(&chunks);
    stack.start_instance(Service::Processor, 0)?;
    let n = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        kafka::produce_all(&stack.contacts_topic, chunk).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i == n / 4 {
            stack.start_instance(Service::Processor, 1)?;
        }
        if i == n / 2 {
            stack.start_instance(Service::Processor, 2)?;
        }
        if i == 3 * n / 4 {
            stack.kill(Service::Processor, 1);
        }
    }
    caught_up_and_equal(&stack, &want, Duration::from_secs(180)).await?;
    stack.check_alive()?;
    stack.cleanup().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_open_transaction_and_exits() -> anyhow::Result<()> {
    // A commit interval far longer than the test: only the shutdown can commit anything.
    let mut vars = env();
    vars.push(("LASTSEEN_PROCESSOR__COMMIT_INTERVAL", "10m"));
    let mut stack = Stack::new("proc_sigterm", PARTITIONS, &vars).await?;
    let chunks = stream(13, 300, 60, 60);
    let want = reference(&chunks);
    stack.start(Service::Processor)?;
    let url = stack.processor_url.clone();
    stack.wait_ready(&url, Duration::from_secs(60)).await?;
    for chunk in &chunks {
        kafka::produce_all(&stack.contacts_topic, chunk).await?;
    }
    // Give it time to consume; what it processed must be committed on SIGTERM.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.terminate(Service::Processor, 0, Duration::from_secs(30))?;
    // Not restarted: everything must already be committed by the graceful shutdown.
    kafka::wait_group_caught_up(
        &format!("{}-processor", stack.name),
        &stack.contacts_topic,
        Duration::from_secs(5),
    )
    .await?;
    let got = committed_events(&stack).await?;
    let missing: usize = want
        .iter()
        .map(|(k, n)| n.saturating_sub(*got.get(k).unwrap_or(&0)))
        .sum();
    let extra: usize = got
        .iter()
        .map(|(k, n)| n.saturating_sub(*want.get(k).unwrap_or(&0)))
        .sum();
    assert_eq!((missing, extra), (0, 0), "events after a graceful shutdown");
    stack.cleanup().await?;
    Ok(())
}
