//! Token-bucket rate limits keyed by API key or client address. Plain code over a clock the
//! caller passes in, so the policy is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `per_second` tokens refill continuously up to `burst`; each request takes one.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(f64::from(per_minute) / 60.0, per_minute)
    }

    /// Takes a token for `key`; Err(how long until one is free) when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.tokens_at(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_one(bucket.tokens))
        }
    }

    /// A bucket's tokens at `now`, refilled since it was last touched.
    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refilled = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        (bucket.tokens + refilled).min(self.burst)
    }

    /// How long until a bucket holding `tokens` has one.
    fn wait_for_one(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((1.0 - tokens) / self.per_second)
    }

    /// Whether `key` has no token left, without taking one.
    pub fn exhausted(&self, key: &str, now: Instant) -> Option<Duration> {
        if self.per_second <= 0.0 {
            return None;
        }
        let buckets = self.buckets.lock().unwrap();
        let tokens = self.tokens_at(buckets.get(key)?, now);
        (tokens < 1.0).then(|| self.wait_for_one(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_tokens_refill() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("k", t0).is_ok());
        }
        let wait = limiter.check("k", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(limiter.check("other", t0).is_ok(), "keys are independent");
        assert!(limiter.check("k", t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check("k", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_means_unlimited_and_exhausted_does_not_take() {
        let off = RateLimiter::new(0.0, 1);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(off.check("k", t0).is_ok());
        }
        let limiter = RateLimiter::per_minute(1);
        assert_eq!(limiter.exhausted("k", t0), None);
        limiter.check("k", t0).unwrap();
        assert!(limiter.exhausted("k", t0).is_some());
        assert!(limiter.exhausted("k", t0).is_some());
    }
}
