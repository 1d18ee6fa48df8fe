//! The delay before a webhook's next attempt: exponential in the failures in a row, capped, and
//! jittered so that many subscriptions failing at once (an endpoint behind them all restarted)
//! do not retry in step.

use std::time::Duration;

/// The delays' bounds (flags `--webhook-retry-min` and `--webhook-retry-max` once subscriptions
/// are managed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure, before jitter.
    pub min: Duration,
    /// No delay is longer, whatever the failures or a `Retry-After` ask for.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` failed attempts in a row (1 for the first), given `jitter` in
    /// [0, 1): `min · 2^(failures-1)`, capped at `max`, then scaled into its upper half
    /// ("equal jitter"), so a delay never drops below half its step and retries still spread.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let step = self.min.saturating_mul(1u32 << exponent).min(self.max);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// The delay when the endpoint asked for one (`Retry-After`): what it asked, within
    /// [`min`, `max`] — a hostile or mistaken endpoint cannot park a subscription for a year,
    /// nor make the producer hammer it.
    pub fn honour(&self, asked: Duration) -> Duration {
        asked.clamp(self.min, self.max)
    }

    /// [`Backoff::delay`] with fresh randomness.
    pub fn next(&self, failures: u32) -> Duration {
        self.delay(failures, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    #[test]
    fn delays_double_until_the_cap() {
        let full = |failures| BACKOFF.delay(failures, 1.0);
        assert_eq!(full(1), Duration::from_millis(100));
        assert_eq!(full(2), Duration::from_millis(200));
        assert_eq!(full(4), Duration::from_millis(800));
        assert_eq!(full(7), Duration::from_millis(6400));
        assert_eq!(full(8), Duration::from_secs(10), "capped");
        assert_eq!(full(1000), Duration::from_secs(10), "no overflow");
        assert_eq!(full(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_keeps_a_delay_within_the_upper_half_of_its_step() {
        assert_eq!(BACKOFF.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(BACKOFF.delay(3, 0.5), Duration::from_millis(300));
        for _ in 0..1000 {
            let delay = BACKOFF.next(3);
            assert!(
                (Duration::from_millis(200)..=Duration::from_millis(400)).contains(&delay),
                "{delay:?}"
            );
        }
        assert!(BACKOFF.next(100) <= BACKOFF.max);
    }

    #[test]
    fn retry_after_is_honoured_within_the_bounds() {
        assert_eq!(
            BACKOFF.honour(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(BACKOFF.honour(Duration::ZERO), BACKOFF.min);
        assert_eq!(BACKOFF.honour(Duration::from_secs(86_400)), BACKOFF.max);
    }
}
