//! The sections of the actor kernel: `[supervision]` (restart intensity and
//! back-off of every supervisor) and `[events]` (the internal event bus).

use serde::{Deserialize, Serialize};

use super::{at_least, fraction, ConfigError};

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
    /// Failures in a row without such a run after which a supervisor gives
    /// up, however far apart the back-off spaced them.
    pub max_consecutive_failures: u32,
}

/// `[events]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Recent events kept.
    pub capacity: usize,
}

impl SupervisionSettings {
    /// # Errors
    /// The first invalid `supervision.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least(
            "supervision.max_consecutive_failures",
            u64::from(self.max_consecutive_failures),
            1,
        )?;
        at_least("supervision.max_restarts", u64::from(self.max_restarts), 1)?;
        at_least("supervision.window_ms", self.window_ms, 1)?;
        fraction("supervision.backoff_jitter", self.backoff_jitter)?;
        if self.backoff_min_ms > self.backoff_max_ms {
            return Err(ConfigError::key(
                "supervision.backoff_min_ms",
                "must not exceed supervision.backoff_max_ms",
            ));
        }
        Ok(())
    }
}

impl EventSettings {
    /// # Errors
    /// `events.capacity` is 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("events.capacity", self.capacity as u64, 1)
    }
}
