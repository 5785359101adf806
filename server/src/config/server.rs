//! The sections of the HTTP front and the process around it: `[server]`
//! (the listener), `[log]`, `[telemetry]` (trace export), `[health]`
//! (probe timeouts and the health watcher) and `[shutdown]` (the staged
//! shutdown's bound).

use serde::{Deserialize, Serialize};

use super::{at_least, fraction, ConfigError};

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

/// `[telemetry]`: OpenTelemetry trace export.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector's base URL (`http://collector:4318`; spans go
    /// to `<url>/v1/traces`); empty: no export.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces started here that are exported (0 to 1); a trace
    /// that arrives with `traceparent` keeps its caller's decision.
    pub sample_ratio: f64,
}

impl TelemetrySettings {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    /// # Errors
    /// The first invalid `telemetry.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::key(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        fraction("telemetry.sample_ratio", self.sample_ratio)?;
        if !self.enabled() {
            return Ok(());
        }
        if !cfg!(feature = "otlp") {
            return Err(ConfigError::key(
                "telemetry.otlp_endpoint",
                "this holdfast was built without the `otlp` feature; leave it empty or build with `--features otlp`",
            ));
        }
        let key = "telemetry.otlp_endpoint";
        let url = reqwest::Url::parse(&self.otlp_endpoint)
            .map_err(|e| ConfigError::key(key, format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::key(
                key,
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::key(
                key,
                "must not carry credentials; give them in OTEL_EXPORTER_OTLP_HEADERS",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::key(
                key,
                "must be a base URL without a query or fragment",
            ));
        }
        Ok(())
    }

    /// Where spans are posted: the base URL with `/v1/traces`, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is read by every OpenTelemetry SDK.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }
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

impl ServerSettings {
    /// # Errors
    /// The first invalid `server.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::key("server.host", "must not be empty"));
        }
        for origin in &self.cors_origins {
            let plain = origin.starts_with("http://") || origin.starts_with("https://");
            if origin != "*" && (!plain || origin.trim_end_matches('/').matches('/').count() > 2) {
                return Err(ConfigError::key(
                    "server.cors_origins",
                    format!("'{origin}' is not an origin (scheme://host[:port]) or \"*\""),
                ));
            }
        }
        at_least("server.max_body_bytes", self.max_body_bytes as u64, 1)
    }
}

impl HealthSettings {
    /// # Errors
    /// The first invalid `health.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("health.timeout_ms", self.timeout_ms, 1)?;
        at_least("health.watch_interval_ms", self.watch_interval_ms, 100)
    }
}

impl LogSettings {
    /// # Errors
    /// The first invalid `log.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::key(
                "log.level",
                format!("'{}' is not a valid filter", self.level),
            ));
        }
        if !self.file.is_empty() && self.file_max_bytes < 1024 {
            return Err(ConfigError::key(
                "log.file_max_bytes",
                "must be at least 1024",
            ));
        }
        at_least("log.file_max_files", self.file_max_files as u64, 1)
    }
}
