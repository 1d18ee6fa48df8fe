//! Reconnection delays: capped exponential backoff with jitter.
//!
//! Jitter spreads the reconnections of many consumers after a producer restart, so they do not
//! all arrive in the same millisecond. "Equal jitter": half the delay is fixed (a consumer never
//! hammers) and half is random.

use std::time::Duration;

use rand::Rng as _;

/// The delay sequence of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt: in `[step / 2, step]`, where step starts at
    /// `initial`, doubles each call and never exceeds `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
    }

    /// [`Backoff::next_delay`], or longer when the server asked for more (a
    /// `google.rpc.RetryInfo`, as a producer shutting down sends), but never past `max`:
    /// `--backoff-max` stays the longest the consumer waits.
    pub fn next_delay_honouring(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.next_delay();
        retry_after.map_or(delay, |asked| delay.max(asked.min(self.max)))
    }

    /// Back to `initial`: called once a connection has delivered a response.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_and_stays_within_the_cap() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let expected_steps = [100, 200, 400, 800, 1000, 1000, 1000];
        for step in expected_steps {
            let delay = backoff.next_delay();
            assert!(
                delay >= ms(step) / 2 && delay <= ms(step),
                "{delay:?} for step {step}"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(10_000));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(10));
    }

    #[test]
    fn a_server_s_retry_delay_lengthens_the_wait_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(100));
        assert_eq!(backoff.next_delay_honouring(Some(ms(60))), ms(60));
        assert_eq!(backoff.next_delay_honouring(Some(ms(1000))), ms(100));
        // Asking for less than the backoff changes nothing; the steps go on doubling.
        let delay = backoff.next_delay_honouring(Some(ms(1)));
        assert!(delay >= ms(20) && delay <= ms(40), "{delay:?}");
        assert!(backoff.next_delay_honouring(None) <= ms(80));
    }

    #[test]
    fn jitter_varies() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 1, "20 delays were all equal: no jitter");
    }
}
