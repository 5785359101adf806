//! The WebSocket transport: `GET /ws`, one session actor per connection,
//! speaking the protocol of PROTOCOL.md.
//!
//! This is the only module that uses `actix-web-actors` (deprecated
//! upstream): a move to `actix-ws` touches this folder alone.
//!
//! The session actor owns: the connection's identity, its rate-limit bucket
//! and heartbeat clock, and the pending `resume`. It answers client frames,
//! the end of a resume replay and [`Drain`](holdfast_actors::connections::Drain) from the `connections` actor. It
//! is not supervised (a connection is temporary); a panic in it ends that one
//! connection, and its `Drop` releases its rooms and its registration either
//! way.
//!
//! Fan-out: room messages do not pass through the session actor. Each HTTP
//! worker thread is one outlet of the room hubs: a hub hands a message to
//! each worker once, and the worker pushes the frame, encoded once, into the
//! outbound queue of each of its connections in the room (`fanout`).
//!
//! The socket: actix-http hands a `Connection: Upgrade` request with its
//! socket to the upgrade service (`upgrade`), which serves it through the
//! application; the `/ws` handler below admits it and answers the 101 with
//! a [`Takeover`], and the connection's driver (`fanout`'s `driver`) then
//! owns the socket: it runs the session actor over a reader of its own (no
//! HTTP buffers; one read buffer per worker thread), and writes the
//! connection's outbound queue, bounded in bytes and messages, as the socket
//! takes it. The session actor runs whether or not the client reads; past
//! either bound the connection is closed with 1013, and nobody else in its
//! rooms waits for it, since a push never blocks.
//!
//! Files: [`protocol`] (the wire protocol: close and error codes, every
//! client frame parsed and every server frame built), `admission` (flood
//! control: the rate limit and abuse closes), `metrics`, `fanout` (the
//! per-worker fan-out, the outbound queue, the driver and its framing),
//! `session` (the actor), `handshake` (every check made before the
//! upgrade), `upgrade` (the upgrade service), `sockets` (the count of
//! sockets taken over, which a stop waits for), and here the shared state
//! and the `/ws` handler.

mod admission;
mod fanout;
mod handshake;
mod metrics;
pub mod protocol;
pub(crate) mod session;
mod sockets;
mod upgrade;

use std::sync::Arc;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use holdfast_actors::connections::Connections;
use holdfast_actors::online::Online;
use holdfast_actors::rooms::Rooms;
use holdfast_actors::sessions::SessionStore;
use holdfast_actors::shutdown::Shutdown;

use crate::auth::Verifier;
use crate::config::WsSettings;
use crate::handlers::Application;
use crate::http::error::ApiError;

pub(crate) use fanout::framing;
pub(crate) use fanout::LINGER;
use fanout::{Takeover, Worker};
use handshake::Admitted;
pub use metrics::WsMetrics;
pub use protocol::{close, code, valid_room};
pub use session::WsSession;
pub use sockets::Sockets;
pub(crate) use upgrade::service as upgrade_service;
use upgrade::Upgradable;

/// Everything the transport shares across connections.
pub struct WsShared {
    /// `[ws]` settings.
    pub settings: WsSettings,
    /// The room hubs.
    pub rooms: Rooms,
    /// The session registry behind `resume`.
    pub sessions: Arc<dyn SessionStore>,
    /// Which users are online (their sessions attached or in their grace).
    pub online: Online,
    /// Live connections (drain, limit).
    pub connections: Connections,
    /// The transport's metrics.
    pub metrics: WsMetrics,
    /// Refuses upgrades once a shutdown began.
    pub shutdown: Shutdown,
    /// The application's handlers and the namespaces.
    pub(crate) application: Application,
    /// Verifies tokens; `None` accepts anonymous clients.
    pub verifier: Option<Verifier>,
    /// The sockets taken over (a stop waits for them).
    pub sockets: Sockets,
}

/// `GET /ws`: the checks of [`handshake::admit`] (start-up done, drain,
/// origin, token, connection limit, a well-formed handshake), then the 101,
/// with the session ready for the upgrade service to start over the socket.
///
/// # Errors
/// 503 starting, draining or full, 403 origin, 401 token, 400 not a
/// WebSocket handshake; all with JSON bodies.
pub async fn upgrade(
    req: HttpRequest,
    shared: web::Data<WsShared>,
    state: web::Data<crate::http::AppState>,
) -> Result<HttpResponse, ApiError> {
    let Admitted { identity, slot } =
        handshake::admit(req.head(), &shared, state.is_ready()).await?;
    if req.extensions_mut().remove::<Upgradable>().is_none() {
        // Served without a socket to take over (a test service).
        return Err(ApiError::BadRequest(
            "not a WebSocket handshake: the connection cannot be upgraded".into(),
        ));
    }
    let worker = Worker::current(&shared);
    let conn = worker.connect();
    let session = WsSession::new(shared.clone().into_inner(), identity, conn.clone(), slot);
    // Verified by `admit`: this builds the 101.
    let mut res = HttpResponse::from(
        actix_http::ws::handshake_response(req.head())
            .finish()
            .map_into_boxed_body(),
    );
    res.extensions_mut().insert(Takeover::new(
        conn,
        session,
        shared.settings.max_frame_bytes,
        shared.sockets.hold(),
    ));
    Ok(res)
}
