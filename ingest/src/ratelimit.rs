//! Per-device token buckets with bounded memory.
//!
//! Buckets live in sharded maps. A bucket idle long enough to have refilled completely is
//! indistinguishable from a missing one, so [`RateLimiter::sweep`] drops those; when a shard
//! still exceeds its share of `max_entries`, its buckets are all dropped (which only makes
//! the limit more lenient for a moment, never stricter).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by device.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once; `rate == 0` disables limiting.
    pub fn new(rate: f64, burst: u32, max_entries: usize) -> RateLimiter {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            max_per_shard: (max_entries / SHARDS).max(16),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    fn key(&self, person: &str, device: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        person.hash(&mut h);
        device.hash(&mut h);
        h.finish()
    }

    /// Takes one token for the device; `Err(wait)` when it must wait before retrying.
    pub fn check(&self, person: &str, device: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let key = self.key(person, device);
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_per_shard && !map.contains_key(&key) {
            self.sweep_shard(&mut map, now);
            if map.len() >= self.max_per_shard {
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    fn sweep_shard(&self, map: &mut HashMap<u64, Bucket>, now: Instant) {
        let full_after = self.burst / self.rate;
        map.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full_after);
    }

    /// Drops every bucket that has refilled completely.
    pub fn sweep(&self, now: Instant) {
        if !self.enabled() {
            return;
        }
        for s in &self.shards {
            let mut map = s.lock().unwrap_or_else(|p| p.into_inner());
            self.sweep_shard(&mut map, now);
        }
    }

    /// Buckets held, for tests.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::new(2.0, 3, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check("p", "d", t0).is_ok());
        }
        let wait = r.check("p", "d", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another device of the same person has its own bucket.
        assert!(r.check("p", "d2", t0).is_ok());
        assert!(r.check("p", "d", t0 + Duration::from_millis(500)).is_ok());
        assert!(r.check("p", "d", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn disabled_when_rate_is_zero() {
        let r = RateLimiter::new(0.0, 1, 10);
        for _ in 0..100 {
            assert!(r.check("p", "d", Instant::now()).is_ok());
        }
        assert!(r.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let r = RateLimiter::new(1.0, 1, 32 * 16);
        let t0 = Instant::now();
        for i in 0..100_000 {
            let _ = r.check("p", &i.to_string(), t0);
        }
        assert!(r.len() <= 32 * 16, "{}", r.len());
        r.sweep(t0 + Duration::from_secs(2));
        assert!(r.is_empty());
    }
}
