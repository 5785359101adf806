//! [`Rpc`]: a client's request to a handler, answered with data or a
//! [`Rejection`].

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Caller, Rejection};

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

    /// The answer to a method under the handler's prefix that it does not
    /// have: `unknown_method`, as when no handler serves the prefix.
    pub fn unknown(&self) -> Rejection {
        Rejection::unknown_method(&self.method)
    }
}
