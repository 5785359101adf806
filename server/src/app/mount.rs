//! [`Mount`]: what a part of the application adds to a starting server.
//!
//! A part is a function of the server's handles ([`AppContext`]) that adds
//! actors under the `services` supervisor and HTTP routes inside the
//! server's middleware, and registers handlers: RPC methods by prefix, room
//! handlers by the name namespaces give them. The built-in services (`builtin`) are mounted the
//! same way as the user's, so a new one is its own file plus one line in
//! [`Builder::new`](super::Builder::new).

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web::ServiceConfig;

use holdfast_actors::supervision::AnyChildSpec;

use super::{AppContext, StartError};
use crate::handlers::{RoomHandler, Rpc, RpcRoutes, Target};

/// Routes added to the HTTP app, once per HTTP worker.
pub(crate) type Routes = Arc<dyn Fn(&mut ServiceConfig) + Send + Sync>;

/// A part of the application, mounted once when the server starts.
pub(super) type Part = Box<dyn FnOnce(&mut Mount<'_>) -> Result<(), StartError>>;

/// What the parts of the application add while the server starts: each
/// part gets the server's handles and adds its actors and routes.
pub struct Mount<'a> {
    context: &'a AppContext,
    pub(super) services: Vec<AnyChildSpec>,
    pub(super) routes: Vec<Routes>,
    pub(super) rpc: RpcRoutes,
    pub(super) room_handlers: HashMap<String, RoomHandler>,
}

impl<'a> Mount<'a> {
    pub(super) fn new(context: &'a AppContext) -> Self {
        Self {
            context,
            services: Vec::new(),
            routes: Vec::new(),
            rpc: RpcRoutes::default(),
            room_handlers: HashMap::new(),
        }
    }

    /// The server's handles: rooms, database, event bus, settings.
    pub fn context(&self) -> &'a AppContext {
        self.context
    }

    /// Adds an actor under the `services` supervisor, in mount order.
    pub fn service(&mut self, spec: impl Into<AnyChildSpec>) -> &mut Self {
        self.services.push(spec.into());
        self
    }

    /// Adds routes to the HTTP app, inside its middleware (request ids,
    /// logs, metrics, CORS, JSON errors). Called once per HTTP worker.
    pub fn routes(
        &mut self,
        routes: impl Fn(&mut ServiceConfig) + Send + Sync + 'static,
    ) -> &mut Self {
        self.routes.push(Arc::new(routes));
        self
    }

    /// Serves the RPC methods starting with `prefix` (`printers.` serves
    /// `printers.pause`) by `handler`; the longest registered prefix wins.
    ///
    /// # Errors
    /// Another handler has that prefix.
    pub fn rpc(&mut self, prefix: &str, handler: Target<Rpc>) -> Result<&mut Self, StartError> {
        self.rpc
            .add(prefix, handler)
            .map_err(StartError::Services)?;
        Ok(self)
    }

    /// Registers a room handler under `name`, which namespaces name in
    /// their `handler` option.
    ///
    /// # Errors
    /// Another room handler has that name.
    pub fn room_handler(
        &mut self,
        name: &str,
        handler: RoomHandler,
    ) -> Result<&mut Self, StartError> {
        if self
            .room_handlers
            .insert(name.to_owned(), handler)
            .is_some()
        {
            return Err(StartError::Services(format!(
                "two room handlers named '{name}'"
            )));
        }
        Ok(self)
    }
}
