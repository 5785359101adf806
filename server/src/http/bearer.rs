//! Bearer tokens (the admin token, the server API key): the one check of
//! an `Authorization: Bearer <token>` header against a configured secret.

use subtle::ConstantTimeEq;

use crate::config::Secret;

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
/// case-insensitive, as RFC 9110 says).
fn token(header: &str) -> Option<&str> {
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
