//! One feed's circuit breaker: closed, open for a while after repeated
//! failures, then half-open for one trial request.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests are rejected until the open time has passed.
    Open,
    /// One trial request is in flight.
    HalfOpen,
}

impl BreakerState {
    /// The wire name (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    pub(super) const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];
}

/// What a breaker allows right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Permit {
    /// A normal fetch with its retries.
    Allow,
    /// The single half-open trial request.
    Trial,
    /// Nothing.
    Reject,
}

/// One feed's circuit breaker.
#[derive(Debug)]
pub(super) struct Breaker {
    pub(super) state: BreakerState,
    /// Consecutive failed requests.
    pub(super) failures: u32,
    /// When an open breaker goes half-open.
    pub(super) until: Option<Instant>,
    /// Times it opened.
    pub(super) opened: u64,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub(super) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            until: None,
            opened: 0,
            threshold: threshold.max(1),
            open_for,
        }
    }

    pub(super) fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Allow,
            BreakerState::Open if self.until.is_none_or(|t| now >= t) => {
                self.state = BreakerState::HalfOpen;
                Permit::Trial
            }
            BreakerState::Open | BreakerState::HalfOpen => Permit::Reject,
        }
    }

    pub(super) fn success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.until = None;
    }

    /// Answers whether this failure opened the breaker.
    pub(super) fn failure(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.threshold,
            BreakerState::Open => false,
        };
        if open {
            self.state = BreakerState::Open;
            self.until = Some(now + self.open_for);
            self.opened += 1;
        }
        open
    }
}
