//! The `[redis]` section (rooms that span nodes). `[database]` is the `db`
//! actor's own settings type, `holdfast_actors::db::DbSettings`.

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
