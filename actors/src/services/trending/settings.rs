//! The trending service's settings (config `[trending]`), one type for the
//! config file and the actor, validating itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::DbUrl;
use crate::settings::{at_least, check_endpoints, SettingError};

/// `[trending]`: the `trending` service (JSON feeds broadcast to `$trending`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrendingSettings {
    /// The feeds (`[[trending.feeds]]`); none leaves the service idle.
    pub feeds: Vec<FeedSettings>,
    /// Time between two refreshes of a feed.
    pub interval_ms: u64,
    /// How long a fetched document is fresh (a refresh within it is a cache hit).
    pub cache_ttl_ms: u64,
    /// Bound on establishing a connection.
    pub connect_timeout_ms: u64,
    /// Bound on one read from an established connection.
    pub read_timeout_ms: u64,
    /// Bound on a whole request.
    pub timeout_ms: u64,
    /// Idle pooled (keep-alive) connections are closed after this.
    pub pool_idle_timeout_ms: u64,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// TCP keep-alive probe interval; 0 turns probes off.
    pub tcp_keepalive_ms: u64,
    /// Requests per fetch, the first included.
    pub retry_tries: u32,
    /// Back-off base (full jitter: a retry waits up to base * 2^n)...
    pub retry_base_ms: u64,
    /// ...capped at this; a longer Retry-After ends the fetch.
    pub retry_max_ms: u64,
    /// Consecutive failed requests that open a feed's circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker rejects before one half-open trial.
    pub breaker_open_ms: u64,
    /// Largest feed document accepted.
    pub max_body_bytes: usize,
}

/// One `[[trending.feeds]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSettings {
    /// Unique name: in broadcasts, statistics, metrics and logs.
    pub name: String,
    /// `http://` or `https://` URL of the JSON document; its password, if
    /// any, is redacted.
    pub url: DbUrl,
}

impl TrendingSettings {
    /// Checks ranges and combinations.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), SettingError> {
        check_endpoints(
            "trending.feeds",
            self.feeds.iter().map(|f| (f.name.as_str(), &f.url)),
        )?;
        for (key, value) in [
            ("trending.interval_ms", self.interval_ms),
            ("trending.connect_timeout_ms", self.connect_timeout_ms),
            ("trending.read_timeout_ms", self.read_timeout_ms),
            ("trending.timeout_ms", self.timeout_ms),
            ("trending.retry_tries", u64::from(self.retry_tries)),
            (
                "trending.breaker_failure_threshold",
                u64::from(self.breaker_failure_threshold),
            ),
            ("trending.max_body_bytes", self.max_body_bytes as u64),
        ] {
            at_least(key, value, 1)?;
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err(SettingError::key(
                "trending.retry_base_ms",
                "must not exceed trending.retry_max_ms",
            ));
        }
        Ok(())
    }

    /// Time between two refreshes of a feed.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// How long a fetched document is fresh.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }

    /// Bound on establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Bound on one read.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// Bound on a whole request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Idle pooled connections are closed after this.
    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_idle_timeout_ms)
    }

    /// TCP keep-alive probe interval; zero turns probes off.
    pub fn tcp_keepalive(&self) -> Duration {
        Duration::from_millis(self.tcp_keepalive_ms)
    }

    /// Back-off base.
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms)
    }

    /// Back-off cap.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }

    /// How long an open breaker rejects.
    pub fn breaker_open(&self) -> Duration {
        Duration::from_millis(self.breaker_open_ms)
    }
}
