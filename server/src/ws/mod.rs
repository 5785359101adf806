//! The WebSocket transport: `GET /ws`, one session actor per connection,
//! speaking the protocol of PROTOCOL.md.
//!
//! This is the only module that uses `actix-web-actors` (deprecated
//! upstream): a move to `actix-ws` touches this folder alone.
//!
//! The session actor owns: the connection's identity, its rooms with the last
//! offset delivered, its rate-limit bucket and heartbeat clock, and the
//! pending `resume`. It answers client frames, [`RoomEvent`]s from the room
//! hubs and [`Drain`] from the `connections` actor. It is not supervised (a
//! connection is temporary); a panic in it ends that one connection, and its
//! `Drop` releases its rooms and its registration either way.
//!
//! Back-pressure: with actix-web-actors the session actor runs only while the
//! HTTP layer polls the response body, so a client that stops reading would
//! freeze its actor (no heartbeat, no close). Here a driver task polls the
//! actor instead and moves each encoded chunk into an unbounded channel that
//! the response body drains; [`Outbound`] counts what waits in it (bytes and
//! messages). Past either configured bound the connection is closed with
//! 1013; nobody else in its rooms waits for it, since hubs only ever
//! `do_send` to a member.
//!
//! Files: [`protocol`] (close and error codes, request parsing), [`metrics`],
//! `outbound` (the queue and driver behind back-pressure), `session` (the
//! actor), and here the shared state and the upgrade handler.

mod metrics;
mod outbound;
pub mod protocol;
mod session;

use std::sync::Arc;

use actix_http::ws::Codec;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self};

use holdfast_actors::connections::Connections;
use holdfast_actors::rooms::Rooms;
use holdfast_actors::sessions::SessionStore;
use holdfast_actors::shutdown::Shutdown;

use crate::auth::{self, Verifier};
use crate::config::WsSettings;
use crate::http::error::ApiError;

pub use metrics::WsMetrics;
use outbound::{drive, Outbound};
pub use protocol::{close, code, valid_room};
pub use session::WsSession;

/// Everything the transport shares across connections.
pub struct WsShared {
    /// `[ws]` settings.
    pub settings: WsSettings,
    /// The room hubs.
    pub rooms: Rooms,
    /// The session registry behind `resume`.
    pub sessions: Arc<dyn SessionStore>,
    /// Live connections (drain, limit).
    pub connections: Connections,
    /// The transport's metrics.
    pub metrics: WsMetrics,
    /// Refuses upgrades once a shutdown began.
    pub shutdown: Shutdown,
    /// Verifies tokens; `None` accepts anonymous clients.
    pub verifier: Option<Verifier>,
}

/// `GET /ws`: checks run before the upgrade (drain, origin, token,
/// connection limit), then the session actor starts.
///
/// # Errors
/// 503 draining or full, 403 origin, 401 token, 400 not a WebSocket handshake;
/// all with JSON bodies.
pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<WsShared>,
) -> Result<HttpResponse, ApiError> {
    let reject = |reason: &str| shared.metrics.rejected.with_label_values(&[reason]).inc();
    if shared.shutdown.is_draining() {
        reject("draining");
        return Err(ApiError::Unavailable(
            "the server is shutting down; connect to another node".into(),
        ));
    }
    if !shared.settings.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) {
            if !shared.settings.allowed_origins.iter().any(|a| a == origin) {
                reject("origin");
                return Err(ApiError::Forbidden(format!(
                    "origin '{origin}' is not allowed"
                )));
            }
        }
    }
    let identity = auth::authenticate(&req, shared.verifier.as_ref()).map_err(|e| {
        reject("auth");
        ApiError::Unauthorized(e.to_string())
    })?;
    if shared.connections.count() >= shared.settings.max_connections {
        reject("full");
        return Err(ApiError::Unavailable(
            "the server is at its connection limit".into(),
        ));
    }
    let mut handshake = ws::handshake(&req).map_err(|e| {
        reject("handshake");
        ApiError::BadRequest(format!("not a WebSocket handshake: {e}"))
    })?;
    let outbound = Arc::new(Outbound::default());
    let session = WsSession::new(shared.clone().into_inner(), identity, outbound.clone());
    let codec = Codec::new().max_size(shared.settings.max_frame_bytes);
    let actor = ws::WebsocketContext::with_codec(session, payload, codec);
    Ok(handshake.streaming(drive(actor, outbound, shared.metrics.clone())))
}
