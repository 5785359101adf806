//! The sections of the HTTP front and the process around it: `[server]`
//! (the listener), `[log]`, `[health]` (probe timeouts and the health
//! watcher) and `[shutdown]` (the staged shutdown's bound).

use serde::{Deserialize, Serialize};

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// CORS allowed origins; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Human,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// JSON or human lines.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `warn,holdfast_actors=debug`).
    pub level: String,
    /// Log file path; empty for stdout only.
    pub file: String,
    /// Size at which the file rotates.
    pub file_max_bytes: u64,
    /// Rotated files kept.
    pub file_max_files: usize,
}

/// `[health]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Deadline for an actor's health answer.
    pub timeout_ms: u64,
    /// Interval of the health sweep that publishes changes.
    pub watch_interval_ms: u64,
}

/// `[shutdown]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Time to keep serving with readiness 503 before connections close.
    pub drain_delay_ms: u64,
    /// Bound on the HTTP server's own graceful stop.
    pub http_timeout_ms: u64,
}
