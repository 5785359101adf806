//! Configuration: typed sections, one per subsystem, layered with the
//! `config` crate and validated once, before any port is bound.
//!
//! Layers, later ones winning: `config/default.toml` (embedded in the binary),
//! `config/$HOLDFAST_ENV.toml` (optional, relative to the working directory),
//! `--config FILE`, then `HOLDFAST__SECTION__KEY` environment variables.
//! An unknown key or a bad value is a [`ConfigError`] that names the key; the
//! binary prints it and exits with [`EXIT_CONFIG`].
//!
//! This file holds the [`Settings`] root, loading and layering, validation,
//! the error type, and re-exports the redacting [`Secret`] and [`DbUrl`]
//! (which live in `holdfast_actors`). The sections
//! live by concern: `server` (server, log, health, shutdown), `kernel`
//! (supervision, events), `ws` (ws, auth, rooms, session), `services`
//! (tls) and `operations` (admin, monitor); all are re-exported here.
//! `[database]`, `[redis]`, `[trending]`, `[printers]` and `[files]` are the
//! actor crate's own settings types (`db::DbSettings`,
//! `redis::RedisSettings`, `services::{trending, printers, files}`), each
//! validating itself; nothing is translated between two copies.

mod kernel;
mod operations;
mod server;
mod services;
#[cfg(test)]
mod tests;
mod ws;

pub use holdfast_actors::db::DbSettings;
pub use holdfast_actors::redis::RedisSettings;
pub use holdfast_actors::services::files::FilesSettings;
pub use holdfast_actors::services::printers::{PrinterSettings, PrintersSettings};
pub use holdfast_actors::services::trending::{FeedSettings, TrendingSettings};
pub use kernel::{EventSettings, SupervisionSettings};
pub use operations::{
    AdminSettings, ApiSettings, DemoSettings, MonitorSettings, SmtpSecurity, ADMIN_TOKEN_MIN_BYTES,
};
pub use server::{
    HealthSettings, LogFormat, LogSettings, ServerSettings, ShutdownSettings, TelemetrySettings,
};
pub use services::TlsSettings;
pub use ws::{
    AuthSettings, HandlerSettings, NamespaceSettings, RoomSettings, SessionSettings, SlowConsumer,
    WsSettings,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use holdfast_actors::supervision::{Backoff, Intensity};
use holdfast_actors::KernelSettings;

/// The defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

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

impl From<holdfast_actors::settings::SettingError> for ConfigError {
    fn from(e: holdfast_actors::settings::SettingError) -> Self {
        ConfigError::Key {
            key: e.key,
            message: e.message,
        }
    }
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The check of a count or a duration with a floor: `key`'s `value` must
/// be at least `min`.
fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::key(key, format!("must be at least {min}")));
    }
    Ok(())
}

/// The check of a share or a ratio: `key`'s `value` must be from 0 to 1.
fn fraction(key: &str, value: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&value) {
        return Err(ConfigError::key(key, "must be between 0 and 1"));
    }
    Ok(())
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Trace export.
    pub telemetry: TelemetrySettings,
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
    /// The application's room and RPC handlers.
    pub handlers: HandlerSettings,
    /// Client sessions.
    pub session: SessionSettings,
    /// The database.
    pub database: DbSettings,
    /// Redis, for rooms that span nodes.
    pub redis: RedisSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// The server API for backends.
    pub api: ApiSettings,
    /// The first-run demo at `/`.
    pub demo: DemoSettings,
    /// `[app]`: the application's own settings, read by its actors with
    /// their own type ([`Settings::app`]); Holdfast checks nothing in it.
    #[serde(default)]
    pub app: toml::Table,
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

pub(crate) use holdfast_actors::settings::positive;

pub(crate) use holdfast_actors::settings::is_http_url;

pub use holdfast_actors::db::DbUrl;

pub use holdfast_actors::settings::Secret;

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

    /// The embedded defaults overlaid with one TOML text, validated: what
    /// [`Settings::load`] makes of a file, without the environment.
    ///
    /// # Errors
    /// TOML that does not parse, an unknown key, a bad value.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(text, FileFormat::Toml))
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
        self.server.validate()?;
        self.health.validate()?;
        self.log.validate()?;
        self.telemetry.validate()?;
        self.supervision.validate()?;
        self.events.validate()?;
        self.ws.validate()?;
        self.auth.validate(&self.tls)?;
        self.rooms.validate()?;
        self.handlers.validate()?;
        self.session.validate()?;
        self.redis.validate()?;
        self.database.validate()?;
        self.admin.validate()?;
        self.api.validate()?;
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
            max_consecutive: self.supervision.max_consecutive_failures,
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

    /// The `[app]` table read as the application's own settings type `T`.
    ///
    /// # Errors
    /// A key of `[app]` that `T` does not accept, named (`app.banned_words`).
    pub fn app<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let table = toml::Value::Table(self.app.clone());
        serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                "app".to_owned()
            } else {
                format!("app.{path}")
            };
            ConfigError::Key {
                key,
                message: e.into_inner().to_string(),
            }
        })
    }

    /// The effective configuration as TOML, secrets redacted (`holdfast config`).
    pub fn to_toml(&self) -> String {
        // Secrets serialize as "[redacted]".
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
