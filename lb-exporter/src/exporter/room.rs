//! How soon a full member queue will have room: the rate at which the
//! member takes bytes off it, so that a refusal can tell the client when to
//! come back instead of a fixed second. Pure: time is an argument.

use std::time::Duration;

use tokio::time::Instant;

/// Bytes are counted over windows at least this long; one export of a big
/// batch then does not read as a burst of speed.
const WINDOW: Duration = Duration::from_millis(50);

/// With no export done for this long the rate says nothing about now, and
/// the next export done starts a new window: the queue was empty (or the
/// member stalled), and that time is not drain time.
const STALE: Duration = Duration::from_secs(1);

/// The rate a lane's exports take bytes off its queue, smoothed over
/// windows (an exponential moving average, weight ½ per window).
#[derive(Debug, Default, Clone)]
pub(crate) struct DrainRate {
    window_start: Option<Instant>,
    window_bytes: u64,
    last: Option<Instant>,
    /// Bytes per second, once a window has closed.
    rate: Option<f64>,
}

impl DrainRate {
    /// An export of `bytes` ended at `now` (the member took them).
    pub fn record(&mut self, bytes: usize, now: Instant) {
        let last = self.last.replace(now);
        let start = match (last, self.window_start) {
            (Some(last), Some(start)) if now.saturating_duration_since(last) <= STALE => start,
            _ => {
                // The first export after a pause only marks the start: its
                // bytes drained before the window.
                self.window_start = Some(now);
                self.window_bytes = 0;
                return;
            }
        };
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let sample = self.window_bytes as f64 / elapsed.as_secs_f64();
            self.rate = Some(match self.rate {
                Some(old) => 0.5 * old + 0.5 * sample,
                None => sample,
            });
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
    }

    /// Bytes per second, if exports ended recently enough to know.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let last = self.last?;
        if now.saturating_duration_since(last) > STALE {
            return None;
        }
        self.rate.filter(|r| *r > 0.0)
    }

    /// How long taking `bytes` off the queue should take at the current
    /// rate; `None` when the rate is not known.
    pub fn time_to_drain(&self, bytes: usize, now: Instant) -> Option<Duration> {
        let rate = self.rate(now)?;
        Some(Duration::from_secs_f64(bytes as f64 / rate))
    }
}

/// How soon a full member queue is expected to have room for the clients
/// it refuses: the time until it is back to half its bound (`held` bytes
/// now, `capacity` its bound), so that the clients refused together fit
/// when they return while the member still has work queued. At least `min`;
/// `None` when the drain rate is not known (no export ended lately: the
/// member is stalled or down).
pub(crate) fn room_in(
    rate: &DrainRate,
    held: usize,
    capacity: usize,
    now: Instant,
    min: Duration,
) -> Option<Duration> {
    let excess = held.saturating_sub(capacity / 2);
    rate.time_to_drain(excess, now).map(|d| d.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_rate_is_bytes_over_time_and_unknown_before_a_window_closes() {
        let t0 = Instant::now();
        let mut r = DrainRate::default();
        assert_eq!(r.rate(t0), None);
        r.record(1_000_000, t0);
        assert_eq!(r.rate(t0), None, "one export is not a rate");
        // 10 MB more over 100 ms: 100 MB/s (the first export only opened
        // the window).
        for i in 1..=10 {
            r.record(1_000_000, t0 + 10 * i * MS);
        }
        let rate = r.rate(t0 + 100 * MS).unwrap();
        assert!((rate - 100e6).abs() < 1e6, "{rate}");
        // 1 MB at 100 MB/s: 10 ms.
        let d = r.time_to_drain(1_000_000, t0 + 100 * MS).unwrap();
        assert!(d >= 9 * MS && d <= 11 * MS, "{d:?}");
    }

    #[test]
    fn an_idle_gap_is_not_counted_as_drain_time_and_an_old_rate_goes_stale() {
        let t0 = Instant::now();
        let mut r = DrainRate::default();
        for i in 0..=10 {
            r.record(1_000_000, t0 + 10 * i * MS);
        }
        let before = r.rate(t0 + 100 * MS).unwrap();
        // Idle for 1.5 s, then another busy 100 ms at the same speed.
        let t1 = t0 + 1600 * MS;
        for i in 0..=10 {
            r.record(1_000_000, t1 + 10 * i * MS);
        }
        let after = r.rate(t1 + 100 * MS).unwrap();
        assert!(
            (after - before).abs() / before < 0.05,
            "{before} vs {after}"
        );
        assert_eq!(r.rate(t1 + 100 * MS + STALE + MS), None);
    }

    #[test]
    fn room_is_expected_when_the_queue_is_back_to_half_its_bound() {
        let t0 = Instant::now();
        let mut r = DrainRate::default();
        for i in 0..=10 {
            r.record(1_000_000, t0 + 10 * i * MS);
        }
        let now = t0 + 100 * MS;
        // 32 MB held of a 32 MB bound at 100 MB/s: 16 MB to go, 160 ms.
        let d = room_in(&r, 32_000_000, 32_000_000, now, MS).unwrap();
        assert!(d > 150 * MS && d < 170 * MS, "{d:?}");
        // Already under half: the least delay.
        assert_eq!(room_in(&r, 1_000, 32_000_000, now, 5 * MS), Some(5 * MS));
        // Nothing ended lately: not known.
        let stale = now + Duration::from_secs(2);
        assert_eq!(room_in(&r, 32_000_000, 32_000_000, stale, MS), None);
    }
}
