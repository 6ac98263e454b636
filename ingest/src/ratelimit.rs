//! Per-device rate limits with bounded memory.
//!
//! The limiting is `governor`'s keyed GCRA limiter (the same decisions as a token bucket of
//! `burst` tokens refilled at `rate` per second). Its per-device states live in `Buckets`:
//! sharded maps, each holding at most its share of `max_entries`. A state idle long enough to
//! have refilled completely is indistinguishable from a missing one, so [`RateLimiter::sweep`]
//! drops those (`governor`'s `retain_recent`); when a new device arrives at a shard that is
//! still full, the shard drops its refilled states then and there and, if still full, all of
//! its states (which only makes the limit more lenient for a moment, never stricter).

use governor::clock::{Clock, MonotonicClock, Reference};
use governor::nanos::Nanos;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, middleware::NoOpMiddleware};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const SHARDS: usize = 32;

/// Rate limits keyed by device; `C` is the clock (a fake one in tests).
pub struct RateLimiter<C: Clock = MonotonicClock> {
    /// `None` when limiting is disabled.
    limiter: Option<Limiter<C>>,
    hasher: RandomState,
}

type Limiter<C> = governor::RateLimiter<u64, Buckets<C>, C, NoOpMiddleware<<C as Clock>::Instant>>;

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once; `rate == 0` disables limiting.
    /// At most about `max_entries` devices are remembered.
    pub fn new(rate: f64, burst: u32, max_entries: usize) -> RateLimiter {
        RateLimiter::with_clock(rate, burst, max_entries, MonotonicClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// [`RateLimiter::new`] on another clock.
    pub fn with_clock(rate: f64, burst: u32, max_entries: usize, clock: C) -> RateLimiter<C> {
        let limiter = (rate > 0.0).then(|| limiter(quota(rate, burst), max_entries, clock));
        RateLimiter {
            limiter,
            hasher: RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    fn key(&self, person: &str, device: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        person.hash(&mut h);
        device.hash(&mut h);
        h.finish()
    }

    /// Takes one token for the device; `Err(wait)` when it must wait before retrying.
    pub fn check(&self, person: &str, device: &str) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&self.key(person, device))
            .map_err(|not_until| not_until.wait_time_from(l.clock().now()))
    }

    /// Drops every state that has refilled completely. `governor` reads its own clock, so
    /// `_now` is not used (the parameter stays for the service's sweeper task).
    pub fn sweep(&self, _now: Instant) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
        }
    }

    /// States held, for tests.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, Limiter::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A limiter of `quota` remembering at most about `max_entries` keys.
fn limiter<C: Clock + Clone>(quota: Quota, max_entries: usize, clock: C) -> Limiter<C> {
    let buckets = Buckets {
        shards: (0..SHARDS)
            .map(|_| HashMapStateStore::new(HashMap::default()))
            .collect(),
        max_per_shard: (max_entries / SHARDS).max(16),
        // Read just before the limiter reads its own start: ages computed from it are at most
        // that instant larger (more lenient), never smaller.
        start: clock.now(),
        period: quota.replenish_interval().into(),
        clock: clock.clone(),
    };
    governor::RateLimiter::new(quota, buckets, clock)
}

/// `rate` per second with bursts of `burst`. The period of one token is capped where
/// `governor`'s arithmetic (nanoseconds in a `u64`, times the burst) would overflow; such a
/// rate (one token in decades) is the same as none refilled.
fn quota(rate: f64, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let longest = Duration::from_nanos(u64::MAX / 4 / u64::from(burst.get()));
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(longest)
        .clamp(Duration::from_nanos(1), longest);
    Quota::with_period(period)
        .expect("the period is at least 1 ns")
        .allow_burst(burst)
}

/// `governor`'s per-key states, in `SHARDS` maps of at most `max_per_shard` entries.
struct Buckets<C: Clock> {
    shards: Vec<HashMapStateStore<u64>>,
    max_per_shard: usize,
    /// The limiter's clock, its start and its period: what `retain_recent` needs to tell a
    /// refilled state, for sweeping one full shard instead of all of them.
    clock: C,
    start: C::Instant,
    period: Nanos,
}

impl<C: Clock> Buckets<C> {
    fn shard(&self, key: u64) -> &HashMapStateStore<u64> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// States below this are refilled: `governor`'s `retain_recent` threshold, now.
    fn refilled_below(&self) -> Nanos {
        self.clock
            .now()
            .duration_since(self.start)
            .saturating_sub(self.period)
    }
}

impl<C: Clock> StateStore for Buckets<C> {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shard = self.shard(*key);
        let mut map = shard.lock();
        if map.len() >= self.max_per_shard && !map.contains_key(key) {
            drop(map);
            ShrinkableKeyedStateStore::retain_recent(shard, self.refilled_below());
            map = shard.lock();
            if map.len() >= self.max_per_shard {
                map.clear();
            }
        }
        map.entry(*key)
            .or_default()
            .measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl<C: Clock> ShrinkableKeyedStateStore<u64> for Buckets<C> {
    fn retain_recent(&self, drop_below: Nanos) {
        for s in &self.shards {
            s.retain_recent(drop_below);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(ShrinkableKeyedStateStore::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(ShrinkableKeyedStateStore::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_refill() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(2.0, 3, 1000, clock.clone());
        for _ in 0..3 {
            assert!(r.check("p", "d").is_ok());
        }
        let wait = r.check("p", "d").unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another device of the same person has its own bucket.
        assert!(r.check("p", "d2").is_ok());
        clock.advance(Duration::from_millis(500));
        assert!(r.check("p", "d").is_ok());
        assert!(r.check("p", "d").is_err());
    }

    #[test]
    fn disabled_when_rate_is_zero() {
        let r = RateLimiter::new(0.0, 1, 10);
        for _ in 0..100 {
            assert!(r.check("p", "d").is_ok());
        }
        assert!(r.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(1.0, 1, 32 * 16, clock.clone());
        for i in 0..100_000 {
            let _ = r.check("p", &i.to_string());
        }
        assert!(r.len() <= 32 * 16, "{}", r.len());
        clock.advance(Duration::from_secs(2));
        r.sweep(Instant::now());
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_shard_drops_its_refilled_states_first_then_everything() {
        let clock = FakeRelativeClock::default();
        // 16 states per shard; keys that are multiples of SHARDS all go to shard 0.
        let l = limiter(quota(1.0, 1), SHARDS * 16, clock.clone());
        let key = |i: u64| i * SHARDS as u64;
        for i in 0..16 {
            assert!(l.check_key(&key(i)).is_ok());
        }
        clock.advance(Duration::from_secs(1));
        assert!(l.check_key(&key(0)).is_ok());
        clock.advance(Duration::from_secs(1));
        // Keys 1..16 have refilled, key 0 (seen a second later) has not: a new key drops
        // only the refilled ones.
        assert!(l.check_key(&key(100)).is_ok());
        assert_eq!(l.len(), 2);
        for i in 0..14 {
            assert!(l.check_key(&key(200 + i)).is_ok());
        }
        assert_eq!(l.len(), 16);
        // Nothing refilled: the full shard is cleared for the next new key.
        assert!(l.check_key(&key(300)).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        for (rate, burst) in [(1e-300, u32::MAX), (1e-9, 1), (1e300, 0), (f64::MAX, 5)] {
            let r = RateLimiter::new(rate, burst, 100);
            assert!(r.check("p", "d").is_ok(), "{rate} {burst}");
            r.sweep(Instant::now());
        }
    }
}
