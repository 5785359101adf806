//! Per-connection flood control: which client frames are handled, which get
//! `rate_limited`, and when repeated abuse closes the socket with 1008.
//!
//! The rule (`[ws]` `rate_per_sec`, `rate_burst`, `abuse_limit`,
//! `abuse_window_ms`): a token bucket of `rate_burst` tokens refilled at
//! `rate_per_sec`, which every frame pays for, except one kind: a request
//! that waits on a room hub (`join`, `leave`, `publish`, `presence`, `resume`) and
//! arrives while none of the connection's other requests is waiting on a
//! hub. That is a client with one request in flight: it cannot send faster
//! than the server answers it, so it needs no limit, however fast the server
//! is (a publisher that waits for each `ack` runs at full speed). A client
//! that sends without waiting (a flood, or a pipelining client) pays a token
//! per frame once it has one in flight, and so does every frame the session
//! answers at once (`ping`, anything refused), since those cost the
//! server without ever being in flight. Past the bucket, frames are dropped
//! with `rate_limited`; `abuse_limit` of those inside `abuse_window_ms`
//! close the connection with 1008.

use std::time::{Duration, Instant};

use holdfast_actors::window::SlidingWindow;

use crate::config::WsSettings;

/// What happens to one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handle it.
    Admit,
    /// Drop it with a `rate_limited` error.
    Limited,
    /// Drop it and close the connection with 1008.
    Abuse,
}

/// A per-connection token bucket and abuse window. See the module docs.
pub(super) struct Admission {
    /// Tokens left; a frame that pays needs one.
    tokens: f64,
    /// Refill, tokens per second (`ws.rate_per_sec`).
    rate: f64,
    /// Capacity (`ws.rate_burst`).
    burst: f64,
    /// When `tokens` was last refilled.
    last: Instant,
    /// Frames rate limited inside the abuse window.
    limited: SlidingWindow,
    /// `ws.abuse_window_ms`.
    window: Duration,
    /// `ws.abuse_limit`.
    abuse_limit: usize,
}

impl Admission {
    pub(super) fn new(settings: &WsSettings, now: Instant) -> Self {
        Self {
            tokens: settings.rate_burst,
            rate: settings.rate_per_sec,
            burst: settings.rate_burst,
            last: now,
            limited: SlidingWindow::default(),
            window: Duration::from_millis(settings.abuse_window_ms),
            abuse_limit: settings.abuse_limit as usize,
        }
    }

    /// Decides on one frame. `free` is true for a hub request arriving
    /// while the connection has none in flight (see the module docs).
    pub(super) fn admit(&mut self, now: Instant, free: bool) -> Verdict {
        if free || self.take(now) {
            return Verdict::Admit;
        }
        self.limited.count(self.window, now);
        self.limited.record(now);
        if self.limited.len() >= self.abuse_limit {
            Verdict::Abuse
        } else {
            Verdict::Limited
        }
    }

    /// A frame admitted free turned out to be answered at once (refused
    /// by the session): it pays its token now, if one is left.
    pub(super) fn charge(&mut self, now: Instant) {
        self.take(now);
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(rate: f64, burst: f64, abuse_limit: u32) -> (Admission, Instant) {
        let mut s = crate::config::Settings::defaults().ws;
        s.rate_per_sec = rate;
        s.rate_burst = burst;
        s.abuse_limit = abuse_limit;
        let now = Instant::now();
        (Admission::new(&s, now), now)
    }

    #[test]
    fn a_client_with_one_request_in_flight_is_never_limited() {
        let (mut a, now) = admission(1.0, 1.0, 2);
        for _ in 0..100_000 {
            assert_eq!(a.admit(now, true), Verdict::Admit);
        }
    }

    #[test]
    fn paying_frames_run_out_then_refill_at_the_rate() {
        let (mut a, now) = admission(10.0, 3.0, 100);
        for _ in 0..3 {
            assert_eq!(a.admit(now, false), Verdict::Admit);
        }
        assert_eq!(a.admit(now, false), Verdict::Limited);
        let later = now + Duration::from_millis(100); // one token at 10/s
        assert_eq!(a.admit(later, false), Verdict::Admit);
        assert_eq!(a.admit(later, false), Verdict::Limited);
    }

    #[test]
    fn repeated_limits_inside_the_window_are_abuse() {
        let (mut a, now) = admission(0.0, 0.0, 3);
        assert_eq!(a.admit(now, false), Verdict::Limited);
        assert_eq!(a.admit(now, false), Verdict::Limited);
        assert_eq!(a.admit(now, false), Verdict::Abuse);
        // Outside the window the count starts again.
        let later = now + Duration::from_secs(60);
        assert_eq!(a.admit(later, false), Verdict::Limited);
    }
}
