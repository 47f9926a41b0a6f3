//! Capped exponential backoff with full jitter: how long a forwarder, an attachment transfer or a
//! webhook pusher waits before it tries a neighbour (or a webhook) again. Its own file so each of
//! them can use it without importing the others.

use std::time::Duration;

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, attempt: 0 }
    }

    /// The next delay: uniformly random in [0, min(max, initial * 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let r = getrandom::u64().unwrap_or(u64::MAX / 2);
        ceiling.mul_f64((r as f64) / (u64::MAX as f64)).max(Duration::from_millis(10))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}
