//! One back-off for every restart and retry: supervision, the trending
//! feeds, printer polls, the database's start-up probe and the Redis
//! subscription all wait by [`Backoff`].
//!
//! Retry `n` of a run of failures (`n = 1` the first) waits `min · 2^(n-1)`,
//! capped at `max`, spread at random by `jitter`: drawn from
//! `[1 - jitter, 1 + jitter]` times that, and never over `max`. `jitter =
//! 1.0` is full jitter: anywhere from 0 (use `min` at half the first wait to
//! draw from `0..=min(max, first · 2^(n-1))`, as the trending feeds and the
//! database probe do). A run that lasted `reset_after` starts counting from
//! zero again. These are pure functions of their inputs (the random sample
//! is passed in), so the timing rules are tested without a clock.

use std::time::Duration;

/// How long to wait before a restart or retry. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first wait (before the random spread).
    pub min: Duration,
    /// Upper bound of any wait.
    pub max: Duration,
    /// Random spread as a fraction of the wait, 0.0 to 1.0 (1.0: full jitter).
    pub jitter: f64,
    /// A run that lasted this long resets the failure count.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// Supervision's default: 100 ms doubling to 10 s, ± 20 %, reset after
    /// 30 s up.
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// No delay at all, ever (tests, benchmarks, and actors whose restart is free).
    pub fn none() -> Self {
        Self {
            min: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// Exponential from `min`, full jitter, no reset: the shape of a retry
    /// loop (feeds, probes, subscriptions).
    pub fn full_jitter(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            jitter: 1.0,
            reset_after: Duration::ZERO,
        }
    }

    /// The wait before retry `n` (1 = the first); 0 for `n = 0`. `unit` is
    /// a uniform sample in `[0, 1)` that sets the spread.
    pub fn retry(&self, n: u32, unit: f64) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let ceiling = self
            .min
            .saturating_mul(1u32 << (n - 1).min(30))
            .min(self.max);
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        ceiling.mul_f64((1.0 + spread).max(0.0)).min(self.max)
    }

    /// [`Backoff::retry`] with a random sample.
    pub fn random_retry(&self, n: u32) -> Duration {
        self.retry(n, rand::random::<f64>())
    }

    /// The wait before restart number `consecutive` of a supervised child
    /// (1 = the first failure after a healthy run, which restarts at once:
    /// a single fault should cost nothing).
    pub fn delay(&self, consecutive: u32, unit: f64) -> Duration {
        self.retry(consecutive.saturating_sub(1), unit)
    }

    /// The waits of `count` retries, randomly spread: for retry loops that
    /// take an iterator of delays.
    pub fn retries(self, count: u32) -> impl Iterator<Item = Duration> + Clone + Send + Sync {
        (1..=count).map(move |n| self.random_retry(n))
    }

    /// Whether a run that lasted `uptime` resets the failure count.
    pub fn resets_after(&self, uptime: Duration) -> bool {
        uptime >= self.reset_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_first_restart_is_immediate_then_doubles_up_to_max() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter: 0.0,
            reset_after: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=7).map(|n| b.delay(n, 0.5).as_millis()).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_jitter_stays_within_its_fraction_and_the_cap() {
        let b = Backoff {
            jitter: 0.2,
            ..Backoff::default()
        };
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(80));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(100));
        assert!(b.delay(2, 0.999) <= Duration::from_millis(120));
        assert_eq!(b.delay(40, 0.999), b.max);
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling_and_the_cap() {
        // The trending feeds' shape: base 100 ms (min at half), cap 350 ms.
        let b = Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(350));
        let ceilings = [100, 200, 350, 350].map(Duration::from_millis);
        for _ in 0..200 {
            let delays: Vec<Duration> = b.retries(4).collect();
            assert_eq!(delays.len(), 4);
            for (d, c) in delays.iter().zip(ceilings) {
                assert!(*d <= c, "{d:?} over {c:?}");
            }
        }
        // Full jitter, not "delay plus jitter": some draws land near zero.
        assert_eq!(b.retry(3, 0.0), Duration::ZERO);
        let low = (0..200)
            .filter(|_| b.random_retry(1) < Duration::from_millis(50))
            .count();
        assert!(low > 0, "no draw in the lower half of the first wait");
    }

    #[test]
    fn a_long_enough_run_resets_the_count() {
        let b = Backoff::default();
        assert!(!b.resets_after(Duration::from_secs(29)));
        assert!(b.resets_after(Duration::from_secs(30)));
    }
}
