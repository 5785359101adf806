//! The storage sections: `[redis]` (rooms that span nodes) and `[database]`
//! (the pool, its timeouts and probes, and its conversion into the actor
//! crate's settings).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{positive, ConfigError, DbUrl};

/// `[redis]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`; empty keeps rooms local. May hold a password.
    pub url: DbUrl,
    /// Key prefix.
    pub prefix: String,
    /// Pool size.
    pub pool_size: u32,
    /// How long a node's members stay in the cluster's presence without a
    /// refresh (a node that died without a goodbye); nodes refresh theirs
    /// every third of it.
    pub presence_ttl_ms: u64,
    /// How long the services lease (which node runs trending, printers and
    /// files) lasts without renewal; another node takes over within it
    /// after the holder dies.
    pub lease_ttl_ms: u64,
}

/// `[database]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
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

impl DatabaseSettings {
    /// The settings of the `db` actor.
    pub fn actor_settings(&self) -> holdfast_actors::db::DbSettings {
        holdfast_actors::db::DbSettings {
            url: self.url.expose().to_owned(),
            critical: self.critical,
            max_size: self.max_size,
            min_idle: self.min_idle,
            connection_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_lifetime: Duration::from_millis(self.max_lifetime_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            test_on_checkout: self.test_on_checkout,
            connect_retries: self.connect_retries,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            probe_timeout: Duration::from_millis(self.probe_timeout_ms),
            migrate: self.migrate,
        }
    }
}

impl RedisSettings {
    /// # Errors
    /// The first invalid `redis.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.expose();
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::key(
                "redis.url",
                "must start with redis:// (or be empty)",
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::key(
                "redis.prefix",
                "must be non-empty, without spaces or braces",
            ));
        }
        positive("redis.presence_ttl_ms", self.presence_ttl_ms as f64)?;
        positive("redis.lease_ttl_ms", self.lease_ttl_ms as f64)
    }
}

impl DatabaseSettings {
    /// # Errors
    /// The first invalid `database.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if holdfast_actors::db::Backend::of(self.url.expose()).is_none() {
            return Err(ConfigError::key(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.max_size == 0 {
            return Err(ConfigError::key("database.max_size", "must be at least 1"));
        }
        for (key, value) in [
            ("database.connect_timeout_ms", self.connect_timeout_ms),
            ("database.probe_interval_ms", self.probe_interval_ms),
            ("database.probe_timeout_ms", self.probe_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1 ms"));
            }
        }
        Ok(())
    }
}
