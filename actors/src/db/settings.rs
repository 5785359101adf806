//! The `db` actor's settings (config `[database]`), one type for the config
//! file and the actor, and the redacting database URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{redact_url, Backend};
use crate::settings::SettingError;

/// A database URL: printed and serialized with its password replaced by `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DbUrl(String);

impl DbUrl {
    /// The clear URL, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl Serialize for DbUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// The `db` actor's settings: config `[database]`, as the file spells it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DbSettings {
    /// `sqlite://path` or `postgres://...`; may hold a password.
    pub url: DbUrl,
    /// Whether an outage makes the node unhealthy and not ready.
    pub critical: bool,
    /// Pool size.
    pub max_size: u32,
    /// Idle connections kept.
    pub min_idle: u32,
    /// How long a caller waits for a connection.
    pub connect_timeout_ms: u64,
    /// Oldest a connection may get.
    pub max_lifetime_ms: u64,
    /// Longest a connection may idle.
    pub idle_timeout_ms: u64,
    /// Check connections on check-out.
    pub test_on_checkout: bool,
    /// Tries at start before serving degraded.
    pub connect_retries: u32,
    /// First retry delay.
    pub retry_base_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_ms: u64,
    /// Probe interval while down.
    pub probe_interval_ms: u64,
    /// Bound on one probe.
    pub probe_timeout_ms: u64,
    /// Run migrations at start.
    pub migrate: bool,
}

impl DbSettings {
    /// # Errors
    /// The first invalid `database.*` key.
    pub fn validate(&self) -> Result<(), SettingError> {
        if Backend::of(self.url.expose()).is_none() {
            return Err(SettingError::key(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.max_size == 0 {
            return Err(SettingError::key("database.max_size", "must be at least 1"));
        }
        for (key, value) in [
            ("database.connect_timeout_ms", self.connect_timeout_ms),
            ("database.probe_interval_ms", self.probe_interval_ms),
            ("database.probe_timeout_ms", self.probe_timeout_ms),
        ] {
            if value == 0 {
                return Err(SettingError::key(key, "must be at least 1 ms"));
            }
        }
        Ok(())
    }
}

impl DbSettings {
    /// How long a caller waits for a connection.
    pub fn connection_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}
