//! Why a feed request failed, and whether it is worth retrying.

use std::time::Duration;

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No connection could be made: refused, unresolved, or a TLS handshake
    /// that failed (a certificate the client does not trust). Retried.
    #[error("connect error: {0}")]
    Connect(String),
    /// Connecting, a read or the whole request timed out. Retried.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The feed answered with a non-2xx status; retried on 5xx and 429.
    #[error("HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
        /// The `Retry-After` the feed asked for, in seconds form.
        retry_after: Option<Duration>,
    },
    /// The connection broke after it was made (a reset mid-response). Not
    /// retried: only connect errors, timeouts, 5xx and 429 are.
    #[error("transport error: {0}")]
    Transport(String),
    /// The body is not JSON. Never retried.
    #[error("invalid JSON: {0}")]
    Parse(String),
    /// The body is over `max_body_bytes`. Never retried.
    #[error("body over {0} bytes")]
    TooLarge(usize),
    /// The breaker opened during this fetch; the remaining tries are dropped.
    #[error("circuit breaker open")]
    BreakerOpen,
}

impl FetchError {
    /// Whether another try may succeed: connect errors, timeouts, 5xx, 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect(_) | FetchError::Timeout(_) => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The metrics label of the failure.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Timeout(_) => "timeout",
            FetchError::Status { .. } => "status",
            FetchError::Transport(_) => "transport",
            FetchError::Parse(_) => "parse",
            FetchError::TooLarge(_) => "too_large",
            FetchError::BreakerOpen => "breaker_open",
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(super) fn of(e: reqwest::Error) -> Self {
        // Without the URL: it may carry a credential.
        let e = e.without_url();
        let text = crate::services::error_chain(&e);
        if e.is_timeout() {
            FetchError::Timeout(text)
        } else if e.is_connect() {
            FetchError::Connect(text)
        } else {
            FetchError::Transport(text)
        }
    }
}
