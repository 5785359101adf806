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
//! Back-pressure: with actix-web-actors the session actor runs only while the
//! HTTP layer polls the response body, so a client that stops reading would
//! freeze its actor (no heartbeat, no close). Here a driver task polls the
//! actor instead, and every frame goes into the connection's outbound queue,
//! bounded in bytes and messages, which the response body drains. Past
//! either bound the connection is closed with 1013; nobody else in its rooms
//! waits for it, since a push never blocks.
//!
//! Files: [`protocol`] (the wire protocol: close and error codes, every
//! client frame parsed and every server frame built), `admission` (flood
//! control: the rate limit and abuse closes), `metrics`, `fanout` (the
//! per-worker fan-out, the outbound queue and the driver), `session` (the
//! actor), and here the shared state and the upgrade handler.

mod admission;
mod fanout;
mod metrics;
pub mod protocol;
pub(crate) mod session;

use std::sync::Arc;

use actix_http::ws::Codec;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self};

use holdfast_actors::connections::Connections;
use holdfast_actors::online::Online;
use holdfast_actors::rooms::Rooms;
use holdfast_actors::sessions::SessionStore;
use holdfast_actors::shutdown::Shutdown;

use crate::auth::{self, Verifier};
use crate::config::WsSettings;
use crate::handlers::Application;
use crate::http::error::ApiError;

use fanout::Worker;
pub use metrics::WsMetrics;
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
}

/// The Origin check, failing closed: with an allow-list, every `Origin`
/// header the request carries must be text and in it (a request without
/// one, from a non-browser client, passes). Answers why it refused.
fn allowed_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    for origin in req.headers().get_all("origin") {
        match origin.to_str() {
            Ok(origin) if allowed.iter().any(|a| a == origin) => {}
            Ok(origin) => return Err(format!("origin '{origin}' is not allowed")),
            Err(_) => return Err("the Origin header is not text".into()),
        }
    }
    if req.headers().get_all("origin").count() > 1 {
        return Err("more than one Origin header".into());
    }
    Ok(())
}

/// The parts of a WebSocket handshake the framework lets pass: version 13
/// only (RFC 6455 §4.1), and a key that is 16 bytes in base64.
fn valid_handshake(req: &HttpRequest) -> Result<(), &'static str> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header("upgrade").is_none() {
        return Ok(()); // not an upgrade at all: the framework's check answers
    }
    if header("sec-websocket-version") != Some("13") {
        return Err("not a WebSocket handshake: Sec-WebSocket-Version must be 13");
    }
    if !header("sec-websocket-key").is_some_and(key_of_16_bytes) {
        return Err("not a WebSocket handshake: Sec-WebSocket-Key must be 16 bytes in base64");
    }
    Ok(())
}

/// Whether `key` is the base64 of exactly 16 bytes: 22 characters of the
/// alphabet, the last of them with its 4 low bits zero, then `==`.
fn key_of_16_bytes(key: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22].iter().all(|b| ALPHABET.contains(b))
        && ALPHABET
            .iter()
            .position(|b| *b == bytes[21])
            .is_some_and(|i| i % 16 == 0)
}

/// `GET /ws`: checks run before the upgrade (start-up done, drain, origin,
/// token, connection limit), then the session actor starts.
///
/// # Errors
/// 503 starting, draining or full, 403 origin, 401 token, 400 not a
/// WebSocket handshake; all with JSON bodies.
pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<WsShared>,
    state: web::Data<crate::http::AppState>,
) -> Result<HttpResponse, ApiError> {
    let reject = |reason: &str| shared.metrics.rejected.with_label_values(&[reason]).inc();
    if !state.is_ready() {
        // Sessions and room offsets are still loading: a session handed
        // out now would miss its `resume`, a room its restored epoch.
        reject("starting");
        return Err(ApiError::Unavailable(
            "the server is starting; retry shortly".into(),
        ));
    }
    if shared.shutdown.is_draining() {
        reject("draining");
        return Err(ApiError::Unavailable(
            "the server is shutting down; connect to another node".into(),
        ));
    }
    if let Err(refused) = allowed_origin(&req, &shared.settings.allowed_origins) {
        reject("origin");
        return Err(ApiError::Forbidden(refused));
    }
    let identity = auth::authenticate(&req, shared.verifier.as_ref())
        .await
        .map_err(|e| {
            reject("auth");
            match e {
                auth::AuthError::KeysUnavailable => ApiError::Unavailable(e.to_string()),
                e => ApiError::Unauthorized(e.to_string()),
            }
        })?;
    let Some(slot) = shared.connections.admit(shared.settings.max_connections) else {
        reject("full");
        return Err(ApiError::Unavailable(
            "the server is at its connection limit".into(),
        ));
    };
    if let Err(refused) = valid_handshake(&req) {
        reject("handshake");
        return Err(ApiError::BadRequest(refused.into()));
    }
    let mut handshake = ws::handshake(&req).map_err(|e| {
        reject("handshake");
        ApiError::BadRequest(format!("not a WebSocket handshake: {e}"))
    })?;
    let worker = Worker::current(&shared);
    let conn = worker.connect();
    let session = WsSession::new(shared.clone().into_inner(), identity, conn.clone(), slot);
    let codec = Codec::new().max_size(shared.settings.max_frame_bytes);
    let actor = ws::WebsocketContext::with_codec(session, payload, codec);
    Ok(handshake.streaming(fanout::body(conn, actor)))
}
