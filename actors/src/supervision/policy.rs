//! Restart policy: restart types, strategies and restart intensity (the
//! back-off is [`crate::backoff`], shared with every retry loop).
//!
//! These are pure values and functions so that the timing rules can be tested
//! without a clock.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::window::SlidingWindow;

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
    /// Failures in a row of one child, without a healthy run between them
    /// (its back-off's `reset_after` of uptime), after which the supervisor
    /// gives up however far apart its back-off spaced them: a child that
    /// can never start is a crash loop even when it stays under the window.
    pub max_consecutive: u32,
}

impl Default for Intensity {
    /// 5 restarts in 10 s: enough to ride out a burst, small enough that a
    /// crash loop escalates within seconds; and 10 failures in a row.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(10),
            max_consecutive: 10,
        }
    }
}

/// The restart times a supervisor remembers to enforce its [`Intensity`].
#[derive(Debug, Default)]
pub struct RestartWindow {
    /// Restarts inside the current window.
    recent: SlidingWindow,
}

impl RestartWindow {
    /// Records a restart at `now`; returns false when it exceeds `intensity`,
    /// meaning the supervisor must escalate instead of restarting.
    pub fn admit(&mut self, intensity: Intensity, now: Instant) -> bool {
        self.recent
            .admit(intensity.max_restarts as usize, intensity.window, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_refuses_the_restart_past_the_limit_and_forgets_old_ones() {
        let intensity = Intensity {
            max_restarts: 2,
            window: Duration::from_secs(1),
            max_consecutive: 10,
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
