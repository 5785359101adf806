//! Configuration: typed sections, one per subsystem, layered with the
//! `config` crate and validated once, before any port is bound.
//!
//! Layers, later ones winning: `config/default.toml` (embedded in the binary),
//! `config/$HOLDFAST_ENV.toml` (optional, relative to the working directory),
//! `--config FILE`, then `HOLDFAST__SECTION__KEY` environment variables.
//! An unknown key or a bad value is a [`ConfigError`] that names the key; the
//! binary prints it and exits with [`EXIT_CONFIG`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use holdfast_actors::supervision::{Backoff, Intensity};
use holdfast_actors::KernelSettings;

/// The defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Exit code for a configuration error (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed (a missing `--config` file, bad TOML).
    #[error("config error: {0}")]
    Source(String),
    /// A key that no section has, or a value of the wrong type.
    #[error("config error: key `{key}`: {message}")]
    Key {
        /// The dotted key, e.g. `server.port`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Health checks.
    pub health: HealthSettings,
    /// Staged shutdown.
    pub shutdown: ShutdownSettings,
    /// Restart policy of the supervisors.
    pub supervision: SupervisionSettings,
    /// The internal event bus.
    pub events: EventSettings,
    /// The WebSocket transport.
    pub ws: WsSettings,
    /// Client authentication.
    pub auth: AuthSettings,
    /// Room hubs.
    pub rooms: RoomSettings,
    /// Client sessions.
    pub session: SessionSettings,
    /// The database.
    pub database: DatabaseSettings,
    /// Redis, for rooms that span nodes.
    pub redis: RedisSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// `holdfast monitor`, the external watchdog.
    pub monitor: MonitorSettings,
    /// The `trending` service.
    pub trending: TrendingSettings,
    /// The `printers` service.
    pub printers: PrintersSettings,
    /// The `files` service.
    pub files: FilesSettings,
    /// TLS of outbound connections (`https://` feeds, printers, the
    /// monitor's webhook, SMTP over TLS).
    pub tls: TlsSettings,
}

/// `[tls]`: what outbound TLS connections trust.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// A PEM bundle of CA certificates trusted beside the system's (a
    /// private CA); empty: the system's only.
    pub ca_file: String,
}

impl TlsSettings {
    /// Reads `ca_file`, so that a bad bundle stops the start-up naming its
    /// key (the server and the monitor read it again when they build clients).
    ///
    /// # Errors
    /// `tls.ca_file` cannot be read or holds no usable certificate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.ca_file.is_empty() {
            holdfast_actors::tls::read_bundle(Path::new(&self.ca_file))
                .map_err(|e| ConfigError::key("tls.ca_file", e.to_string()))?;
        }
        Ok(())
    }

    /// The TLS setup of every outbound client: the system's CA certificates
    /// plus `ca_file`'s.
    ///
    /// # Errors
    /// `tls.ca_file` cannot be read or holds no usable certificate.
    pub fn client(&self) -> Result<holdfast_actors::tls::ClientTls, ConfigError> {
        let ca_file = (!self.ca_file.is_empty()).then(|| Path::new(&self.ca_file));
        holdfast_actors::tls::ClientTls::load(ca_file)
            .map_err(|e| ConfigError::key("tls.ca_file", e.to_string()))
    }
}

/// `[ws]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Protocol ping interval; silence for twice this drops the client.
    pub heartbeat_ms: u64,
    /// Largest frame; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest `data` of a publish; larger gets `too_large`.
    pub max_data_bytes: usize,
    /// Connections beyond this get 503 before the upgrade.
    pub max_connections: usize,
    /// Token bucket refill, frames per second.
    pub rate_per_sec: f64,
    /// Token bucket size.
    pub rate_burst: f64,
    /// Rate-limited frames within the abuse window that close with 1008.
    pub abuse_limit: u32,
    /// The abuse window.
    pub abuse_window_ms: u64,
    /// Outbound queue bound, in messages.
    pub outbound_max_messages: usize,
    /// Outbound queue bound, in bytes.
    pub outbound_max_bytes: usize,
    /// Allowed `Origin`s; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Room name prefixes a client may publish to without joining.
    pub publish_without_join: Vec<String>,
    /// Spread of `reconnect_after_ms` in the `draining` frame.
    pub drain_spread_ms: u64,
    /// Bound on the `connections` shutdown stage.
    pub drain_timeout_ms: u64,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret; empty accepts anonymous clients.
    pub jwt_secret: Secret,
}

/// `[rooms]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Hub shards; 0 means one per core.
    pub shards: usize,
    /// Messages of history per room.
    pub history_size: usize,
    /// Oldest history kept.
    pub history_max_age_ms: u64,
}

/// `[session]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// How long a closed session may be resumed.
    pub ttl_ms: u64,
    /// Interval of the write-behind flush.
    pub flush_interval_ms: u64,
    /// Changes kept while the database is down.
    pub max_pending: usize,
}

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

/// `[admin]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the admin API; empty turns `/admin` off (404).
    pub token: Secret,
    /// Whether `POST /admin/actors/{name}/crash` exists (chaos drills).
    pub chaos: bool,
}

/// Shortest admin token accepted: a guessable token is no protection.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 16;

/// `[monitor]`: `holdfast monitor`, the external watchdog.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSettings {
    /// Liveness URL to poll; empty: `/health/live` on `server.host:server.port`.
    pub url: String,
    /// Time between two polls.
    pub interval_ms: u64,
    /// Bound on one poll.
    pub timeout_ms: u64,
    /// Consecutive failed polls that call for a restart.
    pub failures: u32,
    /// After a (re)start, failed polls do not count until one succeeds or this passes.
    pub startup_grace_ms: u64,
    /// SIGTERM to SIGKILL: keep it above the server's shutdown bound.
    pub grace_ms: u64,
    /// Least time between two restarts.
    pub cooldown_ms: u64,
    /// Restarts allowed within `window_ms`; past it the monitor stops trying
    /// and raises a critical alert.
    pub max_restarts: u32,
    /// The restart-limit window.
    pub window_ms: u64,
    /// An alert identical to one sent within this long is not sent again.
    pub alert_dedup_ms: u64,
    /// At most this many alerts within `alert_window_ms` (critical ones always go).
    pub alert_limit: u32,
    /// The alert rate window.
    pub alert_window_ms: u64,
    /// Alerts are POSTed here as JSON; empty: no webhook. A secret: webhook
    /// URLs usually embed their credentials.
    pub webhook_url: Secret,
    /// SMTP relay for alert emails; empty: no email.
    pub smtp_host: String,
    /// Its port.
    pub smtp_port: u16,
    /// How the SMTP connection is secured.
    pub smtp_security: SmtpSecurity,
    /// Optional SMTP login (with `smtp_security = "none"` it crosses the
    /// network in clear: use it only with a local relay).
    pub smtp_username: String,
    /// Its password.
    pub smtp_password: Secret,
    /// Sender address.
    pub smtp_from: String,
    /// Recipients. Env: a comma-separated list.
    pub smtp_to: Vec<String>,
}

/// How the monitor's SMTP connection is secured (`monitor.smtp_security`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SmtpSecurity {
    /// Plain SMTP, no TLS (a local relay; usually port 25).
    None,
    /// Plain connect, then `STARTTLS`, required: a server that does not
    /// offer it gets no mail (usually port 587).
    Starttls,
    /// TLS from the first byte, "implicit TLS" (usually port 465).
    Tls,
}

impl TryFrom<String> for SmtpSecurity {
    type Error = String;

    /// Parses the config value; an unknown one is refused listing the choices
    /// (the `config` crate's own enum message does not).
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "none" => Ok(SmtpSecurity::None),
            "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" => Ok(SmtpSecurity::Tls),
            _ => Err(format!(
                "'{value}' is not one of \"none\", \"starttls\", \"tls\""
            )),
        }
    }
}

impl MonitorSettings {
    /// Checks ranges and combinations.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_1 = [
            ("monitor.interval_ms", self.interval_ms),
            ("monitor.timeout_ms", self.timeout_ms),
            ("monitor.failures", u64::from(self.failures)),
            ("monitor.max_restarts", u64::from(self.max_restarts)),
            ("monitor.window_ms", self.window_ms),
            ("monitor.alert_limit", u64::from(self.alert_limit)),
            ("monitor.alert_window_ms", self.alert_window_ms),
        ];
        for (key, value) in at_least_1 {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if !self.url.is_empty() && !is_http_url(&self.url) {
            return Err(ConfigError::key(
                "monitor.url",
                format!("'{}' is not an http:// or https:// URL", self.url),
            ));
        }
        let webhook = self.webhook_url.expose();
        if !webhook.is_empty() && !is_http_url(webhook) {
            // The message never shows the URL: it may hold a credential.
            return Err(ConfigError::key(
                "monitor.webhook_url",
                "must be an http:// or https:// URL",
            ));
        }
        if !self.smtp_host.is_empty() {
            if !self.smtp_from.contains('@') {
                return Err(ConfigError::key(
                    "monitor.smtp_from",
                    "must be an email address when monitor.smtp_host is set",
                ));
            }
            if self.smtp_to.is_empty() || self.smtp_to.iter().any(|to| !to.contains('@')) {
                return Err(ConfigError::key(
                    "monitor.smtp_to",
                    "must list email addresses when monitor.smtp_host is set",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `url` is one the outbound HTTP clients speak: `http://` or `https://`.
fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

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
        write!(f, "{:?}", holdfast_actors::db::redact_url(&self.0))
    }
}

impl Serialize for DbUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&holdfast_actors::db::redact_url(&self.0))
    }
}

/// A secret: never printed, logged or serialized in clear.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

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

impl Settings {
    /// Loads every layer and validates the result.
    ///
    /// # Errors
    /// A source that cannot be read, an unknown key, a bad value.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Ok(env) = std::env::var("HOLDFAST_ENV") {
            if !env.is_empty() {
                let path = PathBuf::from("config").join(format!("{env}.toml"));
                builder = builder.add_source(File::from(path).required(false));
            }
        }
        if let Some(path) = explicit {
            builder = builder.add_source(File::from(path.to_path_buf()).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("HOLDFAST")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.cors_origins")
                .with_list_parse_key("ws.allowed_origins")
                .with_list_parse_key("ws.publish_without_join")
                .with_list_parse_key("monitor.smtp_to")
                .with_list_parse_key("files.directories")
                .with_list_parse_key("files.extensions"),
        );
        let config = builder
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        Self::from_config(config)
    }

    /// The defaults alone, as embedded (tests start from these).
    pub fn defaults() -> Self {
        let config = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .build()
            .expect("the embedded default.toml parses: checked by a unit test");
        Self::from_config(config).expect("the embedded defaults are valid: checked by a unit test")
    }

    fn from_config(config: Config) -> Result<Self, ConfigError> {
        let settings: Settings = serde_path_to_error::deserialize(config).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            // config appends " for key `x`" to some messages; the key is already named.
            let message = match inner.find(" for key `") {
                Some(i) => inner[..i].to_owned(),
                None => inner,
            };
            ConfigError::Key {
                key: if key == "." { "(root)".into() } else { key },
                message,
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types cannot: ranges and combinations.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.trim().is_empty() {
            return Err(ConfigError::key("server.host", "must not be empty"));
        }
        for origin in &self.server.cors_origins {
            let plain = origin.starts_with("http://") || origin.starts_with("https://");
            if origin != "*" && (!plain || origin.trim_end_matches('/').matches('/').count() > 2) {
                return Err(ConfigError::key(
                    "server.cors_origins",
                    format!("'{origin}' is not an origin (scheme://host[:port]) or \"*\""),
                ));
            }
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::key(
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.health.timeout_ms == 0 {
            return Err(ConfigError::key("health.timeout_ms", "must be at least 1"));
        }
        if self.health.watch_interval_ms < 100 {
            return Err(ConfigError::key(
                "health.watch_interval_ms",
                "must be at least 100",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::key(
                "log.level",
                format!("'{}' is not a valid filter", self.log.level),
            ));
        }
        if !self.log.file.is_empty() && self.log.file_max_bytes < 1024 {
            return Err(ConfigError::key(
                "log.file_max_bytes",
                "must be at least 1024",
            ));
        }
        if self.log.file_max_files == 0 {
            return Err(ConfigError::key("log.file_max_files", "must be at least 1"));
        }
        let s = &self.supervision;
        if s.max_restarts == 0 {
            return Err(ConfigError::key(
                "supervision.max_restarts",
                "must be at least 1",
            ));
        }
        if s.window_ms == 0 {
            return Err(ConfigError::key(
                "supervision.window_ms",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&s.backoff_jitter) {
            return Err(ConfigError::key(
                "supervision.backoff_jitter",
                "must be between 0.0 and 1.0",
            ));
        }
        if s.backoff_min_ms > s.backoff_max_ms {
            return Err(ConfigError::key(
                "supervision.backoff_min_ms",
                "must not exceed supervision.backoff_max_ms",
            ));
        }
        let ws = &self.ws;
        let positive = [
            ("ws.heartbeat_ms", ws.heartbeat_ms as f64),
            ("ws.max_frame_bytes", ws.max_frame_bytes as f64),
            ("ws.max_data_bytes", ws.max_data_bytes as f64),
            ("ws.max_connections", ws.max_connections as f64),
            ("ws.rate_per_sec", ws.rate_per_sec),
            ("ws.rate_burst", ws.rate_burst),
            ("ws.abuse_limit", f64::from(ws.abuse_limit)),
            ("ws.outbound_max_messages", ws.outbound_max_messages as f64),
            ("ws.outbound_max_bytes", ws.outbound_max_bytes as f64),
            ("rooms.history_size", self.rooms.history_size as f64),
            ("session.ttl_ms", self.session.ttl_ms as f64),
        ];
        for (key, value) in positive {
            // NaN fails too: it is not greater than zero.
            if value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if holdfast_actors::db::Backend::of(self.database.url.expose()).is_none() {
            return Err(ConfigError::key(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        let redis = self.redis.url.expose();
        if !(redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err(ConfigError::key(
                "redis.url",
                "must start with redis:// (or be empty)",
            ));
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::key(
                "redis.prefix",
                "must be non-empty, without spaces or braces",
            ));
        }
        if self.database.max_size == 0 {
            return Err(ConfigError::key("database.max_size", "must be at least 1"));
        }
        if self.database.connect_timeout_ms == 0
            || self.database.probe_interval_ms == 0
            || self.database.probe_timeout_ms == 0
        {
            return Err(ConfigError::key(
                "database.connect_timeout_ms",
                "timeouts must be at least 1 ms",
            ));
        }
        if ws.max_data_bytes > ws.max_frame_bytes {
            return Err(ConfigError::key(
                "ws.max_data_bytes",
                "must not exceed ws.max_frame_bytes",
            ));
        }
        if self.events.capacity == 0 {
            return Err(ConfigError::key("events.capacity", "must be at least 1"));
        }
        let token = self.admin.token.expose();
        if !token.is_empty() && token.len() < ADMIN_TOKEN_MIN_BYTES {
            // The message never shows the token itself.
            return Err(ConfigError::key(
                "admin.token",
                format!("must be at least {ADMIN_TOKEN_MIN_BYTES} bytes"),
            ));
        }
        self.monitor.validate()?;
        self.trending.validate()?;
        self.printers.validate()?;
        self.files.validate()?;
        self.tls.validate()?;
        Ok(())
    }

    /// The kernel's settings.
    pub fn kernel(&self) -> KernelSettings {
        KernelSettings {
            health_timeout: Duration::from_millis(self.health.timeout_ms),
            event_capacity: self.events.capacity,
        }
    }

    /// The restart intensity every supervisor uses.
    pub fn intensity(&self) -> Intensity {
        Intensity {
            max_restarts: self.supervision.max_restarts,
            window: Duration::from_millis(self.supervision.window_ms),
        }
    }

    /// The restart back-off every child uses unless its spec says otherwise.
    pub fn backoff(&self) -> Backoff {
        let s = &self.supervision;
        Backoff {
            min: Duration::from_millis(s.backoff_min_ms),
            max: Duration::from_millis(s.backoff_max_ms),
            jitter: s.backoff_jitter,
            reset_after: Duration::from_millis(s.reset_after_ms),
        }
    }

    /// The effective configuration as TOML, secrets redacted (`holdfast config`).
    pub fn to_toml(&self) -> String {
        // Secrets serialize as "[redacted]".
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

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

/// `[printers]`: the `printers` service (OctoPrint printers broadcast to `$printers`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrintersSettings {
    /// Bound on one request to a printer.
    pub timeout_ms: u64,
    /// Cap of the back-off while a printer is offline.
    pub max_backoff_ms: u64,
    /// The printers (`[[printers.devices]]`); none leaves the service idle.
    pub devices: Vec<PrinterSettings>,
}

/// One `[[printers.devices]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterSettings {
    /// Unique name.
    pub name: String,
    /// OctoPrint's base URL, `http[s]://host[:port]`.
    pub url: DbUrl,
    /// OctoPrint's API key (`X-Api-Key`); a secret.
    pub api_key: Secret,
    /// Time between two polls while the printer answers.
    #[serde(default = "default_printer_interval_ms")]
    pub interval_ms: u64,
}

fn default_printer_interval_ms() -> u64 {
    5000
}

/// `[files]`: the `files` service (print files indexed and broadcast to `$files`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSettings {
    /// Directories to watch; none leaves the service idle. Env: comma-separated.
    pub directories: Vec<String>,
    /// File extensions that count, without the dot. Env: comma-separated.
    pub extensions: Vec<String>,
    /// Quiet time before a burst of changes to a file is acted on.
    pub debounce_ms: u64,
    /// How often missing or re-created directories are checked for.
    pub rescan_interval_ms: u64,
    /// Whether subdirectories count.
    pub recursive: bool,
}

/// Checks a list of named endpoints: names non-empty and unique, URLs
/// `http://` or `https://`.
fn check_endpoints<'a>(
    section: &str,
    entries: impl Iterator<Item = (&'a str, &'a DbUrl)>,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, (name, url)) in entries.enumerate() {
        if name.trim().is_empty() {
            return Err(ConfigError::key(
                &format!("{section}[{i}].name"),
                "must not be empty",
            ));
        }
        if !seen.insert(name) {
            return Err(ConfigError::key(
                &format!("{section}[{i}].name"),
                format!("'{name}' is used twice"),
            ));
        }
        // The URL is not shown: it may hold a credential.
        if !is_http_url(url.expose()) {
            return Err(ConfigError::key(
                &format!("{section}[{i}].url"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    Ok(())
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::key(key, format!("must be at least {min}")));
    }
    Ok(())
}

impl TrendingSettings {
    /// Checks ranges and combinations.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
            return Err(ConfigError::key(
                "trending.retry_base_ms",
                "must not exceed trending.retry_max_ms",
            ));
        }
        Ok(())
    }

    /// The settings of the `trending` actor.
    pub fn actor_settings(&self) -> holdfast_actors::services::trending::TrendingSettings {
        let ms = Duration::from_millis;
        holdfast_actors::services::trending::TrendingSettings {
            feeds: self
                .feeds
                .iter()
                .map(|f| holdfast_actors::services::trending::FeedConfig {
                    name: f.name.clone(),
                    url: f.url.expose().to_owned(),
                })
                .collect(),
            interval: ms(self.interval_ms),
            cache_ttl: ms(self.cache_ttl_ms),
            connect_timeout: ms(self.connect_timeout_ms),
            read_timeout: ms(self.read_timeout_ms),
            timeout: ms(self.timeout_ms),
            pool_idle_timeout: ms(self.pool_idle_timeout_ms),
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            tcp_keepalive: ms(self.tcp_keepalive_ms),
            retry_tries: self.retry_tries,
            retry_base: ms(self.retry_base_ms),
            retry_max: ms(self.retry_max_ms),
            breaker_failure_threshold: self.breaker_failure_threshold,
            breaker_open: ms(self.breaker_open_ms),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

impl PrintersSettings {
    /// Checks ranges, names, URLs and keys (never showing a key).
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_endpoints(
            "printers.devices",
            self.devices.iter().map(|p| (p.name.as_str(), &p.url)),
        )?;
        at_least("printers.timeout_ms", self.timeout_ms, 1)?;
        for (i, p) in self.devices.iter().enumerate() {
            at_least(
                &format!("printers.devices[{i}].interval_ms"),
                p.interval_ms,
                1,
            )?;
            let key = p.api_key.expose();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::key(
                    &format!("printers.devices[{i}].api_key"),
                    "must be a non-empty key of visible ASCII characters",
                ));
            }
        }
        Ok(())
    }

    /// The settings of the `printers` actor.
    pub fn actor_settings(&self) -> holdfast_actors::services::printers::PrintersSettings {
        use holdfast_actors::services::printers::{ApiKey, PrinterConfig};
        holdfast_actors::services::printers::PrintersSettings {
            printers: self
                .devices
                .iter()
                .map(|p| PrinterConfig {
                    name: p.name.clone(),
                    url: p.url.expose().to_owned(),
                    api_key: ApiKey::new(p.api_key.expose()),
                    interval: Duration::from_millis(p.interval_ms),
                })
                .collect(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

impl FilesSettings {
    /// Checks ranges.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.directories.iter().any(|d| d.trim().is_empty()) {
            return Err(ConfigError::key(
                "files.directories",
                "must not hold an empty path",
            ));
        }
        if self.extensions.is_empty()
            || self
                .extensions
                .iter()
                .any(|e| e.trim_start_matches('.').is_empty() || e.contains(['/', ' ']))
        {
            return Err(ConfigError::key(
                "files.extensions",
                "must list extensions such as \"gcode\"",
            ));
        }
        at_least("files.debounce_ms", self.debounce_ms, 1)?;
        at_least("files.rescan_interval_ms", self.rescan_interval_ms, 10)
    }

    /// The settings of the `files` actor.
    pub fn actor_settings(&self) -> holdfast_actors::services::files::FilesSettings {
        holdfast_actors::services::files::FilesSettings {
            directories: self
                .directories
                .iter()
                .map(std::path::PathBuf::from)
                .collect(),
            extensions: self.extensions.clone(),
            debounce: Duration::from_millis(self.debounce_ms),
            rescan_interval: Duration::from_millis(self.rescan_interval_ms),
            recursive: self.recursive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(extra: &str) -> Result<Settings, ConfigError> {
        let config = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(extra, FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        Settings::from_config(config)
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let s = Settings::defaults();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.host, "127.0.0.1");
        assert_eq!(s.log.file_max_bytes, 10 * 1024 * 1024);
        assert_eq!(s.log.file_max_files, 5);
        assert_eq!(s.health.timeout_ms, 1000);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = from_toml("[server]\nprot = 1\n").unwrap_err().to_string();
        assert!(err.contains("server"), "{err}");
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn an_unknown_section_is_named() {
        let err = from_toml("[sever]\nport = 1\n").unwrap_err().to_string();
        assert!(err.contains("sever"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = from_toml("[server]\nport = \"eighty\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = from_toml("[server]\nport = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = from_toml("[supervision]\nbackoff_jitter = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("supervision.backoff_jitter"), "{err}");
        let err = from_toml("[log]\nformat = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let s = from_toml("[auth]\njwt_secret = \"hunter2-very-secret\"\n").unwrap();
        assert_eq!(s.auth.jwt_secret.expose(), "hunter2-very-secret");
        let shown = format!("{}{:?}", s.to_toml(), s);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn admin_and_monitor_secrets_are_redacted_and_a_short_token_is_refused_unseen() {
        let s = from_toml(
            "[admin]\ntoken = \"admin-token-0123456789\"\n\
             [monitor]\nwebhook_url = \"http://hooks.local/T0/s3cr3t\"\n\
             smtp_host = \"localhost\"\nsmtp_from = \"m@example.test\"\n\
             smtp_to = [\"ops@example.test\"]\nsmtp_password = \"pa55word\"\n",
        )
        .unwrap();
        let shown = format!("{}{:?}", s.to_toml(), s);
        for secret in ["admin-token-0123456789", "s3cr3t", "pa55word"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let err = from_toml("[admin]\ntoken = \"short-t0ken\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.token") && !err.contains("short-t0ken"),
            "{err}"
        );
        let s = from_toml("[monitor]\nwebhook_url = \"https://hooks.local/s3cr3t\"\n")
            .unwrap_or_else(|e| panic!("an https:// webhook is accepted: {e}"));
        assert_eq!(s.monitor.webhook_url.expose(), "https://hooks.local/s3cr3t");
        let err = from_toml("[monitor]\nwebhook_url = \"ftp://hooks.local/s3cr3t\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("monitor.webhook_url") && !err.contains("s3cr3t"),
            "{err}"
        );
        from_toml("[monitor]\nurl = \"https://web-1.local/health/live\"\n")
            .unwrap_or_else(|e| panic!("an https:// liveness URL is accepted: {e}"));
        let err = from_toml("[monitor]\nfailures = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("monitor.failures"), "{err}");
        let err = from_toml("[monitor]\nsmtp_host = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("monitor.smtp_from"), "{err}");
    }

    #[test]
    fn the_effective_config_renders_as_toml_that_loads_again() {
        let rendered = Settings::defaults().to_toml();
        let again = from_toml(&rendered).unwrap();
        assert_eq!(again.server.port, 8080);
    }

    #[test]
    fn service_sections_load_validate_and_hide_their_secrets() {
        let s = from_toml(
            "[[printers.devices]]\nname = \"mk4\"\nurl = \"http://10.0.0.21\"\napi_key = \"0ct0-k3y\"\n\
             [[trending.feeds]]\nname = \"news\"\nurl = \"http://u:fe3d-pw@feeds.local/t.json\"\n\
             [files]\ndirectories = [\"prints\"]\n",
        )
        .unwrap();
        assert_eq!(
            s.printers.devices[0].interval_ms, 5000,
            "the default interval"
        );
        assert_eq!(s.files.extensions, ["gcode", "3mf", "stl"]);
        let shown = format!("{}{:?}", s.to_toml(), s);
        for secret in ["0ct0-k3y", "fe3d-pw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let again = from_toml(&s.to_toml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.printers.devices[0].name, "mk4");
        let s = from_toml(
            "[[trending.feeds]]\nname = \"x\"\nurl = \"https://u:s3cr3t@a/t.json\"\n\
             [[printers.devices]]\nname = \"p\"\nurl = \"https://octo.local\"\napi_key = \"k\"\n",
        )
        .unwrap_or_else(|e| panic!("https:// feeds and printers are accepted: {e}"));
        assert_eq!(
            s.trending.actor_settings().feeds[0].url,
            "https://u:s3cr3t@a/t.json"
        );
        assert_eq!(
            s.printers.actor_settings().printers[0].url,
            "https://octo.local"
        );
        let err = from_toml("[[trending.feeds]]\nname = \"x\"\nurl = \"ftp://u:s3cr3t@a/\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trending.feeds[0].url") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = from_toml(
            "[[printers.devices]]\nname = \"a\"\nurl = \"http://a\"\napi_key = \"k\"\n\
             [[printers.devices]]\nname = \"a\"\nurl = \"http://b\"\napi_key = \"k\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("printers.devices[1].name"), "{err}");
        let err = from_toml("[files]\nextensions = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("files.extensions"), "{err}");
    }

    #[test]
    fn a_bad_ca_file_is_refused_naming_its_key() {
        let err = from_toml("[tls]\nca_file = \"/no/such/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not-a-bundle.pem");
        std::fs::write(&not_pem, "no certificate here\n").unwrap();
        let err = from_toml(&format!("[tls]\nca_file = \"{}\"\n", not_pem.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        assert_eq!(Settings::defaults().tls.ca_file, "", "no bundle by default");
    }

    #[test]
    fn smtp_security_is_none_starttls_or_tls() {
        assert_eq!(
            Settings::defaults().monitor.smtp_security,
            SmtpSecurity::None,
            "today's plain SMTP stays the default"
        );
        for (value, expected) in [
            ("none", SmtpSecurity::None),
            ("starttls", SmtpSecurity::Starttls),
            ("tls", SmtpSecurity::Tls),
        ] {
            let s = from_toml(&format!("[monitor]\nsmtp_security = \"{value}\"\n")).unwrap();
            assert_eq!(s.monitor.smtp_security, expected);
        }
        let err = from_toml("[monitor]\nsmtp_security = \"ssl\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("monitor.smtp_security") && err.contains("starttls"),
            "{err}"
        );
    }
}
