//! Bearer tokens (the admin token, the server API key): the one check of
//! an `Authorization: Bearer <token>` header against a configured secret,
//! and the one middleware that refuses a scope's requests without it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use subtle::ConstantTimeEq;
use tracing::warn;

use super::error::ApiError;
use crate::config::Secret;

/// A scope's guard, kept in the app's data: its secret and what a refused
/// caller is told (never the secret).
pub trait Guard: 'static {
    /// Names the scope in the log line of a refusal.
    const SCOPE: &'static str;
    /// The 401 message without an `Authorization` header.
    const MISSING: &'static str;
    /// The 401 message with a wrong one.
    const WRONG: &'static str;
    /// The secret; empty allows nobody.
    fn secret(&self) -> &Secret;
}

/// Refuses, with a JSON 401 before any route is looked up, a request
/// without `G`'s secret (`.wrap(from_fn(bearer::authorize::<G>))`).
pub async fn authorize<G: Guard>(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let allowed = req
        .app_data::<web::Data<G>>()
        .is_some_and(|guard| allows(guard.secret(), header));
    if !allowed {
        warn!(
            scope = G::SCOPE,
            path = %req.path(),
            credentials = if header.is_some() { "wrong" } else { "missing" },
            "request refused: no valid bearer token"
        );
        let message = if header.is_some() {
            G::WRONG
        } else {
            G::MISSING
        };
        let res = ApiError::Unauthorized(message.into()).error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Whether `header` is `Bearer <secret>`; never with an empty secret. The
/// comparison takes the same time wherever the first differing byte is
/// (only the length can be told from timing).
pub fn allows(secret: &Secret, header: Option<&str>) -> bool {
    let Some(given) = header.and_then(token) else {
        return false;
    };
    let expected = secret.expose().as_bytes();
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive, as RFC 9110 says): the one reader of that header, for
/// the admin and server APIs and for `/ws`.
pub(crate) fn token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_after_bearer_is_allowed() {
        let secret: Secret = serde_json::from_value(serde_json::json!("0123456789abcdef")).unwrap();
        assert!(allows(&secret, Some("Bearer 0123456789abcdef")));
        assert!(allows(&secret, Some("bearer 0123456789abcdef")));
        assert!(!allows(&secret, Some("Bearer 0123456789abcdeX")));
        assert!(!allows(&secret, Some("Basic 0123456789abcdef")));
        assert!(!allows(&secret, Some("Bearer ")));
        assert!(!allows(&secret, None));
        let empty: Secret = serde_json::from_value(serde_json::json!("")).unwrap();
        assert!(!allows(&empty, Some("Bearer ")));
    }
}
