//! The fleet simulator: persons behaving like the phone app, over HTTP to ingest.
//!
//! Every person is one task that sends one request at a time (like one phone), so the order in
//! which its requests are acknowledged is the order the server stamped them. A request that fails
//! (connection refused, 5xx, timeout) is retried with the identical body until it is acknowledged,
//! as a phone would; a retried ping keeps its device time, so a copy that landed anyway collapses
//! downstream. Only acknowledged requests count. Invalid requests go out besides the valid ones
//! and must be rejected with 4xx.
//!
//! The schedule keeps every silence far from the thresholds (see [`SimConfig::margin_ms`]), so the
//! expected events are unambiguous without knowing the server's clock exactly.

use super::model::{self, Contact, Failure, Faults, Horizon, Policy};
use super::truth::{PersonTruth, RunConfig, Stats, Truth};
use anyhow::{Result, bail};
use common::record::{Millis, now_millis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How the fleet behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub ingest_url: String,
    pub secret: String,
    pub persons: usize,
    /// How long persons keep acting; then in-flight requests are finished.
    pub duration: Duration,
    /// Longest time to keep retrying unacknowledged requests after `duration`.
    pub drain: Duration,
    pub seed: u64,
    pub policy: Policy,
    /// Every planned silence is at least this far from each threshold.
    pub margin_ms: i64,
    /// Mean interval between a regular person's uploads (jittered ±25 %).
    pub ping_interval_ms: i64,
    /// Pings per upload: 1..=max_batch.
    pub max_batch: usize,
    /// Share of persons that go silent now and then.
    pub silent_share: f64,
    /// Share of persons who never register at first (some register later).
    pub unregistered_share: f64,
    /// Per action: probability of an extra invalid request.
    pub invalid_share: f64,
    /// Per upload: probability that the same body is sent twice (a retry after a lost answer).
    pub duplicate_share: f64,
    /// Per action: probability of an address change.
    pub address_change_share: f64,
    /// No new actions once this many requests were sent.
    pub max_requests: u64,
    /// Person ids are `<id_prefix>-<n>`.
    pub id_prefix: String,
    /// Progress lines on stderr every 2 s.
    pub progress: bool,
}

impl SimConfig {
    pub fn new(ingest_url: &str, secret: &str, policy: Policy) -> SimConfig {
        SimConfig {
            ingest_url: ingest_url.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            persons: 200,
            duration: Duration::from_secs(60),
            drain: Duration::from_secs(60),
            seed: 1,
            policy,
            margin_ms: 2000,
            ping_interval_ms: 2000,
            max_batch: 5,
            silent_share: 0.4,
            unregistered_share: 0.05,
            invalid_share: 0.02,
            duplicate_share: 0.03,
            address_change_share: 0.01,
            max_requests: 10_000_000,
            id_prefix: "fleet".into(),
            progress: true,
        }
    }

    /// Problems with the schedule: silences could not be kept away from the thresholds.
    pub fn validate(&self) -> Result<()> {
        let p = &self.policy;
        let mut problems = Vec::new();
        if self.ping_interval_ms * 5 / 4 + 500 > p.notice_ms - self.margin_ms {
            problems.push(format!(
                "ping interval {} ms (+25 % jitter) must stay {} ms (margin) below notice_after {} ms",
                self.ping_interval_ms, self.margin_ms, p.notice_ms
            ));
        }
        if p.deregister_ms - p.notice_ms < 2 * self.margin_ms + 1000 {
            problems.push(format!(
                "deregister_after - notice_after ({} ms) must leave room for a silence {} ms from both",
                p.deregister_ms - p.notice_ms,
                self.margin_ms
            ));
        }
        if self.max_batch == 0 || self.max_batch > 1000 {
            problems.push("max_batch must be 1..=1000".into());
        }
        if !problems.is_empty() {
            bail!("fleet schedule: {}", problems.join("; "));
        }
        Ok(())
    }

    fn run_config(&self) -> RunConfig {
        RunConfig {
            ingest_url: self.ingest_url.clone(),
            persons: self.persons,
            duration_ms: self.duration.as_millis() as i64,
            seed: self.seed,
            policy: self.policy,
            margin_ms: self.margin_ms,
            ping_interval_ms: self.ping_interval_ms,
            max_batch: self.max_batch,
            invalid_share: self.invalid_share,
            duplicate_share: self.duplicate_share,
            max_requests: self.max_requests,
            id_prefix: self.id_prefix.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    acked_requests: AtomicU64,
    acked_pings: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    invalid_sent: AtomicU64,
    invalid_rejected: AtomicU64,
    invalid_accepted: AtomicU64,
    invalid_unanswered: AtomicU64,
    silences: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    cfg: SimConfig,
    http: reqwest::Client,
    stop_at: Instant,
    hard_stop: Instant,
    failures: Mutex<Vec<Failure>>,
    by_status: Mutex<BTreeMap<String, u64>>,
    c: Counters,
}

impl Shared {
    fn stopping(&self) -> bool {
        Instant::now() >= self.stop_at || self.c.requests.load(Relaxed) >= self.cfg.max_requests
    }
    fn status(&self, s: &str) {
        *self
            .by_status
            .lock()
            .unwrap()
            .entry(s.to_string())
            .or_insert(0) += 1;
    }
}

#[derive(Debug, Clone)]
enum Body {
    Pings(Vec<(Millis, f64, f64)>),
    Registration(String),
}

impl Body {
    fn json(&self) -> (String, serde_json::Value) {
        match self {
            Body::Pings(ps) => (
                "/v1/pings".into(),
                serde_json::json!({"pings": ps.iter().map(|(ts, lat, lon)| serde_json::json!({
                    "ts": ts, "lat": lat, "lon": lon, "accuracy_m": 12.5
                })).collect::<Vec<_>>()}),
            ),
            Body::Registration(a) => (
                "/v1/registrations".into(),
                serde_json::json!({"address": a}),
            ),
        }
    }
}

/// The silence classes of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// Resumes before the notice.
    Short,
    /// Resumes between notice and deregistration.
    Mid,
    /// Resumes after deregistration.
    Long,
}

struct Person {
    sh: Arc<Shared>,
    id: String,
    device: String,
    token: String,
    rng: StdRng,
    last_ts: Millis,
    truth: PersonTruth,
    registered_once: bool,
    address_no: u32,
    plan: Vec<String>,
}

impl Person {
    fn next_ts(&mut self, want: Millis) -> Millis {
        let ts = want.max(self.last_ts + 1);
        self.last_ts = ts;
        ts
    }

    fn coords(&mut self) -> (f64, f64) {
        (
            55.75 + self.rng.random_range(-0.2..0.2),
            37.6 + self.rng.random_range(-0.3..0.3),
        )
    }

    fn address(&mut self) -> String {
        self.address_no += 1;
        format!(
            "{} street {}, flat {}",
            self.id,
            self.address_no,
            self.rng.random_range(1..300)
        )
    }

    /// Sends `body` until it is acknowledged (or the run's hard stop); records the contact.
    async fn deliver(&mut self, body: &Body) -> bool {
        let (path, json) = body.json();
        let url = format!("{}{}", self.sh.cfg.ingest_url, path);
        // The earliest attempt whose records may have reached Kafka: the acknowledged one, or an
        // earlier one that failed slowly (timeout, 503 after waiting for Kafka, connection lost
        // mid-request). Refused connections and immediate 503s produced nothing.
        let mut lo: Option<Millis> = None;
        let mut backoff = Duration::from_millis(200);
        let mut first = true;
        loop {
            if !first {
                self.sh.c.retries.fetch_add(1, Relaxed);
            }
            first = false;
            self.sh.c.requests.fetch_add(1, Relaxed);
            let sent = now_millis();
            let r = self
                .sh
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(&json)
                .send()
                .await;
            let failed = now_millis();
            let wait = match r {
                Ok(r) if r.status().as_u16() == 202 => {
                    self.sh.status("202");
                    self.sh.c.acked_requests.fetch_add(1, Relaxed);
                    // A slow answer is a platform that stalled: if every request of a partition
                    // waits like this one (all persons retrying together after an outage) and
                    // ticks wait for their acknowledgements, stream time can jump by more than
                    // `outage_after` with nothing failing, and the processor excludes that gap.
                    // Such a gap is covered by answers slower than half of `outage_after`, so
                    // those count as spans where the platform may have been failing.
                    let ack = now_millis();
                    if ack - sent > self.sh.cfg.policy.outage_after_ms / 2 {
                        self.sh.failures.lock().unwrap().push(Failure {
                            sent,
                            failed: ack,
                            immediate: false,
                        });
                    }
                    let address = match body {
                        Body::Registration(a) => Some(a.clone()),
                        Body::Pings(_) => None,
                    };
                    self.truth.contacts.push(Contact {
                        lo: lo.unwrap_or(sent),
                        hi: now_millis(),
                        address,
                    });
                    if let Body::Pings(ps) = body {
                        self.sh.c.acked_pings.fetch_add(ps.len() as u64, Relaxed);
                        let set = self.truth.pings.entry(self.device.clone()).or_default();
                        set.extend(ps.iter().map(|p| p.0));
                    }
                    return true;
                }
                Ok(r) => {
                    let s = r.status().as_u16();
                    self.sh.status(&s.to_string());
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(Duration::from_secs(1)));
                    if s == 429 {
                        retry_after.unwrap_or(Duration::from_millis(500))
                    } else if (400..500).contains(&s) {
                        // A valid request refused: recorded in by_status ("valid_<code>").
                        self.sh.status(&format!("valid_rejected_{s}"));
                        self.plan.push(format!("valid request refused with {s}"));
                        return false;
                    } else {
                        let immediate = failed - sent < 300;
                        if !immediate {
                            lo.get_or_insert(sent);
                        }
                        self.sh.failures.lock().unwrap().push(Failure {
                            sent,
                            failed,
                            immediate,
                        });
                        retry_after.unwrap_or(backoff)
                    }
                }
                Err(e) => {
                    let key = if e.is_connect() {
                        "connect_error"
                    } else if e.is_timeout() {
                        "timeout"
                    } else {
                        "io_error"
                    };
                    self.sh.status(key);
                    let immediate = e.is_connect() && failed - sent < 300;
                    if !e.is_connect() {
                        lo.get_or_insert(sent);
                    }
                    self.sh.failures.lock().unwrap().push(Failure {
                        sent,
                        failed,
                        immediate,
                    });
                    backoff
                }
            };
            if Instant::now() + wait > self.sh.hard_stop {
                if let Body::Pings(ps) = body {
                    let set = self.truth.unacked.entry(self.device.clone()).or_default();
                    set.extend(ps.iter().map(|p| p.0));
                }
                return false;
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_millis(1000));
        }
    }

    async fn register(&mut self, address: String) {
        if self.deliver(&Body::Registration(address)).await {
            self.registered_once = true;
        }
    }

    async fn upload(&mut self, pings: Vec<(Millis, f64, f64)>) {
        let body = Body::Pings(pings);
        let ok = self.deliver(&body).await;
        if ok && self.rng.random_bool(self.sh.cfg.duplicate_share) {
            self.sh.c.duplicates.fetch_add(1, Relaxed);
            self.deliver(&body).await;
        }
    }

    fn ping_batch(&mut self) -> Vec<(Millis, f64, f64)> {
        let k = self.rng.random_range(1..=self.sh.cfg.max_batch);
        let now = now_millis();
        let step = self.sh.cfg.ping_interval_ms / k as i64;
        (0..k)
            .map(|i| {
                let ts = self.next_ts(now - (k - 1 - i) as i64 * step);
                let (lat, lon) = self.coords();
                (ts, lat, lon)
            })
            .collect()
    }

    /// An invalid request; must be refused with 4xx and never count.
    async fn invalid(&mut self) {
        let sh = self.sh.clone();
        sh.c.invalid_sent.fetch_add(1, Relaxed);
        let url = format!("{}/v1/pings", sh.cfg.ingest_url);
        let now = now_millis();
        let ping = serde_json::json!({"pings": [{"ts": now, "lat": 55.7, "lon": 37.6}]});
        let kind = self.rng.random_range(0..7);
        let req = match kind {
            // Signed with another secret, for a person that must never appear.
            0 => sh
                .http
                .post(&url)
                .bearer_auth(testkit::token_with(
                    "not-the-secret",
                    &format!("ghost-{}", self.id),
                    "ghost",
                ))
                .json(&ping),
            // No token.
            1 => sh.http.post(&url).json(&ping),
            // Latitude out of range.
            2 => sh
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(&serde_json::json!({"pings": [{"ts": now, "lat": 123.0, "lon": 37.6}]})),
            // Empty batch.
            3 => sh
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(&serde_json::json!({"pings": []})),
            // Malformed JSON.
            4 => sh
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .header("content-type", "application/json")
                .body("{\"pings\": [{\"ts\": "),
            // Device time far in the future.
            5 => sh.http.post(&url).bearer_auth(&self.token).json(
                &serde_json::json!({"pings": [{"ts": now + 3_600_000, "lat": 55.7, "lon": 37.6}]}),
            ),
            // Blank address.
            _ => sh
                .http
                .post(format!("{}/v1/registrations", sh.cfg.ingest_url))
                .bearer_auth(&self.token)
                .json(&serde_json::json!({"address": "   "})),
        };
        sh.c.requests.fetch_add(1, Relaxed);
        match req.send().await {
            Ok(r) if r.status().is_client_error() => {
                sh.c.invalid_rejected.fetch_add(1, Relaxed);
                sh.status(&format!("invalid_{}", r.status().as_u16()));
            }
            Ok(r) if r.status().is_success() => {
                sh.c.invalid_accepted.fetch_add(1, Relaxed);
                sh.status(&format!("invalid_accepted_{}", r.status().as_u16()));
                self.plan.push(format!("invalid request #{kind} ACCEPTED"));
            }
            _ => {
                sh.c.invalid_unanswered.fetch_add(1, Relaxed);
            }
        }
    }

    fn silence_len(&mut self, class: Silence) -> i64 {
        let cfg = &self.sh.cfg;
        let (p, m) = (cfg.policy, cfg.margin_ms);
        let (lo, hi) = match class {
            Silence::Short => (cfg.ping_interval_ms * 5 / 4, p.notice_ms - m),
            Silence::Mid => (p.notice_ms + m, p.deregister_ms - m),
            Silence::Long => (p.deregister_ms + m, p.deregister_ms + m + p.notice_ms),
        };
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..hi)
        }
    }

    async fn sleep_interval(&mut self) -> bool {
        let i = self.sh.cfg.ping_interval_ms;
        let d = self.rng.random_range(i * 3 / 4..=i * 5 / 4);
        self.sleep(d).await
    }

    /// Sleeps `ms` unless the run ends first; false if it ended.
    async fn sleep(&mut self, ms: i64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms.max(0) as u64);
        if until >= self.sh.stop_at {
            tokio::time::sleep_until(self.sh.stop_at).await;
            return false;
        }
        tokio::time::sleep_until(until).await;
        !self.sh.stopping()
    }

    async fn live(mut self) -> (String, PersonTruth) {
        let cfg = self.sh.cfg.clone();
        let silent = self.rng.random_bool(cfg.silent_share);
        let unregistered = self.rng.random_bool(cfg.unregistered_share);
        let stagger = self.rng.random_range(0..cfg.ping_interval_ms.max(1));
        self.plan.push(format!(
            "{}{}",
            if unregistered {
                "unregistered"
            } else {
                "registers"
            },
            if silent {
                ", goes silent"
            } else {
                ", pings steadily"
            }
        ));
        let mut alive = self.sleep(stagger).await;
        if alive && !unregistered {
            let a = self.address();
            self.register(a).await;
        }
        let active = |rng: &mut StdRng| {
            rng.random_range(cfg.ping_interval_ms * 2..=cfg.ping_interval_ms * 5)
        };
        let mut next_silence = Instant::now() + Duration::from_millis(active(&mut self.rng) as u64);
        while alive && !self.sh.stopping() {
            if silent && Instant::now() >= next_silence {
                let class = match self.rng.random_range(0..3) {
                    0 => Silence::Short,
                    1 => Silence::Mid,
                    _ => Silence::Long,
                };
                let len = self.silence_len(class);
                self.sh.c.silences.fetch_add(1, Relaxed);
                self.plan.push(format!("silent {class:?} {len} ms"));
                // The silence counts from the last acknowledged contact.
                let from = self.truth.contacts.last().map_or(now_millis(), |c| c.hi);
                if !self.sleep(from + len - now_millis()).await {
                    break;
                }
                // The silence ends now, with the first contact after it.
                let mut contacted = false;
                if class == Silence::Long && self.registered_once && self.rng.random_bool(0.5) {
                    self.plan.push("re-registers".into());
                    let a = self.address();
                    self.register(a).await;
                    contacted = true;
                }
                if self.rng.random_bool(0.5) {
                    // Offline stretch: the pings collected meanwhile arrive in one batch.
                    let n = ((len / cfg.ping_interval_ms.max(1)) as usize).clamp(1, 50);
                    let mut batch = Vec::with_capacity(n);
                    for j in 0..n {
                        let ts = self.next_ts(from + (j as i64 + 1) * len / (n as i64 + 1));
                        let (lat, lon) = self.coords();
                        batch.push((ts, lat, lon));
                    }
                    self.plan.push(format!("uploads {n} offline pings"));
                    self.upload(batch).await;
                } else if !contacted {
                    let b = self.ping_batch();
                    self.upload(b).await;
                }
                next_silence = Instant::now() + Duration::from_millis(active(&mut self.rng) as u64);
            } else {
                let r = self.rng.random::<f64>();
                if r < cfg.invalid_share {
                    self.invalid().await;
                }
                if unregistered && !self.registered_once && self.rng.random_bool(0.05) {
                    self.plan.push("registers late".into());
                    let a = self.address();
                    self.register(a).await;
                } else if self.registered_once && self.rng.random_bool(cfg.address_change_share) {
                    self.plan.push("changes address".into());
                    let a = self.address();
                    self.register(a).await;
                } else {
                    let b = self.ping_batch();
                    self.upload(b).await;
                }
            }
            alive = self.sleep_interval().await;
        }
        // Ping sets: each device time once; an unacknowledged ping acknowledged later is acked.
        for (dev, ts) in self.truth.pings.iter_mut() {
            let set: BTreeSet<Millis> = ts.iter().copied().collect();
            *ts = set.into_iter().collect();
            if let Some(u) = self.truth.unacked.get_mut(dev) {
                u.retain(|t| ts.binary_search(t).is_err());
            }
        }
        self.truth.unacked.retain(|_, v| !v.is_empty());
        self.truth.plan = self.plan.join("; ");
        (self.id, self.truth)
    }
}

/// Runs the fleet and returns the ground truth.
pub async fn run(cfg: SimConfig) -> Result<Truth> {
    cfg.validate()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let start = Instant::now();
    let started_at = now_millis();
    let sh = Arc::new(Shared {
        http,
        stop_at: start + cfg.duration,
        hard_stop: start + cfg.duration + cfg.drain,
        failures: Mutex::new(Vec::new()),
        by_status: Mutex::new(BTreeMap::new()),
        c: Counters::default(),
        cfg: cfg.clone(),
    });
    let progress = {
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(2));
            t.tick().await;
            loop {
                t.tick().await;
                if sh.cfg.progress {
                    let c = &sh.c;
                    eprintln!(
                        "fleet {:>5.1}s: requests {} acked {} pings {} retries {} dup {} invalid {}/{} rejected silences {} failures {}",
                        start.elapsed().as_secs_f64(),
                        c.requests.load(Relaxed),
                        c.acked_requests.load(Relaxed),
                        c.acked_pings.load(Relaxed),
                        c.retries.load(Relaxed),
                        c.duplicates.load(Relaxed),
                        c.invalid_rejected.load(Relaxed),
                        c.invalid_sent.load(Relaxed),
                        c.silences.load(Relaxed),
                        sh.failures.lock().unwrap().len(),
                    );
                }
            }
        })
    };
    let mut tasks = Vec::with_capacity(cfg.persons);
    for i in 0..cfg.persons {
        let id = format!("{}-{i}", cfg.id_prefix);
        let device = format!("{id}-phone");
        let p = Person {
            token: testkit::token_with(&cfg.secret, &id, &device),
            sh: sh.clone(),
            rng: StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
            id,
            device,
            last_ts: 0,
            truth: PersonTruth::default(),
            registered_once: false,
            address_no: 0,
            plan: Vec::new(),
        };
        tasks.push(tokio::spawn(p.live()));
    }
    let mut persons = BTreeMap::new();
    for t in tasks {
        let (id, truth) = t.await?;
        persons.insert(id, truth);
    }
    progress.abort();
    let ended_at = now_millis();
    let failures = sh.failures.lock().unwrap().clone();
    let faults = Faults::from_failures(&failures, 1000, 250);
    for p in persons.values_mut() {
        p.expected = model::expect(
            &p.contacts,
            &faults,
            &cfg.policy,
            Some(Horizon {
                must: ended_at,
                may: ended_at,
            }),
        );
    }
    let c = &sh.c;
    let stats = Stats {
        requests: c.requests.load(Relaxed),
        acknowledged_requests: c.acked_requests.load(Relaxed),
        acknowledged_pings: persons
            .values()
            .map(|p| p.pings.values().map(|v| v.len() as u64).sum::<u64>())
            .sum(),
        duplicate_requests: c.duplicates.load(Relaxed),
        retried_attempts: c.retries.load(Relaxed),
        invalid_sent: c.invalid_sent.load(Relaxed),
        invalid_rejected: c.invalid_rejected.load(Relaxed),
        invalid_accepted: c.invalid_accepted.load(Relaxed),
        invalid_unanswered: c.invalid_unanswered.load(Relaxed),
        by_status: sh.by_status.lock().unwrap().clone(),
    };
    Ok(Truth {
        config: cfg.run_config(),
        started_at,
        ended_at,
        faults,
        stats,
        persons,
    })
}
