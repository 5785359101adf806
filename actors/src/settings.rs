//! What a subsystem's settings say when a value cannot be used: the key
//! that is wrong, and why. Each settings type that lives in this crate
//! validates itself and answers this; the server's config turns it into
//! its own error (exit 64, naming the key).

use serde::{Deserialize, Serialize};

use crate::db::DbUrl;

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    /// The full key, e.g. `database.probe_timeout_ms`.
    pub key: String,
    /// Why, for people.
    pub message: String,
}

impl SettingError {
    /// `key` cannot be used, for `message`.
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Fails `key` unless `value` is greater than 0 (NaN fails too).
///
/// # Errors
/// `value` is 0, negative or NaN.
pub fn positive(key: &str, value: f64) -> Result<(), SettingError> {
    if value.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater) {
        Ok(())
    } else {
        Err(SettingError::key(key, "must be greater than 0"))
    }
}

/// Checks a list of named endpoints: names non-empty and unique, URLs
/// `http://` or `https://`.
///
/// # Errors
/// The first entry whose name or URL is wrong, by key (`section[i].name`).
pub fn check_endpoints<'a>(
    section: &str,
    entries: impl Iterator<Item = (&'a str, &'a DbUrl)>,
) -> Result<(), SettingError> {
    let mut seen = std::collections::HashSet::new();
    for (i, (name, url)) in entries.enumerate() {
        if name.trim().is_empty() {
            return Err(SettingError::key(
                &format!("{section}[{i}].name"),
                "must not be empty",
            ));
        }
        if !seen.insert(name) {
            return Err(SettingError::key(
                &format!("{section}[{i}].name"),
                format!("'{name}' is used twice"),
            ));
        }
        // The URL is not shown: it may hold a credential.
        if !is_http_url(url.expose()) {
            return Err(SettingError::key(
                &format!("{section}[{i}].url"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    Ok(())
}

/// Fails `key` unless `value` is at least `min`.
///
/// # Errors
/// `value` is under `min`.
pub fn at_least(key: &str, value: u64, min: u64) -> Result<(), SettingError> {
    if value < min {
        return Err(SettingError::key(key, format!("must be at least {min}")));
    }
    Ok(())
}

/// Whether `url` is one the outbound HTTP clients speak: `http://` or `https://`.
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
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
