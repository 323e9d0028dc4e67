//! Exponential backoff with jitter, as the OTel Collector's `retry_on_failure`
//! does it (cenkalti/backoff semantics), with time and randomness passed in so
//! the schedule is a pure function that tests can walk without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// The shape of a retry schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The delay before the first retry, before jitter.
    pub initial_interval: Duration,
    /// The cap on the delay between two attempts, before jitter.
    pub max_interval: Duration,
    /// After this long since the first attempt, give up. `None`: retry until
    /// shutdown (the Collector's `max_elapsed_time: 0`).
    pub max_elapsed_time: Option<Duration>,
    /// The factor the interval grows by after each retry.
    pub multiplier: f64,
    /// Each delay is drawn from `interval × [1 − r, 1 + r]`, so that many
    /// exporters that failed together do not retry together.
    pub randomization_factor: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Some(Duration::from_secs(300)),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// The retry state of one request.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    started: Instant,
    interval: Duration,
}

impl Backoff {
    /// A schedule for a request whose first attempt began at `started`.
    pub fn new(policy: BackoffPolicy, started: Instant) -> Self {
        Backoff {
            interval: policy.initial_interval,
            policy,
            started,
        }
    }

    /// How long to wait before retrying after `error` (now, with fresh
    /// jitter), or `None` to give up: a non-retryable error, or past
    /// `max_elapsed_time`.
    pub fn after(&mut self, error: &super::ExportError) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        self.next_delay(Instant::now(), error.retry_after(), rand::random())
    }

    /// How long to wait before the next attempt, or `None` to give up.
    ///
    /// `now` is when the failed attempt ended; `retry_after` is the server's
    /// `RetryInfo` delay, which wins over a shorter backoff (a server that
    /// says "not before" means it); `jitter` is uniform in `[0, 1)`. Gives up
    /// when the next attempt would start past `max_elapsed_time`: waiting
    /// for an attempt that may not be made wastes queue room.
    pub fn next_delay(
        &mut self,
        now: Instant,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let r = self.policy.randomization_factor.clamp(0.0, 1.0);
        let spread = 1.0 - r + 2.0 * r * jitter.clamp(0.0, 1.0);
        let mut delay = self.interval.mul_f64(spread);
        self.interval = self
            .interval
            .mul_f64(self.policy.multiplier.max(1.0))
            .min(self.policy.max_interval);
        if let Some(after) = retry_after {
            delay = delay.max(after);
        }
        if let Some(limit) = self.policy.max_elapsed_time {
            let elapsed = now.saturating_duration_since(self.started);
            if elapsed + delay > limit {
                return None;
            }
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Some(Duration::from_secs(300)),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }

    #[test]
    fn middle_jitter_walks_the_exponential_schedule_up_to_the_cap() {
        let start = Instant::now();
        let mut b = Backoff::new(policy(), start);
        let delays: Vec<u64> = (0..7)
            .map(|_| b.next_delay(start, None, 0.5).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(delays, [5000, 7500, 11250, 16875, 25312, 30000, 30000]);
    }

    #[test]
    fn jitter_spreads_each_delay_by_the_randomization_factor() {
        let start = Instant::now();
        let low = Backoff::new(policy(), start).next_delay(start, None, 0.0);
        let high = Backoff::new(policy(), start).next_delay(start, None, 0.999_999);
        assert_eq!(low, Some(Duration::from_millis(2500)));
        let high = high.unwrap();
        assert!(high > Duration::from_millis(7499) && high <= Duration::from_millis(7500));
    }

    #[test]
    fn retry_info_longer_than_the_backoff_wins() {
        let start = Instant::now();
        let mut b = Backoff::new(policy(), start);
        let d = b.next_delay(start, Some(Duration::from_secs(42)), 0.5);
        assert_eq!(d, Some(Duration::from_secs(42)));
        // A shorter hint does not shorten the backoff.
        let d = b.next_delay(start, Some(Duration::from_secs(1)), 0.5);
        assert_eq!(d, Some(Duration::from_millis(7500)));
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_start_past_max_elapsed_time() {
        let start = Instant::now();
        let mut b = Backoff::new(policy(), start);
        assert!(
            b.next_delay(start + Duration::from_secs(290), None, 0.5)
                .is_some()
        );
        assert_eq!(
            b.next_delay(start + Duration::from_secs(293), None, 0.5),
            None
        );
        // A RetryInfo delay past the budget gives up too.
        let mut b = Backoff::new(policy(), start);
        assert_eq!(
            b.next_delay(start, Some(Duration::from_secs(301)), 0.5),
            None
        );
    }

    #[test]
    fn no_max_elapsed_time_retries_forever_at_the_cap() {
        let start = Instant::now();
        let mut b = Backoff::new(
            BackoffPolicy {
                max_elapsed_time: None,
                ..policy()
            },
            start,
        );
        let late = start + Duration::from_secs(1_000_000);
        let last = (0..100).map(|_| b.next_delay(late, None, 0.5)).last();
        assert_eq!(last, Some(Some(Duration::from_secs(30))));
    }
}
