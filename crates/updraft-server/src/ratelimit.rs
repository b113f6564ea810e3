//! Rate limits: a token bucket per caller (each device, each API token) and
//! per device for the telemetry it adds to the journal (health reports,
//! install events), so that a looping or hostile client slows itself down
//! with `429` and `Retry-After` instead of starving the server or growing
//! its database. The limits are in `updraft_proto::limits`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A rate: `per_hour` tokens refilled evenly, at most `burst` saved up.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_hour: f64,
    pub burst: f64,
}

impl Rate {
    pub fn per_second(n: u32, burst: u32) -> Rate {
        Rate { per_hour: f64::from(n) * 3600.0, burst: f64::from(burst) }
    }
    pub fn per_hour(n: u32) -> Rate {
        Rate { per_hour: f64::from(n), burst: f64::from(n) }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key (`device:ID`, `token:NAME`, `health:ID`...).
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one token from `key`'s bucket, or says in how many seconds one is due.
    pub fn take(&self, key: &str, rate: Rate, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: rate.burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_hour / 3600.0).min(rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = (1.0 - b.tokens) * 3600.0 / rate.per_hour;
            Err(wait_s.ceil().max(1.0) as u64)
        }
    }

    /// Forgets buckets that have refilled (their callers went quiet), so that
    /// memory follows the active callers, not every caller ever seen.
    pub fn prune(&self, now: Instant, full_after: std::time::Duration) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let rate = Rate::per_second(2, 3);
        for _ in 0..3 {
            assert_eq!(l.take("d", rate, t0), Ok(()));
        }
        assert_eq!(l.take("d", rate, t0), Err(1));
        assert_eq!(l.take("d", rate, t0 + std::time::Duration::from_millis(500)), Ok(()));
        assert_eq!(l.take("other", rate, t0), Ok(()), "buckets are per key");
        let hourly = Rate::per_hour(60);
        for _ in 0..60 {
            assert_eq!(l.take("h", hourly, t0), Ok(()));
        }
        assert_eq!(l.take("h", hourly, t0), Err(60), "one report a minute after the burst");
        l.prune(t0 + std::time::Duration::from_secs(3600), std::time::Duration::from_secs(1800));
        assert!(l.buckets.lock().unwrap().is_empty());
    }
}
