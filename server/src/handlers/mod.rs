//! The application layer: the user's actors in the realtime path.
//!
//! - **RPC**: a client's `rpc` request goes to the handler registered for
//!   the longest prefix of its method ([`Rpc`], [`RpcRoutes`]).
//! - **Room handlers**: a namespace (`[[rooms.namespaces]]`, by prefix) may
//!   name a handler, which then decides on every join and publish in its
//!   rooms and is told of leaves ([`JoinRequest`], [`PublishRequest`],
//!   [`LeaveNotice`], [`RoomHandler`]). Rooms whose namespace names no
//!   handler take the path they always did, at its speed.
//!
//! Handlers are ordinary supervised actors: register their spec with
//! [`Builder::room_handler`](crate::Builder::room_handler) or
//! [`Builder::rpc`](crate::Builder::rpc). Every call carries the
//! [`Caller`] and has a deadline (`handlers.timeout_ms`); past it the client
//! gets `timeout`. While a handler restarts (after a panic, say), its
//! clients get `unavailable` and stay connected. A handler answers in the
//! order it received requests, so a client's publishes through a handler
//! that answers synchronously keep their order.
//!
//! A moderated chat, compiled and run by `cargo test`:
//!
//! ```
//! use actix::prelude::*;
//! use holdfast_actors::supervision::{Child, ChildSpec};
//! use holdfast_server::config::NamespaceSettings;
//! use holdfast_server::handlers::{Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection};
//! use holdfast_server::{Builder, Settings};
//! use serde_json::json;
//!
//! struct Moderator;
//!
//! impl Actor for Moderator {
//!     type Context = Context<Self>;
//! }
//!
//! impl Child for Moderator {}
//!
//! impl Handler<JoinRequest> for Moderator {
//!     type Result = Result<Accept, Rejection>;
//!
//!     fn handle(&mut self, req: JoinRequest, _: &mut Context<Self>) -> Self::Result {
//!         if req.caller.user.starts_with("banned-") {
//!             return Err(Rejection::forbidden("you are banned from this chat"));
//!         }
//!         Ok(Accept::With(json!({"rules": "be kind"})))
//!     }
//! }
//!
//! impl Handler<PublishRequest> for Moderator {
//!     type Result = Result<Accept, Rejection>;
//!
//!     fn handle(&mut self, req: PublishRequest, _: &mut Context<Self>) -> Self::Result {
//!         let text: String = req.parse()?;
//!         if text.contains("spam") {
//!             return Err(Rejection::new("banned_word", "no spam here"));
//!         }
//!         Ok(Accept::With(json!(text.trim())))
//!     }
//! }
//!
//! impl Handler<LeaveNotice> for Moderator {
//!     type Result = ();
//!
//!     fn handle(&mut self, _: LeaveNotice, _: &mut Context<Self>) {}
//! }
//!
//! let mut settings = Settings::defaults();
//! settings.server.port = 0;
//! // Or a `[[rooms.namespaces]]` table in the config file.
//! let builder = Builder::new(settings)
//!     .namespace(NamespaceSettings::new("chat:").handler("moderator"))
//!     .room_handler("moderator", ChildSpec::new("moderator", |_| Moderator));
//! # drop(builder);
//! ```

mod namespaces;
mod routes;

use std::collections::HashMap;
use std::time::Duration;

pub use holdfast_actors::handlers::*;
pub(crate) use namespaces::{Namespace, Namespaces};
pub use routes::RpcRoutes;

use crate::config::{ConfigError, Settings};

/// Everything the transport needs to reach the application's handlers.
#[derive(Clone)]
pub(crate) struct Application {
    pub(crate) rpc: RpcRoutes,
    pub(crate) namespaces: Namespaces,
    /// The deadline of every call.
    pub(crate) deadline: Duration,
}

impl Application {
    /// The handlers registered, resolved against the settings' namespaces.
    ///
    /// # Errors
    /// A namespace names a handler nobody registered.
    pub(crate) fn new(
        settings: &Settings,
        rpc: RpcRoutes,
        room_handlers: &HashMap<String, RoomHandler>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            rpc,
            namespaces: Namespaces::new(&settings.rooms, room_handlers)?,
            deadline: Duration::from_millis(settings.handlers.timeout_ms),
        })
    }
}
