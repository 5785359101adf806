//! Whether a request may become a WebSocket session: every check made
//! before the upgrade, in one place, over the request's head alone (what an
//! actix-web handler and an actix-http upgrade service both hold). In this
//! order: start-up done, not draining, the Origin allowed, the token valid,
//! a connection slot, a well-formed handshake; each refusal is counted in
//! `holdfast_ws_rejected_total` under its reason.

use actix_web::dev::RequestHead;

use holdfast_actors::connections::Slot;

use super::WsShared;
use crate::auth::{self, Identity};
use crate::http::error::ApiError;

/// A request admitted: who it is, and the connection slot it holds.
pub(crate) struct Admitted {
    pub(crate) identity: Identity,
    pub(crate) slot: Slot,
}

/// Runs the checks; `ready` says whether start-up is done.
///
/// # Errors
/// 503 starting, draining, full or keys unavailable, 403 origin, 401
/// token, 400 not a WebSocket handshake; all with JSON bodies.
pub(crate) async fn admit(
    head: &RequestHead,
    shared: &WsShared,
    ready: bool,
) -> Result<Admitted, ApiError> {
    let reject = |reason: &str| shared.metrics.rejected.with_label_values(&[reason]).inc();
    if !ready {
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
    if let Err(refused) = allowed_origin(head, &shared.settings.allowed_origins) {
        reject("origin");
        return Err(ApiError::Forbidden(refused));
    }
    let identity = auth::authenticate(head, shared.verifier.as_ref())
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
    if let Err(refused) = valid_handshake(head) {
        reject("handshake");
        return Err(ApiError::BadRequest(refused.into()));
    }
    if let Err(e) = actix_http::ws::verify_handshake(head) {
        reject("handshake");
        return Err(ApiError::BadRequest(format!(
            "not a WebSocket handshake: {e}"
        )));
    }
    Ok(Admitted { identity, slot })
}

/// The Origin check, failing closed: with an allow-list, every `Origin`
/// header the request carries must be text and in it (a request without
/// one, from a non-browser client, passes). Answers why it refused.
fn allowed_origin(req: &RequestHead, allowed: &[String]) -> Result<(), String> {
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
fn valid_handshake(req: &RequestHead) -> Result<(), &'static str> {
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
