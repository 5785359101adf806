//! The watchdog's rules: when a target is down, and whether it may be
//! restarted (cooldown, at most `max_restarts` within `window`, then give up
//! for good). Pure: every decision takes `now`.

use std::time::{Duration, Instant};

use holdfast_actors::window::SlidingWindow;

use crate::config::MonitorSettings;

/// The limits of [`Watchdog`], from `[monitor]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Consecutive failed polls that call for a restart.
    pub failures: u32,
    /// Failed polls do not count for this long after a start, until one succeeds.
    pub startup_grace: Duration,
    /// Least time between two restarts.
    pub cooldown: Duration,
    /// Restarts allowed within `window`.
    pub max_restarts: u32,
    /// The restart-limit window.
    pub window: Duration,
}

impl Limits {
    /// The limits configured in `[monitor]`.
    pub fn from_settings(m: &MonitorSettings) -> Self {
        Self {
            failures: m.failures,
            startup_grace: Duration::from_millis(m.startup_grace_ms),
            cooldown: Duration::from_millis(m.cooldown_ms),
            max_restarts: m.max_restarts,
            window: Duration::from_millis(m.window_ms),
        }
    }
}

/// What one poll means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollVerdict {
    /// It answered.
    Healthy,
    /// It answered after having been down.
    Recovered,
    /// It failed within the start-up grace; not counted.
    Starting,
    /// It failed, `n` times in a row, fewer than the limit.
    Failing(u32),
    /// It failed `n` times in a row, at or past the limit: it is down.
    Down(u32),
}

/// Whether a restart may happen now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartVerdict {
    /// Restart now.
    Restart,
    /// Too soon after the last restart; allowed in this long.
    Cooldown(Duration),
    /// The restart limit was just reached: stop trying, raise the alarm.
    GiveUp,
    /// The limit was reached before; nothing more is tried.
    GaveUp,
}

/// The watchdog's rules, as a pure state machine fed with the clock, so the
/// timing rules are tested without waiting.
#[derive(Debug)]
pub struct Watchdog {
    pub(super) limits: Limits,
    /// Failed polls in a row.
    consecutive: u32,
    /// When the current incarnation started (or the monitor did).
    started_at: Instant,
    /// Whether a poll succeeded since then (ends the start-up grace).
    answered_since_start: bool,
    /// Whether it has been reported down and not yet recovered.
    down: bool,
    /// Restarts inside the current window.
    restarts: SlidingWindow,
    /// Set once the restart limit was reached; never cleared.
    gave_up: bool,
}

impl Watchdog {
    /// A watchdog whose target (re)started at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            consecutive: 0,
            started_at: now,
            answered_since_start: false,
            down: false,
            restarts: SlidingWindow::default(),
            gave_up: false,
        }
    }

    /// Records one poll's result.
    pub fn on_poll(&mut self, ok: bool, now: Instant) -> PollVerdict {
        if ok {
            self.consecutive = 0;
            self.answered_since_start = true;
            return if std::mem::take(&mut self.down) {
                PollVerdict::Recovered
            } else {
                PollVerdict::Healthy
            };
        }
        if !self.answered_since_start
            && now.saturating_duration_since(self.started_at) < self.limits.startup_grace
        {
            return PollVerdict::Starting;
        }
        self.consecutive += 1;
        if self.consecutive < self.limits.failures {
            return PollVerdict::Failing(self.consecutive);
        }
        self.down = true;
        PollVerdict::Down(self.consecutive)
    }

    /// Marks the target down without a poll (its process exited).
    pub fn on_exit(&mut self) {
        self.down = true;
    }

    /// Whether the target may be restarted at `now`.
    pub fn may_restart(&mut self, now: Instant) -> RestartVerdict {
        if self.gave_up {
            return RestartVerdict::GaveUp;
        }
        if let Some(last) = self.restarts.last() {
            let next = last + self.limits.cooldown;
            if now < next {
                return RestartVerdict::Cooldown(next - now);
            }
        }
        if self.restarts.count(self.limits.window, now) >= self.limits.max_restarts as usize {
            self.gave_up = true;
            return RestartVerdict::GiveUp;
        }
        RestartVerdict::Restart
    }

    /// Records a restart (or a start attempt that failed) at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.restarts.record(now);
        self.started_at = now;
        self.answered_since_start = false;
        self.consecutive = 0;
    }

    /// Restarts within the current window.
    pub fn restarts_in_window(&self) -> usize {
        self.restarts.len()
    }

    /// Whether it has stopped restarting.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }
}
