//! A token bucket: `rate` tokens per second up to `burst`, refilled lazily from the host's
//! monotonic clock (pass `now_nanos` from the `host.now-nanos` import, or any clock in tests).

/// A token bucket; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate_per_nano: f64,
    burst: f64,
    tokens: f64,
    last: u64,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate_per_sec: f64, burst: f64, now_nanos: u64) -> Self {
        TokenBucket {
            rate_per_nano: rate_per_sec / 1e9,
            burst,
            tokens: burst,
            last: now_nanos,
        }
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64, now_nanos: u64) -> bool {
        let elapsed = now_nanos.saturating_sub(self.last) as f64;
        self.tokens = (self.tokens + elapsed * self.rate_per_nano).min(self.burst);
        self.last = now_nanos.max(self.last);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(10.0, 5.0, 0);
        assert_eq!((0..8).filter(|_| b.take(1.0, 0)).count(), 5, "burst of 5");
        assert!(!b.take(1.0, 50_000_000), "0.5 tokens after 50 ms");
        assert!(b.take(1.0, 100_000_000), "one token after 100 ms");
        assert_eq!(
            (0..100).filter(|_| b.take(1.0, 10_000_000_000)).count(),
            5,
            "refill capped at burst"
        );
        assert!(!b.take(1.0, 5), "a clock going backwards adds nothing");
    }
}
