//! When to try the gateway again after a failed connection attempt: an
//! exponential backoff that doubles as a circuit breaker. While it is open,
//! requests are answered at once (503) instead of each waiting for a
//! connect timeout; when it expires, the next request tries once (the pool
//! lets one attempt run at a time) and closes it on success. Time is passed
//! in (sans-IO).

use std::time::{Duration, Instant};

/// First wait after a failure.
const BASE: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Breaker {
    /// May an attempt start now?
    pub fn allows(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// How long until the next attempt may start (zero: now).
    pub fn wait(&self, now: Instant) -> Duration {
        self.retry_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// An attempt failed: wait twice as long as last time (at most [`MAX`]),
    /// less a little jitter so that many sidecars do not retry in step.
    pub fn failed(&mut self, now: Instant, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let delay = BASE.saturating_mul(1 << exp).min(MAX);
        let jitter = jitter.clamp(0.0, 1.0);
        let delay = delay.mul_f64(1.0 - 0.2 * jitter);
        self.retry_at = Some(now + delay);
    }

    /// A connection was opened: closed again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    pub fn is_open(&self, now: Instant) -> bool {
        !self.allows(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_the_cap_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(b.allows(t0));
        b.failed(t0, 0.0);
        assert!(!b.allows(t0));
        assert_eq!(b.wait(t0), BASE);
        assert!(b.allows(t0 + BASE));
        b.failed(t0, 0.0);
        assert_eq!(b.wait(t0), BASE * 2);
        for _ in 0..40 {
            b.failed(t0, 0.0);
        }
        assert_eq!(b.wait(t0), MAX);
        b.failed(t0, 1.0);
        assert_eq!(b.wait(t0), MAX.mul_f64(0.8));
        b.succeeded();
        assert!(b.allows(t0));
        assert!(!b.is_open(t0));
    }
}
