//! What a subsystem's settings say when a value cannot be used: the key
//! that is wrong, and why. Each settings type that lives in this crate
//! validates itself and answers this; the server's config turns it into
//! its own error (exit 64, naming the key).

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
