//! Why a server did not start, and the exit code each reason maps to.

use holdfast_actors::supervision::SupervisionError;

/// Exit code when the listener cannot be bound (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for any other start-up failure (EX_SOFTWARE).
pub const EXIT_SOFTWARE: i32 = 70;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that validation would have refused (settings built in code
    /// skip [`Settings::load`](crate::Settings::load)), e.g. an unreadable
    /// `tls.ca_file`.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The address is taken, or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as configured.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Two actors share a name.
    #[error("cannot build the supervision tree: {0}")]
    Tree(#[from] SupervisionError),
    /// The database handle could not be built (bad URL, unwritable directory).
    #[error("cannot set up the database: {0}")]
    Storage(String),
    /// A service (built in or the application's) could not be set up.
    #[error("cannot set up the services: {0}")]
    Services(String),
    /// Metrics could not be registered (a duplicate name).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Bind { .. } => EXIT_UNAVAILABLE,
            StartError::Config(_) => crate::config::EXIT_CONFIG,
            _ => EXIT_SOFTWARE,
        }
    }
}
