//! The operator-facing sections: `[admin]` (the admin API's token and chaos
//! switch, with the shortest token accepted) and `[monitor]` (`holdfast
//! monitor`, the external watchdog: polling, restart limits, alerting by
//! webhook and SMTP), with their validation.

use serde::{Deserialize, Serialize};

use super::{at_least, is_http_url, ConfigError, Secret};

/// `[admin]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the admin API; empty turns `/admin` off (404).
    pub token: Secret,
    /// Whether `POST /admin/actors/{name}/crash` exists (chaos drills).
    pub chaos: bool,
}

/// Shortest admin token (and server API key) accepted: a guessable token
/// is no protection.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 16;

/// `[demo]`: the first-run demo, a chat at `/`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// Whether `/` serves the demo chat (with its `demo:` rooms and their
    /// moderator); false leaves `/` to the application.
    pub enabled: bool,
}

/// `[api]`: the server API for backends (`/api/v1/...`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer key of the server API; empty turns it off (404).
    pub key: Secret,
}

impl ApiSettings {
    /// # Errors
    /// `api.key` is set but shorter than [`ADMIN_TOKEN_MIN_BYTES`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        long_enough("api.key", &self.key)
    }
}

/// A secret that is empty (off) or at least [`ADMIN_TOKEN_MIN_BYTES`] long;
/// the message never shows it.
fn long_enough(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    let len = secret.expose().len();
    if len > 0 && len < ADMIN_TOKEN_MIN_BYTES {
        return Err(ConfigError::key(
            key,
            format!("must be at least {ADMIN_TOKEN_MIN_BYTES} bytes"),
        ));
    }
    Ok(())
}

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
    /// Where the monitor writes its own metrics after every poll
    /// (Prometheus text, for node_exporter's textfile collector); empty:
    /// nowhere.
    pub textfile: String,
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
            at_least(key, value, 1)?;
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

impl AdminSettings {
    /// # Errors
    /// `admin.token` is set but shorter than [`ADMIN_TOKEN_MIN_BYTES`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        long_enough("admin.token", &self.token)
    }
}
