//! [`RpcRoutes`]: which handler serves a method (the longest registered
//! prefix).

use super::{Rpc, Target};

/// Which handler serves which methods.
#[derive(Clone, Default)]
pub struct RpcRoutes {
    /// Longest prefix first.
    routes: Vec<(String, Target<Rpc>)>,
}

impl RpcRoutes {
    /// Routes the methods starting with `prefix` to `handler`.
    ///
    /// # Errors
    /// Another handler has that prefix.
    pub fn add(&mut self, prefix: impl Into<String>, handler: Target<Rpc>) -> Result<(), String> {
        let prefix = prefix.into();
        if self.routes.iter().any(|(p, _)| *p == prefix) {
            return Err(format!("two RPC handlers for the prefix '{prefix}'"));
        }
        self.routes.push((prefix, handler));
        self.routes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(())
    }

    /// The handler for `method`: the one with the longest matching prefix.
    pub(crate) fn route(&self, method: &str) -> Option<&Target<Rpc>> {
        self.routes
            .iter()
            .find(|(prefix, _)| method.starts_with(prefix.as_str()))
            .map(|(_, handler)| handler)
    }
}
