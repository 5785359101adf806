//! The sections of the actor kernel: `[supervision]` (restart intensity and
//! back-off of every supervisor) and `[events]` (the internal event bus).

use serde::{Deserialize, Serialize};

/// `[supervision]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    /// Restarts allowed within `window_ms`.
    pub max_restarts: u32,
    /// The intensity window.
    pub window_ms: u64,
    /// Delay of the second consecutive restart.
    pub backoff_min_ms: u64,
    /// Cap on any restart delay.
    pub backoff_max_ms: u64,
    /// Random spread of a delay, as a fraction (0.0 to 1.0).
    pub backoff_jitter: f64,
    /// Uptime after which an actor's failure count resets.
    pub reset_after_ms: u64,
}

/// `[events]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Recent events kept.
    pub capacity: usize,
}
