//! Time for the fetch loop, injected so that it stays pure and testable: retries with
//! exponential backoff and jitter until a deadline without progress, `Retry-After`, and
//! the `--max-rate` throttle.

use std::time::Duration;

/// The passage of time: the real clock on a device, a fake one in tests.
pub trait Clock {
    /// Time since an arbitrary fixed point.
    fn now(&mut self) -> Duration;
    /// Waits `d`.
    fn sleep(&mut self, d: Duration);
    /// A number in `0.0..1.0`, for jitter (need not be cryptographic).
    fn random(&mut self) -> f64;
}

/// How the fetch loop retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay; doubled after every failure in a row.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Give up once nothing arrived for this long (`--deadline`).
    pub deadline: Duration,
    /// Answers that fail their checks (a flipped bit) for the same bytes before the
    /// source is refused as serving another image.
    pub bad_answers: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            bad_answers: 3,
        }
    }
}

/// The retry state of one fetch: failures in a row and the time of the last progress.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    last_progress: Duration,
}

impl Backoff {
    pub fn new(policy: RetryPolicy, now: Duration) -> Self {
        Backoff {
            policy,
            failures: 0,
            last_progress: now,
        }
    }

    /// Something arrived: the next failure starts from the base delay again.
    pub fn progress(&mut self, now: Duration) {
        self.failures = 0;
        self.last_progress = now;
    }

    /// The delay before the next try after a failure at `now`, or `None` when the
    /// deadline would pass first. `retry_after` (the server's wish) is honoured as a
    /// lower bound. The delay is the doubled base, capped, times a jitter factor in
    /// `0.5..1.0` (so that a fleet cut off at once does not come back at once).
    pub fn next_delay(
        &mut self,
        now: Duration,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Option<Duration> {
        let exp = self
            .policy
            .base
            .saturating_mul(1u32 << self.failures.min(16));
        let capped = exp.min(self.policy.cap);
        let jittered = capped.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0));
        let delay = retry_after.map_or(jittered, |r| r.max(jittered));
        self.failures = self.failures.saturating_add(1);
        let waited = now.saturating_sub(self.last_progress);
        (waited + delay <= self.policy.deadline).then_some(delay)
    }
}

/// Keeps the average rate at or below `rate` bytes per second since the first byte.
#[derive(Clone, Copy, Debug)]
pub struct Throttle {
    rate: Option<u64>,
    start: Option<Duration>,
    bytes: u64,
}

impl Throttle {
    pub fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|&r| r > 0),
            start: None,
            bytes: 0,
        }
    }

    /// `n` more bytes arrived at `now`: how long to wait before taking more.
    pub fn account(&mut self, n: u64, now: Duration) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let start = *self.start.get_or_insert(now);
        self.bytes = self.bytes.saturating_add(n);
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.saturating_sub(now.saturating_sub(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_deadline() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
            deadline: Duration::from_secs(20),
            bad_answers: 3,
        };
        let mut b = Backoff::new(p, Duration::ZERO);
        let s = Duration::from_secs;
        assert_eq!(b.next_delay(s(0), None, 1.0), Some(s(1)));
        assert_eq!(b.next_delay(s(1), None, 1.0), Some(s(2)));
        assert_eq!(b.next_delay(s(3), None, 0.0), Some(s(2)));
        assert_eq!(b.next_delay(s(5), None, 1.0), Some(s(8)));
        assert_eq!(b.next_delay(s(5), None, 1.0), Some(s(8)), "capped");
        // 13 s waited + 8 s is past the 20 s deadline.
        assert_eq!(b.next_delay(s(13), None, 1.0), None);
        // Progress resets both.
        b.progress(s(13));
        assert_eq!(b.next_delay(s(13), None, 1.0), Some(s(1)));
        // Retry-After is a lower bound, and a wish beyond the deadline gives up.
        assert_eq!(b.next_delay(s(14), Some(s(5)), 1.0), Some(s(5)));
        assert_eq!(b.next_delay(s(14), Some(s(60)), 1.0), None);
    }

    #[test]
    fn throttle_keeps_the_average_rate() {
        let mut t = Throttle::new(Some(1000));
        let s = Duration::from_secs;
        assert_eq!(t.account(500, s(0)), Duration::from_millis(500));
        assert_eq!(t.account(500, s(1)), Duration::ZERO);
        assert_eq!(t.account(3000, s(1)), s(3));
        assert_eq!(Throttle::new(None).account(1 << 30, s(0)), Duration::ZERO);
    }
}
