//! One sliding-window counter: how many events happened within the last
//! `span`. Supervision's restart intensity, the external monitor's restart
//! limit and alert rate, and the WebSocket abuse window all count with it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Events within the last `span`, oldest first. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct SlidingWindow {
    /// Event instants inside the window, oldest first.
    events: VecDeque<Instant>,
}

impl SlidingWindow {
    /// Forgets events `span` or more before `now`; answers how many remain.
    pub fn count(&mut self, span: Duration, now: Instant) -> usize {
        while let Some(&oldest) = self.events.front() {
            if now.saturating_duration_since(oldest) >= span {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.events.len()
    }

    /// Records an event at `now`.
    pub fn record(&mut self, now: Instant) {
        self.events.push_back(now);
    }

    /// Records an event at `now` if fewer than `limit` happened within
    /// `span`; answers whether it did.
    pub fn admit(&mut self, limit: usize, span: Duration, now: Instant) -> bool {
        if self.count(span, now) >= limit {
            return false;
        }
        self.record(now);
        true
    }

    /// The latest event, if any is remembered.
    pub fn last(&self) -> Option<Instant> {
        self.events.back().copied()
    }

    /// Events remembered (those inside the window at the last count, and
    /// any recorded since).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_leave_the_window_once_it_has_passed() {
        let span = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        assert!(w.admit(2, span, t0));
        assert!(w.admit(2, span, t0 + Duration::from_millis(10)));
        assert!(!w.admit(2, span, t0 + Duration::from_millis(20)));
        assert_eq!(w.count(span, t0 + Duration::from_millis(1000)), 1);
        assert!(w.admit(2, span, t0 + Duration::from_millis(1010)));
        assert_eq!(w.last(), Some(t0 + Duration::from_millis(1010)));
    }
}
