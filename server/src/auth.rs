//! Client authentication: HS256 JWTs with `sub`, `exp`, an optional `nbf`
//! (checked: a token is refused before it), the optional
//! `rooms` and `rpc` claims and any claims of the application's own, from `Authorization: Bearer <token>` or the `token` query
//! parameter (browsers cannot set headers on a WebSocket). Without a
//! configured secret every client is anonymous and gets a generated user id.

use std::sync::Arc;

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Who a connection is.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The user id (`sub`, or generated for anonymous clients).
    pub user: String,
    /// When the token expires, in seconds since the epoch; `None` when anonymous.
    pub expires_at: Option<u64>,
    /// Room patterns the user may join and publish to; `None` allows every room.
    pub rooms: Option<Vec<String>>,
    /// RPC method patterns the user may call; `None` allows every method.
    pub rpc: Option<Vec<String>>,
    /// Every claim of the token, the application's own included; empty
    /// when anonymous. Handlers receive them with every call.
    pub claims: Arc<Map<String, Value>>,
    /// Whether the identity came from a token (a resumed session must then match it).
    pub authenticated: bool,
}

/// The claims Holdfast reads; a token whose claim has another type is invalid.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    rpc: Option<Vec<String>>,
}

/// Why a client was refused before the upgrade (HTTP 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A secret is configured and the client sent no token.
    #[error("a token is required (Authorization: Bearer <token> or ?token=)")]
    Missing,
    /// The token is malformed, signed with another key, or lacks a claim.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The token's `nbf` has not come yet.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
}

/// Verifies tokens with one HS256 key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The identity a token proves.
    ///
    /// # Errors
    /// See [`AuthError`]; the message never contains the token.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let all = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                // In Holdfast's words: the library's would tell an attacker
                // what it parsed.
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => return AuthError::Expired,
                    ErrorKind::ImmatureSignature => return AuthError::NotYetValid,
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "the algorithm must be HS256"
                    }
                    ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => "no sub claim",
                    ErrorKind::MissingRequiredClaim(_) => "no exp claim",
                    _ => "not a JWT signed with HS256",
                };
                AuthError::Invalid(why.into())
            })?
            .claims;
        let claims = Claims::deserialize(&Value::Object(all.clone())).map_err(|_| {
            AuthError::Invalid("a claim has the wrong type (sub a string, exp a number, rooms and rpc arrays of strings)".into())
        })?;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        Ok(Identity {
            user: claims.sub,
            expires_at: Some(claims.exp),
            rooms: claims.rooms,
            rpc: claims.rpc,
            claims: Arc::new(all),
            authenticated: true,
        })
    }
}

/// The token a request carries, if any.
pub fn token_of(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Some(t) = h.to_str().ok().and_then(crate::http::bearer::token) {
            return Some(t.to_owned());
        }
    }
    web_query_token(req.query_string())
}

fn web_query_token(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Authenticates a request: with a verifier, a valid token is required;
/// without one, the client is anonymous.
///
/// # Errors
/// See [`AuthError`].
pub fn authenticate(req: &HttpRequest, verifier: Option<&Verifier>) -> Result<Identity, AuthError> {
    match verifier {
        Some(v) => v.verify(&token_of(req).ok_or(AuthError::Missing)?),
        None => Ok(Identity {
            user: format!("anon-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            expires_at: None,
            rooms: None,
            rpc: None,
            claims: Arc::default(),
            authenticated: false,
        }),
    }
}

/// Whether `name` (a room, an RPC method) matches one of a claim's
/// `patterns` (`*` alone matches every name; a trailing `*` matches a
/// prefix; anything else matches exactly). No claim allows every name.
pub fn allowed(patterns: Option<&[String]>, name: &str) -> bool {
    let Some(patterns) = patterns else {
        return true;
    };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_patterns_match_exactly_or_by_prefix() {
        let p = vec!["lobby".to_owned(), "team:*".to_owned()];
        assert!(allowed(Some(&p), "lobby"));
        assert!(allowed(Some(&p), "team:blue"));
        assert!(!allowed(Some(&p), "lobby2"));
        assert!(!allowed(Some(&p), "other"));
        assert!(allowed(Some(&["*".to_owned()]), "anything"));
        assert!(allowed(None, "anything"));
    }

    #[test]
    fn token_is_read_from_the_query() {
        assert_eq!(web_query_token("a=1&token=abc.def"), Some("abc.def".into()));
        assert_eq!(web_query_token("a=1"), None);
    }
}
