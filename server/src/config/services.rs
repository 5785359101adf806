//! `[tls]`: what outbound TLS trusts. The services' own sections
//! (`[trending]`, `[printers]`, `[files]`) are their actor crate types, each
//! validating itself (`holdfast_actors::services::*`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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
