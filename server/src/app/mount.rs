//! [`Mount`]: what a part of the application adds to a starting server.
//!
//! A part is a function of the server's handles ([`AppContext`]) that adds
//! actors under the `services` supervisor and HTTP routes inside the
//! server's middleware. The built-in services (`builtin`) are mounted the
//! same way as the user's, so a new one is its own file plus one line in
//! [`Builder::new`](super::Builder::new).

use std::sync::Arc;

use actix_web::web::ServiceConfig;

use holdfast_actors::supervision::AnyChildSpec;

use super::{AppContext, StartError};

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
}

impl<'a> Mount<'a> {
    pub(super) fn new(context: &'a AppContext) -> Self {
        Self {
            context,
            services: Vec::new(),
            routes: Vec::new(),
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
}
