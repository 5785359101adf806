//! [`Caller`]: who a handler answers.

use std::sync::Arc;

use serde_json::{Map, Value};

/// The identity of the session behind a call: its session id, its user id
/// and every claim of its token (the application's own included; empty
/// for anonymous clients).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The session id (the one `resume` takes).
    pub session: Arc<str>,
    /// The user id (`sub`, or generated for anonymous clients).
    pub user: Arc<str>,
    /// Every claim of the token.
    pub claims: Arc<Map<String, Value>>,
}

impl Caller {
    /// One claim of the token, if present.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}
