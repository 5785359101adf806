//! Restart policy: restart types, strategies, restart intensity and back-off.
//!
//! These are pure values and functions so that the timing rules can be tested
//! without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a child is restarted after it exits (Erlang/OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartType {
    /// Always restarted, whatever the reason it stopped.
    Permanent,
    /// Restarted only after an abnormal exit (a panic or a failure reason).
    Transient,
    /// Never restarted; removed from its supervisor once it exits.
    Temporary,
}

impl RestartType {
    /// Whether an exit of this kind calls for a restart.
    pub fn restarts_after(self, abnormal: bool) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => abnormal,
            RestartType::Temporary => false,
        }
    }
}

/// Which children a supervisor restarts when one of them fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that failed.
    OneForOne,
    /// Every child: the others are stopped (in reverse start order) and all restart.
    OneForAll,
    /// The child that failed and every child started after it.
    RestForOne,
}

/// At most `max_restarts` restarts within `window`; one more and the
/// supervisor gives up and escalates to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for Intensity {
    /// 5 restarts in 10 s: enough to ride out a burst, small enough that a
    /// crash loop escalates within seconds.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(10),
        }
    }
}

/// The restart times a supervisor remembers to enforce its [`Intensity`].
#[derive(Debug, Default)]
pub struct RestartWindow {
    /// Restart instants inside the current window, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now`; returns false when it exceeds `intensity`,
    /// meaning the supervisor must escalate instead of restarting.
    pub fn admit(&mut self, intensity: Intensity, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) >= intensity.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= intensity.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Delay before restarting a child that keeps failing.
///
/// The first restart after a healthy run is immediate: a single fault should
/// cost nothing. Each further consecutive failure waits `min · 2^(n-2)`,
/// capped at `max`, spread by ± `jitter` (a fraction) so that siblings do not
/// restart in lock-step. A child that stayed up for `reset_after` starts
/// counting from zero again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay of the second consecutive restart.
    pub min: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Random spread as a fraction of the delay, 0.0 to 1.0.
    pub jitter: f64,
    /// Uptime after which the failure count resets.
    pub reset_after: Duration,
}

impl Default for Backoff {
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

    /// The delay before restart number `consecutive` (1 = first failure after a
    /// healthy run). `unit` is a uniform sample in `[0, 1)` that sets the jitter.
    pub fn delay(&self, consecutive: u32, unit: f64) -> Duration {
        if consecutive <= 1 {
            return Duration::ZERO;
        }
        let exp = (consecutive - 2).min(30);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        base.mul_f64((1.0 + spread).max(0.0)).min(self.max)
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
    fn intensity_refuses_the_restart_past_the_limit_and_forgets_old_ones() {
        let intensity = Intensity {
            max_restarts: 2,
            window: Duration::from_secs(1),
        };
        let mut w = RestartWindow::default();
        let t0 = Instant::now();
        assert!(w.admit(intensity, t0));
        assert!(w.admit(intensity, t0 + Duration::from_millis(10)));
        assert!(!w.admit(intensity, t0 + Duration::from_millis(20)));
        assert!(w.admit(intensity, t0 + Duration::from_millis(1010)));
    }

    #[test]
    fn restart_types_follow_otp() {
        assert!(RestartType::Permanent.restarts_after(false));
        assert!(RestartType::Permanent.restarts_after(true));
        assert!(!RestartType::Transient.restarts_after(false));
        assert!(RestartType::Transient.restarts_after(true));
        assert!(!RestartType::Temporary.restarts_after(true));
    }
}
