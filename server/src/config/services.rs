//! The sections of the bundled services and their outbound connections:
//! `[trending]` (JSON feeds), `[printers]`, `[files]` and `[tls]` (what
//! outbound TLS trusts), each with its validation and its conversion into the
//! actor crate's settings, plus the helpers their validation shares.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DbUrl, Secret};

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

pub(crate) use holdfast_actors::settings::{at_least, check_endpoints};

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
