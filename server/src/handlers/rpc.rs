//! RPC: [`Rpc`], the request a handler answers, and [`RpcRoutes`], which
//! handler serves a method (the longest registered prefix).

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Caller, Rejection, Target};

/// A client's `rpc` request. Answer `Ok(data)` (the client gets
/// `{"type":"reply","id":…,"data":…}`) or a [`Rejection`].
#[derive(Debug, Message)]
#[rtype(result = "Result<Value, Rejection>")]
pub struct Rpc {
    /// The method, e.g. `printers.pause`.
    pub method: String,
    /// The request's `data` (`null` when the client sent none).
    pub data: Value,
    /// Who asks.
    pub caller: Caller,
}

impl Rpc {
    /// The part of the method after the handler's `prefix` (`pause` for
    /// `printers.pause` under `printers.`).
    pub fn action<'a>(&'a self, prefix: &str) -> &'a str {
        self.method.strip_prefix(prefix).unwrap_or(&self.method)
    }

    /// `data` read as `T`, or a `bad_request` naming what is wrong.
    ///
    /// # Errors
    /// `data` does not have `T`'s shape.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        T::deserialize(&self.data)
            .map_err(|e| Rejection::bad_request(format!("{}: {e}", self.method)))
    }
}

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
